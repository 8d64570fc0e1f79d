package gateway

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"imgate/broadcast"
	"imgate/proto"
	"imgate/transport"
)

// End-to-end tests: a real server on loopback and raw clients (see
// e2e_helpers_test.go), every case over TCP and over WebSocket. Each case
// checks the exact frames and codes of docs/PROTOCOL.md, that only the
// offending connection is affected (a bystander in a room still gets room
// pushes), and the metric that counts it, read from /metrics.

func TestE2EAuthOK(t *testing.T) {
	e2eEachKind(t, func(t *testing.T, kind transport.Kind) {
		s := newE2EServer(t, func(c *Config) { c.HeartbeatInterval = 1500 * time.Millisecond })
		c := s.dial(kind)
		c.send(proto.Header{Op: proto.OpAuth, Seq: 4242}, []byte(e2eToken(t, e2eClaims("alice", "phone", nil))))
		a := c.expectAuthOK(s, 4242) // conn id, 1500 ms, 65536, "e2e-node"; seq echoed
		x := s.Registry().Conn(a.ConnID)
		if x == nil || x.UID() != "alice" || x.Device() != "phone" {
			t.Fatalf("registry entry for conn %016x: %+v", a.ConnID, x)
		}

		// A second AUTH is answered with ERROR and changes nothing (§7.1.7).
		c.send(proto.Header{Op: proto.OpAuth, Seq: 7}, []byte(e2eToken(t, e2eClaims("mallory", "phone", nil))))
		c.expectError(0, 7, proto.CodeAlreadyAuthed)
		c.ping(8)
		if x.UID() != "alice" || len(s.Registry().User("mallory", nil)) != 0 {
			t.Fatalf("second AUTH changed the identity to %q", x.UID())
		}

		// A token without a device claim is device "default".
		d, b := s.login(kind, "bob", "", nil)
		if x := s.Registry().Conn(b.ConnID); x == nil || x.Device() != DefaultDevice {
			t.Fatalf("device of a token without one: %+v", x)
		}
		d.ping(2)
		if b.ConnID == a.ConnID {
			t.Fatalf("two connections share id %016x", a.ConnID)
		}
		s.expectCounter(2, "imgate_connections_opened_total", "transport", kind.String())
	})
}

func TestE2EAuthRejected(t *testing.T) {
	forger := KeyConfig{ID: "k1", Alg: AlgHS256, Secret: "not-the-secret-not-the-secret-xx"}
	otherKid := KeyConfig{ID: "k2", Alg: AlgHS256, Secret: e2eSecret}
	cases := []struct {
		name  string
		token func(t *testing.T) string
		code  proto.Code
	}{
		{"forged", func(t *testing.T) string {
			tok, err := MintToken(forger, e2eClaims("eve", "d", nil))
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}, proto.CodeAuthFailed},
		{"expired", func(t *testing.T) string {
			c := e2eClaims("late", "d", nil)
			c.Expiry = time.Now().Add(-time.Hour)
			return e2eToken(t, c)
		}, proto.CodeTokenExpired},
		{"garbage", func(*testing.T) string { return "this is not a token" }, proto.CodeAuthFailed},
		{"three garbage segments", func(*testing.T) string { return "aaa.bbb.ccc" }, proto.CodeAuthFailed},
		{"empty", func(*testing.T) string { return "" }, proto.CodeAuthFailed},
		{"unknown kid", func(t *testing.T) string {
			tok, err := MintToken(otherKid, e2eClaims("eve", "d", nil))
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}, proto.CodeAuthFailed},
	}
	e2eEachKind(t, func(t *testing.T, kind transport.Kind) {
		s := newE2EServer(t, nil)
		by := s.bystander(kind, "lobby")
		counts := map[proto.Code]float64{}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				s := s.sub(t)
				c := s.dial(kind)
				c.send(proto.Header{Op: proto.OpAuth, Seq: 3}, []byte(tc.token(t)))
				c.expectClose(tc.code, 3)
				counts[tc.code]++
				s.expectCounter(counts[tc.code], "imgate_auth_failures_total", "code", tc.code.String())
				e2eWaitFor(t, e2eWait, "the rejected connection to leave the registry", func() bool { return s.conns() == 1 })
				if _, users := s.Registry().Counts(); users != 1 {
					t.Fatalf("%d users online, want only the bystander", users)
				}
				by.check(t)
			})
		}
	})
}

func TestE2ENotAuthenticated(t *testing.T) {
	ops := []struct {
		op   proto.Op
		body []byte
	}{
		{proto.OpJoin, []byte("lobby")},
		{proto.OpLeave, []byte("lobby")},
		{proto.OpHeartbeat, nil},
		{proto.OpUplink, []byte("hi")},
		{proto.OpAck, make([]byte, 16)},
		{proto.OpSync, make([]byte, 20)},
	}
	e2eEachKind(t, func(t *testing.T, kind transport.Kind) {
		s := newE2EServer(t, nil)
		by := s.bystander(kind, "lobby")
		for i, tc := range ops {
			t.Run(tc.op.String(), func(t *testing.T) {
				s := s.sub(t)
				c := s.dial(kind)
				svid := uint32(0)
				if tc.op == proto.OpUplink {
					svid = 1
				}
				c.send(proto.Header{Op: tc.op, SVID: svid, Seq: 5}, tc.body)
				c.expectClose(proto.CodeNotAuthed, 5)
				s.expectCounter(float64(i+1), "imgate_bad_frames_total", "code", "NOT_AUTHENTICATED")
				if r := s.Hub().Room("lobby"); r == nil || r.Len() != 1 {
					t.Fatalf("room lobby: %v, want the bystander alone", r)
				}
				by.check(t)
			})
		}
		// CLOSE is the one other frame allowed before AUTH (§7.1.2): the
		// server closes without answering.
		t.Run("CLOSE", func(t *testing.T) {
			s := s.sub(t)
			c := s.dial(kind)
			c.send(proto.Header{Op: proto.OpClose}, proto.AppendError(nil, proto.CodeNormal, "changed my mind"))
			c.expectEnd(e2eGracefulWSStatus)
			e2eWaitFor(t, e2eWait, "the connection to leave the registry", func() bool { return s.conns() == 1 })
			by.check(t)
		})
	})
}

