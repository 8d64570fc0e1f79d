package client

import (
	"math/rand/v2"
	"time"
)

// backoff yields jittered, exponentially growing waits between reconnect
// passes. The n-th wait (from 0) lies in [ceil/2, ceil] with
// ceil = min(Min<<n, Max): the fixed lower half keeps the growth visible,
// the random upper half keeps a fleet of clients that lost the same node from
// coming back in lockstep ("equal jitter").
//
// A backoff is used by one goroutine only.
type backoff struct {
	min, max time.Duration
	attempt  int
	rand     *rand.Rand // nil: the global source
}

// next returns the wait before the next attempt and advances.
func (b *backoff) next() time.Duration {
	ceil := b.ceiling()
	b.attempt++
	half := ceil / 2
	if half <= 0 {
		return ceil
	}
	return half + b.int64n(int64(ceil-half)+1)
}

// ceiling is the upper bound of the next wait.
func (b *backoff) ceiling() time.Duration {
	lo, hi := b.min, b.max
	if lo <= 0 {
		lo = time.Millisecond
	}
	if hi < lo {
		hi = lo
	}
	d := lo
	for i := 0; i < b.attempt && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}

// reset starts the sequence again after a successful connect.
func (b *backoff) reset() { b.attempt = 0 }

func (b *backoff) int64n(n int64) time.Duration {
	if b.rand != nil {
		return time.Duration(b.rand.Int64N(n))
	}
	return time.Duration(rand.Int64N(n))
}
