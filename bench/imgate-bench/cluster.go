package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"imgate/bench/baseline"
	"imgate/bench/load"
	"imgate/bench/report"
	"imgate/client"
	"imgate/cluster/harness"
)

// cluster: three gateway processes on a three-server NATS cluster, all on
// this machine (cluster/harness starts them), measured three ways:
//
//   - fan-out: one room whose members are spread evenly over the three
//     nodes, pushed to through one node's admin port, against the same room
//     with the same members on one standalone node (same binary, no NATS).
//     Deliveries per CPU-second count every process of the system: the three
//     gateways and the three nats-servers (the gateways alone are reported
//     too); the ratio is cluster over single.
//   - SVID requests: clients on the three nodes sending uplinks as fast as
//     their answers come back, to two NATS echo backends (queue group), then
//     to an HTTP echo behind the route daemon.
//   - login storm: the members connect to the three nodes at once; the
//     registry's acknowledged writes per second until every login is in it.
func (b *bench) cluster() error {
	echoBin := b.o.echoBin
	if _, err := os.Stat(echoBin); err != nil {
		return fmt.Errorf("%s: %w (make build)", echoBin, err)
	}
	natsBin, err := baseline.BuildNATSServer(filepath.Dir(b.o.natsBin))
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "imgate-bench-cluster")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	c := harness.New(harness.Binaries{Imgate: b.o.gatewayBin, NATSServer: natsBin, Echo: echoBin}, dir)
	c.Liveness = 3 * time.Second
	defer c.Close()
	if err := c.StartNATS(3); err != nil {
		return err
	}
	for i := 1; i <= 3; i++ {
		// Bench members send no heartbeats; the storm's users are many.
		if _, err := c.StartGateway(fmt.Sprintf("gw%d", i), fmt.Sprintf("r%d", i), `heartbeat_interval = "10m"`); err != nil {
			return err
		}
	}
	b.progress.Done("cluster: 3 nats-server and 3 gateway processes up")
	if err := b.clusterFanout(c); err != nil {
		return fmt.Errorf("fan-out: %w", err)
	}
	if err := b.clusterSVID(c); err != nil {
		return fmt.Errorf("svid: %w", err)
	}
	return b.clusterStorm(c)
}

func targetOf(c *harness.Cluster, g *harness.Gateway) load.Target {
	return load.Target{TCP: g.Addr(), Admin: fmt.Sprintf("127.0.0.1:%d", g.Admin), HTTP: fmt.Sprintf("127.0.0.1:%d", g.HTTP), Key: c.Key}
}

// pidsCPU adds up the CPU time of processes.
func pidsCPU(pids []int) time.Duration {
	var sum time.Duration
	for _, p := range pids {
		d, _ := baseline.CPUTime(p)
		sum += d
	}
	return sum
}

// openSpread opens n members spread evenly over targets (global indexes
// from first), in generator processes so that the bench process keeps
// descriptors to spare.
func (b *bench) openSpread(targets []load.Target, n, first int, plan roomPlan, concurrency int, label string) (multiReceivers, error) {
	per := (n + len(targets) - 1) / len(targets)
	saved := b.o.perGenerator
	b.o.perGenerator = min(saved, max(per/2, 1))
	defer func() { b.o.perGenerator = saved }()
	parts := make(multiReceivers, len(targets))
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for k, t := range targets {
		spec := openSpec{Target: t, Transport: "tcp", First: first + k*per, N: min(per, n-k*per), Plan: plan, Concurrency: concurrency}
		wg.Add(1)
		go func() {
			defer wg.Done()
			parts[k], errs[k] = b.open(spec, fmt.Sprintf("%s node %d", label, k+1))
		}()
	}
	wg.Wait()
	for k, err := range errs {
		if err != nil {
			parts.Close()
			return nil, fmt.Errorf("node %d: %w", k+1, err)
		}
	}
	return parts, nil
}

// multiReceivers adds up receivers on several nodes.
type multiReceivers []receivers

func (m multiReceivers) Begin(first uint64) {
	for _, r := range m {
		if r != nil {
			r.Begin(first)
		}
	}
}

func (m multiReceivers) Received() int64 {
	var n int64
	for _, r := range m {
		n += r.Received()
	}
	return n
}

