package client

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestBackoffGrowsWithinJitteredBounds(t *testing.T) {
	for _, tc := range []struct {
		name     string
		min, max time.Duration
	}{
		{"defaults", DefaultBackoffMin, DefaultBackoffMax},
		{"tight", 10 * time.Millisecond, 80 * time.Millisecond},
		{"max below min", time.Second, time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := backoff{min: tc.min, max: tc.max, rand: rand.New(rand.NewPCG(1, 2))}
			ceil := tc.min
			limit := max(tc.max, tc.min)
			for attempt := range 20 {
				d := b.next()
				if d < ceil/2 || d > ceil {
					t.Fatalf("attempt %d: wait %v outside [%v, %v]", attempt, d, ceil/2, ceil)
				}
				ceil = min(2*ceil, limit)
			}
			b.reset()
			if d := b.next(); d < tc.min/2 || d > tc.min {
				t.Errorf("after reset: wait %v, want within [%v, %v]", d, tc.min/2, tc.min)
			}
		})
	}
}

func TestBackoffIsJittered(t *testing.T) {
	seen := make(map[time.Duration]bool)
	for i := range 50 {
		b := backoff{min: 100 * time.Millisecond, max: time.Second, rand: rand.New(rand.NewPCG(uint64(i), 7))}
		b.next()
		seen[b.next()] = true // second attempt: within [100ms, 200ms]
	}
	if len(seen) < 25 {
		t.Errorf("50 clients drew only %d distinct waits: not jittered", len(seen))
	}
}