func TestE2EAuthTimeout(t *testing.T) {
	const authTimeout = 300 * time.Millisecond
	e2eEachKind(t, func(t *testing.T, kind transport.Kind) {
		s := newE2EServer(t, func(c *Config) { c.AuthTimeout = authTimeout })
		by := s.bystander(kind, "lobby")
		start := time.Now()
		c := s.dial(kind)
		if kind == transport.KindKCP {
			// KCP has no handshake: a session exists once data arrives,
			// so this client opens one with half a frame header.
			c.writeMessage([]byte{0, 0})
		}
		if kind == transport.KindQUIC {
			// A QUIC client that never writes never shows the server its
			// stream, so the CLOSE frame cannot reach it: the connection
			// close carries AUTH_TIMEOUT instead (§11.3).
			c.expectClose(proto.CodeAuthTimeout, 0)
		} else {
			f := c.next()
			c.pushBack(f)
			c.expectClose(proto.CodeAuthTimeout, 0)
		}
		if elapsed := time.Since(start); elapsed < authTimeout {
			t.Fatalf("closed after %v, before the auth deadline of %v", elapsed, authTimeout)
		}
		e2eWaitFor(t, e2eWait, "the connection to leave the registry", func() bool { return s.conns() == 1 })
		s.expectCounter(1, "imgate_auth_timeouts_total")
		s.expectCounter(1, "imgate_connections_closed_total", "reason", "AUTH_TIMEOUT")
		by.check(t)
	})
}

func TestE2EHeartbeat(t *testing.T) {
	const interval = 300 * time.Millisecond
	e2eEachKind(t, func(t *testing.T, kind transport.Kind) {
		s := newE2EServer(t, func(c *Config) { c.HeartbeatInterval = interval })
		live := s.bystander(kind, "lobby")
		for seq := uint32(0); seq < 3; seq++ { // seq 0 is valid too
			live.c.ping(seq)
		}

		start := time.Now()
		silent, a := s.login(kind, "silent", "d", nil)
		type result struct {
			f   proto.Frame
			err error
			at  time.Time
		}
		closed := make(chan result, 1)
		go func() {
			f, err := silent.read(10 * interval)
			closed <- result{f, err, time.Now()}
		}()
		// The live connection heartbeats every third of an interval while
		// the silent one waits to be closed.
		tick := time.NewTicker(interval / 3)
		defer tick.Stop()
		seq := uint32(100)
		var r result
		for waiting := true; waiting; {
			select {
			case r = <-closed:
				waiting = false
			case <-tick.C:
				live.c.ping(seq)
				seq++
			}
		}
		if r.err != nil {
			t.Fatalf("silent connection: %v, want CLOSE HEARTBEAT_TIMEOUT", r.err)
		}
		if took := r.at.Sub(start); took < 2*interval || took > 2*interval+2*time.Second {
			t.Fatalf("silent connection closed after %v, want about two intervals (%v)", took, 2*interval)
		}
		silent.pushBack(r.f)
		silent.expectClose(proto.CodeHeartbeatTimeout, 0)
		e2eWaitFor(t, e2eWait, "the silent session to leave the registry", func() bool { return s.Registry().Conn(a.ConnID) == nil })

		// The live one stays for two more intervals and more.
		for until := time.Now().Add(3 * interval); time.Now().Before(until); seq++ {
			<-tick.C
			live.c.ping(seq)
		}
		live.check(t)
		s.expectCounter(1, "imgate_heartbeat_timeouts_total")
		s.expectCounter(1, "imgate_connections_closed_total", "reason", "HEARTBEAT_TIMEOUT")
	})
}

func TestE2EDevices(t *testing.T) {
	e2eEachKind(t, func(t *testing.T, kind transport.Kind) {
		s := newE2EServer(t, func(c *Config) { c.MaxConnsPerUser = 2 })
		by := s.bystander(kind, "lobby")

		// The same user and device again: the older connection is replaced.
		old, _ := s.login(kind, "u", "phone", nil)
		phone, p := s.login(kind, "u", "phone", nil)
		old.expectClose(proto.CodeReplaced, 0)
		phone.ping(2)
		s.expectCounter(1, "imgate_replaced_total")
		if got := s.Registry().User("u", nil); len(got) != 1 || got[0].ID() != p.ConnID {
			t.Fatalf("user u after replacement: %d sessions", len(got))
		}

		// Another device: both stay.
		laptop, _ := s.login(kind, "u", "laptop", nil)
		phone.ping(3)
		laptop.ping(3)
		if n := s.PushUser("u", proto.Push{Payload: []byte("both")}); n != 2 {
			t.Fatalf("PushUser reached %d connections, want 2", n)
		}
		for _, c := range []*e2eClient{phone, laptop} {
			c.expect(proto.Header{Op: proto.OpPush}, proto.AppendPush(nil, proto.Push{Payload: []byte("both")}))
		}

		// A third device is over the limit of 2: refused instead of AUTH_OK.
		third := s.dial(kind)
		third.send(proto.Header{Op: proto.OpAuth, Seq: 9}, []byte(e2eToken(t, e2eClaims("u", "tablet", nil))))
		third.expectClose(proto.CodeTooManyConns, 9)
		s.expectCounter(1, "imgate_auth_failures_total", "code", "TOO_MANY_CONNS")
		phone.ping(4)
		laptop.ping(4)

		// At the limit, a device the user already has still replaces.
		laptop2, _ := s.login(kind, "u", "laptop", nil)
		laptop.expectClose(proto.CodeReplaced, 0)
		phone.ping(5)
		laptop2.ping(5)
		s.expectCounter(2, "imgate_replaced_total")
		e2eWaitFor(t, e2eWait, "replaced and refused connections to leave", func() bool { return s.conns() == 3 })
		by.check(t)
	})
}