func (m multiReceivers) WaitTotal(total int64, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for m.Received() < total {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

func (m multiReceivers) ResultTotal(total int64) load.Outcome {
	var o load.Outcome
	for _, r := range m {
		p := r.ResultTotal(0)
		o.Received += p.Received
		o.Duplicated += p.Duplicated
		o.Reordered += p.Reordered
	}
	o.Expected = total
	o.Lost = max(0, total-(o.Received-o.Duplicated))
	return o
}

func (m multiReceivers) Latency() *report.Histogram {
	h := report.NewHistogram()
	for _, r := range m {
		h.Merge(r.Latency())
	}
	return h
}

func (m multiReceivers) AuthTime() *report.Histogram {
	h := report.NewHistogram()
	for _, r := range m {
		h.Merge(r.AuthTime())
	}
	return h
}

func (m multiReceivers) Dropped() int64 {
	var n int64
	for _, r := range m {
		n += r.Dropped()
	}
	return n
}

func (m multiReceivers) Close() {
	for _, r := range m {
		if r != nil {
			r.Close()
		}
	}
}

func (b *bench) clusterFanout(c *harness.Cluster) error {
	m := b.o.clusterMembers
	rate := b.o.clusterRate
	count := max(int(rate*b.o.stepTime.Seconds()*2), 20)
	payload := make([]byte, 128)
	plan := roomPlan{Kind: "fanout", Small: 0}

	// The same room on one standalone node first.
	single, err := b.startGateway()
	if err != nil {
		return err
	}
	rx, err := b.openSpread([]load.Target{single.target}, m, 0, plan, 0, "single")
	if err != nil {
		single.stop()
		return err
	}
	sys := system{name: "single node", rx: rx, cpu: single.cpu,
		publish: func(seq uint64) { load.Stamp(payload, seq); single.admin.RoomPush("fan", payload) },
		flush:   func() { single.admin.Flush() }}
	one := b.run(sys, rate, count, m, 0)
	rx.Close()
	single.stop()

	var targets []load.Target
	for _, g := range c.Gateways {
		targets = append(targets, targetOf(c, g))
	}
	rx, err = b.openSpread(targets, m, 0, plan, 0, "cluster")
	if err != nil {
		return err
	}
	defer rx.Close()
	admin, err := load.DialAdmin(targets[0].Admin, "")
	if err != nil {
		return err
	}
	defer admin.Close()
	gws, natsPids := c.Pids()
	all := append(append([]int(nil), gws...), natsPids...)
	// Warm up: every node's subscription to the room is in place.
	warm := system{name: "cluster warm-up", rx: rx, cpu: func() time.Duration { return pidsCPU(all) },
		publish: func(seq uint64) { load.Stamp(payload, seq); admin.RoomPush("fan", payload) },
		flush:   func() { admin.Flush() }}
	b.run(warm, 5, 5, m, 1_000_000)
	gw0 := pidsCPU(gws)
	st := b.run(warm, rate, count, m, 2_000_000)
	gwCPU := pidsCPU(gws) - gw0

	r := b.results
	r.Set("single_fanout_deliveries_per_cpu_s", one.deliveriesPerCPU())
	r.Set("single_fanout_p99_ms", ms(one.q(99)))
	r.Set("cluster_fanout_deliveries_per_cpu_s", st.deliveriesPerCPU())
	if gwCPU > 0 {
		r.Set("cluster_fanout_deliveries_per_gateway_cpu_s", float64(st.out.Received)/gwCPU.Seconds())
	}
	r.Set("cluster_fanout_p50_ms", ms(st.q(50)))
	r.Set("cluster_fanout_p99_ms", ms(st.q(99)))
	if one.deliveriesPerCPU() > 0 {
		r.Set("cluster_vs_single_fanout_ratio", st.deliveriesPerCPU()/one.deliveriesPerCPU())
	}
	r.Set("cluster_fanout_members", float64(m))
	r.Set("cluster_fanout_rate", rate)
	r.Set("cluster_fanout_lost", float64(st.out.Lost))
	b.addCDF(cdf(fmt.Sprintf("one node: %d members, %.0f msg/s", m, rate), one.lat),
		cdf(fmt.Sprintf("3 nodes: %d members, %.0f msg/s", m, rate), st.lat))
	b.row("cluster fanout", "deliveries/CPU-s", st.deliveriesPerCPU(), 0, 0)
	b.row("cluster fanout", "p99 ms", ms(st.q(99)), 0, 0)
	b.row("single fanout", "deliveries/CPU-s", one.deliveriesPerCPU(), 0, 0)
	b.row("single fanout", "p99 ms", ms(one.q(99)), 0, 0)
	if !st.passed() || !one.passed() {
		return fmt.Errorf("lost, duplicated or slow: cluster %v; single %v", st, one)
	}
	return nil
}

// requestLoad runs conns clients (spread over the nodes), each with
// workers goroutines sending uplinks to svid back to back for d.
func (b *bench) requestLoad(c *harness.Cluster, svid uint32, conns, workers int, d time.Duration, label string) (perSec float64, lat *report.Histogram, errs int64, err error) {
	var clients []*client.Client
	defer func() {
		for _, cl := range clients {
			cl.Close()
		}
	}()
	for i := range conns {
		g := c.Gateways[i%len(c.Gateways)]
		tok, err := c.Token(fmt.Sprintf("req-%d", i), "bench")
		if err != nil {
			return 0, nil, 0, err
		}
		cfg := client.DefaultConfig()
		cfg.Endpoints = []string{"tcp://" + g.Addr()}
		cfg.Token = tok
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cl, err := client.Dial(ctx, cfg)
		cancel()
		if err != nil {
			return 0, nil, 0, err
		}
		clients = append(clients, cl)
	}
	lat = report.NewHistogram()
	var ok, failed atomic.Int64
	payload := make([]byte, 64)
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for _, cl := range clients {
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) {
					t0 := time.Now()
					_, err := cl.Request(context.Background(), svid, payload)
					if err != nil {
						failed.Add(1)
						continue
					}
					lat.Record(time.Since(t0))
					ok.Add(1)
				}
			}()
		}
	}
	start := time.Now()
	wg.Wait()
	perSec = float64(ok.Load()) / time.Since(start).Seconds()
	b.progress.Done("%s: %d requests in %v (%.0f/s), %d errors, p50 %.2fms p99 %.2fms", label, ok.Load(), d, perSec, failed.Load(), ms(lat.Quantile(50)), ms(lat.Quantile(99)))
	return perSec, lat, failed.Load(), nil
}

