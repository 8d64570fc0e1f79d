// Package load is the client side of imgate-bench: lean imgate connections
// made for load, a publisher on the admin port, and the tracker that checks
// every message at every recipient.
//
// Every benchmark payload starts with the publish time (unix ns) and the
// message sequence number, both big-endian uint64; the rest is padding.
package load

import (
	"encoding/binary"
	"sync/atomic"
	"time"

	"imgate/bench/report"
)

// PayloadHeader is the size of the stamp at the start of every payload.
const PayloadHeader = 16

// Stamp writes the publish time and seq into payload[:16].
func Stamp(payload []byte, seq uint64) {
	binary.BigEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
	binary.BigEndian.PutUint64(payload[8:], seq)
}

// Tracker counts, for each receiver, the messages of the current step:
// a message must arrive exactly once and in order. A lost or duplicated
// message is a failure the scenario reports, never averaged away.
type Tracker struct {
	next      []uint64              // per receiver, the seq expected next; only its reader writes it
	missing   []map[uint64]struct{} // per receiver, seqs skipped over (nil until a gap)
	got       []atomic.Int64        // per receiver, messages this step
	dups      atomic.Int64          // arrived again
	reordered atomic.Int64          // arrived after a later seq
	Latency   *report.Sharded
}

// maxMissing bounds what one receiver remembers of its gaps; past it a
// step has failed anyway.
const maxMissing = 100000

// NewTracker tracks n receivers.
func NewTracker(n int) *Tracker {
	return &Tracker{next: make([]uint64, n), missing: make([]map[uint64]struct{}, n), got: make([]atomic.Int64, n), Latency: report.NewSharded(0)}
}

// Len is the number of receivers.
func (t *Tracker) Len() int { return len(t.next) }

// Observe records one payload at receiver i. Calls for one receiver must not
// overlap (each receiver has one reader).
func (t *Tracker) Observe(i int, payload []byte) {
	if len(payload) < PayloadHeader {
		t.dups.Add(1)
		return
	}
	sent := int64(binary.BigEndian.Uint64(payload))
	seq := binary.BigEndian.Uint64(payload[8:])
	t.Latency.Record(i, time.Duration(time.Now().UnixNano()-sent))
	switch n := t.next[i]; {
	case seq == n:
		t.next[i] = n + 1
	case seq > n:
		if t.missing[i] == nil {
			t.missing[i] = make(map[uint64]struct{})
		}
		for s := n; s < seq && len(t.missing[i]) < maxMissing; s++ {
			t.missing[i][s] = struct{}{}
		}
		t.next[i] = seq + 1
	default:
		if _, ok := t.missing[i][seq]; ok {
			delete(t.missing[i], seq)
			t.reordered.Add(1)
		} else {
			t.dups.Add(1)
		}
	}
	t.got[i].Add(1)
}

// Begin starts a step whose messages carry seqs from first on. Call it only
// while no message is in flight.
func (t *Tracker) Begin(first uint64) {
	for i := range t.next {
		t.next[i] = first
		t.missing[i] = nil
		t.got[i].Store(0)
	}
	t.dups.Store(0)
	t.reordered.Store(0)
	t.Latency.Reset()
}

// Received is the number of messages observed this step, all receivers.
func (t *Tracker) Received() int64 {
	var n int64
	for i := range t.got {
		n += t.got[i].Load()
	}
	return n
}

// Wait waits until every receiver got want messages of this step or the
// timeout passes; it reports whether all arrived.
func (t *Tracker) Wait(want int64, timeout time.Duration) bool {
	return t.WaitTotal(want*int64(len(t.got)), timeout)
}

// WaitTotal waits until total messages arrived over all receivers (for
// scenarios where receivers get different numbers of messages).
func (t *Tracker) WaitTotal(total int64, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for t.Received() < total {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// ResultTotal judges a step in which total deliveries were due in all.
func (t *Tracker) ResultTotal(total int64) Outcome {
	o := Outcome{Expected: total, Received: t.Received(), Duplicated: t.dups.Load(), Reordered: t.reordered.Load()}
	o.Lost = max(0, o.Expected-(o.Received-o.Duplicated))
	return o
}

// Outcome is a step's verdict.
type Outcome struct {
	Expected   int64 // messages x receivers
	Received   int64
	Lost       int64 // never arrived
	Duplicated int64 // arrived more than once
	Reordered  int64 // arrived after a later message
}

// OK reports a step with nothing lost, duplicated or reordered.
func (o Outcome) OK() bool {
	return o.Lost == 0 && o.Duplicated == 0 && o.Reordered == 0 && o.Received == o.Expected
}

// Result judges the step once publishing ended: sent messages per receiver.
func (t *Tracker) Result(sent int64) Outcome {
	return t.ResultTotal(sent * int64(len(t.got)))
}