func TestE2ERooms(t *testing.T) {
	e2eEachKind(t, func(t *testing.T, kind transport.Kind) {
		s := newE2EServer(t, func(c *Config) { c.MaxRoomsPerConn = 2 })
		by := s.bystander(kind, "lobby")
		c, a := s.login(kind, "roomy", "d", nil)
		join := func(seq uint32, room string) { c.send(proto.Header{Op: proto.OpJoin, Seq: seq}, []byte(room)) }
		leave := func(seq uint32, room string) { c.send(proto.Header{Op: proto.OpLeave, Seq: seq}, []byte(room)) }

		join(11, "r1")
		c.expectReply(0, 11, nil)
		join(12, "r1") // again: succeeds, changes nothing
		c.expectReply(0, 12, nil)
		if r := s.Hub().Room("r1"); r == nil || r.Len() != 1 {
			t.Fatalf("room r1 after a double join: %v", r)
		}
		leave(13, "nowhere")
		c.expectError(0, 13, proto.CodeNotInRoom)

		join(14, "r2")
		c.expectReply(0, 14, nil)
		join(15, "r3") // over the limit of 2
		c.expectError(0, 15, proto.CodeRoomLimit)
		c.ping(16)     // still open
		join(17, "r1") // already in: not a new room
		c.expectReply(0, 17, nil)
		if s.Hub().Room("r3") != nil {
			t.Fatal("room r3 exists after a refused join")
		}
		leave(18, "r2")
		c.expectReply(0, 18, nil)
		join(19, "r3")
		c.expectReply(0, 19, nil)
		x := s.Registry().Conn(a.ConnID)
		if got := x.Rooms(); !slices.Equal(got, []string{"r1", "r3"}) {
			t.Fatalf("rooms %v, want [r1 r3]", got)
		}

		// Malformed names: BAD_REQUEST, for JOIN and LEAVE alike (§7.4).
		bad := []struct {
			name string
			room []byte
		}{
			{"empty", nil},
			{"control byte", []byte("a\x01b")},
			{"NUL", []byte("a\x00")},
			{"DEL", []byte("a\x7f")},
			{"newline", []byte("a\nb")},
			{"256 bytes", bytes.Repeat([]byte("x"), 256)},
		}
		seq := uint32(30)
		for _, b := range bad {
			for _, op := range []proto.Op{proto.OpJoin, proto.OpLeave} {
				seq++
				c.send(proto.Header{Op: op, Seq: seq}, b.room)
				f := c.next()
				want := proto.Header{Op: proto.OpError, Seq: seq}
				if e, err := proto.ParseError(f.Body); f.Header != want || err != nil || e.Code != proto.CodeBadRequest {
					t.Errorf("%v %s: got %s, want ERROR BAD_REQUEST seq %d", op, b.name, e2eShow(f), seq)
				}
			}
		}
		// 255 bytes is the longest valid name.
		leave(40, "r3")
		c.expectReply(0, 40, nil)
		long := string(bytes.Repeat([]byte("y"), 255))
		join(41, long)
		c.expectReply(0, 41, nil)
		if n := s.PushRoom(long, proto.Push{Payload: []byte("long")}); n != 1 {
			t.Fatalf("PushRoom(255-byte room) reached %d", n)
		}
		c.expect(proto.Header{Op: proto.OpPush, Flags: proto.FlagRoom}, proto.AppendPush(nil, proto.Push{Topic: []byte(long), Payload: []byte("long")}))
		c.ping(42)

		// The token's rooms claim.
		limited, _ := s.login(kind, "limited", "d", []string{"a"})
		limited.send(proto.Header{Op: proto.OpJoin, Seq: 1}, []byte("b"))
		limited.expectError(0, 1, proto.CodeRoomForbidden)
		limited.send(proto.Header{Op: proto.OpJoin, Seq: 2}, []byte("a"))
		limited.expectReply(0, 2, nil)
		none, _ := s.login(kind, "none", "d", []string{})
		none.send(proto.Header{Op: proto.OpJoin, Seq: 1}, []byte("a"))
		none.expectError(0, 1, proto.CodeRoomForbidden)
		none.ping(2)
		by.check(t)
	})
}

func TestE2EUplink(t *testing.T) {
	e2eEachKind(t, func(t *testing.T, kind transport.Kind) {
		s := newE2EServer(t, nil)
		by := s.bystander(kind, "lobby")
		c, _ := s.login(kind, "up", "d", nil)

		c.send(proto.Header{Op: proto.OpUplink, SVID: 1, Seq: 5}, []byte("hello"))
		c.expectReply(1, 5, []byte("hello"))
		c.send(proto.Header{Op: proto.OpUplink, SVID: 1, Seq: 6}, nil)
		c.expectReply(1, 6, nil)
		c.send(proto.Header{Op: proto.OpUplink, SVID: 99, Seq: 7}, []byte("anyone?"))
		c.expectError(99, 7, proto.CodeNoHandler)

		// Many in flight at once, two services interleaved: each answered
		// exactly once, matched on (svid, seq).
		const n = 200
		var batch []byte
		for i := range n {
			svid := uint32(1)
			if i%3 == 0 {
				svid = 99
			}
			body := fmt.Appendf(nil, "req-%d-%s", i, bytes.Repeat([]byte{'.'}, i))
			batch = proto.AppendFrame(batch, proto.Header{Op: proto.OpUplink, SVID: svid, Seq: uint32(1000 + i)}, body)
			if kind.WebSocket() { // one frame per message
				if err := c.writeMessage(batch); err != nil {
					t.Fatal(err)
				}
				batch = batch[:0]
			}
		}
		if len(batch) > 0 { // TCP: all of them in one write
			if err := c.writeMessage(batch); err != nil {
				t.Fatal(err)
			}
		}
		seen := make(map[uint32]bool)
		for range n {
			f := c.next()
			i := int(f.Seq) - 1000
			if i < 0 || i >= n || seen[f.Seq] {
				t.Fatalf("unexpected or repeated answer %s", e2eShow(f))
			}
			seen[f.Seq] = true
			if i%3 == 0 {
				if e, err := proto.ParseError(f.Body); f.Op != proto.OpError || f.SVID != 99 || err != nil || e.Code != proto.CodeNoHandler {
					t.Fatalf("uplink %d: got %s, want ERROR NO_HANDLER svid 99", i, e2eShow(f))
				}
				continue
			}
			want := fmt.Appendf(nil, "req-%d-%s", i, bytes.Repeat([]byte{'.'}, i))
			if f.Header != (proto.Header{Op: proto.OpReply, SVID: 1, Seq: f.Seq}) || !bytes.Equal(f.Body, want) {
				t.Fatalf("uplink %d: got %s, want its echo", i, e2eShow(f))
			}
		}
		c.ping(2)
		s.expectCounter(3+n, "imgate_uplinks_total")
		s.expectCounter(1+(n+2)/3, "imgate_uplink_errors_total", "code", "NO_HANDLER")

		// Reliable delivery is reserved: SYNC is UNSUPPORTED, ACK is ignored
		// unless malformed.
		c.send(proto.Header{Op: proto.OpSync, Seq: 20}, proto.AppendSync(nil, proto.Sync{ConvID: 42, AfterSeq: 5, Limit: 1}))
		c.expectError(0, 20, proto.CodeUnsupported)
		c.send(proto.Header{Op: proto.OpSync, Seq: 21}, make([]byte, 19))
		c.expectError(0, 21, proto.CodeBadRequest)
		for i, body := range [][]byte{nil, make([]byte, 15), make([]byte, 17)} {
			seq := uint32(30 + i)
			c.send(proto.Header{Op: proto.OpAck, Seq: seq}, body)
			c.expectError(0, seq, proto.CodeBadRequest)
		}
		c.send(proto.Header{Op: proto.OpAck, Seq: 40}, proto.AppendAck(nil, proto.Ack{ConvID: 42, Seq: 7}))
		c.ping(41) // the next frame is the PONG: the good ACK got no answer
		by.check(t)
	})
}

