package main

import (
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// packetPair is a connected pair of SOCK_SEQPACKET sockets: like a TUN, each
// read returns one whole packet. One end plays the device the shim holds,
// the other the network stack behind it, so the forwarding loops run
// unprivileged and without namespaces.
func packetPair(t *testing.T) (shim, stack *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	shim, stack = os.NewFile(uintptr(fds[0]), "shim"), os.NewFile(uintptr(fds[1]), "stack")
	t.Cleanup(func() { shim.Close(); stack.Close() })
	return shim, stack
}

// received is a packet read at the far side and when it came.
type received struct {
	seq uint32
	at  time.Time
	len int
}

// forwardOnce runs one direction from a fresh pair to another, sends n
// packets of size bytes spaced gap apart (each carries its index), and
// collects what reaches the far side until quiet has passed with nothing new.
func forwardOnce(t *testing.T, im Impairment, n, size int, gap, quiet time.Duration) (sent []time.Time, got []received, st Stats) {
	t.Helper()
	aShim, aStack := packetPair(t)
	bShim, bStack := packetPair(t)
	d := newDirection("a->b", aShim, bShim, im, 1, 1, 1500, time.Now())
	done := d.start()

	recv := make(chan []received, 1)
	go func() {
		var out []received
		buf := make([]byte, 2048)
		for {
			bStack.SetReadDeadline(time.Now().Add(quiet))
			k, err := bStack.Read(buf)
			if err != nil {
				recv <- out
				return
			}
			out = append(out, received{seq: binary.BigEndian.Uint32(buf), at: time.Now(), len: k})
		}
	}()
	pkt := make([]byte, size)
	for i := range n {
		binary.BigEndian.PutUint32(pkt, uint32(i))
		sent = append(sent, time.Now())
		if _, err := aStack.Write(pkt); err != nil {
			t.Fatalf("write packet %d: %v", i, err)
		}
		if gap > 0 {
			time.Sleep(gap)
		}
	}
	got = <-recv
	st = d.snapshot()
	d.close()
	aShim.Close()
	bShim.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("direction did not stop within 5s of close")
	}
	return sent, got, st
}

func TestForwardDelayKeepsOrderAndBytes(t *testing.T) {
	const n, delay = 50, 30 * time.Millisecond
	sent, got, st := forwardOnce(t, Impairment{Delay: delay, Jitter: 5 * time.Millisecond, Backlog: 100}, n, 200, time.Millisecond, 500*time.Millisecond)
	if len(got) != n {
		t.Fatalf("%d of %d packets arrived (stats %+v)", len(got), n, st)
	}
	for i, r := range got {
		if r.seq != uint32(i) || r.len != 200 {
			t.Fatalf("packet %d: seq %d, %d bytes; want seq %d, 200 bytes", i, r.seq, r.len, i)
		}
		// Timer wake-ups are late on a loaded machine, never early.
		if d := r.at.Sub(sent[i]); d < delay-5*time.Millisecond-time.Millisecond {
			t.Fatalf("packet %d took %v, less than delay - jitter", i, d)
		}
	}
	if st.In != n || st.Out != n || st.Lost+st.QueueFull+st.WriteErrors != 0 {
		t.Fatalf("stats %+v, want %d in and out, nothing dropped", st, n)
	}
}

func TestForwardLossAll(t *testing.T) {
	_, got, st := forwardOnce(t, Impairment{Loss: 1, Backlog: 10}, 30, 100, 0, 200*time.Millisecond)
	if len(got) != 0 || st.Lost != 30 || st.Out != 0 {
		t.Fatalf("loss 1: %d arrived, stats %+v; want none through and 30 lost", len(got), st)
	}
}

func TestForwardBacklogBound(t *testing.T) {
	// A burst of 40 into a 500 ms delay (long enough that none leaves
	// during the burst) with room for 5: 5 pass, 35 are counted as queue
	// drops.
	_, got, st := forwardOnce(t, Impairment{Delay: 500 * time.Millisecond, Backlog: 5}, 40, 100, 0, 800*time.Millisecond)
	if len(got) != 5 || st.QueueFull != 35 || st.MaxQueued != 5 {
		t.Fatalf("%d arrived, stats %+v; want 5 through, 35 queue drops, at most 5 queued", len(got), st)
	}
}

func TestForwardReorders(t *testing.T) {
	_, got, st := forwardOnce(t, Impairment{Reorder: 0.3, ReorderDelay: 20 * time.Millisecond, Backlog: 1000}, 200, 100, 500*time.Microsecond, 300*time.Millisecond)
	if len(got) != 200 {
		t.Fatalf("%d of 200 arrived (stats %+v)", len(got), st)
	}
	order := make([]int, len(got))
	for i, r := range got {
		order[i] = int(r.seq)
	}
	if inversions(order) == 0 || st.Held == 0 {
		t.Fatalf("no packet overtaken with reorder 0.3 (held %d)", st.Held)
	}
}

func TestForwardOversizeDropped(t *testing.T) {
	aShim, aStack := packetPair(t)
	bShim, bStack := packetPair(t)
	d := newDirection("a->b", aShim, bShim, Impairment{Backlog: 4}, 1, 1, 100, time.Now())
	done := d.start()
	aStack.Write(make([]byte, 101)) // over the 100-byte limit
	aStack.Write(make([]byte, 100))
	buf := make([]byte, 200)
	bStack.SetReadDeadline(time.Now().Add(2 * time.Second))
	if k, err := bStack.Read(buf); err != nil || k != 100 {
		t.Fatalf("read %d bytes, %v; want the 100-byte packet", k, err)
	}
	if st := d.snapshot(); st.Oversize != 1 || st.Out != 1 {
		t.Fatalf("stats %+v, want 1 oversize and 1 out", st)
	}
	d.close()
	aShim.Close()
	bShim.Close()
	<-done
}

func TestForwardStopsWhenDeviceCloses(t *testing.T) {
	aShim, _ := packetPair(t)
	bShim, _ := packetPair(t)
	d := newDirection("a->b", aShim, bShim, Impairment{Backlog: 4}, 1, 1, 1500, time.Now())
	done := d.start()
	d.close()
	if err := aShim.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("reader still running 5s after its device closed")
	}
}

// BenchmarkForward is the cost of moving one packet through a direction with
// no impairment: a read, the scheduler, the queue and a write.
func BenchmarkForward(b *testing.B) {
	fds := func() (*os.File, *os.File) {
		p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		return os.NewFile(uintptr(p[0]), "shim"), os.NewFile(uintptr(p[1]), "stack")
	}
	aShim, aStack := fds()
	bShim, bStack := fds()
	d := newDirection("a->b", aShim, bShim, Impairment{Backlog: 1000}, 1, 1, 1500, time.Now())
	done := d.start()
	pkt, buf := make([]byte, 1200), make([]byte, 1500)
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		aStack.Write(pkt)
		bStack.Read(buf)
	}
	b.StopTimer()
	d.close()
	aShim.Close()
	bShim.Close()
	<-done
	aStack.Close()
	bStack.Close()
}
