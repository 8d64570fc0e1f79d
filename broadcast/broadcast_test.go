package broadcast

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"imgate/proto"
	"imgate/transport"
)

// member records what it receives, the way a connection would: it holds the
// frame until "written" (Flush), then releases it.
type member struct {
	id    uint64
	mu    sync.Mutex
	queue []transport.Frame
	got   []uint64 // payload sequence numbers, in order
	keep  bool     // record payloads (off for the allocation test)
	recv  atomic.Int64
}

func (m *member) ID() uint64 { return m.id }

func (m *member) Enqueue(f transport.Frame) (bool, error) {
	m.mu.Lock()
	m.queue = append(m.queue, f)
	start := len(m.queue) == 1
	m.mu.Unlock()
	return start, nil
}

func (m *member) Flush() {
	m.mu.Lock()
	m.recv.Add(int64(len(m.queue)))
	for i, f := range m.queue {
		if m.keep {
			fr, _, _ := proto.Decode(f.Wire(false), proto.MaxFrameLimit)
			p, _ := proto.ParsePush(fr.Body)
			m.got = append(m.got, binary.BigEndian.Uint64(p.Payload))
		}
		f.Release()
		m.queue[i] = nil
	}
	m.queue = m.queue[:0]
	m.mu.Unlock()
}

func payload(i uint64) []byte { return binary.BigEndian.AppendUint64(nil, i) }

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestFrameWireForms(t *testing.T) {
	for _, size := range []int{0, 100, 125, 126, 1000, 70000} {
		f := NewPush(proto.FlagRoom, proto.Push{ConvID: 1, Seq: 2, Topic: []byte("r"), Payload: make([]byte, size)})
		stream := f.Wire(false)
		fr, n, err := proto.Decode(stream, proto.MaxFrameLimit)
		if err != nil || n != len(stream) || fr.Op != proto.OpPush || fr.Flags != proto.FlagRoom {
			t.Fatalf("size %d: stream form %v %d/%d", size, err, n, len(stream))
		}
		wsForm := f.Wire(true)
		hl := transport.WSHeaderSize(len(stream))
		if len(wsForm) != hl+len(stream) || wsForm[0] != 0x82 || &wsForm[hl] != &stream[0] {
			t.Fatalf("size %d: WebSocket form is not the same bytes behind a header", size)
		}
		f.Release()
	}
}

func TestPublishOrderAndCompleteness(t *testing.T) {
	h := NewHub(Config{Workers: 4, SmallRoom: 8})
	t.Cleanup(h.Close)
	var members []*member
	for i := 0; i < 300; i++ {
		m := &member{id: uint64(i) * 7919, keep: true}
		members = append(members, m)
		if added, _ := h.Join("big", m); !added {
			t.Fatal("join failed")
		}
	}
	const msgs = 200
	for i := uint64(0); i < msgs; i++ {
		if n := h.Publish("big", NewPush(proto.FlagRoom, proto.Push{Topic: []byte("big"), Payload: payload(i)})); n != 300 {
			t.Fatalf("published to %d", n)
		}
	}
	for _, m := range members {
		waitFor(t, func() bool { m.mu.Lock(); defer m.mu.Unlock(); return len(m.got) == msgs })
		for i, seq := range m.got {
			if seq != uint64(i) {
				t.Fatalf("member %d: message %d has seq %d", m.id, i, seq)
			}
		}
	}
}

func TestJoinLeaveDeletesRoom(t *testing.T) {
	h := NewHub(Config{Workers: 2})
	t.Cleanup(h.Close)
	a, b := &member{id: 1}, &member{id: 2}
	if _, created := h.Join("r", a); !created {
		t.Fatal("first join should create the room")
	}
	if added, created := h.Join("r", a); added || created {
		t.Fatal("second join of the same member")
	}
	h.Join("r", b)
	if h.Room("r").Len() != 2 {
		t.Fatal("len")
	}
	if removed, deleted := h.Leave("r", a); !removed || deleted {
		t.Fatal("leave a")
	}
	if removed, deleted := h.Leave("r", b); !removed || !deleted {
		t.Fatal("leave b should delete the room")
	}
	if h.Room("r") != nil || h.RoomCount() != 0 {
		t.Fatal("room not deleted")
	}
	if n := h.Publish("r", NewPush(0, proto.Push{})); n != 0 {
		t.Fatal("publish to a deleted room")
	}
}