func TestE2EPushTargets(t *testing.T) {
	e2eEachKind(t, func(t *testing.T, kind transport.Kind) {
		s := newE2EServer(t, nil)
		u1, a1 := s.login(kind, "u", "one", nil)
		u2, _ := s.login(kind, "u", "two", nil)
		v, _ := s.login(kind, "v", "d", nil)
		w, _ := s.login(kind, "w", "d", nil)
		for i, c := range []*e2eClient{u1, v} {
			c.send(proto.Header{Op: proto.OpJoin, Seq: uint32(2 + i)}, []byte("club"))
			c.expectReply(0, uint32(2+i), nil)
		}
		anon := s.dial(kind) // connected, never authenticated
		everyone := []*e2eClient{u1, u2, v, w}
		direct := func(payload string) []byte {
			return proto.AppendPush(nil, proto.Push{ConvID: 9, Seq: 3, Payload: []byte(payload)})
		}
		// expectOnly checks that exactly the clients in got received body,
		// and that the others received nothing (a PONG is their next frame).
		seq := uint32(100)
		expectOnly := func(h proto.Header, body []byte, got ...*e2eClient) {
			t.Helper()
			for _, c := range got {
				c.expect(h, body)
			}
			for _, c := range everyone {
				if !slices.Contains(got, c) {
					c.ping(seq)
				}
			}
			seq++
		}

		if !s.PushConn(a1.ConnID, proto.Push{ConvID: 9, Seq: 3, Payload: []byte("conn")}) {
			t.Fatal("PushConn: connection not found")
		}
		expectOnly(proto.Header{Op: proto.OpPush}, direct("conn"), u1)

		if n := s.PushUser("u", proto.Push{ConvID: 9, Seq: 3, Payload: []byte("user")}); n != 2 {
			t.Fatalf("PushUser reached %d, want 2", n)
		}
		expectOnly(proto.Header{Op: proto.OpPush}, direct("user"), u1, u2)

		if n := s.PushUsers([]string{"u", "v", "nobody"}, proto.Push{ConvID: 9, Seq: 3, Payload: []byte("users")}); n != 3 {
			t.Fatalf("PushUsers reached %d, want 3", n)
		}
		expectOnly(proto.Header{Op: proto.OpPush}, direct("users"), u1, u2, v)

		if n := s.PushRoom("club", proto.Push{ConvID: 9, Seq: 3, Payload: []byte("room")}); n != 2 {
			t.Fatalf("PushRoom reached %d, want 2", n)
		}
		expectOnly(proto.Header{Op: proto.OpPush, Flags: proto.FlagRoom},
			proto.AppendPush(nil, proto.Push{ConvID: 9, Seq: 3, Topic: []byte("club"), Payload: []byte("room")}), u1, v)

		if n := s.PushAll(proto.Push{Payload: []byte("all")}); n != 4 {
			t.Fatalf("PushAll reached %d, want the 4 authenticated connections", n)
		}
		expectOnly(proto.Header{Op: proto.OpPush, Flags: proto.FlagBroadcast},
			proto.AppendPush(nil, proto.Push{Payload: []byte("all")}), everyone...)
		for kindName := range map[string]bool{"conn": true, "user": true, "users": true, "room": true, "all": true} {
			s.expectCounter(1, "imgate_pushes_total", "kind", kindName)
		}

		// Pushes to no one reach no one (whether they count as pushes is
		// the metric's business: not asserted).
		if s.PushConn(a1.ConnID+1<<40, proto.Push{Payload: []byte("nobody")}) {
			t.Fatal("PushConn to an unknown id reported delivery")
		}
		if n := s.PushUser("nobody", proto.Push{Payload: []byte("x")}); n != 0 {
			t.Fatalf("PushUser to an offline user reached %d", n)
		}
		if n := s.PushRoom("empty", proto.Push{Payload: []byte("x")}); n != 0 {
			t.Fatalf("PushRoom to a room nobody is in reached %d", n)
		}
		for _, c := range everyone {
			c.ping(seq)
		}
		// The unauthenticated connection got nothing: AUTH_OK is its first frame.
		anon.send(proto.Header{Op: proto.OpAuth, Seq: 1}, []byte(e2eToken(t, e2eClaims("late", "d", nil))))
		anon.expectAuthOK(s, 1)
	})
}

