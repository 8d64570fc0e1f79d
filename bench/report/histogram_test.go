package report

import (
	"encoding/json"
	"math"
	"sync"
	"testing"
	"time"
)

// within reports whether got is within frac (relative) of want.
func within(got, want time.Duration, frac float64) bool {
	return math.Abs(float64(got-want)) <= frac*float64(want)
}

func TestHistogramQuantiles(t *testing.T) {
	// Uniform: 1ms, 1.1ms, ..., 1000ms (9991 values).
	uniform := NewHistogram()
	for us := 1000; us <= 1000000; us += 100 {
		uniform.Record(time.Duration(us) * time.Microsecond)
	}
	// Constant: every value the same.
	constant := NewHistogram()
	for range 1000 {
		constant.Record(42 * time.Millisecond)
	}
	// Bimodal: 90% at 1ms, 10% at 100ms.
	bimodal := NewHistogram()
	for i := range 1000 {
		if i%10 == 9 {
			bimodal.Record(100 * time.Millisecond)
		} else {
			bimodal.Record(time.Millisecond)
		}
	}

	tests := []struct {
		name string
		h    *Histogram
		q    float64
		want time.Duration
	}{
		{"uniform p0", uniform, 0, time.Millisecond},
		{"uniform p50", uniform, 50, 500 * time.Millisecond},
		{"uniform p90", uniform, 90, 900 * time.Millisecond},
		{"uniform p99", uniform, 99, 990 * time.Millisecond},
		{"uniform p100", uniform, 100, 1000 * time.Millisecond},
		{"uniform q>100 clamps", uniform, 150, 1000 * time.Millisecond},
		{"constant p1", constant, 1, 42 * time.Millisecond},
		{"constant p99.9", constant, 99.9, 42 * time.Millisecond},
		{"bimodal p50", bimodal, 50, time.Millisecond},
		{"bimodal p89", bimodal, 89, time.Millisecond},
		{"bimodal p95", bimodal, 95, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.h.Quantile(tt.q); !within(got, tt.want, 0.01) {
				t.Errorf("Quantile(%v) = %v, want %v within 1%%", tt.q, got, tt.want)
			}
		})
	}
	if got := uniform.Count(); got != 9991 {
		t.Errorf("Count = %d, want 9991", got)
	}
	if got := uniform.Max(); !within(got, time.Second, 0.001) {
		t.Errorf("Max = %v, want 1s within 0.1%%", got)
	}
	if got := uniform.Mean(); !within(got, 500500*time.Microsecond, 0.01) {
		t.Errorf("Mean = %v, want 500.5ms within 1%%", got)
	}
}

func TestHistogramEmpty(t *testing.T) {
	h := NewHistogram()
	if h.Count() != 0 || h.Quantile(50) != 0 || h.Max() != 0 || h.Min() != 0 || h.CDF() != nil {
		t.Errorf("empty histogram: count %d p50 %v max %v min %v cdf %v",
			h.Count(), h.Quantile(50), h.Max(), h.Min(), h.CDF())
	}
}