func (b *bench) clusterSVID(c *harness.Cluster) error {
	for _, name := range []string{"echo-1", "echo-2"} {
		if _, err := c.StartEcho(name, 2); err != nil {
			return err
		}
	}
	_, url, err := c.StartHTTPEcho("http-echo")
	if err != nil {
		return err
	}
	if _, err := c.StartRoute("route-1", fmt.Sprintf("[[route.svid]]\nsvid = 3\nurl = %q\nconcurrency = 512\ntimeout = \"3s\"\n", url)); err != nil {
		return err
	}
	const conns, workers = 30, 4
	d := 2 * b.o.stepTime
	natsRate, natsLat, natsErrs, err := b.requestLoad(c, 2, conns, workers, d, "svid over NATS")
	if err != nil {
		return err
	}
	httpRate, httpLat, httpErrs, err := b.requestLoad(c, 3, conns, workers, d, "svid over the HTTP bridge")
	if err != nil {
		return err
	}
	r := b.results
	r.Set("svid_nats_req_per_s", natsRate)
	r.Set("svid_nats_p50_ms", ms(natsLat.Quantile(50)))
	r.Set("svid_nats_p99_ms", ms(natsLat.Quantile(99)))
	r.Set("svid_nats_errors", float64(natsErrs))
	r.Set("svid_http_req_per_s", httpRate)
	r.Set("svid_http_p50_ms", ms(httpLat.Quantile(50)))
	r.Set("svid_http_p99_ms", ms(httpLat.Quantile(99)))
	r.Set("svid_http_errors", float64(httpErrs))
	r.Set("svid_in_flight", conns*workers)
	b.addCDF(cdf("svid over NATS", natsLat), cdf("svid over the HTTP bridge", httpLat))
	b.row("svid nats", "req/s", natsRate, 0, 0)
	b.row("svid nats", "p99 ms", ms(natsLat.Quantile(99)), 0, 0)
	b.row("svid http", "req/s", httpRate, 0, 0)
	b.row("svid http", "p99 ms", ms(httpLat.Quantile(99)), 0, 0)
	if natsErrs+httpErrs > 0 {
		return fmt.Errorf("%d NATS and %d HTTP requests failed", natsErrs, httpErrs)
	}
	return nil
}