// TestE2ERoomOrder publishes 500 numbered messages to a room whose members
// are spread over every transport: each receives every one exactly once, in
// order.
func TestE2ERoomOrder(t *testing.T) {
	s := newE2EServer(t, nil)
	const total = 500
	var members []*e2eClient
	for i := range 2 * len(e2eKinds) {
		c, _ := s.login(e2eKinds[i%len(e2eKinds)], fmt.Sprintf("m%d", i), "d", nil)
		c.send(proto.Header{Op: proto.OpJoin, Seq: 2}, []byte("mixed"))
		c.expectReply(0, 2, nil)
		members = append(members, c)
	}
	payload := func(i int) []byte {
		p := binary.BigEndian.AppendUint32(nil, uint32(i))
		return append(p, bytes.Repeat([]byte{byte(i)}, i%200)...)
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(members))
	for _, c := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range total {
				f, err := c.read(e2eWait)
				if err != nil {
					errs <- fmt.Errorf("%v member: message %d: %w", c.kind, i, err)
					return
				}
				p, err := proto.ParsePush(f.Body)
				if err != nil || f.Header != (proto.Header{Op: proto.OpPush, Flags: proto.FlagRoom}) ||
					string(p.Topic) != "mixed" || p.ConvID != 77 || p.Seq != uint64(i+1) || !bytes.Equal(p.Payload, payload(i)) {
					errs <- fmt.Errorf("%v member: message %d: got %s", c.kind, i, e2eShow(f))
					return
				}
			}
		}()
	}
	for i := range total {
		if n := s.PushRoom("mixed", proto.Push{ConvID: 77, Seq: uint64(i + 1), Payload: payload(i)}); n != len(members) {
			t.Fatalf("PushRoom %d reached %d members, want %d", i, n, len(members))
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	for _, c := range members {
		c.ping(3) // nothing after the 500th: no duplicates
	}
}

func TestE2EKick(t *testing.T) {
	e2eEachKind(t, func(t *testing.T, kind transport.Kind) {
		s := newE2EServer(t, nil)
		by := s.bystander(kind, "lobby")
		k1, _ := s.login(kind, "k", "one", nil)
		k2, _ := s.login(kind, "k", "two", nil)
		j, ja := s.login(kind, "j", "d", nil)
		j2, _ := s.login(kind, "j", "other", nil)

		if n := s.Kick("k", ""); n != 2 {
			t.Fatalf("Kick(uid) closed %d, want 2", n)
		}
		k1.expectClose(proto.CodeKicked, 0)
		k2.expectClose(proto.CodeKicked, 0)
		if n := s.Kick(FormatConnID(ja.ConnID), "bye"); n != 1 {
			t.Fatalf("Kick(conn id) closed %d, want 1", n)
		}
		j.expectClose(proto.CodeKicked, 0)
		j2.ping(2) // the same user's other connection stays
		if n := s.Kick("nobody", ""); n != 0 {
			t.Fatalf("Kick of an offline user closed %d", n)
		}
		s.expectCounter(3, "imgate_kicks_total")
		s.expectCounter(3, "imgate_connections_closed_total", "reason", "KICKED")
		e2eWaitFor(t, e2eWait, "kicked sessions to leave the registry", func() bool { return s.conns() == 2 })
		by.check(t)
	})
}

// e2eRawHeader is a frame header with any length, version and op.
func e2eRawHeader(length uint32, version byte, op proto.Op, seq uint32) []byte {
	b := binary.BigEndian.AppendUint32(nil, length)
	b = append(b, version, byte(op), 0, 0, 0, 0, 0, 0)
	return binary.BigEndian.AppendUint32(b, seq)
}

func TestE2EBadInput(t *testing.T) {
	heartbeat := proto.AppendFrame(nil, proto.Header{Op: proto.OpHeartbeat, Seq: 9}, nil)
	masked := func(op ws.OpCode, fin bool, p []byte) ws.Frame { return ws.MaskFrame(ws.NewFrame(op, fin, p)) }
	cases := []struct {
		name   string
		only   transport.Kind // 0: every transport
		authed bool           // the offender authenticates first
		write  func(c *e2eClient) error
		code   proto.Code
		status ws.StatusCode // WebSocket close status when not the one §11.2 gives for code
		cause  uint32        // seq of the offending frame
	}{
		{name: "length over max_frame", authed: true, code: proto.CodeFrameTooLarge, write: func(c *e2eClient) error {
			return c.writeMessage(e2eRawHeader(proto.DefaultMaxFrame-4+1, 1, proto.OpUplink, 9))
		}},
		{name: "length 4GiB", authed: true, code: proto.CodeFrameTooLarge, write: func(c *e2eClient) error {
			return c.writeMessage(e2eRawHeader(0xffffffff, 1, proto.OpUplink, 9))
		}},
		{name: "length over max_frame before auth", code: proto.CodeFrameTooLarge, write: func(c *e2eClient) error {
			return c.writeMessage(e2eRawHeader(1<<20, 1, proto.OpAuth, 9))
		}},
		{name: "length below 12", authed: true, code: proto.CodeBadFrame, write: func(c *e2eClient) error {
			return c.writeMessage(append(binary.BigEndian.AppendUint32(nil, 11), heartbeat[4:15]...))
		}},
		{name: "length 0", authed: true, code: proto.CodeBadFrame, write: func(c *e2eClient) error {
			return c.writeMessage(make([]byte, 4))
		}},
		{name: "version 2", authed: true, code: proto.CodeBadVersion, cause: 9, write: func(c *e2eClient) error {
			return c.writeMessage(e2eRawHeader(12, 2, proto.OpHeartbeat, 9))
		}},
		{name: "version 0 before auth", code: proto.CodeBadVersion, cause: 9, write: func(c *e2eClient) error {
			return c.writeMessage(e2eRawHeader(12, 0, proto.OpAuth, 9))
		}},
		{name: "op 0x0E", authed: true, code: proto.CodeUnknownOp, cause: 9, write: func(c *e2eClient) error {
			return c.writeMessage(e2eRawHeader(12, 1, 0x0E, 9))
		}},
		{name: "op 0x00", authed: true, code: proto.CodeUnknownOp, cause: 9, write: func(c *e2eClient) error {
			return c.writeMessage(e2eRawHeader(12, 1, 0x00, 9))
		}},
		{name: "op 0xFF before auth", code: proto.CodeUnknownOp, cause: 9, write: func(c *e2eClient) error {
			return c.writeMessage(e2eRawHeader(12, 1, 0xFF, 9))
		}},
		{name: "PUSH from the client", authed: true, code: proto.CodeClientDirection, cause: 9, write: func(c *e2eClient) error {
			return c.trySend(proto.Header{Op: proto.OpPush, Seq: 9}, proto.AppendPush(nil, proto.Push{Payload: []byte("x")}))
		}},
		{name: "PUSH before auth", code: proto.CodeClientDirection, cause: 9, write: func(c *e2eClient) error {
			// Direction (check 5) comes before authentication (check 6).
			return c.trySend(proto.Header{Op: proto.OpPush, Seq: 9}, proto.AppendPush(nil, proto.Push{Payload: []byte("x")}))
		}},
		{name: "AUTH_OK from the client", authed: true, code: proto.CodeClientDirection, cause: 9, write: func(c *e2eClient) error {
			return c.trySend(proto.Header{Op: proto.OpAuthOK, Seq: 9}, proto.AppendAuthOK(nil, proto.AuthOK{NodeID: []byte("x")}))
		}},
		{name: "PONG from the client", authed: true, code: proto.CodeClientDirection, cause: 9, write: func(c *e2eClient) error {
			return c.trySend(proto.Header{Op: proto.OpPong, Seq: 9}, make([]byte, 8))
		}},
		{name: "REPLY from the client", authed: true, code: proto.CodeClientDirection, cause: 9, write: func(c *e2eClient) error {
			return c.trySend(proto.Header{Op: proto.OpReply, Seq: 9}, nil)
		}},
		{name: "ERROR from the client", authed: true, code: proto.CodeClientDirection, cause: 9, write: func(c *e2eClient) error {
			return c.trySend(proto.Header{Op: proto.OpError, Seq: 9}, proto.AppendError(nil, proto.CodeInternal, "x"))
		}},

		// WebSocket framing.
		{name: "text message", only: transport.KindWS, authed: true, code: proto.CodeProtocolError, status: 1003, write: func(c *e2eClient) error {
			return c.writeWS(masked(ws.OpText, true, heartbeat))
		}},
		{name: "text message before auth", only: transport.KindWS, code: proto.CodeProtocolError, status: 1003, write: func(c *e2eClient) error {
			return c.writeWS(masked(ws.OpText, true, heartbeat))
		}},
		{name: "unmasked frame", only: transport.KindWS, authed: true, code: proto.CodeProtocolError, write: func(c *e2eClient) error {
			return c.writeWS(ws.NewBinaryFrame(heartbeat))
		}},
		{name: "reserved bit", only: transport.KindWS, authed: true, code: proto.CodeProtocolError, write: func(c *e2eClient) error {
			f := masked(ws.OpBinary, true, heartbeat)
			f.Header.Rsv = ws.Rsv(true, false, false)
			return c.writeWS(f)
		}},
		{name: "unknown opcode", only: transport.KindWS, authed: true, code: proto.CodeProtocolError, write: func(c *e2eClient) error {
			return c.writeWS(masked(0x3, true, heartbeat))
		}},
		{name: "continuation out of place", only: transport.KindWS, authed: true, code: proto.CodeProtocolError, write: func(c *e2eClient) error {
			return c.writeWS(masked(ws.OpContinuation, true, heartbeat))
		}},
		{name: "fragmented ping", only: transport.KindWS, authed: true, code: proto.CodeProtocolError, write: func(c *e2eClient) error {
			return c.writeWS(masked(ws.OpPing, false, nil))
		}},
		{name: "two frames in one message", only: transport.KindWS, authed: true, code: proto.CodeBadFrame, write: func(c *e2eClient) error {
			return c.writeMessage(append(slices.Clone(heartbeat), heartbeat...))
		}},
		{name: "message shorter than its length field", only: transport.KindWS, authed: true, code: proto.CodeBadFrame, write: func(c *e2eClient) error {
			return c.writeMessage(e2eRawHeader(20, 1, proto.OpHeartbeat, 9))
		}},
		{name: "message over max_frame", only: transport.KindWS, authed: true, code: proto.CodeFrameTooLarge, write: func(c *e2eClient) error {
			// Refused from the WebSocket length alone: no payload follows.
			c.wmu.Lock()
			defer c.wmu.Unlock()
			return ws.WriteHeader(c.conn, ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: ws.NewMask(), Length: 1 << 20})
		}},
	}
	e2eEachKind(t, func(t *testing.T, kind transport.Kind) {
		s := newE2EServer(t, nil)
		by := s.bystander(kind, "lobby")
		counts := map[proto.Code]float64{}
		for _, tc := range cases {
			if tc.only != 0 && tc.only != kind {
				continue
			}
			t.Run(tc.name, func(t *testing.T) {
				s := s.sub(t)
				var c *e2eClient
				if tc.authed {
					c, _ = s.login(kind, "offender", "d", nil)
					c.send(proto.Header{Op: proto.OpJoin, Seq: 2}, []byte("lobby"))
					c.expectReply(0, 2, nil)
				} else {
					c = s.dial(kind)
				}
				if err := tc.write(c); err != nil {
					t.Fatalf("write: %v", err)
				}
				status := tc.status
				if status == 0 {
					status = e2eWSStatus(tc.code)
				}
				c.expectCloseStatus(tc.code, tc.cause, status)
				counts[tc.code]++
				s.expectCounter(counts[tc.code], "imgate_bad_frames_total", "code", tc.code.String())
				e2eWaitFor(t, e2eWait, "the offender to leave the registry and the room", func() bool {
					r := s.Hub().Room("lobby")
					return s.conns() == 1 && r != nil && r.Len() == 1
				})
				by.check(t)
			})
		}
	})
}

