package main

import (
	"math"
	"slices"
	"testing"
	"time"
)

// arrival is one packet offered to a scheduler in a test.
type arrival struct {
	at   time.Duration
	size int
}

// outcome is what a scheduler made of one arrival.
type outcome struct {
	arrival
	idx int // position in the arrivals
	due time.Duration
	v   verdict
}

// every returns n arrivals of size bytes spaced gap apart.
func every(n int, gap time.Duration, size int) []arrival {
	a := make([]arrival, n)
	for i := range a {
		a[i] = arrival{at: time.Duration(i) * gap, size: size}
	}
	return a
}

// simulate offers arrivals to a scheduler the way a direction does: a packet
// leaves the queue once its due time has passed, so the queue bound sees what
// is still waiting at each arrival.
func simulate(im Impairment, seed uint64, arrivals []arrival) []outcome {
	s := newScheduler(im, seed, 1)
	q := newDelayQueue(im.Backlog)
	out := make([]outcome, len(arrivals))
	for i, a := range arrivals {
		for {
			p, ok := q.peek()
			if !ok || p.due > a.at {
				break
			}
			q.pop()
		}
		due, v := s.admit(a.at, a.size, q.len())
		if v == forward || v == held {
			q.push(packet{due: due, seq: uint64(i)})
		}
		out[i] = outcome{arrival: a, idx: i, due: due, v: v}
	}
	return out
}

func count(out []outcome, vs ...verdict) int {
	n := 0
	for _, o := range out {
		if slices.Contains(vs, o.v) {
			n++
		}
	}
	return n
}

// delivered returns the indexes of the delivered packets in the order they
// leave (by due time, ties in arrival order, as the delay queue orders them).
func delivered(out []outcome) []int {
	var kept []outcome
	for _, o := range out {
		if o.v == forward || o.v == held {
			kept = append(kept, o)
		}
	}
	slices.SortStableFunc(kept, func(a, b outcome) int { return int(a.due - b.due) })
	idx := make([]int, len(kept))
	for i, o := range kept {
		idx[i] = o.idx
	}
	return idx
}

// inversions counts packets that leave after a packet that arrived later.
func inversions(order []int) int {
	n, highest := 0, -1
	for _, i := range order {
		if i < highest {
			n++
		}
		highest = max(highest, i)
	}
	return n
}

func TestSchedulerLossFraction(t *testing.T) {
	const n = 100000
	cases := []struct {
		loss     float64
		min, max float64 // bounds on the dropped fraction
	}{
		{0, 0, 0},
		{0.01, 0.009, 0.011},
		{0.05, 0.047, 0.053},
		{0.20, 0.195, 0.205},
		{1, 1, 1},
	}
	for _, tc := range cases {
		out := simulate(Impairment{Loss: tc.loss, Backlog: n}, 7, every(n, time.Millisecond, 100))
		got := float64(count(out, dropLoss)) / n
		if got < tc.min || got > tc.max {
			t.Errorf("loss %v: dropped %.4f of %d packets, want within [%v, %v]", tc.loss, got, n, tc.min, tc.max)
		}
		if q := count(out, dropQueue); q != 0 {
			t.Errorf("loss %v: %d queue drops with room for every packet", tc.loss, q)
		}
	}
}

func TestSchedulerDeterministic(t *testing.T) {
	im := Impairment{Loss: 0.1, Delay: 20 * time.Millisecond, Jitter: 5 * time.Millisecond, Reorder: 0.05, ReorderDelay: 3 * time.Millisecond, Backlog: 100}
	arrivals := every(5000, 500*time.Microsecond, 1200)
	a, b := simulate(im, 42, arrivals), simulate(im, 42, arrivals)
	if !slices.Equal(a, b) {
		t.Fatal("the same seed gave different verdicts or due times")
	}
	if c := simulate(im, 43, arrivals); slices.Equal(a, c) {
		t.Fatal("different seeds gave the same verdicts and due times")
	}
	// The loss pattern of a seed does not move when jitter or reordering
	// are turned on.
	plain := simulate(Impairment{Loss: 0.1, Backlog: 100000}, 42, arrivals)
	busy := simulate(Impairment{Loss: 0.1, Jitter: 5 * time.Millisecond, Reorder: 0.3, Backlog: 100000}, 42, arrivals)
	for i := range plain {
		if (plain[i].v == dropLoss) != (busy[i].v == dropLoss) {
			t.Fatalf("packet %d: lost in one run and not the other: jitter or reorder moved the loss pattern", i)
		}
	}
}

