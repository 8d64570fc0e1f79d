package baseline

import (
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// loopbackSources returns 127.0.0.2 .. 127.0.0.(1+n), the source addresses the
// benchmark spreads its connections over.
func loopbackSources(n int) []net.IP {
	srcs := make([]net.IP, n)
	for i := range srcs {
		srcs[i] = net.IPv4(127, 0, 0, byte(2+i))
	}
	return srcs
}

func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := freeLoopbackPort()
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// orderChecker is the test's onMsg: per receiver it expects seqs 1, 2, 3, ... and
// counts what arrived and what came out of order.
type orderChecker struct {
	got        []atomic.Uint64 // highest in-order seq per receiver
	outOfOrder atomic.Int64
	badSize    atomic.Int64
}

func newOrderChecker(n int) *orderChecker {
	return &orderChecker{got: make([]atomic.Uint64, n)}
}

func (c *orderChecker) onMsg(i int, payload []byte) {
	if len(payload) != PayloadSize {
		c.badSize.Add(1)
		return
	}
	_, seq := ReadPayload(payload)
	if seq != c.got[i].Load()+1 {
		c.outOfOrder.Add(1)
		return
	}
	c.got[i].Store(seq)
}

// waitAll waits until every receiver has seen seqs 1..want in order.
func (c *orderChecker) waitAll(t *testing.T, want uint64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		behind, first := 0, -1
		for i := range c.got {
			if c.got[i].Load() < want {
				behind++
				if first < 0 {
					first = i
				}
			}
		}
		if behind == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, %d receivers are short of seq %d (receiver %d at %d); %d out of order",
				timeout, behind, want, first, c.got[first].Load(), c.outOfOrder.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := c.outOfOrder.Load(); n != 0 {
		t.Fatalf("%d messages arrived out of order", n)
	}
	if n := c.badSize.Load(); n != 0 {
		t.Fatalf("%d payloads had the wrong size", n)
	}
}