// TestE2ESlowConsumer: a client that never reads is closed when its queue
// passes QueueBytes, while a reading member of the same room gets every
// message.
//
// The kernel buffers a good deal before the gateway's queue sees anything:
// on Linux the send buffer of a loopback socket autotunes up to tcp_wmem's
// maximum (4 MiB by default), so 1 MiB is not always enough to fill it. The
// test pushes 16 KiB messages until the slow client is closed, up to 32 MiB.
func TestE2ESlowConsumer(t *testing.T) {
	const (
		queueBytes  = 64 << 10
		msgSize     = 16 << 10
		maxMessages = (32 << 20) / msgSize
		window      = 2 // messages ahead of the bystander: well under queueBytes
		after       = 8 // messages pushed after the slow client is gone
	)
	e2eEachKind(t, func(t *testing.T, kind transport.Kind) {
		s := newE2EServer(t, func(c *Config) { c.Transport.QueueBytes = queueBytes })
		by := s.bystander(kind, "big")

		// A small receive window, so that the client's kernel does not
		// absorb the stream on its behalf.
		slow, err := s.tryDial(kind, e2eDialOptions{rcvBuf: 4096})
		if err != nil {
			t.Fatal(err)
		}
		slow.send(proto.Header{Op: proto.OpAuth, Seq: 1}, []byte(e2eToken(t, e2eClaims("slow", "d", nil))))
		sa := slow.expectAuthOK(s, 1)
		slow.send(proto.Header{Op: proto.OpJoin, Seq: 2}, []byte("big"))
		slow.expectReply(0, 2, nil)
		// From here on the slow client reads nothing until the end.

		payload := func(i int) []byte {
			p := make([]byte, msgSize-proto.HeaderSize-proto.PushOverhead-len("big"))
			binary.BigEndian.PutUint32(p, uint32(i))
			return p
		}
		expectAt := func(c *e2eClient, i int) {
			t.Helper()
			c.expect(proto.Header{Op: proto.OpPush, Flags: proto.FlagRoom},
				proto.AppendPush(nil, proto.Push{Topic: []byte("big"), Payload: payload(i)}))
		}
		// The bystander paces the publisher: message i goes out once it has
		// read message i-window, so only the slow client's queue can grow.
		// Every 8 messages the publisher looks whether the slow client has
		// been dropped yet; then it sends a few more.
		sent, droppedAt := 0, -1
		for ; sent < maxMessages && (droppedAt < 0 || sent < droppedAt+after); sent++ {
			s.PushRoom("big", proto.Push{Payload: payload(sent)})
			if sent >= window {
				expectAt(by.c, sent-window)
			}
			if droppedAt < 0 && sent%8 == 7 && s.counter("imgate_slow_consumer_drops_total") > 0 {
				droppedAt = sent
			}
		}
		for i := max(sent-window, 0); i < sent; i++ {
			expectAt(by.c, i)
		}
		if droppedAt < 0 {
			t.Fatalf("slow client not dropped after %d MiB", sent*msgSize>>20)
		}
		t.Logf("slow client dropped by message %d (%.1f MiB)", droppedAt, float64((droppedAt+1)*msgSize)/(1<<20))
		// It leaves the registry once the transport lets go of it: at once
		// if its socket was full, else after the transport's linger.
		e2eWaitFor(t, e2eWait, "the slow client to leave the registry", func() bool { return s.Registry().Conn(sa.ConnID) == nil })
		s.expectCounter(1, "imgate_slow_consumer_drops_total")
		s.expectCounter(1, "imgate_connections_closed_total", "reason", "SLOW_CONSUMER")
		if r := s.Hub().Room("big"); r == nil || r.Len() != 1 {
			t.Fatalf("room big: %v, want the bystander alone", r)
		}
		by.check(t)

		// The slow client finds a prefix of the messages, in order, then
		// (if the transport could still carry it) CLOSE SLOW_CONSUMER, then
		// the end.
		got := 0
		for {
			f, err := slow.read(e2eWait)
			if err != nil {
				break
			}
			if f.Op == proto.OpClose {
				if e, err := proto.ParseError(f.Body); err != nil || e.Code != proto.CodeSlowConsumer {
					t.Fatalf("slow client: got %s, want CLOSE SLOW_CONSUMER", e2eShow(f))
				}
				if f, err := slow.read(e2eWait); err == nil {
					t.Fatalf("slow client: %s after CLOSE", e2eShow(f))
				}
				break
			}
			p, err := proto.ParsePush(f.Body)
			if err != nil || f.Op != proto.OpPush || !bytes.Equal(p.Payload, payload(got)) {
				t.Fatalf("slow client: message %d: got %s", got, e2eShow(f))
			}
			got++
		}
		if got >= droppedAt+1 {
			t.Fatalf("slow client read %d messages, though it was dropped at message %d", got, droppedAt)
		}
	})
}

