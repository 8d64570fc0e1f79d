package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"imgate/bench/baseline"
	"imgate/bench/report"
	"imgate/client"
	"imgate/cluster"
	"imgate/cluster/harness"
)

// drain: a node drained under traffic, in a cluster (cluster/harness: three
// nats-server and three gateway processes). Clients (the Go client library,
// as applications use it) sit on the node to drain, with the other two as
// their next endpoints; a publisher pushes to every one of them in rounds
// before, through and after a DRAIN. It reports where the clients went, how
// the reconnects spread over the period, each client's time between nodes,
// push latency before and during the drain, and checks that every client
// got every round once and in order (the hand-over of cluster/handoff.go).
func (b *bench) drain() error {
	natsBin, err := baseline.BuildNATSServer(filepath.Dir(b.o.natsBin))
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "imgate-bench-drain")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	c := harness.New(harness.Binaries{Imgate: b.o.gatewayBin, NATSServer: natsBin}, dir)
	defer c.Close()
	if err := c.StartNATS(3); err != nil {
		return err
	}
	period := b.o.drainPeriod
	gd, err := c.StartGateway("drained", "r1", fmt.Sprintf("drain_timeout = %q", period))
	if err != nil {
		return err
	}
	var others []*harness.Gateway
	for i := 1; i <= 2; i++ {
		g, err := c.StartGateway(fmt.Sprintf("gw%d", i), "r1")
		if err != nil {
			return err
		}
		others = append(others, g)
	}
	n := b.o.drainClients
	b.progress.Done("drain: 3 nats-server and 3 gateway processes up; connecting %d clients to the node to drain", n)

	cls, err := dialDrainClients(c, gd, others, n, b.progress)
	if err != nil {
		return err
	}
	defer func() {
		for _, m := range cls {
			m.cl.Close()
		}
	}()

	cfg := cluster.DefaultConfig()
	cfg.NATS = c.NATSURLs()
	paths, err := cluster.ConnectPaths(cfg, "drain-publisher", nil, nil)
	if err != nil {
		return err
	}
	defer paths.Close()
	pusher := cluster.NewPathPusher(paths, "")

	// Rounds every interval: before the drain, through it, and after.
	const interval = 500 * time.Millisecond
	before, after := 4, 6
	rounds := before + int(period/interval) + after
	var drained time.Time
	ctx := context.Background()
	for r := range rounds {
		if r == before {
			if err := gd.Do(ctx, "DRAIN", strconv.Itoa(int(period/time.Second))).Err(); err != nil {
				return fmt.Errorf("DRAIN: %w", err)
			}
			drained = time.Now()
		}
		at := time.Now()
		for i := range cls {
			payload := fmt.Sprintf("%d %d", r, time.Now().UnixNano())
			if err := pusher.User(cls[i].uid, cluster.Message{Payload: []byte(payload)}); err != nil {
				return fmt.Errorf("push: %w", err)
			}
		}
		moved := 0
		for _, m := range cls {
			if m.cl.NodeID() != "drained" {
				moved++
			}
		}
		b.progress.Update("drain: round %d/%d pushed; %d of %d clients moved", r+1, rounds, moved, n)
		time.Sleep(time.Until(at.Add(interval)))
	}
	// Let the last round arrive.
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) && !allHave(cls, rounds) {
		time.Sleep(50 * time.Millisecond)
	}

	var lost, dup, reordered, stayed int
	var firstBad string // the first loss or repeat, in detail
	var moves, gaps []time.Duration
	var latBefore, latDuring []time.Duration
	byNode := map[string]int{}
	drainEnd := drained.Add(period)
	for _, m := range cls {
		m.mu.Lock()
		seen := make([]int, rounds)
		last := -1
		for _, g := range m.got {
			if g.round < 0 || g.round >= rounds {
				continue
			}
			seen[g.round]++
			if g.round < last {
				reordered++
			}
			last = max(last, g.round)
			lat := g.at.Sub(g.sent)
			switch {
			case g.sent.Before(drained):
				latBefore = append(latBefore, lat)
			case g.sent.Before(drainEnd):
				latDuring = append(latDuring, lat)
			}
		}
		for round, k := range seen {
			switch {
			case k == 0:
				lost++
			case k > 1:
				dup += k - 1
			}
			if k != 1 && firstBad == "" {
				var at []string
				for _, g := range m.got {
					if g.round == round {
						at = append(at, fmt.Sprintf("%+.0fms on %s", ms(g.at.Sub(drained)), g.node))
					}
				}
				firstBad = fmt.Sprintf("%s round %d (published %+.0fms after DRAIN) received %d times at %v; the client left the drained node at %+.0fms",
					m.uid, round, ms(time.Duration(round-before)*interval), k, at, ms(m.movedAt.Sub(drained)))
			}
		}
		if !m.movedAt.IsZero() {
			moves = append(moves, m.movedAt.Sub(drained))
			gaps = append(gaps, m.gap)
		}
		m.mu.Unlock()
		node := m.cl.NodeID()
		byNode[node]++
		if node == "drained" {
			stayed++
		}
	}
	handed, unclaimed, shared := 0.0, 0.0, 0.0
	for _, g := range others {
		if info, err := g.Info(); err == nil {
			h, _ := info["handoff_delivered"].(float64)
			u, _ := info["handoff_unclaimed"].(float64)
			s, _ := info["handoff_shared"].(float64)
			handed += h
			unclaimed += u
			shared += s
		}
	}
	exited := harness.Wait(10*time.Second, gd.Exited) == nil

	slices.Sort(moves)
	slices.Sort(gaps)
	slices.Sort(latBefore)
	slices.Sort(latDuring)
	q := func(d []time.Duration, f float64) float64 {
		if len(d) == 0 {
			return 0
		}
		return ms(d[min(int(f*float64(len(d))), len(d)-1)])
	}
	r := b.results
	r.Set("drain_clients", float64(n))
	r.Set("drain_period_s", period.Seconds())
	r.Set("drain_rounds", float64(rounds))
	r.Set("drain_moved", float64(len(moves)))
	r.Set("drain_lost", float64(lost))
	r.Set("drain_duplicated", float64(dup))
	r.Set("drain_reordered", float64(reordered))
	r.Set("drain_handoff_delivered", handed)
	r.Set("drain_reconnect_first_ms", q(moves, 0))
	r.Set("drain_reconnect_median_ms", q(moves, 0.5))
	r.Set("drain_reconnect_last_ms", q(moves, 1))
	r.Set("drain_gap_p50_ms", q(gaps, 0.5))
	r.Set("drain_gap_p99_ms", q(gaps, 0.99))
	r.Set("drain_gap_max_ms", q(gaps, 1))
	r.Set("drain_latency_p50_ms_before", q(latBefore, 0.5))
	r.Set("drain_latency_p99_ms_before", q(latBefore, 0.99))
	r.Set("drain_latency_p50_ms_during", q(latDuring, 0.5))
	r.Set("drain_latency_p99_ms_during", q(latDuring, 0.99))
	b.progress.Done("drain %v of %d clients: moved %d (%v), stayed %d; reconnects after DRAIN first %.0fms, median %.0fms, last %.0fms; time between nodes p50 %.1fms p99 %.1fms max %.1fms",
		period, n, len(moves), byNode, stayed, q(moves, 0), q(moves, 0.5), q(moves, 1), q(gaps, 0.5), q(gaps, 0.99), q(gaps, 1))
	b.progress.Done("drain: %d rounds to each client: lost %d, repeated %d, out of order %d; %0.f pushes handed over, %0.f claims found no hold, %0.f found the user already connected; push latency p50/p99 before %.1f/%.1fms, during %.1f/%.1fms; drained node exited: %v",
		rounds, lost, dup, reordered, handed, unclaimed, shared, q(latBefore, 0.5), q(latBefore, 0.99), q(latDuring, 0.5), q(latDuring, 0.99), exited)
	b.row("drain", "clients moved", float64(len(moves)), 0, 0)
	b.row("drain", "pushes lost", float64(lost), 0, 0)

	// Reconnects per 250ms since the DRAIN: the spread the node imposes.
	const bucket = 250 * time.Millisecond
	counts := make([]float64, int(period/bucket)+8)
	for _, d := range moves {
		if i := int(d / bucket); i >= 0 && i < len(counts) {
			counts[i]++
		}
	}
	var pts []report.Point
	for i, v := range counts {
		pts = append(pts, report.Point{X: (float64(i) + 0.5) * bucket.Seconds(), Y: v})
	}
	chart := report.Chart{Title: fmt.Sprintf("Drain of %d clients over %v: reconnects to the other nodes", n, period),
		XLabel: "seconds since DRAIN", YLabel: "reconnects per 250 ms", Series: []report.Series{{Name: "reconnects", Points: pts}}}
	if err := chart.WriteSVG(filepath.Join(b.o.out, "drain_reconnects.svg")); err != nil {
		return err
	}
	if firstBad != "" {
		b.progress.Done("drain: first loss or repeat: %s", firstBad)
	}
	switch {
	case stayed > 0:
		return fmt.Errorf("%d clients still on the drained node", stayed)
	case lost+dup+reordered > 0:
		return fmt.Errorf("pushes lost %d, repeated %d, out of order %d", lost, dup, reordered)
	}
	return nil
}

