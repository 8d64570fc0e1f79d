package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"imgate/bench/baseline"
	"imgate/bench/load"
	"imgate/bench/report"
)

// fanout: one room of M members, 128-byte payloads: 1 msg/s, then 100 msg/s
// into a smaller room, then a rising rate until delivery falls behind. The
// floor and nats-server run the same steps over the same number of sockets.
func (b *bench) fanout() error {
	m := b.o.members
	var nats step
	if b.o.floor {
		if _, err := b.floorFanout(m); err != nil {
			return fmt.Errorf("floor: %w", err)
		}
	}
	one, err := b.imgateFanout("tcp", m)
	if err != nil {
		return err
	}
	if b.o.nats {
		if nats, err = b.natsFanout(m); err != nil {
			return fmt.Errorf("nats: %w", err)
		}
	}
	natsP99 := 0.0
	if nats.lat != nil {
		natsP99 = ms(nats.q(99))
	}
	b.row("fanout1", "p99 ms", ms(one.q(99)), natsP99, b.get("floor_round_ms"))
	b.row("fanout1", "deliveries/CPU-s", one.deliveriesPerCPU(), nats.deliveriesPerCPU(), b.get("floor_deliveries_per_cpu_s"))
	b.row("fanout", "max rate msg/s", b.get("fanout_max_rate"), b.get("nats_fanout_max_rate"), 0)
	b.row("fanout", "deliveries/CPU-s at max", b.get("fanout_deliveries_per_cpu_s"), b.get("nats_fanout_deliveries_per_cpu_s"), 0)
	if q := b.o.quicMembers; q > 0 && (b.o.remote.TCP == "" || b.o.remote.QUIC != "") {
		// The same steps over QUIC, at a size a QUIC load generator on the
		// same cores can read (each member is a quic-go connection).
		if _, err := b.imgateFanout("quic", q); err != nil {
			return fmt.Errorf("quic: %w", err)
		}
		b.row("fanout1 quic", fmt.Sprintf("p99 ms @%d", q), b.get("fanout1_p99_ms_quic"), 0, 0)
		b.row("fanout1 quic", "deliveries/CPU-s", b.get("fanout1_deliveries_per_cpu_s_quic"), 0, 0)
		b.row("fanout quic", "max rate msg/s", b.get("fanout_max_rate_quic"), 0, 0)
		b.row("fanout quic", "deliveries/CPU-s at max", b.get("fanout_deliveries_per_cpu_s_quic"), 0, 0)
	}
	return nil
}