// TestE2EBurstToHealthyReader: a reader that keeps reading survives a burst
// of 640 KiB (2.5 times the default queue limit) with every message intact.
// The queue limit here is twice the burst, so the test holds even when the
// reader is starved of CPU (as under CI's parallel packages); what makes that
// margin safe, fan-out batches bounded in bytes (Broadcast.MaxBatchBytes, at
// most a quarter of QueueBytes), is checked exactly by broadcast's
// TestBatchBoundedInBytes, which a scheduling-dependent e2e test cannot do.
func TestE2EBurstToHealthyReader(t *testing.T) {
	const (
		pushes = 20
		size   = 32 << 10 // 640 KiB of payload in all
	)
	e2eEachKind(t, func(t *testing.T, kind transport.Kind) {
		if kind == transport.KindQUIC || kind == transport.KindKCP {
			// The premise is the kernel's loopback TCP buffers taking the
			// burst; a QUIC connection or KCP session has only its window
			// beyond the queue, so a burst over QueueBytes to it is a slow
			// consumer by definition (docs/PROTOCOL.md §11.3, §11.4).
			t.Skip("kernel-buffered transports only: QUIC and KCP have no socket buffer behind their queue")
		}
		s := newE2EServer(t, func(c *Config) { c.Transport.QueueBytes = 2 * pushes * size })
		c, _ := s.login(kind, "reader", "d", nil)
		c.send(proto.Header{Op: proto.OpJoin, Seq: 2}, []byte("burst"))
		c.expectReply(0, 2, nil)
		payload := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, size) }
		done := make(chan error, 1)
		go func() {
			for i := range pushes {
				f, err := c.read(e2eWait)
				if err != nil {
					done <- fmt.Errorf("push %d: %w", i, err)
					return
				}
				if p, err := proto.ParsePush(f.Body); err != nil || f.Op != proto.OpPush || !bytes.Equal(p.Payload, payload(i)) {
					done <- fmt.Errorf("push %d: got %s", i, e2eShow(f))
					return
				}
			}
			done <- nil
		}()
		for i := range pushes {
			s.PushRoom("burst", proto.Push{Payload: payload(i)})
		}
		if err := <-done; err != nil {
			t.Fatalf("reader: %v", err)
		}
		c.ping(3)
		s.expectCounter(0, "imgate_slow_consumer_drops_total")
	})
}