func TestSchedulerDelayBounds(t *testing.T) {
	cases := []struct {
		name   string
		im     Impairment
		gap    time.Duration
		lo, hi time.Duration // bounds on due - arrival
	}{
		{"no impairment", Impairment{Backlog: 10}, time.Millisecond, 0, 0},
		{"fixed delay", Impairment{Delay: 50 * time.Millisecond, Backlog: 1000}, time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond},
		{"jitter", Impairment{Delay: 50 * time.Millisecond, Jitter: 10 * time.Millisecond, Backlog: 1000}, time.Millisecond, 40 * time.Millisecond, 60 * time.Millisecond},
		{"jitter wider than delay", Impairment{Delay: 5 * time.Millisecond, Jitter: 20 * time.Millisecond, Backlog: 1000}, time.Millisecond, 0, 25 * time.Millisecond},
		{"sparse jitter", Impairment{Delay: 100 * time.Millisecond, Jitter: 30 * time.Millisecond, Backlog: 1000}, time.Second, 70 * time.Millisecond, 130 * time.Millisecond},
	}
	for _, tc := range cases {
		out := simulate(tc.im, 3, every(20000, tc.gap, 200))
		lo, hi := time.Duration(math.MaxInt64), time.Duration(0)
		for _, o := range out {
			d := o.due - o.at
			lo, hi = min(lo, d), max(hi, d)
		}
		if lo < tc.lo || hi > tc.hi {
			t.Errorf("%s: delays in [%v, %v], want within [%v, %v]", tc.name, lo, hi, tc.lo, tc.hi)
		}
		if tc.im.Jitter > 0 && hi-lo < tc.im.Jitter {
			t.Errorf("%s: delays only spread over %v with jitter %v", tc.name, hi-lo, tc.im.Jitter)
		}
		if n := inversions(delivered(out)); n != 0 {
			t.Errorf("%s: %d packets overtaken without --reorder; jitter must keep the order", tc.name, n)
		}
	}
}

func TestSchedulerReorder(t *testing.T) {
	cases := []struct {
		name     string
		im       Impairment
		gap      time.Duration
		min, max float64 // bounds on the fraction of packets overtaken
	}{
		{"off", Impairment{Delay: 20 * time.Millisecond, Backlog: 1000}, time.Millisecond, 0, 0},
		{"5% held 10ms, 1ms apart", Impairment{Delay: 20 * time.Millisecond, Reorder: 0.05, ReorderDelay: 10 * time.Millisecond, Backlog: 1000}, time.Millisecond, 0.04, 0.06},
		{"25% held 3ms, 1ms apart", Impairment{Reorder: 0.25, ReorderDelay: 3 * time.Millisecond, Backlog: 1000}, time.Millisecond, 0.15, 0.30},
		// Held back less than the gap between packets: nothing can pass it.
		{"held less than the gap", Impairment{Reorder: 0.5, ReorderDelay: time.Millisecond, Backlog: 1000}, 10 * time.Millisecond, 0, 0},
	}
	for _, tc := range cases {
		const n = 20000
		out := simulate(tc.im, 11, every(n, tc.gap, 200))
		order := delivered(out)
		got := float64(n-longestInOrder(order)) / n
		if got < tc.min || got > tc.max {
			t.Errorf("%s: %.4f of packets left out of order, want within [%v, %v] (held %d)", tc.name, got, tc.min, tc.max, count(out, held))
		}
		if len(order) != n {
			t.Errorf("%s: %d of %d delivered", tc.name, len(order), n)
		}
	}
}

// longestInOrder is how many packets left in arrival order relative to one
// another (the longest increasing subsequence); the rest were overtaken or
// overtook.
func longestInOrder(order []int) int {
	var tails []int
	for _, x := range order {
		i, _ := slices.BinarySearch(tails, x)
		if i == len(tails) {
			tails = append(tails, x)
		} else {
			tails[i] = x
		}
	}
	return len(tails)
}