// imgateFanout runs the fan-out steps with m members over transport (tcp or
// quic). Results for quic carry the suffix _quic.
func (b *bench) imgateFanout(transport string, m int) (step, error) {
	n, err := b.startGateway()
	if err != nil {
		return step{}, err
	}
	defer n.stop()
	name, suffix := "imgate", ""
	if transport != "tcp" {
		name, suffix = "imgate "+transport, "_"+transport
	}
	small := min(b.o.small, m)
	spec := openSpec{Target: n.target, Transport: transport, N: m, Plan: roomPlan{Kind: "fanout", Small: small}}
	rx, err := b.open(spec, name)
	if err != nil {
		return step{}, err
	}
	defer func() { rx.Close() }()
	b.progress.Done("%s: %d members in room fan, %d of them in fan-small", name, m, small)
	payload := make([]byte, 128)
	var room string
	sys := system{name: name, rx: rx,
		publish: func(seq uint64) { load.Stamp(payload, seq); n.admin.RoomPush(room, payload) },
		flush:   func() { n.admin.Flush() },
		cpu:     n.cpu}
	var seq uint64
	room = "fan"
	prof := n.profile(9*time.Second, filepath.Join(b.o.out, "fanout1"+suffix+".pprof"))
	one := b.run(sys, 1, 10, m, seq)
	seq += 10
	if err := <-prof; err != nil {
		b.progress.Done("profile: %v", err)
	}
	room = "fan-small"
	hundred := b.run(sys, 100, 300, small, seq)
	seq += 300
	set := func(key string, v float64) { b.results.Set(key+suffix, v) }
	set("fanout1_p50_ms", ms(one.q(50)))
	set("fanout1_p99_ms", ms(one.q(99)))
	set("fanout1_deliveries_per_cpu_s", one.deliveriesPerCPU())
	set("fanout100_p99_ms", ms(hundred.q(99)))
	set("fanout_lost", float64(one.out.Lost+hundred.out.Lost))
	set("fanout_duplicated_or_reordered", float64(one.out.Duplicated+one.out.Reordered+hundred.out.Duplicated+hundred.out.Reordered))
	if suffix != "" {
		set("fanout_p99_ms", ms(one.q(99))) // the latency figure: 1 msg/s into the whole room
	}
	b.addCDF(cdf(fmt.Sprintf("%s 1 msg/s into %d", name, m), one.lat),
		cdf(fmt.Sprintf("%s 100 msg/s into %d", name, small), hundred.lat))

	room = "fan"
	reopen := func() error {
		if rx.Dropped() == 0 {
			return nil
		}
		rx.Close()
		var err error
		rx, err = b.open(spec, name)
		sys.rx = rx
		return err
	}
	best, steps := b.ramp(sys, m, &seq, reopen)
	if best.rate > 0 && reopen() == nil {
		// One more step at the best rate, profiled: where saturation goes.
		prof := n.profile(3*time.Second, filepath.Join(b.o.out, "fanout_max"+suffix+".pprof"))
		count := max(int(best.rate*b.o.stepTime.Seconds()), 5)
		b.run(sys, best.rate, count, m, seq)
		seq += uint64(count)
		if err := <-prof; err != nil {
			b.progress.Done("profile: %v", err)
		}
	}
	set("fanout_max_rate", best.rate)
	set("fanout_max_deliveries_per_s", best.rate*float64(m))
	set("fanout_deliveries_per_cpu_s", best.deliveriesPerCPU())
	if best.lat != nil {
		set("fanout_max_p99_ms", ms(best.lat.Quantile(99)))
	}
	b.charts.rate = append(b.charts.rate, rateSeries(name, steps))
	// Latency is what the steps measure; a message lost, duplicated or
	// reordered, or a member cut, is a failure.
	if !one.out.OK() || !hundred.out.OK() || one.dropped+hundred.dropped > 0 {
		return one, fmt.Errorf("fan-out lost, duplicated or reordered messages, or cut members: 1 msg/s %v; 100 msg/s %v", one, hundred)
	}
	return one, nil
}

func (b *bench) natsFanout(m int) (step, error) {
	srv, err := b.startNATS()
	if err != nil {
		return step{}, err
	}
	defer srv.Stop()
	tr := load.NewTracker(m)
	subs, err := baseline.Subscribe(srv.URL, "fan", m, b.srcs, tr.Observe, func(k int) { b.progress.Update("nats: %d/%d subscribers", k, m) })
	if err != nil {
		return step{}, err
	}
	defer func() { subs.Close() }()
	if err := subs.Flush(); err != nil {
		return step{}, err
	}
	b.progress.Done("nats: %d subscribers on subject fan", m)
	pub, err := nats.Connect(srv.URL)
	if err != nil {
		return step{}, err
	}
	defer pub.Close()
	payload := make([]byte, 128)
	sys := system{name: "nats", rx: &natsReceivers{localReceivers{Tracker: tr}, &subs},
		// No Flush per message: nats.go's Flush is a round trip to the
		// server; its flusher goroutine sends buffered publishes at once.
		publish: func(seq uint64) { load.Stamp(payload, seq); pub.Publish("fan", payload) },
		cpu:     func() time.Duration { d, _ := baseline.CPUTime(srv.PID); return d }}
	var seq uint64
	one := b.run(sys, 1, 10, m, seq)
	seq += 10
	r := b.results
	r.Set("nats_fanout1_p99_ms", ms(one.q(99)))
	r.Set("nats_fanout1_deliveries_per_cpu_s", one.deliveriesPerCPU())
	b.addCDF(cdf(fmt.Sprintf("nats-server 1 msg/s into %d", m), one.lat))
	// Reconnects are off: a subscriber nats-server cut as a slow consumer
	// is gone, so a failed step reopens them all before the next one.
	reopen := func() error {
		if subs.Disconnects() == 0 {
			return nil
		}
		subs.Close()
		var err error
		if subs, err = baseline.Subscribe(srv.URL, "fan", m, b.srcs, tr.Observe, nil); err != nil {
			return err
		}
		return subs.Flush()
	}
	best, steps := b.ramp(sys, m, &seq, reopen)
	r.Set("nats_fanout_max_rate", best.rate)
	r.Set("nats_fanout_deliveries_per_cpu_s", best.deliveriesPerCPU())
	b.charts.rate = append(b.charts.rate, rateSeries("nats-server", steps))
	return one, nil
}

