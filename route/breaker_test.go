package route

import (
	"testing"
	"time"
)

func TestBreaker(t *testing.T) {
	b := &breaker{failures: 3, cooldown: time.Second}
	now := time.Unix(1000, 0)
	for range 2 {
		if !b.allow(now) {
			t.Fatal("closed circuit refused")
		}
		b.done(false, now)
	}
	b.done(true, now) // a success resets the streak
	for range 3 {
		b.allow(now)
		b.done(false, now)
	}
	if b.allow(now.Add(500 * time.Millisecond)) {
		t.Fatal("open circuit let a request through")
	}
	later := now.Add(1100 * time.Millisecond)
	if !b.allow(later) {
		t.Fatal("no trial after the cooldown")
	}
	if b.allow(later) {
		t.Fatal("two trials at once")
	}
	b.done(false, later)
	if st, _ := b.current(); st != open {
		t.Fatalf("failed trial: %v", st)
	}
	again := later.Add(1100 * time.Millisecond)
	b.allow(again)
	b.done(true, again)
	if st, _ := b.current(); st != closed {
		t.Fatalf("good trial: %v", st)
	}
}