func TestHistogramClamping(t *testing.T) {
	tests := []struct {
		name string
		in   time.Duration
		want time.Duration
	}{
		{"zero", 0, MinLatency},
		{"negative", -5 * time.Second, MinLatency},
		{"sub-microsecond", 999 * time.Nanosecond, MinLatency},
		{"lowest", time.Microsecond, MinLatency},
		{"highest", 120 * time.Second, MaxLatency},
		{"above", 10 * time.Minute, MaxLatency},
		{"far above", math.MaxInt64, MaxLatency},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHistogram()
			h.Record(tt.in)
			if h.Count() != 1 {
				t.Fatalf("Count = %d, want 1", h.Count())
			}
			if got := h.Max(); !within(got, tt.want, 0.001) || got > MaxLatency {
				t.Errorf("Max = %v, want %v (and at most %v)", got, tt.want, MaxLatency)
			}
			if got := h.Quantile(50); !within(got, tt.want, 0.001) || got > MaxLatency {
				t.Errorf("p50 = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestHistogramMergeReset(t *testing.T) {
	a, b := NewHistogram(), NewHistogram()
	for i := 1; i <= 500; i++ {
		a.Record(time.Duration(i) * time.Millisecond)
	}
	for i := 501; i <= 1000; i++ {
		b.Record(time.Duration(i) * time.Millisecond)
	}
	a.Merge(b)
	if a.Count() != 1000 || b.Count() != 500 {
		t.Fatalf("after merge: a %d b %d values, want 1000 and 500", a.Count(), b.Count())
	}
	if got := a.Quantile(50); !within(got, 500*time.Millisecond, 0.01) {
		t.Errorf("merged p50 = %v, want 500ms", got)
	}
	if got := a.Max(); !within(got, time.Second, 0.001) {
		t.Errorf("merged max = %v, want 1s", got)
	}
	a.Merge(a) // merging into itself doubles, without deadlock
	if a.Count() != 2000 {
		t.Errorf("self-merge count = %d, want 2000", a.Count())
	}
	a.Reset()
	if a.Count() != 0 || a.Max() != 0 {
		t.Errorf("after reset: count %d max %v", a.Count(), a.Max())
	}
	if b.Count() != 500 {
		t.Errorf("reset of a changed b: %d", b.Count())
	}
}

func TestHistogramCDF(t *testing.T) {
	tests := []struct {
		name   string
		record func(h *Histogram)
		maxPts int
		minPts int
	}{
		{"single value", func(h *Histogram) { h.Record(5 * time.Millisecond) }, 1, 1},
		{"few buckets", func(h *Histogram) {
			for i := 1; i <= 10; i++ {
				h.Record(time.Duration(i) * time.Millisecond)
			}
		}, 10, 10},
		{"many buckets", func(h *Histogram) {
			for us := 1; us <= 2000000; us += 37 {
				h.Record(time.Duration(us) * time.Microsecond)
			}
		}, cdfMaxPoints, 100},
		{"long tail", func(h *Histogram) {
			for i := range 100000 {
				h.Record(time.Duration(1000+i%5000) * time.Microsecond)
			}
			for i := range 10 {
				h.Record(time.Duration(i+1) * time.Second)
			}
		}, cdfMaxPoints, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHistogram()
			tt.record(h)
			cdf := h.CDF()
			if len(cdf) < tt.minPts || len(cdf) > tt.maxPts {
				t.Fatalf("%d points, want %d..%d", len(cdf), tt.minPts, tt.maxPts)
			}
			for i := 1; i < len(cdf); i++ {
				if cdf[i].X < cdf[i-1].X || cdf[i].Y < cdf[i-1].Y {
					t.Fatalf("not monotonic at %d: %v then %v", i, cdf[i-1], cdf[i])
				}
			}
			last := cdf[len(cdf)-1]
			if last.Y != 1 {
				t.Errorf("last Y = %v, want 1", last.Y)
			}
			if want := float64(h.Max()) / float64(time.Millisecond); last.X != want {
				t.Errorf("last X = %vms, want max %vms", last.X, want)
			}
			for _, p := range cdf {
				if p.Y <= 0 || p.Y > 1 || p.X <= 0 {
					t.Errorf("point out of range: %v", p)
				}
			}
		})
	}
}

func TestShardedConcurrent(t *testing.T) {
	s := NewSharded(0)
	const goroutines, each = 64, 500
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				s.Record(g, time.Duration(1+i)*time.Millisecond)
			}
		})
	}
	// Snapshots taken while recording see a consistent, growing count.
	snapshotsDone := make(chan struct{})
	go func() {
		defer close(snapshotsDone)
		var last int64
		for range 5 {
			n := s.Snapshot().Count()
			if n < last || n > goroutines*each {
				t.Errorf("snapshot count %d after %d", n, last)
			}
			last = n
		}
	}()
	wg.Wait()
	<-snapshotsDone

	snap := s.Snapshot()
	if snap.Count() != goroutines*each {
		t.Fatalf("count = %d, want %d", snap.Count(), goroutines*each)
	}
	if got := snap.Quantile(50); !within(got, 250*time.Millisecond, 0.01) {
		t.Errorf("p50 = %v, want 250ms", got)
	}
	s.Record(-7, time.Millisecond) // negative hints pick a shard too
	s.Reset()
	if n := s.Snapshot().Count(); n != 0 {
		t.Errorf("after reset count = %d", n)
	}
}

func TestRecordAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	h := NewHistogram()
	s := NewSharded(8)
	i := 0
	if n := testing.AllocsPerRun(1000, func() {
		i++
		h.Record(time.Duration(i) * time.Millisecond)
	}); n != 0 {
		t.Errorf("Histogram.Record allocates %v per call", n)
	}
	if n := testing.AllocsPerRun(1000, func() {
		i++
		s.Record(i, time.Duration(i)*time.Second) // includes clamped values
	}); n != 0 {
		t.Errorf("Sharded.Record allocates %v per call", n)
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	h := NewHistogram()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h.Record(time.Duration(i%100000) * time.Microsecond)
	}
}

func BenchmarkShardedRecordParallel(b *testing.B) {
	s := NewSharded(0)
	b.ReportAllocs()
	var next int64
	var mu sync.Mutex
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		next++
		hint := int(next)
		mu.Unlock()
		for i := 0; pb.Next(); i++ {
			s.Record(hint, time.Duration(i%100000)*time.Microsecond)
		}
	})
}

func TestHistogramJSONRoundTrip(t *testing.T) {
	h := NewHistogram()
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Millisecond)
	}
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	var back Histogram
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Count() != 1000 || back.Quantile(99) != h.Quantile(99) {
		t.Fatalf("round trip: count %d p99 %v, want 1000 %v", back.Count(), back.Quantile(99), h.Quantile(99))
	}
	back.Merge(h)
	if back.Count() != 2000 {
		t.Fatalf("merge after import: %d", back.Count())
	}
}
