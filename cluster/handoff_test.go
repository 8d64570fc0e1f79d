package cluster

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"imgate/proto"
)

// rawConn speaks frames on a TCP connection, so the test decides exactly
// when the client leaves one node and reaches the next.
type rawConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func rawDial(t *testing.T, addr, tok string, flags uint16) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc := &rawConn{t: t, c: c, r: bufio.NewReader(c)}
	if _, err := c.Write(proto.AppendFrame(nil, proto.Header{Op: proto.OpAuth, Flags: flags}, []byte(tok))); err != nil {
		t.Fatal(err)
	}
	if f := rc.read(); f.Op != proto.OpAuthOK {
		t.Fatalf("got %v, want AUTH_OK", f.Op)
	}
	return rc
}

func (rc *rawConn) read() proto.Frame {
	rc.t.Helper()
	rc.c.SetReadDeadline(time.Now().Add(testWait))
	var buf []byte
	for {
		f, n, err := proto.Decode(buf, proto.DefaultMaxFrame)
		if err != nil {
			rc.t.Fatal(err)
		}
		if n > 0 {
			return f
		}
		b, err := rc.r.ReadByte()
		if err != nil {
			rc.t.Fatalf("read: %v", err)
		}
		buf = append(buf, b)
	}
}

// payload reads the next push and returns its payload.
func (rc *rawConn) payload() string {
	rc.t.Helper()
	f := rc.read()
	if f.Op != proto.OpPush {
		rc.t.Fatalf("got %v, want PUSH", f.Op)
	}
	p, err := proto.ParsePush(f.Body)
	if err != nil {
		rc.t.Fatal(err)
	}
	return string(p.Payload)
}

// ready reports whether k's subscription is confirmed.
func (i *interest) ready(k interestKey) bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	s := i.subs[k]
	return s != nil && s.ready
}

// A drained client that reconnects with FlagMoved gets, from its new node,
// the pushes published while it was connected nowhere, before any newer
// one, each once; without the flag they are gone.
func TestDrainHandoff(t *testing.T) {
	e := startBus(t)
	a := startNode(t, e, "a", nil)
	b := startNode(t, e, "b", nil)
	pusher := NewPusher(e.mustConn(t), "")
	push := func(s string) {
		t.Helper()
		if err := pusher.User("alice", Message{Payload: []byte(s)}); err != nil {
			t.Fatal(err)
		}
	}
	old := rawDial(t, a.tcp, token(t, "alice", "phone"), 0)
	waitFor(t, "alice's subscription on a", func() bool { return a.interest.ready(interestKey{name: "alice"}) })
	push("p0")
	if got := old.payload(); got != "p0" {
		t.Fatalf("got %q, want p0", got)
	}

	a.srv.Drain(10 * time.Second) // one client: closed at once
	if f := old.read(); f.Op != proto.OpClose {
		t.Fatalf("got %v, want CLOSE", f.Op)
	}
	waitFor(t, "a's hold", func() bool { return a.handoff.hasHold("alice") })
	// alice is connected nowhere now; a holds these.
	for i := 1; i <= 3; i++ {
		push(fmt.Sprintf("p%d", i))
	}
	waitFor(t, "3 held pushes", func() bool {
		a.handoff.mu.Lock()
		defer a.handoff.mu.Unlock()
		hd := a.handoff.holds["alice"]["phone"]
		return hd != nil && len(hd.msgs) == 3
	})

	moved := rawDial(t, b.tcp, token(t, "alice", "phone"), proto.FlagMoved)
	for i := 1; i <= 3; i++ {
		if got, want := moved.payload(), fmt.Sprintf("p%d", i); got != want {
			t.Fatalf("got %q, want %s", got, want)
		}
	}
	push("p4")
	if got := moved.payload(); got != "p4" {
		t.Fatalf("got %q, want p4 (a held push repeated?)", got)
	}
	// Inside its late window a still listens and forwards p4 to the moved
	// connection too. Whichever copy reaches b first is delivered (the
	// forwarded one through the hand-over, the direct one as usual); the
	// other is dropped.
	waitFor(t, "a forwards p4", func() bool { return a.handoff.forwarded.Load() == 1 })
	waitFor(t, "b drops one copy of p4", func() bool { return b.handoff.duplicates.Load()+b.stats.duplicates.Load() == 1 })
	moved.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := moved.r.ReadByte(); err == nil {
		t.Fatal("a frame after p4: p4 was delivered twice")
	}
	lateP4 := b.handoff.delivered.Load() - 3 // 1 when the forwarded copy came first
	// A forwarded push b has not seen (it was published on a NATS server
	// that did not know of b's subscription yet) is delivered.
	sessions := b.srv.Registry().User("alice", nil)
	if len(sessions) != 1 {
		t.Fatalf("alice has %d sessions on b", len(sessions))
	}
	m := nats.NewMsg(b.subj.Conn("b", sessions[0].ID()))
	m.Data = []byte("late")
	m.Header.Set(HeaderOrigin, "elsewhere")
	m.Header.Set(HeaderOseq, "1")
	m.Header.Set(HeaderOp, opLate)
	b.deliver(m, 0)
	if got := moved.payload(); got != "late" {
		t.Fatalf("got %q, want the forwarded push", got)
	}
	if got := a.handoff.claimed.Load(); got != 1 {
		t.Errorf("claims answered by a: %d, want 1", got)
	}
	if got := b.handoff.delivered.Load() - lateP4; got != 4 {
		t.Errorf("pushes b delivered by the hand-over: %d, want 4 (3 held, 1 forwarded late)", got)
	}
	waitFor(t, "a drops alice's subscription", func() bool { _, users := a.interest.counts(); return users == 0 })

	// Without FlagMoved nothing is claimed: a client of a drained node
	// that does not say it moved gets only new pushes.
	a.handoff.draining.Store(true)
	other := rawDial(t, b.tcp, token(t, "bob", "phone"), 0)
	waitFor(t, "bob's subscription on b", func() bool { return b.interest.ready(interestKey{name: "bob"}) })
	if err := pusher.User("bob", Message{Payload: []byte("q1")}); err != nil {
		t.Fatal(err)
	}
	if got := other.payload(); got != "q1" {
		t.Fatalf("got %q, want q1", got)
	}
	if got := b.handoff.unclaimed.Load() + b.handoff.claimed.Load(); got != 0 {
		t.Errorf("b made %d claims for a client without FlagMoved", got)
	}
}

