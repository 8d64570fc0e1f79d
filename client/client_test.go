package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"imgate/proto"
)

// testConfig is a Config with fast backoff for loopback tests.
func testConfig(endpoints ...string) Config {
	cfg := DefaultConfig()
	cfg.Endpoints = endpoints
	cfg.Token = "alice"
	cfg.BackoffMin = 5 * time.Millisecond
	cfg.BackoffMax = 50 * time.Millisecond
	cfg.DialTimeout = 2 * time.Second
	cfg.RequestTimeout = 5 * time.Second
	return cfg
}

func dial(t *testing.T, cfg Config) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// states records OnState calls for tests to wait on.
type states struct{ ch chan stateEvent }

type stateEvent struct {
	state State
	err   error
}

func newStates() *states { return &states{ch: make(chan stateEvent, 256)} }

func (s *states) record(st State, err error) { s.ch <- stateEvent{st, err} }

// wait returns the next event in state st, skipping others.
func (s *states) wait(t *testing.T, st State) stateEvent {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		select {
		case ev := <-s.ch:
			if ev.state == st {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s state within the deadline", st)
			return stateEvent{}
		}
	}
}

func waitClosed(t *testing.T, c *Client) {
	t.Helper()
	select {
	case <-c.Closed():
	case <-time.After(waitLimit):
		t.Fatal("client did not close within the deadline")
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

func TestDialAuthenticates(t *testing.T) {
	serverTLS, clientTLS := testTLS(t)
	for _, tc := range []struct {
		name string
		opts []fakeServerOption
	}{
		{"tcp", nil},
		{"tls", []fakeServerOption{withTLS(serverTLS)}},
		{"ws", []fakeServerOption{withWS()}},
		{"wss", []fakeServerOption{withWS(), withTLS(serverTLS)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeServer(t, append(tc.opts, withHeartbeat(25_000))...)
			if !strings.HasPrefix(srv.url, tc.name+"://") {
				t.Fatalf("server url %s, want scheme %s", srv.url, tc.name)
			}
			cfg := testConfig(srv.url)
			cfg.TLSConfig = clientTLS
			c := dial(t, cfg)
			fc := srv.nextConn(t)
			if fc.token != "alice" {
				t.Errorf("server got token %q, want alice", fc.token)
			}
			if c.ConnID() != fc.id || c.NodeID() != "node-test" || c.HeartbeatInterval() != 25*time.Second {
				t.Errorf("ConnID %d NodeID %q HeartbeatInterval %v; want %d node-test 25s",
					c.ConnID(), c.NodeID(), c.HeartbeatInterval(), fc.id)
			}
			reply, err := c.Request(ctxT(t), 3, []byte("ping"))
			if err != nil || string(reply) != "ping" {
				t.Fatalf("Request = %q, %v; want echo", reply, err)
			}
			if f := fc.expect(t, proto.OpUplink); f.SVID != 3 || f.Seq == 0 {
				t.Errorf("uplink svid %d seq %d; want svid 3 and a non-zero seq", f.SVID, f.Seq)
			}
		})
	}
}

func TestAuthRefusedSurfacesProtoError(t *testing.T) {
	for _, code := range []proto.Code{proto.CodeAuthFailed, proto.CodeTokenExpired} {
		t.Run(code.String(), func(t *testing.T) {
			srv := newFakeServer(t, withAuth(func(string) *proto.Error {
				return &proto.Error{Code: code, Msg: "no"}
			}))
			_, err := Dial(ctxT(t), testConfig(srv.url))
			var pe *proto.Error
			if !errors.As(err, &pe) || pe.Code != code || pe.Msg != "no" {
				t.Fatalf("Dial error %v; want *proto.Error %s", err, code)
			}
			if n := srv.accepted.Load(); n != 1 {
				t.Errorf("server accepted %d connections, want 1 (no retry without a TokenFunc)", n)
			}
		})
	}
}

func TestAuthFailedRetriesOnceWithFreshToken(t *testing.T) {
	srv := newFakeServer(t, withAuth(func(token string) *proto.Error {
		if token != "fresh" {
			return &proto.Error{Code: proto.CodeAuthFailed, Msg: "bad signature"}
		}
		return nil
	}))
	var calls atomic.Int32
	cfg := testConfig(srv.url)
	cfg.TokenFunc = func(context.Context) (string, error) {
		if calls.Add(1) == 1 {
			return "stale", nil
		}
		return "fresh", nil
	}
	dial(t, cfg)
	if n := calls.Load(); n != 2 {
		t.Errorf("TokenFunc called %d times, want 2", n)
	}

	// A TokenFunc that keeps returning the refused token is not retried.
	cfg.TokenFunc = func(context.Context) (string, error) { return "stale", nil }
	_, err := Dial(ctxT(t), cfg)
	var pe *proto.Error
	if !errors.As(err, &pe) || pe.Code != proto.CodeAuthFailed {
		t.Fatalf("Dial error %v; want AUTH_FAILED", err)
	}
}

func TestRequestReplyCorrelation(t *testing.T) {
	const n = 16
	srv := newFakeServer(t, withHold(n))
	c := dial(t, testConfig(srv.url))

	// The server holds n requests and answers them in reverse order.
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := fmt.Sprintf("request-%d", i)
			got, err := c.Request(ctxT(t), holdSVID, []byte(want))
			if err != nil || string(got) != want {
				errs <- fmt.Errorf("request %d: got %q, %v", i, got, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	_, err := c.Request(ctxT(t), 99, []byte("x"))
	var pe *proto.Error
	if !errors.As(err, &pe) || pe.Code != proto.CodeNoHandler || pe.Msg != "no backend for svid 99" {
		t.Errorf("Request to svid 99: %v; want *proto.Error NO_HANDLER", err)
	}
	if err := c.Join(ctxT(t), "forbidden"); !errors.As(err, &pe) || pe.Code != proto.CodeRoomForbidden {
		t.Errorf("Join forbidden: %v; want *proto.Error ROOM_FORBIDDEN", err)
	}
}

func TestSeqSkipsZero(t *testing.T) {
	var c Client
	c.seq.Store(^uint32(0) - 1)
	for _, want := range []uint32{^uint32(0), 1, 2} {
		if got := c.nextSeq(); got != want {
			t.Fatalf("nextSeq = %d, want %d", got, want)
		}
	}
}

func TestPushesArriveInOrder(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []fakeServerOption
	}{
		{"tcp", nil},
		{"ws", []fakeServerOption{withWS()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 2000
			srv := newFakeServer(t, tc.opts...)
			got := make(chan Push, n)
			cfg := testConfig(srv.url)
			cfg.OnPush = func(p Push) { got <- p }
			dial(t, cfg)
			fc := srv.nextConn(t)
			go func() {
				for i := range n {
					// Sizes vary so that frames straddle read-buffer boundaries.
					payload := make([]byte, i%300)
					for j := range payload {
						payload[j] = byte(i)
					}
					fc.push(proto.FlagRoom, proto.Push{ConvID: 9, Seq: uint64(i + 1), Topic: []byte("lobby"), Payload: payload})
				}
			}()
			var pushes []Push
			for len(pushes) < n {
				select {
				case p := <-got:
					pushes = append(pushes, p)
				case <-time.After(waitLimit):
					t.Fatalf("got %d of %d pushes", len(pushes), n)
				}
			}
			// Checked after all arrived: a payload aliasing the read buffer
			// would have been overwritten by now.
			for i, p := range pushes {
				if p.Seq != uint64(i+1) || p.ConvID != 9 || p.Topic != "lobby" || p.Flags != proto.FlagRoom {
					t.Fatalf("push %d = %+v", i, p)
				}
				if len(p.Payload) != i%300 || (len(p.Payload) > 0 && p.Payload[len(p.Payload)-1] != byte(i)) {
					t.Fatalf("push %d payload corrupted: %d bytes", i, len(p.Payload))
				}
			}
		})
	}
}

func TestHeartbeatAtServerInterval(t *testing.T) {
	const interval = 40 * time.Millisecond
	srv := newFakeServer(t, withHeartbeat(uint32(interval/time.Millisecond)))
	start := time.Now()
	dial(t, testConfig(srv.url))
	fc := srv.nextConn(t)
	const beats = 5
	var at []time.Time
	for range beats {
		at = append(at, fc.expect(t, proto.OpHeartbeat).at)
	}
	if first := at[0].Sub(start); first < interval/2 {
		t.Errorf("first heartbeat after %v, want about %v", first, interval)
	}
	// The average gap is robust to scheduling noise on a busy machine.
	avg := at[beats-1].Sub(at[0]) / (beats - 1)
	if avg < interval*3/4 || avg > interval*3 {
		t.Errorf("heartbeats every %v on average, want about %v", avg, interval)
	}
}

func TestSilentServerIsDeclaredDead(t *testing.T) {
	const interval = 30 * time.Millisecond
	srv := newFakeServer(t, withHeartbeat(uint32(interval/time.Millisecond)))
	srv.silent.Store(true)
	cfg := testConfig(srv.url)
	cfg.Reconnect = false
	start := time.Now()
	c := dial(t, cfg)
	waitClosed(t, c)
	if !errors.Is(c.Err(), ErrHeartbeatTimeout) {
		t.Fatalf("Err = %v, want ErrHeartbeatTimeout", c.Err())
	}
	if d := time.Since(start); d < 2*interval {
		t.Errorf("declared dead after %v, before two intervals (%v)", d, 2*interval)
	}
}

func TestReconnectRejoinsRoomsAndRotatesEndpoints(t *testing.T) {
	srv := newFakeServer(t)
	var tokens atomic.Int32
	st := newStates()
	cfg := testConfig("tcp://"+deadPort(t), srv.url)
	cfg.TokenFunc = func(context.Context) (string, error) {
		return fmt.Sprintf("token-%d", tokens.Add(1)), nil
	}
	cfg.OnState = st.record
	c := dial(t, cfg)
	fc := srv.nextConn(t) // the first endpoint is down: the second one answered
	for _, room := range []string{"b", "a"} {
		if err := c.Join(ctxT(t), room); err != nil {
			t.Fatal(err)
		}
	}
	st.wait(t, StateConnected)

	fc.drop()
	if ev := st.wait(t, StateDisconnected); ev.err == nil {
		t.Error("disconnected state without a cause")
	}
	fc2 := srv.nextConn(t)
	if fc2.token != "token-2" {
		t.Errorf("reconnect sent token %q, want a fresh one from TokenFunc", fc2.token)
	}
	for _, room := range []string{"a", "b"} {
		if f := fc2.expect(t, proto.OpJoin); string(f.Body) != room {
			t.Errorf("rejoined %q, want %q", f.Body, room)
		}
	}
	st.wait(t, StateConnected)
	if c.ConnID() != fc2.id {
		t.Errorf("ConnID %d after reconnect, want %d", c.ConnID(), fc2.id)
	}
	if reply, err := c.Request(ctxT(t), 1, []byte("after")); err != nil || string(reply) != "after" {
		t.Errorf("Request after reconnect = %q, %v", reply, err)
	}

	// A room left is not joined again.
	if err := c.Leave(ctxT(t), "a"); err != nil {
		t.Fatal(err)
	}
	fc2.drop()
	fc3 := srv.nextConn(t)
	if f := fc3.expect(t, proto.OpJoin); string(f.Body) != "b" {
		t.Errorf("rejoined %q, want only b", f.Body)
	}
}

func TestNoReconnectAfterFinalClose(t *testing.T) {
	for _, code := range []proto.Code{proto.CodeReplaced, proto.CodeKicked, proto.CodeTokenExpired} {
		t.Run(code.String(), func(t *testing.T) {
			srv := newFakeServer(t)
			st := newStates()
			cfg := testConfig(srv.url)
			cfg.OnState = st.record
			c := dial(t, cfg)
			srv.nextConn(t).closeWith(code, "bye")
			waitClosed(t, c)
			var pe *proto.Error
			if !errors.As(c.Err(), &pe) || pe.Code != code || pe.Msg != "bye" {
				t.Fatalf("Err = %v, want *proto.Error %s", c.Err(), code)
			}
			if ev := st.wait(t, StateClosed); !errors.As(ev.err, &pe) {
				t.Errorf("closed state with %v, want the server's error", ev.err)
			}
			// Closed has fired, so the client will never dial again.
			if n := srv.accepted.Load(); n != 1 {
				t.Errorf("server accepted %d connections, want 1", n)
			}
			_, err := c.Request(ctxT(t), 1, nil)
			if !errors.Is(err, ErrClosed) || !errors.As(err, &pe) {
				t.Errorf("Request after %s: %v; want ErrClosed wrapping the server's error", code, err)
			}
		})
	}
}

func TestReconnectAfterShutdownClose(t *testing.T) {
	srv := newFakeServer(t)
	c := dial(t, testConfig(srv.url))
	srv.nextConn(t).closeWith(proto.CodeShutdown, "draining")
	fc2 := srv.nextConn(t)
	if reply, err := c.Request(ctxT(t), 1, []byte("x")); err != nil || string(reply) != "x" {
		t.Fatalf("Request after reconnect = %q, %v", reply, err)
	}
	if c.ConnID() != fc2.id {
		t.Errorf("ConnID %d, want %d", c.ConnID(), fc2.id)
	}
}

func TestPendingRequestFailsWhenConnectionDrops(t *testing.T) {
	srv := newFakeServer(t, withHold(1000))
	c := dial(t, testConfig(srv.url))
	fc := srv.nextConn(t)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Request(ctxT(t), holdSVID, []byte("never answered"))
		errc <- err
	}()
	fc.expect(t, proto.OpUplink)
	fc.drop()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrConnectionLost) {
			t.Fatalf("Request error %v, want ErrConnectionLost", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("pending request did not fail")
	}
}

func TestRequestTimesOutWithContext(t *testing.T) {
	srv := newFakeServer(t, withHold(1000))
	c := dial(t, testConfig(srv.url))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.Request(ctx, holdSVID, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Request error %v, want deadline exceeded", err)
	}
}

func TestCloseSaysGoodbye(t *testing.T) {
	srv := newFakeServer(t, withWS())
	st := newStates()
	cfg := testConfig(srv.url)
	cfg.OnState = st.record
	c := dial(t, cfg)
	fc := srv.nextConn(t)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	f := fc.expect(t, proto.OpClose)
	if eb, err := proto.ParseError(f.Body); err != nil || eb.Code != proto.CodeNormal {
		t.Errorf("CLOSE body %v, %v; want NORMAL", eb, err)
	}
	waitClosed(t, c)
	st.wait(t, StateClosed)
	if !errors.Is(c.Err(), ErrClosed) {
		t.Errorf("Err = %v, want ErrClosed", c.Err())
	}
	if err := c.Join(ctxT(t), "late"); !errors.Is(err, ErrClosed) {
		t.Errorf("Join after Close: %v, want ErrClosed", err)
	}
	if err := c.Ack(1, 1); !errors.Is(err, ErrClosed) {
		t.Errorf("Ack after Close: %v, want ErrClosed", err)
	}
	if n := srv.accepted.Load(); n != 1 {
		t.Errorf("server accepted %d connections, want 1", n)
	}
}

func TestSyncAndAck(t *testing.T) {
	srv := newFakeServer(t)
	got := make(chan Push, 16)
	cfg := testConfig(srv.url)
	cfg.OnPush = func(p Push) { got <- p }
	c := dial(t, cfg)
	fc := srv.nextConn(t)

	done, err := c.Sync(ctxT(t), 5, 10, 3)
	if err != nil || done != (proto.SyncDone{LastSeq: 13}) {
		t.Fatalf("Sync = %+v, %v; want LastSeq 13", done, err)
	}
	for want := uint64(11); want <= 13; want++ {
		select {
		case p := <-got:
			if p.ConvID != 5 || p.Seq != want || p.Flags != proto.FlagResend || string(p.Payload) != "old" {
				t.Fatalf("synced push %+v, want conv 5 seq %d resend", p, want)
			}
		case <-time.After(waitLimit):
			t.Fatalf("synced push %d not delivered", want)
		}
	}

	_, err = c.Sync(ctxT(t), 0, 0, 0)
	var pe *proto.Error
	if !errors.As(err, &pe) || pe.Code != proto.CodeUnsupported {
		t.Errorf("Sync without storage: %v, want UNSUPPORTED", err)
	}

	if err := c.Ack(5, 13); err != nil {
		t.Fatal(err)
	}
	if a, err := proto.ParseAck(fc.expect(t, proto.OpAck).Body); err != nil || a != (proto.Ack{ConvID: 5, Seq: 13}) {
		t.Errorf("server got ACK %+v, %v", a, err)
	}
}

func TestDialRejectsBadEndpoints(t *testing.T) {
	cfg := testConfig("udp://127.0.0.1:1")
	if _, err := Dial(ctxT(t), cfg); !errors.Is(err, ErrUnsupportedScheme) {
		t.Errorf("Dial udp://: %v, want ErrUnsupportedScheme", err)
	}
	cfg = testConfig("tcp://" + deadPort(t))
	if _, err := Dial(ctxT(t), cfg); err == nil {
		t.Error("Dial to a dead port succeeded")
	}
}

func TestSlowOnPushIsNotADeadServer(t *testing.T) {
	const interval = 20 * time.Millisecond
	const n = pushQueue + 100 // enough to fill the queue and stall the reader
	srv := newFakeServer(t, withHeartbeat(uint32(interval/time.Millisecond)))
	release := make(chan struct{})
	got := make(chan uint64, n)
	st := newStates()
	cfg := testConfig(srv.url)
	cfg.OnState = st.record
	cfg.OnPush = func(p Push) {
		<-release
		got <- p.Seq
	}
	c := dial(t, cfg)
	fc := srv.nextConn(t)
	for i := range n {
		fc.push(0, proto.Push{ConvID: 1, Seq: uint64(i + 1)})
	}
	// Many intervals pass while OnPush holds everything up.
	for range 8 {
		fc.expect(t, proto.OpHeartbeat)
	}
	close(release)
	for want := uint64(1); want <= n; want++ {
		select {
		case seq := <-got:
			if seq != want {
				t.Fatalf("push seq %d, want %d", seq, want)
			}
		case <-time.After(waitLimit):
			t.Fatalf("push %d not delivered", want)
		}
	}
	if _, err := c.Request(ctxT(t), 1, nil); err != nil {
		t.Fatal(err)
	}
	if srv.accepted.Load() != 1 {
		t.Error("client reconnected while only OnPush was slow")
	}
	for {
		select {
		case ev := <-st.ch:
			if ev.state == StateDisconnected {
				t.Fatalf("disconnected while only OnPush was slow: %v", ev.err)
			}
			continue
		default:
		}
		break
	}
}

func TestExpiredTokenIsNotSentAgain(t *testing.T) {
	srv := newFakeServer(t, withAuth(func(token string) *proto.Error {
		if token == "t2" {
			return &proto.Error{Code: proto.CodeTokenExpired, Msg: "expired"}
		}
		return nil
	}))
	var calls atomic.Int32
	cfg := testConfig(srv.url)
	cfg.TokenFunc = func(context.Context) (string, error) {
		switch n := calls.Add(1); {
		case n == 1:
			return "t1", nil
		case n <= 4:
			return "t2", nil // a token service slow to notice expiry
		default:
			return "t3", nil
		}
	}
	c := dial(t, cfg)
	srv.nextConn(t).closeWith(proto.CodeShutdown, "draining")
	fc := srv.nextConn(t)
	if fc.token != "t3" {
		t.Fatalf("reconnected with %q, want t3", fc.token)
	}
	var sent []string
	for len(srv.tokens) > 0 {
		sent = append(sent, <-srv.tokens)
	}
	if strings.Join(sent, ",") != "t1,t2,t3" {
		t.Errorf("server saw tokens %v, want t1,t2,t3: a refused token was sent again", sent)
	}
	if _, err := c.Request(ctxT(t), 1, nil); err != nil {
		t.Fatal(err)
	}
}

func TestServerProtocolViolationDropsConnection(t *testing.T) {
	srv := newFakeServer(t)
	st := newStates()
	cfg := testConfig(srv.url)
	cfg.OnState = st.record
	c := dial(t, cfg)
	// JOIN is a client-to-server op: a server sending it is broken.
	srv.nextConn(t).send(proto.Header{Op: proto.OpJoin}, []byte("lobby"))
	if ev := st.wait(t, StateDisconnected); !errors.Is(ev.err, ErrProtocol) {
		t.Errorf("disconnected with %v, want ErrProtocol", ev.err)
	}
	fc := srv.nextConn(t)
	if _, err := c.Request(ctxT(t), 1, nil); err != nil || c.ConnID() != fc.id {
		t.Errorf("after reconnect: conn %d, %v; want conn %d", c.ConnID(), err, fc.id)
	}
}

// A SHUTDOWN close (a draining node) sends the client to the next endpoint
// at once, not after a backoff wait: the node spreads its closes itself.
func TestShutdownReconnectsAtOnce(t *testing.T) {
	srv := newFakeServer(t)
	cfg := testConfig(srv.url)
	cfg.BackoffMin, cfg.BackoffMax = 10*time.Second, 10*time.Second
	c := dial(t, cfg)
	start := time.Now()
	fc1 := srv.nextConn(t)
	if fc1.flags != 0 {
		t.Errorf("first AUTH flags %#x, want 0", fc1.flags)
	}
	fc1.closeWith(proto.CodeShutdown, "draining")
	fc2 := srv.nextConn(t)
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("reconnect after SHUTDOWN took %v; the backoff is 10s", took)
	}
	// It tells the next node it moved, so that node claims the pushes the
	// draining one held (PROTOCOL §5.1); a later ordinary reconnect does not.
	if fc2.flags != proto.FlagMoved {
		t.Errorf("AUTH after SHUTDOWN has flags %#x, want MOVED", fc2.flags)
	}
	if reply, err := c.Request(ctxT(t), 1, []byte("x")); err != nil || string(reply) != "x" || c.ConnID() != fc2.id {
		t.Fatalf("Request after reconnect = %q, %v", reply, err)
	}
}
