package main

import (
	"fmt"
	"math/rand/v2"
	"time"

	"imgate/bench/baseline"
	"imgate/bench/load"
	"imgate/bench/report"
)

// idle: gateway RSS above the empty process, per connection, at each size,
// for each --idle-transports kind (tcp, ws, quic); the same for nats-server
// at the largest size.
func (b *bench) idle() error {
	var largest int
	for _, tr := range b.o.idleKinds {
		series := report.Series{Name: "imgate " + tr}
		for _, n := range b.o.sizes {
			per, kernel, err := b.idleOnce(tr, n)
			if err != nil {
				return err
			}
			series.Points = append(series.Points, report.Point{X: float64(n), Y: per})
			b.results.Set(fmt.Sprintf("idle_bytes_per_conn_%s_%d", tr, n), per)
			if n >= largest {
				largest = n
				b.results.Set("idle_bytes_per_conn_"+tr, per) // idle_bytes_per_conn_quic with --idle-transports quic
				if tr == "tcp" {
					b.results.Set("kernel_bytes_per_conn_tcp", kernel)
				}
				if tr == "kcp" {
					b.results.Set("idle_bytes_per_session_kcp", per)
				}
			}
		}
		b.charts.memory = append(b.charts.memory, series)
	}
	var natsPer float64
	if b.o.nats && largest > 0 {
		per, err := b.natsIdle(largest)
		if err != nil {
			return fmt.Errorf("nats idle: %w", err)
		}
		natsPer = per
		b.results.Set("nats_idle_bytes_per_conn", per)
		b.charts.memory = append(b.charts.memory, report.Series{Name: "nats-server", Points: []report.Point{{X: float64(largest), Y: per}}})
	}
	b.row("idle", fmt.Sprintf("bytes/conn tcp @%d", largest), b.get("idle_bytes_per_conn_tcp"), natsPer, 0)
	b.row("idle", fmt.Sprintf("bytes/conn ws @%d", largest), b.get("idle_bytes_per_conn_ws"), natsPer, 0)
	b.row("idle", fmt.Sprintf("bytes/conn quic @%d", largest), b.get("idle_bytes_per_conn_quic"), natsPer, 0)
	return nil
}

func (b *bench) idleOnce(transport string, n int) (perConn, kernelPerConn float64, err error) {
	g, err := b.startGateway()
	if err != nil {
		return 0, 0, err
	}
	defer g.stop()
	time.Sleep(2 * time.Second)
	rss0, kernel0, slab0 := g.rss(), baseline.TCPMemPages(), baseline.SlabBytes()
	m, err := b.open(openSpec{Target: g.target, Transport: transport, KCPPreset: b.o.kcpPreset, N: n, Plan: roomPlan{Kind: "idle"}}, "idle "+transport)
	if err != nil {
		return 0, 0, err
	}
	defer m.Close()
	time.Sleep(3 * time.Second)
	perConn = float64(g.rss()-rss0) / float64(n)
	kernelPerConn = float64(baseline.TCPMemPages()-kernel0) * 4096 / float64(2*n) // both ends are on this host
	// Socket structures (sock, inode, file, epoll item...) live in slab
	// caches, not in sockstat's buffer pages; both ends are on this host.
	slabPerConn := float64(baseline.SlabBytes()-slab0) / float64(2*n)
	b.results.Set(fmt.Sprintf("kernel_slab_bytes_per_conn_%s_%d", transport, n), slabPerConn)
	b.progress.Done("idle %s: %d connections, %.0f bytes each (kernel buffers %.0f, slab %.0f)", transport, n, perConn, kernelPerConn, slabPerConn)
	return perConn, kernelPerConn, nil
}

func (b *bench) natsIdle(n int) (float64, error) {
	srv, err := b.startNATS()
	if err != nil {
		return 0, err
	}
	defer srv.Stop()
	time.Sleep(2 * time.Second)
	rss0, _ := baseline.RSS(srv.PID)
	tr := load.NewTracker(n)
	subs, err := baseline.Subscribe(srv.URL, "idle", n, b.srcs, tr.Observe, func(k int) { b.progress.Update("nats idle: %d/%d", k, n) })
	if err != nil {
		return 0, err
	}
	defer subs.Close()
	subs.Flush()
	time.Sleep(3 * time.Second)
	rss1, _ := baseline.RSS(srv.PID)
	per := float64(rss1-rss0) / float64(n)
	b.progress.Done("nats idle: %d connections, %.0f bytes each", n, per)
	return per, nil
}

// storm: M clients connect and authenticate together.
func (b *bench) storm() error {
	g, err := b.startGateway()
	if err != nil {
		return err
	}
	defer g.stop()
	n := b.o.members
	start := time.Now()
	m, err := b.open(openSpec{Target: g.target, Transport: "tcp", N: n, Concurrency: 1000}, "storm")
	if err != nil {
		return err
	}
	wall := time.Since(start)
	defer m.Close()
	rate := float64(n) / wall.Seconds()
	b.results.Set("connect_auth_per_s", rate)
	b.results.Set("storm_p99_ms", ms(m.AuthTime().Quantile(99)))
	b.progress.Done("storm: %d connections in %.2fs: %.0f/s, p99 connect-to-AUTH_OK %.0f ms", n, wall.Seconds(), rate, ms(m.AuthTime().Quantile(99)))
	b.row("storm", "connects+auth/s", rate, 0, 0)
	b.row("storm", "p99 to AUTH_OK ms", ms(m.AuthTime().Quantile(99)), 0, 0)
	return nil
}