// The cluster's series are on the node's /metrics.
func TestClusterMetrics(t *testing.T) {
	e := startBus(t)
	a := startNode(t, e, "a", nil)
	resp, err := http.Get("http://" + a.srv.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		"imgate_cluster_bus_connected 1",
		"imgate_cluster_nodes 1",
		"imgate_cluster_registry_ready",
		"imgate_cluster_handoff_held_total 0",
		"imgate_cluster_svid_requests_total",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// A NATS server can hand a new subscription a message it had queued before
// the subscription arrived. If the old node had already delivered it, the
// new node must not deliver it again: the claim's answer carries what the
// old node gave the connection, and the new node counts it as delivered.
func TestDrainHandoffStaleCopy(t *testing.T) {
	e := startBus(t)
	a := startNode(t, e, "a", nil)
	b := startNode(t, e, "b", nil)
	pusher := NewPusher(e.mustConn(t), "")
	old := rawDial(t, a.tcp, token(t, "carol", "phone"), 0)
	waitFor(t, "carol's subscription on a", func() bool { return a.interest.ready(interestKey{name: "carol"}) })
	if err := pusher.User("carol", Message{Payload: []byte("q0")}); err != nil {
		t.Fatal(err)
	}
	if got := old.payload(); got != "q0" {
		t.Fatalf("got %q, want q0", got)
	}
	a.srv.Drain(10 * time.Second)
	if f := old.read(); f.Op != proto.OpClose {
		t.Fatalf("got %v, want CLOSE", f.Op)
	}
	moved := rawDial(t, b.tcp, token(t, "carol", "phone"), proto.FlagMoved)
	waitFor(t, "b's claim done", func() bool {
		b.handoff.mu.Lock()
		defer b.handoff.mu.Unlock()
		return a.handoff.claimed.Load() == 1 && len(b.handoff.gates) == 0
	})
	// The stale copy of q0 (the pusher's first message) reaches b.
	m := nats.NewMsg(b.subj.User("carol"))
	m.Data = []byte("q0")
	m.Header.Set(HeaderOrigin, pusher.Origin())
	m.Header.Set(HeaderOseq, "1")
	b.deliver(m, 0)
	if err := pusher.User("carol", Message{Payload: []byte("q1")}); err != nil {
		t.Fatal(err)
	}
	if got := moved.payload(); got != "q1" {
		t.Fatalf("got %q, want q1: q0, delivered by a before the close, came again from b", got)
	}
}

// A user whose other device is already on the new node: the new node was
// subscribed all along, so the moved device gets from the hold only what the
// new node had delivered before it authenticated, and everything later from
// the new node itself, each push once.
func TestDrainHandoffUserAlreadyThere(t *testing.T) {
	e := startBus(t)
	a := startNode(t, e, "a", nil)
	b := startNode(t, e, "b", nil)
	pusher := NewPusher(e.mustConn(t), "")
	push := func(s string) {
		t.Helper()
		if err := pusher.User("dave", Message{Payload: []byte(s)}); err != nil {
			t.Fatal(err)
		}
	}
	desk := rawDial(t, b.tcp, token(t, "dave", "desk"), 0)
	old := rawDial(t, a.tcp, token(t, "dave", "phone"), 0)
	waitFor(t, "dave's subscriptions", func() bool {
		return a.interest.ready(interestKey{name: "dave"}) && b.interest.ready(interestKey{name: "dave"})
	})
	push("r0")
	if got := old.payload(); got != "r0" {
		t.Fatalf("phone got %q, want r0", got)
	}
	if got := desk.payload(); got != "r0" {
		t.Fatalf("desk got %q, want r0", got)
	}
	a.srv.Drain(10 * time.Second)
	if f := old.read(); f.Op != proto.OpClose {
		t.Fatalf("got %v, want CLOSE", f.Op)
	}
	waitFor(t, "a's hold", func() bool { return a.handoff.hasHold("dave") })
	push("r1") // held by a; delivered to desk by b
	waitFor(t, "r1 held", func() bool {
		a.handoff.mu.Lock()
		defer a.handoff.mu.Unlock()
		hd := a.handoff.holds["dave"]["phone"]
		return hd != nil && len(hd.msgs) == 1
	})
	if got := desk.payload(); got != "r1" {
		t.Fatalf("desk got %q, want r1", got)
	}
	phone := rawDial(t, b.tcp, token(t, "dave", "phone"), proto.FlagMoved)
	if got := phone.payload(); got != "r1" {
		t.Fatalf("moved phone got %q, want the held r1", got)
	}
	push("r2")
	if got := phone.payload(); got != "r2" {
		t.Fatalf("moved phone got %q, want r2", got)
	}
	if got := desk.payload(); got != "r2" {
		t.Fatalf("desk got %q, want r2", got)
	}
	phone.c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := phone.r.ReadByte(); err == nil {
		t.Fatal("the moved phone got a push twice")
	}
	if got := b.handoff.shared.Load(); got != 1 {
		t.Errorf("claims for a user already on b: %d, want 1", got)
	}
}