// TestE2EHalfOpen: a client that authenticates and then vanishes without a
// FIN (it neither reads nor writes again) is closed by the heartbeat timeout
// and leaves the registry and its rooms.
func TestE2EHalfOpen(t *testing.T) {
	const interval = 300 * time.Millisecond
	e2eEachKind(t, func(t *testing.T, kind transport.Kind) {
		s := newE2EServer(t, func(c *Config) { c.HeartbeatInterval = interval })
		by := s.bystander(kind, "lobby")
		ghost, a := s.login(kind, "ghost", "d", nil)
		ghost.send(proto.Header{Op: proto.OpJoin, Seq: 2}, []byte("haunt"))
		ghost.expectReply(0, 2, nil)
		start := time.Now()

		// The bystander heartbeats until the ghost is gone.
		tick := time.NewTicker(interval / 3)
		defer tick.Stop()
		seq := uint32(100)
		for s.Registry().Conn(a.ConnID) != nil {
			if time.Since(start) > 20*interval+5*time.Second {
				t.Fatalf("half-open connection still registered after %v", time.Since(start))
			}
			<-tick.C
			by.c.ping(seq)
			seq++
		}
		if took := time.Since(start); took < 2*interval {
			t.Fatalf("half-open connection dropped after %v, before two intervals", took)
		}
		if conns, users := s.Registry().Counts(); conns != 1 || users != 1 {
			t.Fatalf("registry holds %d connections of %d users, want only the bystander", conns, users)
		}
		if slices.ContainsFunc(s.Hub().Rooms(0), func(r broadcast.RoomInfo) bool { return r.Name == "haunt" }) {
			t.Fatal("the half-open connection's room outlived it")
		}
		s.expectCounter(1, "imgate_heartbeat_timeouts_total")
		s.expectCounter(1, "imgate_connections_closed_total", "reason", "HEARTBEAT_TIMEOUT")
		by.check(t)
		// What the server sent is waiting in the ghost's socket.
		ghost.expectClose(proto.CodeHeartbeatTimeout, 0)
	})
}

// TestE2ESlowloris: a client that sends a valid AUTH one byte per 50 ms
// cannot outstay the auth deadline, and others are served meanwhile.
func TestE2ESlowloris(t *testing.T) {
	const authTimeout = 300 * time.Millisecond
	e2eEachKind(t, func(t *testing.T, kind transport.Kind) {
		s := newE2EServer(t, func(c *Config) { c.AuthTimeout = authTimeout })
		by := s.bystander(kind, "lobby")
		c := s.dial(kind)
		wire := proto.AppendFrame(nil, proto.Header{Op: proto.OpAuth, Seq: 1}, []byte(e2eToken(t, e2eClaims("loris", "d", nil))))
		if kind.WebSocket() {
			wire = ws.MustCompileFrame(ws.MaskFrame(ws.NewBinaryFrame(wire)))
		}
		start := time.Now()
		stop := make(chan struct{})
		sent := make(chan int, 1)
		go func() {
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			n := 0
			defer func() { sent <- n }()
			for ; n < len(wire); n++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				c.wmu.Lock()
				_, err := c.conn.Write(wire[n : n+1])
				c.wmu.Unlock()
				if err != nil {
					return
				}
			}
		}()
		// Meanwhile another client logs in at once.
		other, _ := s.login(kind, "quick", "d", nil)
		other.ping(2)

		f := c.next()
		if took := time.Since(start); took < authTimeout {
			t.Fatalf("closed after %v, before the auth deadline", took)
		}
		c.pushBack(f)
		c.expectClose(proto.CodeAuthTimeout, 0)
		close(stop)
		if n := <-sent; n >= len(wire) {
			t.Fatalf("the whole AUTH (%d bytes) went through", n)
		}
		e2eWaitFor(t, e2eWait, "the slow client to leave the registry", func() bool { return s.conns() == 2 })
		s.expectCounter(1, "imgate_auth_timeouts_total")
		other.ping(3)
		by.check(t)
	})
}

// TestE2EGracefulClose: a client's CLOSE (or, on WebSocket, a WebSocket
// close) ends its connection, and OnClose takes it out of its rooms; the
// last one out removes the room.
func TestE2EGracefulClose(t *testing.T) {
	e2eEachKind(t, func(t *testing.T, kind transport.Kind) {
		s := newE2EServer(t, nil)
		var members []*e2eClient
		for i := range 3 {
			c, _ := s.login(kind, fmt.Sprintf("g%d", i), "d", nil)
			c.send(proto.Header{Op: proto.OpJoin, Seq: 2}, []byte("g"))
			c.expectReply(0, 2, nil)
			members = append(members, c)
		}
		roomLen := func() int {
			if r := s.Hub().Room("g"); r != nil {
				return r.Len()
			}
			return 0
		}
		bye := proto.AppendError(nil, proto.CodeNormal, "bye")

		members[0].send(proto.Header{Op: proto.OpClose}, bye)
		members[0].expectEnd(e2eGracefulWSStatus)
		e2eWaitFor(t, e2eWait, "room g to shrink to 2", func() bool { return roomLen() == 2 })
		if n := s.PushRoom("g", proto.Push{Payload: []byte("two left")}); n != 2 {
			t.Fatalf("PushRoom reached %d, want 2", n)
		}
		for _, c := range members[1:] {
			c.expect(proto.Header{Op: proto.OpPush, Flags: proto.FlagRoom}, proto.AppendPush(nil, proto.Push{Topic: []byte("g"), Payload: []byte("two left")}))
		}

		if kind.WebSocket() {
			// A WebSocket close is echoed and closes the connection.
			if err := members[1].writeWS(ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "")))); err != nil {
				t.Fatal(err)
			}
			members[1].expectEnd(ws.StatusNormalClosure)
		} else {
			members[1].send(proto.Header{Op: proto.OpClose}, bye)
			members[1].expectEnd(0)
		}
		e2eWaitFor(t, e2eWait, "room g to shrink to 1", func() bool { return roomLen() == 1 })

		members[2].send(proto.Header{Op: proto.OpClose}, bye)
		members[2].expectEnd(e2eGracefulWSStatus)
		e2eWaitFor(t, e2eWait, "room g to go away", func() bool {
			return !slices.ContainsFunc(s.Hub().Rooms(0), func(r broadcast.RoomInfo) bool { return r.Name == "g" })
		})
		if conns, users, rooms := s.Counts(); conns != 0 || users != 0 || rooms != 0 {
			t.Fatalf("after every close: %d connections, %d users, %d rooms", conns, users, rooms)
		}
		closedNormally := 3.0
		if kind.WebSocket() {
			closedNormally = 2 // the WebSocket close is not an imgate CLOSE
		}
		s.expectCounter(closedNormally, "imgate_connections_closed_total", "reason", "NORMAL")
	})
}