// startNATS builds (once) and starts a nats-server from the module imgate
// depends on.
func (b *bench) startNATS() (*baseline.NATSServer, error) {
	bin, err := baseline.BuildNATSServer(filepath.Dir(b.o.natsBin))
	if err != nil {
		return nil, err
	}
	return baseline.StartNATS(bin, freePort())
}

// floorFanout: the raw writer, one write(2) of 128 bytes per socket per
// message, two threads: what one delivery costs with no protocol at all.
func (b *bench) floorFanout(m int) (step, error) {
	self, err := os.Executable()
	if err != nil {
		return step{}, err
	}
	data, ctl := fmt.Sprintf("127.0.0.1:%d", freePort()), fmt.Sprintf("127.0.0.1:%d", freePort())
	cmd := exec.Command(self, "floor-server", "--data", data, "--control", ctl, "--threads", "2")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return step{}, err
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	if err := waitListen(ctl); err != nil {
		return step{}, err
	}
	tr := load.NewTracker(m)
	fc, err := baseline.DialFloor(data, ctl, m, b.srcs, tr.Observe, func(k int) { b.progress.Update("floor: %d/%d sockets", k, m) })
	if err != nil {
		return step{}, err
	}
	defer fc.Close()
	if err := fc.WaitConns(m, 30*time.Second); err != nil {
		return step{}, err
	}
	pid := cmd.Process.Pid
	measure := func(rounds, batch int, seq uint64) (step, []time.Duration) {
		tr.Begin(seq)
		cpu0, _ := baseline.CPUTime(pid)
		var times []time.Duration
		for i := 0; i < rounds; i++ {
			d, err := fc.Round(seq+uint64(i*batch), batch)
			if err != nil {
				break
			}
			times = append(times, d)
			time.Sleep(50 * time.Millisecond)
		}
		total := int64(rounds*batch) * int64(m)
		tr.WaitTotal(total, 10*time.Second)
		cpu1, _ := baseline.CPUTime(pid)
		return step{rate: 1, sent: rounds * batch, deliveries: total, cpu: cpu1 - cpu0, out: tr.ResultTotal(total), lat: tr.Latency.Snapshot()}, times
	}
	one, times := measure(20, 1, 0)
	batched, _ := measure(10, 10, 1000)
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	r := b.results
	if len(times) > 0 {
		r.Set("floor_round_ms", ms(times[len(times)/2]))
	}
	r.Set("floor_deliveries_per_cpu_s", one.deliveriesPerCPU())
	r.Set("floor_batch10_deliveries_per_cpu_s", batched.deliveriesPerCPU())
	r.Set("floor_p99_ms", ms(one.q(99)))
	b.addCDF(cdf(fmt.Sprintf("floor (raw writes) into %d", m), one.lat))
	b.progress.Done("floor: round %.1f ms, %.0f deliveries/CPU-s (%.0f with 10 per write), lost %d",
		b.get("floor_round_ms"), one.deliveriesPerCPU(), batched.deliveriesPerCPU(), one.out.Lost+batched.out.Lost)
	return one, nil
}

func cdf(name string, h *report.Histogram) report.Series {
	return report.Series{Name: name, Points: h.CDF()}
}

// natsReceivers counts subscribers nats-server cut (disconnects, slow
// consumer errors) as dropped.
type natsReceivers struct {
	localReceivers
	subs **baseline.Subscribers
}

func (r *natsReceivers) Dropped() int64 {
	return (*r.subs).Disconnects() + (*r.subs).SlowConsumerErrors()
}
