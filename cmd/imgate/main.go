// Command imgate is the gateway appliance: one binary, several roles.
//
//	imgate all       everything on one node: gateway, embedded NATS, route daemon, echo backend
//	imgate gateway   the connection gateway (a cluster node with --nats)
//	imgate route     the route daemon (SVIDs to HTTP backends, push API)
//	imgate dns       the smart-DNS responder and HTTPDNS (nearest healthy gateway)
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
	case "all", "gateway", "route":
		err = runGateway(cmd, args)
	case "dns":
		err = runDNS(args)
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
  all       run the single-node system: gateway, embedded NATS, route daemon; SVID 1 echoes
  gateway   run the connection gateway; with --nats, as a node of a cluster
  route     run the route daemon: SVIDs bridged to HTTP endpoints, push API
  dns       run the smart-DNS responder and HTTPDNS: each client gets its nearest healthy gateways
  token     mint a client token: imgate token --uid alice [--device phone] [--ttl 24h]
  config    check a configuration file: imgate config check /etc/imgate/imgate.toml
  version   print the version

Run 'imgate <command> -h' for the command's flags.
`)
}

func runGateway(cmd string, args []string) error {
	o, err := loadOptions(cmd, args, options{Gateway: gateway.DefaultConfig(), Cluster: defaultClusterConfig(), Route: defaultRouteConfig(), DNS: defaultDNSConfig()})
	if err != nil {
		return err
	}
	log, lv, err := newLogger(args, o.LogLevel)
	if err != nil {
		return err
	}
	slog.SetDefault(log)
	gateway.Version = version

	sys, err := startSystem(cmd, o, log)
	if err != nil {
		return err
	}
	printBanner(sys)

	return serve(cmd, args, sys, log, lv)
}

func printBanner(sys *system) {
	if sys.srv == nil && sys.daemon == nil {
		fmt.Printf("imgate %s smart-DNS responder is up\n", version)
		fmt.Printf("  nats     %s\n", sys.natsURL)
		printDNSBanner(sys)
		return
	}
	if sys.srv == nil {
		fmt.Printf("imgate %s route daemon is up\n", version)
		fmt.Printf("  nats     %s\n", sys.natsURL)
		if a := sys.daemon.HTTPAddr(); a != "" {
			fmt.Printf("  http     http://%s  (/push/* /kick /room/* /svids /healthz)\n", a)
		}
		return
	}
	srv := sys.srv
	cfg := srv.Config()
	fmt.Printf("imgate %s node %q is up\n", version, cfg.NodeID)
	for _, l := range srv.Listeners() {
		fmt.Printf("  clients  %s\n", l.URL())
	}
	if a := srv.AdminAddr(); a != "" {
		fmt.Printf("  admin    redis-cli -h %s -p %s\n", hostOf(a), portOf(a))
	}
	if a := srv.HTTPAddr(); a != "" {
		fmt.Printf("  http     http://%s  (/count /room /session /push/* /cluster/* /v1/endpoints /metrics /healthz)\n", a)
	}
	if sys.natsURL != "" {
		what := "external cluster"
		if sys.embedded != nil {
			what = "embedded, JetStream under " + cfg.DataDir + "/nats"
		}
		fmt.Printf("  nats     %s  (%s)\n", sys.natsURL, what)
	}
	if sys.daemon != nil && sys.daemon.HTTPAddr() != "" {
		fmt.Printf("  route    http://%s  (/push/* /svids: push and backends over the bus)\n", sys.daemon.HTTPAddr())
	}
	printDNSBanner(sys)
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