// registryWrites sums the nodes' acknowledged registry writes.
func registryWrites(c *harness.Cluster) float64 {
	var sum float64
	for _, g := range c.Gateways {
		if info, err := g.Info(); err == nil {
			v, _ := info["registry_writes"].(float64)
			sum += v
		}
	}
	return sum
}

func (b *bench) clusterStorm(c *harness.Cluster) error {
	n := b.o.members
	var targets []load.Target
	for _, g := range c.Gateways {
		targets = append(targets, targetOf(c, g))
	}
	gws, natsPids := c.Pids()
	rss := func(pids []int) int64 {
		var sum int64
		for _, p := range pids {
			v, _ := baseline.RSS(p)
			sum += v
		}
		return sum
	}
	gwRSS0, natsRSS0 := rss(gws), rss(natsPids)
	w0 := registryWrites(c)
	start := time.Now()
	var peak float64
	var lastAuth time.Duration
	done := make(chan struct{})
	sampled := make(chan time.Duration)
	go func() {
		// Every 100ms: the writes so far, until all n are in.
		prev, prevAt := w0, start
		for {
			time.Sleep(100 * time.Millisecond)
			w, now := registryWrites(c), time.Now()
			if rate := (w - prev) / now.Sub(prevAt).Seconds(); rate > peak {
				peak = rate
			}
			prev, prevAt = w, now
			if w-w0 >= float64(n) {
				sampled <- now.Sub(start)
				return
			}
			select {
			case <-done:
				sampled <- 0
				return
			default:
			}
		}
	}()
	rx, err := b.openSpread(targets, n, 100_000, roomPlan{Kind: "none"}, 1000, "storm")
	lastAuth = time.Since(start)
	if err != nil {
		close(done)
		<-sampled
		return err
	}
	defer rx.Close()
	var allIn time.Duration
	select {
	case allIn = <-sampled:
	case <-time.After(60 * time.Second):
		close(done)
		allIn = <-sampled
	}
	if allIn == 0 {
		return fmt.Errorf("registry writes: %.0f of %d after 60s", registryWrites(c)-w0, n)
	}
	// What an idle connection of a cluster node costs: its session, its
	// user's two bus subscriptions, its registry entry (the gateways), and
	// the subscriptions' share of the NATS servers.
	time.Sleep(2 * time.Second)
	gwPer := float64(rss(gws)-gwRSS0) / float64(n)
	natsPer := float64(rss(natsPids)-natsRSS0) / float64(n)
	r := b.results
	r.Set("cluster_idle_gateway_bytes_per_conn", gwPer)
	r.Set("cluster_idle_nats_bytes_per_conn", natsPer)
	b.progress.Done("after the storm: gateway RSS +%.0f bytes per connection, nats-servers +%.0f", gwPer, natsPer)
	r.Set("registry_writes_per_s", float64(n)/allIn.Seconds())
	r.Set("registry_writes_peak_per_s", peak)
	r.Set("registry_storm_logins_per_s", float64(n)/lastAuth.Seconds())
	r.Set("registry_storm_lag_ms", ms(max(allIn-lastAuth, 0)))
	r.Set("registry_storm_clients", float64(n))
	b.progress.Done("login storm: %d clients on 3 nodes in %.2fs (%.0f/s); registry holds them all after %.2fs: %.0f writes/s (peak %.0f/s over 100ms)",
		n, lastAuth.Seconds(), float64(n)/lastAuth.Seconds(), allIn.Seconds(), float64(n)/allIn.Seconds(), peak)
	b.row("cluster storm", "registry writes/s", float64(n)/allIn.Seconds(), 0, 0)
	b.row("cluster storm", "logins/s", float64(n)/lastAuth.Seconds(), 0, 0)
	return nil
}