// drainClient is one client of the drain scenario.
type drainClient struct {
	uid string
	cl  *client.Client

	mu      sync.Mutex
	got     []drainPush
	lostAt  time.Time     // when the drained node closed it
	movedAt time.Time     // when it was connected again
	gap     time.Duration // between the two
}

type drainPush struct {
	round    int
	sent, at time.Time
	node     string // the client's node when it arrived (for the diagnosis of a repeat)
}

func dialDrainClients(c *harness.Cluster, gd *harness.Gateway, others []*harness.Gateway, n int, progress *report.Progress) ([]*drainClient, error) {
	ms := make([]*drainClient, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	var mu sync.Mutex
	done := 0
	for i := range n {
		m := &drainClient{uid: fmt.Sprintf("drain-%d", i)}
		ms[i] = m
		tok, err := c.Token(m.uid, "phone")
		if err != nil {
			return nil, err
		}
		cfg := client.DefaultConfig()
		cfg.Token = tok
		cfg.Endpoints = []string{"tcp://" + gd.Addr(), "tcp://" + others[i%2].Addr(), "tcp://" + others[(i+1)%2].Addr()}
		cfg.OnPush = func(p client.Push) {
			now := time.Now()
			round, sent, _ := strings.Cut(string(p.Payload), " ")
			rn, _ := strconv.Atoi(round)
			ns, _ := strconv.ParseInt(sent, 10, 64)
			var node string
			if m.cl != nil {
				node = m.cl.NodeID()
			}
			m.mu.Lock()
			m.got = append(m.got, drainPush{rn, time.Unix(0, ns), now, node})
			m.mu.Unlock()
		}
		cfg.OnState = func(st client.State, _ error) {
			now := time.Now()
			m.mu.Lock()
			defer m.mu.Unlock()
			switch {
			case st == client.StateDisconnected && m.lostAt.IsZero():
				m.lostAt = now
			case st == client.StateConnected && !m.lostAt.IsZero() && m.movedAt.IsZero():
				m.movedAt, m.gap = now, now.Sub(m.lostAt)
			}
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			m.cl, errs[i] = client.Dial(ctx, cfg)
			mu.Lock()
			done++
			if done%500 == 0 {
				progress.Update("drain: %d of %d clients connected", done, n)
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			for _, m := range ms {
				if m.cl != nil {
					m.cl.Close()
				}
			}
			return nil, fmt.Errorf("client %d: %w", i, err)
		}
	}
	return ms, nil
}

// allHave reports whether every client has received rounds pushes.
func allHave(ms []*drainClient, rounds int) bool {
	for _, m := range ms {
		m.mu.Lock()
		k := len(m.got)
		m.mu.Unlock()
		if k < rounds {
			return false
		}
	}
	return true
}
