package main

import (
	"fmt"
	"time"

	"imgate/bench/load"
	"imgate/bench/report"
)

// step is one measured stretch of publishing at a fixed rate.
type step struct {
	rate       float64
	sent       int           // messages published
	deliveries int64         // deliveries due
	publish    time.Duration // time spent publishing
	cpu        time.Duration // CPU of the system under test over the step
	out        load.Outcome
	lat        *report.Histogram
	dropped    int64 // receivers the server disconnected
}

// p99 and friends read the step's latency histogram.
func (s step) q(q float64) time.Duration { return s.lat.Quantile(q) }

// passed: nothing lost, nothing duplicated, no receiver cut, p99 < 500 ms,
// and the rate was really offered (the publisher kept its pace).
func (s step) passed() bool {
	return s.out.OK() && s.dropped == 0 && s.q(99) < 500*time.Millisecond && s.onPace()
}

// onPace reports that publishing took no longer than planned (with slack),
// so the step measured the rate it claims.
func (s step) onPace() bool {
	if s.rate <= 0 {
		return true
	}
	planned := time.Duration(float64(s.sent) / s.rate * float64(time.Second))
	return s.publish <= planned+planned/4+100*time.Millisecond
}

func (s step) String() string {
	return fmt.Sprintf("rate %.0f/s: %d/%d delivered, lost %d, dup %d, reordered %d, dropped %d, p50 %.1fms p99 %.1fms, cpu %.2fs, published in %.2fs (on pace: %v)",
		s.rate, s.out.Received, s.out.Expected, s.out.Lost, s.out.Duplicated, s.out.Reordered, s.dropped, ms(s.q(50)), ms(s.q(99)), s.cpu.Seconds(), s.publish.Seconds(), s.onPace())
}

// deliveriesPerCPU is deliveries per CPU-second of the system under test.
func (s step) deliveriesPerCPU() float64 {
	if s.cpu <= 0 {
		return 0
	}
	return float64(s.out.Received) / s.cpu.Seconds()
}

// system is what a fan-out step publishes through: imgate, nats-server or
// the floor writer.
type system struct {
	name    string
	rx      receivers
	publish func(seq uint64) // publish one stamped message
	flush   func()
	cpu     func() time.Duration
	wait    time.Duration // for deliveries after the last publish (default 5 s)
}

// run publishes count messages at rate and waits for deliveries to
// receivers (the number of receivers each message is due at).
func (b *bench) run(sys system, rate float64, count, receivers int, first uint64) step {
	sys.rx.Begin(first)
	drop0 := sys.rx.Dropped()
	cpu0 := sys.cpu()
	st := step{rate: rate, sent: count, deliveries: int64(count) * int64(receivers)}
	st.publish = load.Pace(rate, count, func(i int) {
		sys.publish(first + uint64(i))
		if sys.flush != nil {
			sys.flush()
		}
		if i%50 == 0 {
			b.progress.Update("%s: %.0f msg/s, %d/%d published, %d/%d delivered", sys.name, rate, i+1, count, sys.rx.Received(), st.deliveries)
		}
	})
	wait := sys.wait
	if wait <= 0 {
		wait = 5 * time.Second
	}
	sys.rx.WaitTotal(st.deliveries, wait)
	st.cpu = sys.cpu() - cpu0
	st.out = sys.rx.ResultTotal(st.deliveries)
	st.lat = sys.rx.Latency()
	st.dropped = sys.rx.Dropped() - drop0
	b.progress.Done("%s %s", sys.name, st)
	return st
}

// ramp raises the rate until a step fails, then bisects; reopen restores
// receivers that a failed step had disconnected.
func (b *bench) ramp(sys system, receivers int, seq *uint64, reopen func() error) (best step, steps []step) {
	r := &report.Ramp{Start: 1, Factor: 2, Max: b.o.maxRate, Precision: 0.1, MaxSteps: 14}
	for {
		rate, ok := r.Next()
		if !ok {
			break
		}
		count := max(int(rate*b.o.stepTime.Seconds()), 5)
		st := b.run(sys, rate, count, receivers, *seq)
		*seq += uint64(count)
		r.Report(rate, st.passed())
		steps = append(steps, st)
		if st.passed() && st.rate > best.rate {
			best = st
		}
		if !st.passed() && reopen != nil {
			if err := reopen(); err != nil {
				fmt.Printf("reopen after a failed step: %v\n", err)
				break
			}
		}
	}
	return best, steps
}

// rateSeries is deliveries per second against publish rate, passing steps only.
func rateSeries(name string, steps []step) report.Series {
	s := report.Series{Name: name}
	for _, st := range steps {
		if st.passed() && st.publish > 0 {
			s.Points = append(s.Points, report.Point{X: st.rate, Y: float64(st.out.Received) / st.publish.Seconds()})
		}
	}
	return s
}
