package route

import (
	"sync"
	"time"
)

// breaker is a consecutive-failure circuit breaker: closed until failures
// requests in a row fail, then open for cooldown (everything refused), then
// half-open: one trial request is let through; its success closes the
// circuit, its failure opens it again.
type breaker struct {
	failures int
	cooldown time.Duration

	mu       sync.Mutex
	state    breakerState
	streak   int
	openedAt time.Time
	trial    bool // a half-open trial is in flight
	opened   uint64
}

type breakerState int

const (
	closed breakerState = iota
	open
	halfOpen
)

func (s breakerState) String() string {
	return [...]string{"closed", "open", "half-open"}[s]
}

// allow reports whether a request may go to the endpoint now.
func (b *breaker) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case open:
		if now.Sub(b.openedAt) < b.cooldown {
			return false
		}
		b.state = halfOpen
		b.trial = true
		return true
	case halfOpen:
		if b.trial {
			return false
		}
		b.trial = true
		return true
	}
	return true
}

// done records a request's outcome.
func (b *breaker) done(ok bool, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ok {
		b.state, b.streak, b.trial = closed, 0, false
		return
	}
	b.streak++
	if b.state == halfOpen || b.streak >= b.failures {
		if b.state != open {
			b.opened++
		}
		b.state, b.openedAt, b.trial = open, now, false
	}
}

func (b *breaker) current() (breakerState, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state, b.streak
}
