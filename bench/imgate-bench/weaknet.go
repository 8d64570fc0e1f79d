package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"imgate/bench/weaknet"
)

// weaknetOptions are the weaknet scenario's flags.
type weaknetOptions struct {
	netemBin   string
	transports string
	conditions string
	rate       float64
	duration   time.Duration
	drain      time.Duration
}

// weaknet: push latency and delivery per transport through the imgate-netem
// shim, in network namespaces (root only). Not part of "all": it needs root
// and takes a few minutes of wall time (little CPU).
func (b *bench) weaknet() error {
	if b.o.remote.TCP != "" {
		return errors.New("weaknet runs its own gateway in a network namespace; --target-* does not apply")
	}
	transports, err := weaknet.ParseTransports(b.o.weaknet.transports)
	if err != nil {
		return err
	}
	conditions, err := weaknet.ParseConditions(b.o.weaknet.conditions)
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	// Ctrl-C or SIGTERM ends the run through ctx, so the labs are taken down
	// (namespaces deleted, processes stopped) before the process exits.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := weaknet.Config{
		GatewayBin: b.o.gatewayBin,
		NetemBin:   b.o.weaknet.netemBin,
		ProbeCmd:   []string{exe, "weaknet-probe"},
		Transports: transports,
		Conditions: conditions,
		Rate:       b.o.weaknet.rate,
		Duration:   b.o.weaknet.duration,
		Drain:      b.o.weaknet.drain,
		Progress:   func(line string) { b.progress.Done("weaknet %s", line) },
	}
	results, err := weaknet.Measure(ctx, cfg)
	weaknet.SetResults(b.results, results)
	if len(results) > 0 {
		weaknet.Table(results).Render(os.Stdout)
		md := weaknet.Markdown(results)
		path := filepath.Join(b.o.out, "weaknet.md")
		if werr := os.WriteFile(path, []byte(md), 0o644); werr != nil {
			return werr
		}
		fmt.Printf("\n%s\nwrote %s\n", md, path)
	}
	if err != nil {
		return err
	}
	var bad []error
	for _, r := range results {
		if r.Err != "" || (r.Available && !r.OK()) {
			bad = append(bad, errors.New(r.String()))
		}
	}
	return errors.Join(bad...)
}
