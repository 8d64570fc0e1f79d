package main

import (
	"fmt"
	"strings"
	"time"

	"imgate/bench/load"
)

// udpscale: past the descriptor limit. One gateway process holds N KCP
// sessions and N QUIC connections at once (UDP sockets are shared, so
// neither counts against the 20,000 descriptors), all authenticated and in
// rooms; then a room push per transport (deliveries per gateway CPU-second,
// p99) and one push to a room of all 2N, checked for loss and order.
func (b *bench) udpScale() error {
	n := b.o.udpMembers
	g, err := b.startGateway()
	if err != nil {
		return err
	}
	defer g.stop()
	time.Sleep(2 * time.Second)
	rss0 := g.rss()
	r := b.results

	kcpRx, err := b.open(openSpec{Target: g.target, Transport: "kcp", KCPPreset: b.o.kcpPreset, Retries: 2, N: n, Plan: roomPlan{Kind: "udp-kcp"}}, "kcp")
	if err != nil {
		return fmt.Errorf("kcp members: %w", err)
	}
	defer func() { kcpRx.Close() }()
	time.Sleep(3 * time.Second)
	rss1 := g.rss()
	perKCP := float64(rss1-rss0) / float64(n)
	b.progress.Done("kcp: %d sessions, %.0f bytes each (gateway RSS); held: %.0f", n, perKCP, g.info()["connections_kcp"])

	// UIDs of the QUIC members start past the KCP ones.
	// Fewer handshakes in flight per generator: each costs milliseconds of
	// CPU on both ends, and the cores are shared.
	quicRx, err := b.open(openSpec{Target: g.target, Transport: "quic", First: n, N: n, Concurrency: 16, Retries: 2, Plan: roomPlan{Kind: "udp-quic"}}, "quic")
	if err != nil {
		return fmt.Errorf("quic members: %w", err)
	}
	defer func() { quicRx.Close() }()
	time.Sleep(3 * time.Second)
	rss2 := g.rss()
	perQUIC := float64(rss2-rss1) / float64(n)
	info := g.info()
	heldKCP, heldQUIC := info["connections_kcp"], info["connections_quic"]
	b.progress.Done("quic: %d connections, %.0f bytes each; held now: kcp %.0f, quic %.0f", n, perQUIC, heldKCP, heldQUIC)
	r.Set("idle_bytes_per_session_kcp", perKCP)
	r.Set("idle_bytes_per_conn_quic", perQUIC)
	r.Set("udp_sessions_held_kcp", heldKCP)
	r.Set("udp_conns_held_quic", heldQUIC)
	r.Set("udp_redials_kcp", float64(kcpRx.Redials()))
	r.Set("udp_redials_quic", float64(quicRx.Redials()))
	b.progress.Done("members dialled again after a failed or stalled attempt: kcp %d, quic %d", kcpRx.Redials(), quicRx.Redials())

	payload := make([]byte, 128)
	var seq uint64
	var failures []string
	// QUIC costs quic-go tens of microseconds of CPU per delivery (a packet
	// sealed and paced per connection), so on two shared cores a push to
	// 50,000 QUIC connections takes seconds: QUIC's pushes are spaced
	// further apart, each measured to its last delivery.
	for _, tr := range []struct {
		name  string
		rx    receivers
		every time.Duration
	}{{"kcp", kcpRx, time.Second}, {"quic", quicRx, b.o.udpQUICEvery}} {
		room := tr.name
		sys := system{name: "imgate " + tr.name, rx: tr.rx,
			publish: func(s uint64) { load.Stamp(payload, s); g.admin.RoomPush(room, payload) },
			flush:   func() { g.admin.Flush() },
			cpu:     g.cpu,
			wait:    max(5*time.Second, 3*tr.every)}
		st := b.run(sys, 1/tr.every.Seconds(), b.o.udpMessages, n, seq)
		seq += uint64(b.o.udpMessages)
		b.progress.Done("%s room of %d: %v", tr.name, n, st)
		r.Set("fanout_deliveries_per_cpu_s_"+tr.name, st.deliveriesPerCPU())
		r.Set("fanout_p99_ms_"+tr.name, ms(st.q(99)))
		r.Set("fanout_p50_ms_"+tr.name, ms(st.q(50)))
		b.addCDF(cdf(fmt.Sprintf("imgate 1 msg/s into %d %s", n, tr.name), st.lat))
		if !st.out.OK() || st.dropped > 0 {
			failures = append(failures, fmt.Sprintf("%s: %v", tr.name, st))
		}
	}

	// One room of everyone: every member of both transports gets it.
	both := multiReceivers{kcpRx, quicRx}
	sys := system{name: "imgate kcp+quic", rx: both,
		publish: func(s uint64) { load.Stamp(payload, s); g.admin.RoomPush("all", payload) },
		flush:   func() { g.admin.Flush() },
		cpu:     g.cpu,
		wait:    max(5*time.Second, 3*b.o.udpQUICEvery)}
	st := b.run(sys, 1/b.o.udpQUICEvery.Seconds(), 2, 2*n, seq)
	b.progress.Done("room of all %d: %v", 2*n, st)
	r.Set("udp_all_room_delivered", float64(st.out.Received))
	r.Set("udp_all_room_lost", float64(st.out.Lost))
	r.Set("udp_all_room_p99_ms", ms(st.q(99)))
	if !st.out.OK() || st.dropped > 0 {
		failures = append(failures, fmt.Sprintf("all: %v", st))
	}
	b.row("udpscale", fmt.Sprintf("bytes/session kcp @%d", n), perKCP, 0, 0)
	b.row("udpscale", fmt.Sprintf("bytes/conn quic @%d", n), perQUIC, 0, 0)
	b.row("udpscale", "kcp deliveries/CPU-s", b.get("fanout_deliveries_per_cpu_s_kcp"), 0, 0)
	b.row("udpscale", "quic deliveries/CPU-s", b.get("fanout_deliveries_per_cpu_s_quic"), 0, 0)
	b.row("udpscale", "kcp p99 ms", b.get("fanout_p99_ms_kcp"), 0, 0)
	b.row("udpscale", "quic p99 ms", b.get("fanout_p99_ms_quic"), 0, 0)
	if len(failures) > 0 {
		return fmt.Errorf("udp scale: %s", strings.Join(failures, "; "))
	}
	return nil
}

// Redials adds up the sets' redials (multiReceivers is in cluster.go).
func (m multiReceivers) Redials() (n int64) {
	for _, r := range m {
		n += r.Redials()
	}
	return n
}
