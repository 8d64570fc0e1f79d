package arq

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	kcp "github.com/xtaci/kcp-go/v5"
)

// link is a simulated one-way path: datagrams are lost with probability
// loss and arrive after delay plus up to jitter ms (so they reorder).
type link struct {
	rng          *rand.Rand
	loss         float64
	delay        uint32
	jitter       uint32
	inflight     []packet
	sent, copied int
}

type packet struct {
	at   uint32
	data []byte
}

func (l *link) send(now uint32, p []byte) {
	l.sent++
	if l.rng.Float64() < l.loss {
		return
	}
	at := now + l.delay
	if l.jitter > 0 {
		at += uint32(l.rng.IntN(int(l.jitter)))
	}
	l.inflight = append(l.inflight, packet{at, bytes.Clone(p)})
}

// due removes and returns the packets that have arrived by now.
func (l *link) due(now uint32) [][]byte {
	var out [][]byte
	keep := l.inflight[:0]
	for _, p := range l.inflight {
		if diff(now, p.at) >= 0 {
			out = append(out, p.data)
		} else {
			keep = append(keep, p)
		}
	}
	l.inflight = keep
	return out
}

// pattern is n deterministic bytes.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

// TestStreamOverImpairedLink moves a stream both ways between two engines
// over links with loss, delay and reordering, on a virtual clock, for each
// preset: every byte arrives once and in order.
func TestStreamOverImpairedLink(t *testing.T) {
	cases := []struct {
		name   string
		cfg    Config
		loss   float64
		delay  uint32
		jitter uint32
	}{
		{"normal-clean", Normal, 0, 5, 0},
		{"normal-5pct-100ms", Normal, 0.05, 50, 10},
		{"fast-20pct-200ms", Fast, 0.20, 100, 40},
		{"weak-20pct-200ms", WeakNetwork, 0.20, 100, 40},
		{"weak-30pct-reorder", WeakNetwork, 0.30, 20, 80},
		{"congestion-on", Config{Interval: 20, Resend: 2, SendWindow: 64, RecvWindow: 64, MTU: 1200}, 0.1, 30, 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			ab := &link{rng: rng, loss: tc.loss, delay: tc.delay, jitter: tc.jitter}
			ba := &link{rng: rng, loss: tc.loss, delay: tc.delay, jitter: tc.jitter}
			var now uint32 = 1000
			const reserve = 9
			a := New(7, tc.cfg, reserve, func(b []byte) { ab.send(now, b[reserve:]) })
			b := New(7, tc.cfg, reserve, func(p []byte) { ba.send(now, p[reserve:]) })
			wantAB, wantBA := pattern(200_000, 1), pattern(150_000, 2)
			var gotAB, gotBA []byte
			offA, offB := 0, 0
			var ready [][]byte
			for step := 0; step < 600_000 && (len(gotAB) < len(wantAB) || len(gotBA) < len(wantBA)); step++ {
				now++
				// Writers feed the engines as SendRoom allows.
				if k := min(a.SendRoom(), len(wantAB)-offA, 3000); k > 0 {
					a.Send(wantAB[offA : offA+k])
					offA += k
				}
				if k := min(b.SendRoom(), len(wantBA)-offB, 3000); k > 0 {
					b.Send(wantBA[offB : offB+k])
					offB += k
				}
				for _, p := range ab.due(now) {
					if _, err := b.Input(p, now); err != nil {
						t.Fatal(err)
					}
				}
				for _, p := range ba.due(now) {
					if _, err := a.Input(p, now); err != nil {
						t.Fatal(err)
					}
				}
				ready = b.TakeReady(ready[:0])
				for _, d := range ready {
					gotAB = append(gotAB, d...)
					Recycle(d)
				}
				ready = a.TakeReady(ready[:0])
				for _, d := range ready {
					gotBA = append(gotBA, d...)
					Recycle(d)
				}
				if now%uint32(tc.cfg.withDefaults().Interval) == 0 {
					a.Flush(now)
					b.Flush(now)
				}
				if a.Dead() || b.Dead() {
					t.Fatalf("dead link at step %d", step)
				}
			}
			if !bytes.Equal(gotAB, wantAB) || !bytes.Equal(gotBA, wantBA) {
				t.Fatalf("stream corrupted: got %d/%d and %d/%d bytes", len(gotAB), len(wantAB), len(gotBA), len(wantBA))
			}
			// Drain: once everything is acknowledged both engines go idle.
			for step := 0; step < 20_000 && !(a.Idle() && b.Idle()); step++ {
				now++
				for _, p := range ab.due(now) {
					b.Input(p, now)
				}
				for _, p := range ba.due(now) {
					a.Input(p, now)
				}
				a.Flush(now)
				b.Flush(now)
			}
			if !a.Idle() || !b.Idle() {
				t.Fatalf("engines not idle after drain: a %d waiting, b %d waiting", a.WaitSnd(), b.WaitSnd())
			}
			t.Logf("datagrams a->b %d, b->a %d, virtual time %d ms", ab.sent, ba.sent, now-1000)
		})
	}
}

