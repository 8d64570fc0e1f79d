// Command imgate-echo is a sample backend showing both ways to serve an
// SVID:
//
//   - over NATS (--nats): a queue subscriber on <prefix>.svc.<svid>; start
//     several and NATS balances requests over them and fails over when one
//     goes. A request whose payload starts with "push:" also pushes the rest
//     back to the user over the bus (on every device, on any node).
//   - over HTTP (--http): an endpoint for the route daemon's [[route.svid]]
//     bridges; it answers POSTs with their body, and "fail" with a 500.
//
// Usage:
//
//	imgate-echo --nats nats://127.0.0.1:4222 --svid 2
//	imgate-echo --http 127.0.0.1:9002
package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"imgate/cluster"
)

func main() {
	natsURL := flag.String("nats", "", "NATS servers, comma-separated (serve over NATS)")
	svid := flag.Uint("svid", 2, "SVID to serve over NATS")
	prefix := flag.String("prefix", cluster.DefaultPrefix, "subject prefix")
	name := flag.String("name", "", "instance name in announcements (default echo@<host>/<pid>)")
	httpAddr := flag.String("http", "", "address of the HTTP endpoint (serve for the route daemon)")
	tag := flag.Bool("tag", false, "prefix replies with the instance name and a colon (to see the balancing)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *natsURL == "" && *httpAddr == "" {
		fmt.Fprintln(os.Stderr, "imgate-echo: give --nats, --http or both")
		os.Exit(2)
	}
	if *name == "" {
		host, _ := os.Hostname()
		*name = fmt.Sprintf("echo@%s/%d", host, os.Getpid())
	}
	if *natsURL != "" {
		cfg := cluster.DefaultConfig()
		cfg.NATS = strings.Split(*natsURL, ",")
		nc, err := cluster.Connect(cfg, *name, nil, log)
		if err != nil {
			log.Error("nats", "err", err)
			os.Exit(1)
		}
		defer nc.Close()
		pusher := cluster.NewPusher(nc, *prefix)
		b, err := cluster.ServeSVID(nc, *prefix, uint32(*svid), *name, func(r cluster.Request) ([]byte, error) {
			if rest, ok := strings.CutPrefix(string(r.Payload), "push:"); ok {
				if err := pusher.User(r.UID, cluster.Message{Payload: []byte(rest)}); err != nil {
					return nil, err
				}
			}
			if *tag {
				return append([]byte(*name+":"), r.Payload...), nil
			}
			return r.Payload, nil
		})
		if err != nil {
			log.Error("serve", "err", err)
			os.Exit(1)
		}
		defer b.Close()
		fmt.Printf("imgate-echo %s: svid %d over NATS %s\n", *name, *svid, *natsURL)
	}
	if *httpAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("POST /", func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(io.LimitReader(r.Body, 16<<20))
			if string(body) == "fail" {
				http.Error(w, "asked to fail", http.StatusInternalServerError)
				return
			}
			w.Write(body)
		})
		srv := &http.Server{Addr: *httpAddr, Handler: mux}
		go func() {
			if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
				log.Error("http", "err", err)
				os.Exit(1)
			}
		}()
		defer srv.Close()
		fmt.Printf("imgate-echo %s: HTTP endpoint http://%s/\n", *name, *httpAddr)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
}