func TestSchedulerQueueBound(t *testing.T) {
	cases := []struct {
		name      string
		im        Impairment
		arrivals  []arrival
		wantQueue int // queue drops
	}{
		// 100 packets at once into a 100 ms delay: the backlog takes 10.
		{"burst into delay", Impairment{Delay: 100 * time.Millisecond, Backlog: 10}, every(100, 0, 100), 90},
		// One every ms with 5 ms delay: at most 5 wait, backlog 10 is enough.
		{"steady within backlog", Impairment{Delay: 5 * time.Millisecond, Backlog: 10}, every(1000, time.Millisecond, 100), 0},
		// One every ms into 50 ms of delay: 50 would wait; 10 fit.
		{"steady over backlog", Impairment{Delay: 50 * time.Millisecond, Backlog: 10}, every(1000, time.Millisecond, 100), 800},
		// 1 Mbit/s and 1250-byte packets: 10 ms each to serialise; a burst
		// of 30 keeps 20 beyond the backlog.
		{"rate limited burst", Impairment{Rate: 1e6, Backlog: 10}, every(30, 0, 1250), 20},
	}
	for _, tc := range cases {
		out := simulate(tc.im, 5, tc.arrivals)
		if got := count(out, dropQueue); math.Abs(float64(got-tc.wantQueue)) > float64(tc.wantQueue)/50+1 {
			t.Errorf("%s: %d queue drops, want about %d", tc.name, got, tc.wantQueue)
		}
	}
}

func TestSchedulerRate(t *testing.T) {
	// 1 Mbit/s: a 1250-byte packet takes 10 ms on the wire; a burst of five
	// leaves 10 ms apart, then waits the delay.
	s := newScheduler(Impairment{Rate: 1e6, Delay: 30 * time.Millisecond, Backlog: 100}, 1, 1)
	for i := range 5 {
		due, v := s.admit(0, 1250, i)
		if want := time.Duration(i+1)*10*time.Millisecond + 30*time.Millisecond; v != forward || due != want {
			t.Fatalf("packet %d: due %v (verdict %d), want %v", i, due, v, want)
		}
	}
	// Once the link has drained, a packet waits only its own time.
	if due, _ := s.admit(time.Second, 125, 0); due != time.Second+time.Millisecond+30*time.Millisecond {
		t.Fatalf("after idle: due %v, want 1.031s", due)
	}
}

func TestImpairmentValidate(t *testing.T) {
	cases := []struct {
		im Impairment
		ok bool
	}{
		{Impairment{Backlog: 1}, true},
		{Impairment{Loss: 0.2, Delay: time.Second, Jitter: time.Second, Reorder: 1, Rate: 1, Backlog: 5}, true},
		{Impairment{Backlog: 0}, false},
		{Impairment{Loss: 1.5, Backlog: 1}, false},
		{Impairment{Loss: -0.1, Backlog: 1}, false},
		{Impairment{Reorder: 2, Backlog: 1}, false},
		{Impairment{Delay: -time.Millisecond, Backlog: 1}, false},
		{Impairment{Rate: -1, Backlog: 1}, false},
	}
	for _, tc := range cases {
		if err := tc.im.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: Validate() = %v, want ok=%v", tc.im, err, tc.ok)
		}
	}
}

func TestSchedulerAllocatesNothing(t *testing.T) {
	im := Impairment{Loss: 0.05, Delay: 10 * time.Millisecond, Jitter: time.Millisecond, Reorder: 0.01, ReorderDelay: time.Millisecond, Rate: 1e9, Backlog: 64}
	s := newScheduler(im, 1, 1)
	q := newDelayQueue(im.Backlog)
	pool := newBufferPool(im.Backlog+2, 1500)
	var now time.Duration
	allocs := testing.AllocsPerRun(10000, func() {
		now += 100 * time.Microsecond
		for {
			p, ok := q.peek()
			if !ok || p.due > now {
				break
			}
			pool.put(q.pop().buf)
		}
		due, v := s.admit(now, 1200, q.len())
		if v == forward || v == held {
			buf, _ := pool.get()
			q.push(packet{due: due, buf: buf[:1200]})
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per packet, want 0", allocs)
	}
}
