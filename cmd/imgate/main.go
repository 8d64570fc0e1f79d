// Command imgate is the gateway appliance: one binary, several roles.
//
//	imgate all       gateway with everything on one node (the default setup)
//	imgate gateway   the connection gateway alone
//	imgate token     mint a client token
//	imgate config    check a configuration file
//	imgate version   print the version
package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"

	"imgate/gateway"
)

// version is set at build time: -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	var err error
	switch cmd {
	case "all", "gateway":
		err = runGateway(cmd, args)
	case "token":
		err = runToken(args)
	case "config":
		err = runConfig(args)
	case "version", "--version", "-v":
		fmt.Println("imgate", version)
	case "help", "-h", "--help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "imgate: unknown command %q\n\n", cmd)
		usage()
		os.Exit(2)
	}
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "imgate %s: %v\n", cmd, err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: imgate <command> [flags]

commands:
  all       run the single-node system (gateway; SVID 1 echoes)
  gateway   run the connection gateway
  token     mint a client token: imgate token --uid alice [--device phone] [--ttl 24h]
  config    check a configuration file: imgate config check /etc/imgate/imgate.toml
  version   print the version

Run 'imgate <command> -h' for the command's flags.
`)
}

func runGateway(cmd string, args []string) error {
	base := gateway.DefaultConfig()
	if cmd == "all" {
		// Until the route daemon lands, the single-node system answers SVID 1
		// itself, so a new user sees a round trip without writing a backend.
		base.EchoSVID = 1
	}
	cfg, level, err := loadConfig(cmd, args, base)
	if err != nil {
		return err
	}
	log, lv, err := newLogger(args, level)
	if err != nil {
		return err
	}
	slog.SetDefault(log)
	gateway.Version = version

	srv, err := gateway.New(cfg, log)
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return err
	}
	printBanner(srv)

	return serve(cmd, args, base, srv, log, lv)
}

func printBanner(srv *gateway.Server) {
	cfg := srv.Config()
	fmt.Printf("imgate %s node %q is up\n", version, cfg.NodeID)
	for _, l := range srv.Listeners() {
		fmt.Printf("  clients  %s\n", l.URL())
	}
	if a := srv.AdminAddr(); a != "" {
		fmt.Printf("  admin    redis-cli -h %s -p %s\n", hostOf(a), portOf(a))
	}
	if a := srv.HTTPAddr(); a != "" {
		fmt.Printf("  http     http://%s  (/count /room /session /push/* /metrics /healthz)\n", a)
	}
	fmt.Printf("  token    bin/imgate token --uid alice --data %s\n", cfg.DataDir)
	for _, l := range srv.Listeners() {
		if l.Kind().String() == "tcp" {
			fmt.Printf("  try      bin/imgate-cli --url tcp://127.0.0.1:%s --token $(bin/imgate token --uid alice --data %s) --join lobby\n",
				portOf(l.Addr().String()), cfg.DataDir)
			break
		}
	}
}

func hostOf(addr string) string {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			return addr[:i]
		}
	}
	return addr
}

func portOf(addr string) string {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			return addr[i+1:]
		}
	}
	return ""
}
