package main

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestDelayQueueOrder(t *testing.T) {
	cases := []struct {
		name string
		dues []time.Duration
	}{
		{"empty", nil},
		{"one", []time.Duration{5}},
		{"ascending", []time.Duration{1, 2, 3, 4, 5}},
		{"descending", []time.Duration{5, 4, 3, 2, 1}},
		{"ties leave in arrival order", []time.Duration{3, 1, 3, 1, 3, 2, 1}},
		{"random", randomDues(1000)},
	}
	for _, tc := range cases {
		q := newDelayQueue(len(tc.dues))
		var want []packet
		for i, d := range tc.dues {
			p := packet{due: d, seq: uint64(i)}
			q.push(p)
			want = append(want, p)
		}
		slices.SortStableFunc(want, func(a, b packet) int { return int(a.due - b.due) })
		for i, w := range want {
			top, ok := q.peek()
			if !ok {
				t.Fatalf("%s: empty after %d of %d", tc.name, i, len(want))
			}
			got := q.pop()
			if got.due != w.due || got.seq != w.seq || top.seq != got.seq {
				t.Fatalf("%s: pop %d = (due %v, seq %d), want (due %v, seq %d)", tc.name, i, got.due, got.seq, w.due, w.seq)
			}
		}
		if _, ok := q.peek(); ok || q.len() != 0 {
			t.Fatalf("%s: not empty after popping everything", tc.name)
		}
	}
}

func randomDues(n int) []time.Duration {
	r := rand.New(rand.NewPCG(1, 2))
	d := make([]time.Duration, n)
	for i := range d {
		d[i] = time.Duration(r.IntN(100)) // many ties
	}
	return d
}

func TestBufferPool(t *testing.T) {
	p := newBufferPool(3, 100)
	var got [][]byte
	for range 3 {
		b, ok := p.get()
		if !ok || len(b) != 100 || cap(b) != 100 {
			t.Fatalf("get: len %d cap %d ok %v, want a full 100-byte buffer", len(b), cap(b), ok)
		}
		got = append(got, b)
	}
	if _, ok := p.get(); ok {
		t.Fatal("a fourth buffer from a pool of three")
	}
	// Buffers never overlap: writing one leaves the others alone.
	for i, b := range got {
		for j := range b {
			b[j] = byte(i)
		}
	}
	for i, b := range got {
		for _, c := range b {
			if c != byte(i) {
				t.Fatalf("buffer %d overwritten by another", i)
			}
		}
	}
	// A buffer handed back short comes out full size again.
	p.put(got[0][:10])
	if b, ok := p.get(); !ok || len(b) != 100 {
		t.Fatalf("after put of a short slice: len %d ok %v, want 100", len(b), ok)
	}
}
