package report

import (
	"math"
	"sync"
	"time"

	"encoding/json"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// The recorded range and precision. Values are kept in microseconds: a
// gateway round trip is never usefully finer than 1us, and 120s is longer
// than any benchmark tolerates a message to be late.
const (
	histogramLowest  = 1                 // microseconds
	histogramHighest = 120 * 1000 * 1000 // microseconds (120s)
	histogramDigits  = 3                 // relative error at most 0.1%

	// MinLatency and MaxLatency bound what a Histogram records and reports.
	MinLatency = histogramLowest * time.Microsecond
	MaxLatency = histogramHighest * time.Microsecond
)

// cdfMaxPoints bounds the length of CDF: enough for a smooth curve, few
// enough that an SVG chart of several series stays small.
const cdfMaxPoints = 200

// Histogram is a latency histogram safe for concurrent use. Each operation
// takes one mutex; under many recording goroutines use Sharded instead.
type Histogram struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
}

// NewHistogram returns an empty histogram covering 1us..120s with three
// significant digits (about 150 KiB of counters).
func NewHistogram() *Histogram {
	return &Histogram{h: newHDR()}
}

func newHDR() *hdrhistogram.Histogram {
	return hdrhistogram.New(histogramLowest, histogramHighest, histogramDigits)
}

// Record adds one latency. Durations below 1us (including negative ones,
// which a clock step can produce) count as 1us; above 120s as 120s.
func (h *Histogram) Record(d time.Duration) {
	us := clampMicros(d)
	h.mu.Lock()
	// The value is clamped into range, so RecordValue cannot fail (and so
	// never builds an error value: Record allocates nothing).
	_ = h.h.RecordValue(us)
	h.mu.Unlock()
}

func clampMicros(d time.Duration) int64 {
	us := int64(d / time.Microsecond)
	if us < histogramLowest {
		return histogramLowest
	}
	if us > histogramHighest {
		return histogramHighest
	}
	return us
}

// Merge adds all of o's values to h. o is copied under its own lock first,
// so h.Merge(o) and o.Merge(h) running at once cannot deadlock, and
// h.Merge(h) doubles every count.
func (h *Histogram) Merge(o *Histogram) {
	o.mu.Lock()
	src := o.h.Clone()
	o.mu.Unlock()
	h.mu.Lock()
	h.h.Merge(src) // same geometry on both sides: nothing is dropped
	h.mu.Unlock()
}

// Reset removes every value.
func (h *Histogram) Reset() {
	h.mu.Lock()
	h.h.Reset()
	h.mu.Unlock()
}

// Count returns the number of values recorded.
func (h *Histogram) Count() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.h.TotalCount()
}

// Quantile returns the latency at or below which q percent of the values
// lie (q in 0..100, clamped; 50 is the median, 99 the p99). It is the upper
// edge of the bucket holding that value, so it errs high by at most 0.1%.
// An empty histogram returns 0.
func (h *Histogram) Quantile(q float64) time.Duration {
	if math.IsNaN(q) {
		q = 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.h.TotalCount() == 0 {
		return 0
	}
	return fromMicros(h.h.ValueAtQuantile(min(max(q, 0), 100)))
}

// Max returns the largest value recorded (the upper edge of its bucket), or
// 0 when empty.
func (h *Histogram) Max() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.h.TotalCount() == 0 {
		return 0
	}
	return fromMicros(h.h.Max())
}

// Min returns the smallest value recorded (the lower edge of its bucket), or
// 0 when empty.
func (h *Histogram) Min() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.h.TotalCount() == 0 {
		return 0
	}
	return fromMicros(h.h.Min())
}

// Mean returns the mean of the recorded values, or 0 when empty.
func (h *Histogram) Mean() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return time.Duration(h.h.Mean() * float64(time.Microsecond))
}

// fromMicros converts a bucket edge back to a Duration. The top bucket's
// upper edge lies a little above 120s; values there were clamped to 120s on
// the way in, so they are reported as 120s.
func fromMicros(us int64) time.Duration {
	us = min(max(us, histogramLowest), histogramHighest)
	return time.Duration(us) * time.Microsecond
}