// rooms: M connections in rooms of 20; messages to random rooms at rising
// rates. Each room keeps its own sequence, so every member checks order.
func (b *bench) rooms() error {
	g, err := b.startGateway()
	if err != nil {
		return err
	}
	defer g.stop()
	const size = 20
	n := b.o.members / size * size
	rooms := n / size
	m, err := b.open(openSpec{Target: g.target, Transport: "tcp", N: n, Plan: roomPlan{Kind: "groups", Size: size}}, "rooms")
	if err != nil {
		return err
	}
	defer m.Close()
	b.progress.Done("rooms: %d members in %d rooms of %d", n, rooms, size)
	roomSeq := make([]uint64, rooms)
	names := make([]string, rooms)
	for i := range names {
		names[i] = fmt.Sprintf("g%d", i)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	payload := make([]byte, 128)
	sys := system{name: "imgate rooms", rx: m,
		publish: func(uint64) {
			k := rng.IntN(rooms)
			load.Stamp(payload, roomSeq[k])
			roomSeq[k]++
			g.admin.RoomPush(names[k], payload)
		},
		flush: func() { g.admin.Flush() }, cpu: g.cpu}
	r := &report.Ramp{Start: 50, Factor: 2, Max: b.o.maxRate * 4, Precision: 0.15, MaxSteps: 10}
	var best step
	for {
		rate, ok := r.Next()
		if !ok {
			break
		}
		clear(roomSeq)
		count := max(int(rate*b.o.stepTime.Seconds()), 10)
		st := b.run(sys, rate, count, size, 0)
		r.Report(rate, st.passed())
		if st.passed() && st.rate > best.rate {
			best = st
		}
		if !st.passed() {
			break // members were cut or messages lost: the rest would measure the reconnect
		}
	}
	b.results.Set("rooms_max_rate", best.rate)
	b.results.Set("rooms_deliveries_per_cpu_s", best.deliveriesPerCPU())
	if best.lat != nil {
		b.results.Set("rooms_p99_ms", ms(best.q(99)))
		b.addCDF(cdf(fmt.Sprintf("imgate rooms of 20, %.0f msg/s", best.rate), best.lat))
	}
	b.row("rooms", "max msg/s (rooms of 20)", best.rate, 0, 0)
	b.row("rooms", "deliveries/CPU-s", best.deliveriesPerCPU(), 0, 0)
	return nil
}

// unicast: pushes to random single users through the HTTP API and the admin
// port at rising rates. Each user keeps its own sequence.
func (b *bench) unicast() error {
	g, err := b.startGateway()
	if err != nil {
		return err
	}
	defer g.stop()
	n := b.o.members
	m, err := b.open(openSpec{Target: g.target, Transport: "tcp", N: n}, "unicast")
	if err != nil {
		return err
	}
	defer m.Close()
	b.progress.Done("unicast: %d users online", n)
	userSeq := make([]uint64, n)
	uids := make([]string, n)
	for i := range uids {
		uids[i] = fmt.Sprintf("b%d", i)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	httpPush := load.NewHTTPPusher(g.target.HTTP)
	// HTTP calls run on workers chosen by user, so one user's pushes stay in order.
	const workers = 8
	queues := make([]chan []byte, workers)
	done := make(chan struct{})
	for w := range queues {
		queues[w] = make(chan []byte, 1024)
		go func(q chan []byte) {
			for msg := range q {
				u := int(msg[len(msg)-4])<<24 | int(msg[len(msg)-3])<<16 | int(msg[len(msg)-2])<<8 | int(msg[len(msg)-1])
				httpPush.Push(uids[u], msg[:128])
			}
			done <- struct{}{}
		}(queues[w])
	}
	defer func() {
		for _, q := range queues {
			close(q)
		}
		for range queues {
			<-done
		}
	}()
	payload := make([]byte, 128)
	pick := func() int {
		u := rng.IntN(n)
		load.Stamp(payload, userSeq[u])
		userSeq[u]++
		return u
	}
	viaHTTP := system{name: "unicast http", rx: m, cpu: g.cpu,
		publish: func(uint64) {
			u := pick()
			msg := append(append(make([]byte, 0, 132), payload...), byte(u>>24), byte(u>>16), byte(u>>8), byte(u))
			queues[u%workers] <- msg
		}}
	viaAdmin := system{name: "unicast admin", rx: m, cpu: g.cpu,
		publish: func(uint64) { u := pick(); g.admin.Push(uids[u], payload) },
		flush:   func() { g.admin.Flush() }}
	for _, sys := range []struct {
		key string
		sys system
	}{{"unicast", viaHTTP}, {"unicast_admin", viaAdmin}} {
		r := &report.Ramp{Start: 200, Factor: 2, Max: 50000, Precision: 0.15, MaxSteps: 10}
		var best step
		for {
			rate, ok := r.Next()
			if !ok {
				break
			}
			clear(userSeq)
			count := max(int(rate*b.o.stepTime.Seconds()), 10)
			st := b.run(sys.sys, rate, count, 1, 0)
			r.Report(rate, st.passed())
			if st.passed() && st.rate > best.rate {
				best = st
			}
			if !st.passed() {
				break
			}
		}
		b.results.Set(sys.key+"_max_rate", best.rate)
		b.results.Set(sys.key+"_per_cpu_s", best.deliveriesPerCPU())
		if best.lat != nil {
			b.results.Set(sys.key+"_p99_ms", ms(best.q(99)))
			b.addCDF(cdf(fmt.Sprintf("imgate %s, %.0f/s", sys.sys.name, best.rate), best.lat))
		}
		b.row(sys.key, "max pushes/s", best.rate, 0, 0)
		b.row(sys.key, "pushes/CPU-s", best.deliveriesPerCPU(), 0, 0)
	}
	return nil
}