// Concurrent joins, leaves and publishes: no race, no lost reference.
func TestConcurrentChurn(t *testing.T) {
	h := NewHub(Config{Workers: 4, SmallRoom: 4})
	t.Cleanup(h.Close)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				m := &member{id: uint64(g*1000 + i)}
				room := fmt.Sprintf("r%d", i%5)
				h.Join(room, m)
				h.Publish(room, NewPush(0, proto.Push{Payload: payload(uint64(i))}))
				h.Leave(room, m)
			}
		}(g)
	}
	wg.Wait()
	waitFor(t, func() bool { return h.RoomCount() == 0 })
}

// The zero-copy claim as an assertion: publishing to a room of 1,000 members
// allocates nothing per recipient (and, once the pools are warm, nothing at
// all).
func TestFanoutAllocatesNothingPerRecipient(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts need a build without -race (make test runs this pass)")
	}
	h := NewHub(Config{Workers: 2, SmallRoom: 64})
	t.Cleanup(h.Close)
	const n = 1000
	var members []*member
	for i := 0; i < n; i++ {
		m := &member{id: uint64(i)}
		m.queue = make([]transport.Frame, 0, 4)
		members = append(members, m)
		h.Join("room", m)
	}
	var want int64
	publish := func() {
		h.Publish("room", NewPush(proto.FlagRoom, proto.Push{Topic: []byte("room"), Payload: make128}))
		want++
		for _, m := range members {
			for m.recv.Load() < want {
				runtime.Gosched()
			}
		}
	}
	for i := 0; i < 10; i++ {
		publish() // warm the pools
	}
	allocs := testing.AllocsPerRun(50, publish)
	if allocs >= 1 {
		t.Fatalf("%.1f allocations per publish to %d members; want 0", allocs, n)
	}
}

var make128 = make([]byte, 128)

func BenchmarkFanoutPerRecipient(b *testing.B) {
	for _, size := range []int{100, 10000} {
		b.Run(fmt.Sprintf("members=%d", size), func(b *testing.B) {
			h := NewHub(Config{})
			defer h.Close()
			var members []*member
			for i := 0; i < size; i++ {
				m := &member{id: uint64(i)}
				members = append(members, m)
				h.Join("room", m)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				h.Publish("room", NewPush(proto.FlagRoom, proto.Push{Topic: []byte("room"), Payload: make128}))
			}
			// Workers flush members after each batch; wait for the last one.
			for _, m := range members {
				for m.recv.Load() < int64(b.N) {
					runtime.Gosched()
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*size), "ns/recipient")
		})
	}
}

// gatedMember blocks its first Flush until released, so the test can queue a
// whole burst behind a busy worker; it records the most frames it ever held
// unwritten.
type gatedMember struct {
	member
	gate    chan struct{}
	maxHeld int
}

func (m *gatedMember) Enqueue(f transport.Frame) (bool, error) {
	start, err := m.member.Enqueue(f)
	m.mu.Lock()
	m.maxHeld = max(m.maxHeld, len(m.queue))
	m.mu.Unlock()
	return start, err
}

func (m *gatedMember) Flush() {
	if m.gate != nil {
		<-m.gate
		m.gate = nil
	}
	m.member.Flush()
}

// A worker that falls behind takes what is queued in batches bounded in
// bytes, so what it queues for one member before writing stays below
// MaxBatchBytes plus one frame, however long the backlog.
func TestBatchBoundedInBytes(t *testing.T) {
	const frame = 32 << 10
	h := NewHub(Config{Workers: 1, MaxBatch: 64, MaxBatchBytes: 64 << 10})
	t.Cleanup(h.Close)
	m := &gatedMember{member: member{id: 1}, gate: make(chan struct{})}
	h.Join("r", m)
	payload := make([]byte, frame)
	for i := 0; i < 20; i++ {
		h.Publish("r", NewPush(0, proto.Push{Payload: payload}))
	}
	close(m.gate) // the worker was stuck in the first flush with 19 tasks queued
	waitFor(t, func() bool { return m.recv.Load() == 20 })
	if limit := (64<<10)/frame + 1; m.maxHeld > limit {
		t.Fatalf("a batch queued %d frames of %d bytes for one member; the byte bound allows %d", m.maxHeld, frame, limit)
	}
}
