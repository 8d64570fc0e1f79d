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

// expect reads the next push and checks its payload.
func (rc *rawConn) expect(want string) {
	rc.t.Helper()
	if got := rc.payload(); got != want {
		rc.t.Fatalf("got %q, want %q", got, want)
	}
}

// expectClose reads the next frame, which must be CLOSE.
func (rc *rawConn) expectClose() {
	rc.t.Helper()
	if f := rc.read(); f.Op != proto.OpClose {
		rc.t.Fatalf("got %v, want CLOSE", f.Op)
	}
}

// expectQuiet checks that nothing more arrives for a moment.
func (rc *rawConn) expectQuiet(why string) {
	rc.t.Helper()
	rc.c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := rc.r.ReadByte(); err == nil {
		rc.t.Fatal(why)
	}
}

// handoffRig is two nodes on one bus and a stamped publisher: a drains,
// b takes its clients.
type handoffRig struct {
	t      *testing.T
	a, b   *testNode
	pusher *Pusher
}

func newHandoffRig(t *testing.T) *handoffRig {
	e := startBus(t)
	return &handoffRig{t: t, a: startNode(t, e, "a", nil), b: startNode(t, e, "b", nil), pusher: NewPusher(e.mustConn(t), "")}
}

func (r *handoffRig) push(uid, payload string) {
	r.t.Helper()
	if err := r.pusher.User(uid, Message{Payload: []byte(payload)}); err != nil {
		r.t.Fatal(err)
	}
}

// held is how many pushes a holds for uid's device.
func (r *handoffRig) held(uid, device string) int {
	r.a.handoff.mu.Lock()
	defer r.a.handoff.mu.Unlock()
	if hd := r.a.handoff.holds[uid][device]; hd != nil {
		return len(hd.msgs)
	}
	return -1
}

// stamped is a bus message as a stamped publisher (or a forwarding node,
// with op "late") sends it.
func stamped(subject, data, origin string, seq uint64, op string) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = []byte(data)
	m.Header.Set(HeaderOrigin, origin)
	m.Header.Set(HeaderOseq, fmt.Sprint(seq))
	if op != "" {
		m.Header.Set(HeaderOp, op)
	}
	return m
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
	r := newHandoffRig(t)
	a, b := r.a, r.b
	push := func(s string) { t.Helper(); r.push("alice", s) }
	old := rawDial(t, a.tcp, token(t, "alice", "phone"), 0)
	waitFor(t, "alice's subscription on a", func() bool { return a.interest.ready(interestKey{name: "alice"}) })
	push("p0")
	old.expect("p0")

	a.srv.Drain(10 * time.Second) // one client: closed at once
	old.expectClose()
	waitFor(t, "a's hold", func() bool { return a.handoff.hasHold("alice") })
	// alice is connected nowhere now; a holds these.
	for i := 1; i <= 3; i++ {
		push(fmt.Sprintf("p%d", i))
	}
	waitFor(t, "3 held pushes", func() bool { return r.held("alice", "phone") == 3 })

	moved := rawDial(t, b.tcp, token(t, "alice", "phone"), proto.FlagMoved)
	for i := 1; i <= 3; i++ {
		moved.expect(fmt.Sprintf("p%d", i))
	}
	push("p4")
	moved.expect("p4")
	// Inside its late window a still listens and forwards p4 to the moved
	// connection too. Whichever copy reaches b first is delivered (the
	// forwarded one through the hand-over, the direct one as usual); the
	// other is dropped.
	waitFor(t, "a forwards p4", func() bool { return a.handoff.forwarded.Load() == 1 })
	waitFor(t, "b drops one copy of p4", func() bool { return b.handoff.duplicates.Load()+b.stats.duplicates.Load() == 1 })
	moved.expectQuiet("a frame after p4: p4 was delivered twice")
	lateP4 := b.handoff.delivered.Load() - 3 // 1 when the forwarded copy came first
	// A forwarded push b has not seen (it was published on a NATS server
	// that did not know of b's subscription yet) is delivered.
	sessions := b.srv.Registry().User("alice", nil)
	if len(sessions) != 1 {
		t.Fatalf("alice has %d sessions on b", len(sessions))
	}
	b.deliver(stamped(b.subj.Conn("b", sessions[0].ID()), "late", "elsewhere", 1, opLate), 0)
	moved.expect("late")
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
	r.push("bob", "q1")
	other.expect("q1")
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
	r := newHandoffRig(t)
	a, b := r.a, r.b
	old := rawDial(t, a.tcp, token(t, "carol", "phone"), 0)
	waitFor(t, "carol's subscription on a", func() bool { return a.interest.ready(interestKey{name: "carol"}) })
	r.push("carol", "q0")
	old.expect("q0")
	a.srv.Drain(10 * time.Second)
	old.expectClose()
	moved := rawDial(t, b.tcp, token(t, "carol", "phone"), proto.FlagMoved)
	waitFor(t, "b's claim done", func() bool {
		b.handoff.mu.Lock()
		defer b.handoff.mu.Unlock()
		return a.handoff.claimed.Load() == 1 && len(b.handoff.gates) == 0
	})
	// The stale copy of q0 (the pusher's first message) reaches b.
	b.deliver(stamped(b.subj.User("carol"), "q0", r.pusher.Origin(), 1, ""), 0)
	r.push("carol", "q1")
	moved.expect("q1") // not q0 again: a delivered it before the close
}

// A user whose other device is already on the new node: the new node was
// subscribed all along, so the moved device gets from the hold only what the
// new node had delivered before it authenticated, and everything later from
// the new node itself, each push once.
func TestDrainHandoffUserAlreadyThere(t *testing.T) {
	r := newHandoffRig(t)
	a, b := r.a, r.b
	push := func(s string) { t.Helper(); r.push("dave", s) }
	desk := rawDial(t, b.tcp, token(t, "dave", "desk"), 0)
	old := rawDial(t, a.tcp, token(t, "dave", "phone"), 0)
	waitFor(t, "dave's subscriptions", func() bool {
		return a.interest.ready(interestKey{name: "dave"}) && b.interest.ready(interestKey{name: "dave"})
	})
	push("r0")
	old.expect("r0")
	desk.expect("r0")
	a.srv.Drain(10 * time.Second)
	old.expectClose()
	waitFor(t, "a's hold", func() bool { return a.handoff.hasHold("dave") })
	push("r1") // held by a; delivered to desk by b
	waitFor(t, "r1 held", func() bool { return r.held("dave", "phone") == 1 })
	desk.expect("r1")
	phone := rawDial(t, b.tcp, token(t, "dave", "phone"), proto.FlagMoved)
	phone.expect("r1") // the held one
	push("r2")
	phone.expect("r2")
	desk.expect("r2")
	phone.expectQuiet("the moved phone got a push twice")
	if got := b.handoff.shared.Load(); got != 1 {
		t.Errorf("claims for a user already on b: %d, want 1", got)
	}
}