// CDF returns the cumulative distribution: X is a latency in milliseconds,
// Y the fraction (0..1] of values at or below it. It is read from the
// buckets themselves, not interpolated: every point is the upper edge of a
// non-empty bucket and the exact fraction of values up to it. When there
// are more non-empty buckets than fit in about 200 points, it keeps one
// point per percent of the values plus the tail (p99, p99.5, p99.9, ...)
// where latency charts carry their news. Both X and Y never decrease, and
// the last point is the maximum with Y = 1. Empty histograms give nil.
func (h *Histogram) CDF() []Point {
	h.mu.Lock()
	total := h.h.TotalCount()
	bars := h.h.Distribution()
	h.mu.Unlock()
	if total == 0 {
		return nil
	}

	nonEmpty := 0
	for _, b := range bars {
		if b.Count > 0 {
			nonEmpty++
		}
	}
	var targets []float64 // fractions at which to emit a point; nil = every bucket
	if nonEmpty > cdfMaxPoints {
		targets = cdfTargets(total)
	}

	points := make([]Point, 0, min(nonEmpty, cdfMaxPoints))
	var cum int64
	next := 0
	for _, b := range bars {
		if b.Count == 0 {
			continue
		}
		cum += b.Count
		y := float64(cum) / float64(total)
		last := cum == total
		if targets != nil && !last {
			if next >= len(targets) || y < targets[next] {
				continue
			}
			for next < len(targets) && targets[next] <= y {
				next++
			}
		}
		x := float64(fromMicros(b.To)) / float64(time.Millisecond)
		points = append(points, Point{X: x, Y: y})
		if last {
			break
		}
	}
	return points
}

// cdfTargets lists the cumulative fractions CDF samples at: every percent,
// then the tail 0.99, 0.995, 0.999, 0.9995, ... as long as the tail still
// holds at least one value.
func cdfTargets(total int64) []float64 {
	targets := make([]float64, 0, 130)
	for i := 1; i < 100; i++ {
		targets = append(targets, float64(i)/100)
	}
	for tail := 0.01; tail*float64(total) >= 1 && len(targets) < cdfMaxPoints-1; tail /= 10 {
		targets = append(targets, 1-tail/2, 1-tail/10)
	}
	return targets
}

// Sharded spreads recording over many histograms, each with its own mutex,
// so thousands of receiving goroutines do not queue on one lock. Snapshot
// merges them into one Histogram for reading.
type Sharded struct {
	shards []paddedHistogram
}

// paddedHistogram keeps each shard's mutex on its own cache line, so
// recording into neighbouring shards does not bounce one line between cores.
type paddedHistogram struct {
	Histogram
	_ [64]byte
}

// DefaultShards is the shard count NewSharded uses when given n <= 0.
const DefaultShards = 64

// NewSharded returns n empty shards (DefaultShards if n <= 0).
func NewSharded(n int) *Sharded {
	if n <= 0 {
		n = DefaultShards
	}
	s := &Sharded{shards: make([]paddedHistogram, n)}
	for i := range s.shards {
		s.shards[i].h = newHDR()
	}
	return s
}

// Record adds one latency to the shard picked by shardHint (any int, for
// example a connection index; negative values are fine). Goroutines that
// pass different hints rarely contend.
func (s *Sharded) Record(shardHint int, d time.Duration) {
	s.shards[uint(shardHint)%uint(len(s.shards))].Record(d)
}

// Snapshot returns a new Histogram holding every shard's values. Each shard
// is read under its own lock, so values recorded while Snapshot runs may or
// may not be included, but none is counted twice.
func (s *Sharded) Snapshot() *Histogram {
	out := NewHistogram()
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		out.h.Merge(sh.h)
		sh.mu.Unlock()
	}
	return out
}

// Reset empties every shard.
func (s *Sharded) Reset() {
	for i := range s.shards {
		s.shards[i].Reset()
	}
}

// MarshalJSON encodes the histogram's buckets, so that generator processes
// can send their latencies to the process that reports them.
func (h *Histogram) MarshalJSON() ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return json.Marshal(h.h.Export())
}

// UnmarshalJSON replaces the histogram with an encoded one.
func (h *Histogram) UnmarshalJSON(b []byte) error {
	var s hdrhistogram.Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.h = hdrhistogram.Import(&s)
	return nil
}