// TestIdleEngineHoldsNothing: after a burst is delivered and acknowledged,
// an engine keeps no queue arrays (the point of this package).
func TestIdleEngineHoldsNothing(t *testing.T) {
	var toB, toA [][]byte
	a := New(1, Fast, 0, func(p []byte) { toB = append(toB, bytes.Clone(p)) })
	b := New(1, Fast, 0, func(p []byte) { toA = append(toA, bytes.Clone(p)) })
	a.Send(pattern(10_000, 3))
	now := uint32(10)
	for i := 0; i < 50 && !(a.Idle() && b.Idle()); i++ {
		now += 20
		a.Flush(now)
		for _, p := range toB {
			b.Input(p, now)
		}
		toB = toB[:0]
		for _, d := range b.TakeReady(nil) {
			Recycle(d)
		}
		b.Flush(now)
		for _, p := range toA {
			a.Input(p, now)
		}
		toA = toA[:0]
	}
	for _, e := range []*Engine{a, b} {
		if e.sndQueue != nil || e.sndBuf != nil || e.rcvBuf != nil || e.ready != nil || e.acks != nil {
			t.Fatalf("idle engine still holds queues: %+v", e)
		}
	}
}

func TestBadInput(t *testing.T) {
	e := New(5, Normal, 0, func([]byte) {})
	seg := func(conv uint32, cmd, frg byte, n uint32, extra int) []byte {
		b := make([]byte, Overhead+extra)
		b[0] = byte(conv)
		b[4], b[5] = cmd, frg
		b[20] = byte(n)
		return b
	}
	cases := []struct {
		name string
		in   []byte
		err  error
	}{
		{"short", make([]byte, 10), ErrBadInput},
		{"other conv", seg(6, cmdPush, 0, 0, 0), ErrConv},
		{"unknown cmd", seg(5, 99, 0, 0, 0), ErrBadInput},
		{"length past end", seg(5, cmdPush, 0, 10, 5), ErrBadInput},
		{"message-mode fragment", seg(5, cmdPush, 1, 0, 0), ErrBadInput},
		{"valid empty push", seg(5, cmdPush, 0, 0, 0), nil},
	}
	for _, tc := range cases {
		if _, err := e.Input(tc.in, 1); err != tc.err {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.err)
		}
	}
}

// TestInteropWithKCPGo runs this engine against kcp-go's engine (message
// mode with messages of at most one segment, which is byte-identical to
// stream mode on the wire) over a lossy, reordering link in real time.
func TestInteropWithKCPGo(t *testing.T) {
	if testing.Short() {
		t.Skip("real-time interop")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var now uint32
	ours2theirs := &link{rng: rng, loss: 0.1, delay: 2, jitter: 6}
	theirs2ours := &link{rng: rng, loss: 0.1, delay: 2, jitter: 6}
	clock := func() uint32 { return uint32(time.Since(epoch) / time.Millisecond) }
	ours := New(42, Fast, 0, func(p []byte) { ours2theirs.send(clock(), p) })
	theirs := kcp.NewKCP(42, func(buf []byte, size int) { theirs2ours.send(clock(), buf[:size]) })
	theirs.NoDelay(1, 10, 2, 1)
	theirs.WndSize(128, 128)
	theirs.SetMtu(1350)

	want := pattern(120_000, 5)    // ours -> theirs
	wantBack := pattern(90_000, 6) // theirs -> ours, in messages of <= mss
	var got, gotBack []byte
	off, offBack := 0, 0
	recv := make([]byte, 2048)
	deadline := time.Now().Add(20 * time.Second)
	for (len(got) < len(want) || len(gotBack) < len(wantBack)) && time.Now().Before(deadline) {
		now = clock()
		if k := min(ours.SendRoom(), len(want)-off, 4000); k > 0 {
			ours.Send(want[off : off+k])
			off += k
		}
		for offBack < len(wantBack) && theirs.WaitSnd() < 256 {
			k := min(1000, len(wantBack)-offBack)
			theirs.Send(wantBack[offBack : offBack+k])
			offBack += k
		}
		for _, p := range ours2theirs.due(now) {
			theirs.Input(p, true, false)
		}
		for _, p := range theirs2ours.due(now) {
			if _, err := ours.Input(p, now); err != nil {
				t.Fatal(err)
			}
		}
		for {
			n := theirs.Recv(recv)
			if n < 0 {
				break
			}
			got = append(got, recv[:n]...)
		}
		for _, d := range ours.TakeReady(nil) {
			gotBack = append(gotBack, d...)
			Recycle(d)
		}
		ours.Flush(now)
		theirs.Update()
		time.Sleep(time.Millisecond)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("ours -> kcp-go: %d of %d bytes, equal prefix: %v", len(got), len(want), bytes.HasPrefix(want, got))
	}
	if !bytes.Equal(gotBack, wantBack) {
		t.Fatalf("kcp-go -> ours: %d of %d bytes", len(gotBack), len(wantBack))
	}
}

func FuzzInput(f *testing.F) {
	a := New(9, Fast, 0, func([]byte) {})
	var seed []byte
	a.output = func(p []byte) { seed = append(seed[:0], p...) }
	a.Send([]byte("hello"))
	a.Flush(1)
	f.Add(seed)
	f.Add(make([]byte, Overhead))
	f.Fuzz(func(t *testing.T, data []byte) {
		e := New(9, Fast, 0, func([]byte) {})
		e.Input(data, 5)
		e.Flush(10)
		for _, d := range e.TakeReady(nil) {
			Recycle(d)
		}
		if len(e.rcvBuf) > Fast.RecvWindow {
			t.Fatalf("receive buffer past its window: %d", len(e.rcvBuf))
		}
	})
}

func TestPresets(t *testing.T) {
	for _, name := range []string{"normal", "fast", "weak-network"} {
		if _, err := Preset(name); err != nil {
			t.Error(err)
		}
	}
	if _, err := Preset("turbo"); err == nil {
		t.Error("unknown preset accepted")
	}
}

func BenchmarkIdleEngineBytes(b *testing.B) {
	// Reported as B/op: what one new engine costs before data moves.
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		New(uint32(i), Fast, 9, func([]byte) {})
	}
}
