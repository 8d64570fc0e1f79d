package gateway

import (
	"crypto/tls"

	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/quic-go/quic-go"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"imgate/proto"
	"imgate/transport"
)

// A raw test client for the end-to-end tests: it speaks the wire protocol of
// docs/PROTOCOL.md byte for byte (package proto for frames, gobwas/ws for the
// client side of WebSocket), so the tests see exactly what a client in any
// language would see. Reads are synchronous with a deadline; nothing here
// sleeps to synchronise.

// e2eSecret is the HS256 secret of key k1, the only key of e2e servers.
const e2eSecret = "0123456789abcdef0123456789abcdef"

var e2eKey = KeyConfig{ID: "k1", Alg: AlgHS256, Secret: e2eSecret}

// e2eKinds are the transports every case runs over.
var e2eKinds = []transport.Kind{transport.KindTCP, transport.KindWS, transport.KindKCP, transport.KindQUIC}

// e2eWait is how long a test waits for something that should happen at once
// (generous: the race detector on two shared cores is slow).
const e2eWait = 5 * time.Second

// e2eEachKind runs fn as a subtest per transport.
func e2eEachKind(t *testing.T, fn func(t *testing.T, kind transport.Kind)) {
	t.Helper()
	for _, kind := range e2eKinds {
		t.Run(kind.String(), func(t *testing.T) { fn(t, kind) })
	}
}

// e2eServer is a started gateway with its client listeners' addresses.
type e2eServer struct {
	*Server
	t    testing.TB
	urls map[transport.Kind]string // tcp: host:port; ws: ws://host:port/ws
}

// e2eConfig is the base configuration of e2e servers: loopback listeners for
// both transports, no admin port, the HTTP API (for /metrics) on a loopback
// port, the k1 key and the echo SVID 1.
func e2eConfig(t testing.TB) Config {
	return Config{
		NodeID:    "e2e-node",
		Listen:    []string{"tcp://127.0.0.1:0", "ws://127.0.0.1:0/ws", "kcp://127.0.0.1:0", "quic://127.0.0.1:0"},
		AdminAddr: "",
		HTTPAddr:  "127.0.0.1:0", // for /metrics
		DataDir:   t.TempDir(),
		Auth:      AuthConfig{Keys: []KeyConfig{e2eKey}},
		EchoSVID:  1,
	}
}

// newE2EServer starts a server with e2eConfig changed by edit (may be nil);
// it is closed when the test ends.
func newE2EServer(t testing.TB, edit func(*Config)) *e2eServer {
	t.Helper()
	cfg := e2eConfig(t)
	if edit != nil {
		edit(&cfg)
	}
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	es := &e2eServer{Server: s, t: t, urls: make(map[transport.Kind]string)}
	for _, l := range s.Listeners() {
		switch l.Kind() {
		case transport.KindTCP:
			es.urls[l.Kind()] = l.Addr().String()
		case transport.KindWS:
			es.urls[l.Kind()] = l.URL()
		case transport.KindQUIC, transport.KindKCP:
			es.urls[l.Kind()] = l.Addr().String()
		}
	}
	if es.urls[transport.KindTCP] == "" || es.urls[transport.KindWS] == "" {
		t.Fatalf("listeners: want tcp and ws, got %v", es.urls)
	}
	if cfg.HTTPAddr != "" && s.HTTPAddr() == "" {
		t.Fatalf("HTTP API configured on %s but not bound", cfg.HTTPAddr)
	}
	return es
}

// sub is s for a subtest: failures and cleanups of what it creates belong to t.
func (s *e2eServer) sub(t testing.TB) *e2eServer {
	cp := *s
	cp.t = t
	return &cp
}

// e2eClaims are the claims of a valid token for uid on device, valid for an
// hour; rooms nil allows any room.
func e2eClaims(uid, device string, rooms []string) Claims {
	return Claims{UID: uid, Device: device, Rooms: rooms, Expiry: time.Now().Add(time.Hour)}
}

// e2eToken signs c with key k1.
func e2eToken(t testing.TB, c Claims) string {
	t.Helper()
	tok, err := MintToken(e2eKey, c)
	if err != nil {
		t.Fatalf("MintToken: %v", err)
	}
	return tok
}

// e2eDialOptions tune a client's socket.
type e2eDialOptions struct {
	local  net.Addr // source address (TCP only)
	rcvBuf int      // SO_RCVBUF set before connect, so the window stays small
}

func (o e2eDialOptions) dialer() *net.Dialer {
	d := &net.Dialer{Timeout: e2eWait, LocalAddr: o.local}
	if o.rcvBuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, o.rcvBuf)
			})
			return errors.Join(err, serr)
		}
	}
	return d
}

// e2eClient is one raw client connection.
type e2eClient struct {
	t    testing.TB
	kind transport.Kind
	conn net.Conn
	r    *bufio.Reader
	rw   io.ReadWriter // WebSocket: reads through r, control answers to conn
	held []proto.Frame // frames read but handed back with pushBack

	wmu sync.Mutex // serialises writes (a test may write from two goroutines)
}

// dial connects without authenticating; the connection is closed when the
// test ends.
func (s *e2eServer) dial(kind transport.Kind) *e2eClient {
	s.t.Helper()
	c, err := s.tryDial(kind, e2eDialOptions{})
	if err != nil {
		s.t.Fatalf("dial %v: %v", kind, err)
	}
	return c
}

func (s *e2eServer) tryDial(kind transport.Kind, o e2eDialOptions) (*e2eClient, error) {
	c := &e2eClient{t: s.t, kind: kind}
	switch kind {
	case transport.KindTCP:
		conn, err := o.dialer().Dial("tcp", s.urls[kind])
		if err != nil {
			return nil, err
		}
		c.conn, c.r = conn, bufio.NewReader(conn)
	case transport.KindWS:
		d := ws.Dialer{Timeout: e2eWait, NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return o.dialer().DialContext(ctx, network, addr)
		}}
		conn, br, _, err := d.Dial(context.Background(), s.urls[kind])
		if err != nil {
			return nil, err
		}
		if br == nil {
			br = bufio.NewReader(conn)
		}
		c.conn, c.r = conn, br
		c.rw = struct {
			io.Reader
			io.Writer
		}{br, &e2eLockedConn{c}}
	case transport.KindQUIC:
		ctx, cancel := context.WithTimeout(context.Background(), e2eWait)
		defer cancel()
		qc, err := quic.DialAddr(ctx, s.urls[kind], &tls.Config{InsecureSkipVerify: true, NextProtos: []string{transport.ALPN}}, nil)
		if err != nil {
			return nil, err
		}
		st, err := qc.OpenStreamSync(ctx)
		if err != nil {
			qc.CloseWithError(0, "")
			return nil, err
		}
		conn := &e2eQUICConn{Stream: st, conn: qc}
		c.conn, c.r = conn, bufio.NewReader(conn)
	case transport.KindKCP:
		conn, err := transport.DialKCP(context.Background(), "kcp://"+s.urls[kind]+"?preset=fast")
		if err != nil {
			return nil, err
		}
		c.conn, c.r = conn, bufio.NewReader(conn)
	default:
		return nil, fmt.Errorf("no e2e client for %v", kind)
	}
	s.t.Cleanup(func() { c.conn.Close() })
	return c, nil
}

// login dials and authenticates as uid on device; rooms nil allows any room.
func (s *e2eServer) login(kind transport.Kind, uid, device string, rooms []string) (*e2eClient, proto.AuthOK) {
	s.t.Helper()
	c := s.dial(kind)
	c.send(proto.Header{Op: proto.OpAuth, Seq: 1}, []byte(e2eToken(s.t, e2eClaims(uid, device, rooms))))
	return c, c.expectAuthOK(s, 1)
}

// e2eLockedConn is where gobwas writes its answers to control frames (the
// echo of a close, pongs) while another goroutine may write frames. Their
// write errors are dropped: echoing a close to a server that has already
// gone is a courtesy, and the close itself is what the test checks.
type e2eLockedConn struct{ c *e2eClient }

func (w *e2eLockedConn) Write(p []byte) (int, error) {
	w.c.wmu.Lock()
	defer w.c.wmu.Unlock()
	w.c.conn.SetWriteDeadline(time.Now().Add(e2eWait))
	w.c.conn.Write(p)
	return len(p), nil
}

// writeMessage writes b as is: raw bytes on TCP, one masked binary message on
// WebSocket.
func (c *e2eClient) writeMessage(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.conn.SetWriteDeadline(time.Now().Add(e2eWait))
	if c.kind.WebSocket() {
		return wsutil.WriteClientBinary(c.conn, b)
	}
	_, err := c.conn.Write(b)
	return err
}

// writeWS writes one WebSocket frame exactly as given (masked or not).
func (c *e2eClient) writeWS(f ws.Frame) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.conn.SetWriteDeadline(time.Now().Add(e2eWait))
	return ws.WriteFrame(c.conn, f)
}

// trySend writes one frame.
func (c *e2eClient) trySend(h proto.Header, body []byte) error {
	return c.writeMessage(proto.AppendFrame(nil, h, body))
}

// send writes one frame and fails the test if it cannot.
func (c *e2eClient) send(h proto.Header, body []byte) {
	c.t.Helper()
	if err := c.trySend(h, body); err != nil {
		c.t.Fatalf("%v: send %v: %v", c.kind, h.Op, err)
	}
}

// read returns the next frame from the server. Every frame is checked as a
// strict client must (§13.14): length, version and op, and on WebSocket one
// whole frame per binary message.
func (c *e2eClient) read(timeout time.Duration) (proto.Frame, error) {
	if len(c.held) > 0 {
		f := c.held[0]
		c.held = c.held[1:]
		return f, nil
	}
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	var msg []byte
	if c.kind.WebSocket() {
		data, op, err := wsutil.ReadServerData(c.rw)
		if err != nil {
			return proto.Frame{}, err
		}
		if op != ws.OpBinary {
			return proto.Frame{}, fmt.Errorf("server sent a WebSocket %v message", op)
		}
		msg = data
	} else {
		var prefix [4]byte
		if _, err := io.ReadFull(c.r, prefix[:]); err != nil {
			return proto.Frame{}, err
		}
		size, err := proto.FrameSize(prefix[:], proto.MaxFrameLimit)
		if err != nil {
			return proto.Frame{}, fmt.Errorf("server frame: %w", err)
		}
		msg = make([]byte, size)
		copy(msg, prefix[:])
		if _, err := io.ReadFull(c.r, msg[4:]); err != nil {
			return proto.Frame{}, fmt.Errorf("server frame of %d bytes cut short: %w", size, err)
		}
	}
	f, err := proto.DecodeExact(msg, proto.MaxFrameLimit)
	if err != nil {
		return f, fmt.Errorf("server frame % x: %w", msg[:min(len(msg), 32)], err)
	}
	return f, nil
}

// pushBack makes f the next frame read returns again.
func (c *e2eClient) pushBack(f proto.Frame) { c.held = append([]proto.Frame{f}, c.held...) }

// next returns the next frame or fails the test.
func (c *e2eClient) next() proto.Frame {
	c.t.Helper()
	f, err := c.read(e2eWait)
	if err != nil {
		c.t.Fatalf("%v: reading a frame: %v", c.kind, err)
	}
	return f
}

// expect reads the next frame and checks its whole header and body.
func (c *e2eClient) expect(h proto.Header, body []byte) {
	c.t.Helper()
	f := c.next()
	if f.Header != h || !bytes.Equal(f.Body, body) {
		c.t.Fatalf("%v: got %s, want %s", c.kind, e2eShow(f), e2eShow(proto.Frame{Header: h, Body: body}))
	}
}

// expectReply reads a REPLY to (svid, seq) with exactly body.
func (c *e2eClient) expectReply(svid, seq uint32, body []byte) {
	c.t.Helper()
	c.expect(proto.Header{Op: proto.OpReply, SVID: svid, Seq: seq}, body)
}

// expectError reads an ERROR answering (svid, seq) with code.
func (c *e2eClient) expectError(svid, seq uint32, code proto.Code) {
	c.t.Helper()
	f := c.next()
	want := proto.Header{Op: proto.OpError, SVID: svid, Seq: seq}
	e, err := proto.ParseError(f.Body)
	if f.Header != want || err != nil || e.Code != code {
		c.t.Fatalf("%v: got %s, want ERROR %v with svid %d seq %d", c.kind, e2eShow(f), code, svid, seq)
	}
}

// expectPong sends nothing; it reads a PONG for seq and checks its clock.
func (c *e2eClient) expectPong(seq uint32, sent time.Time) {
	c.t.Helper()
	f := c.next()
	if f.Header != (proto.Header{Op: proto.OpPong, Seq: seq}) || len(f.Body) != 8 {
		c.t.Fatalf("%v: got %s, want PONG seq %d with an 8-byte body", c.kind, e2eShow(f), seq)
	}
	ms := int64(binary.BigEndian.Uint64(f.Body))
	if lo, hi := sent.Add(-time.Second).UnixMilli(), time.Now().Add(time.Second).UnixMilli(); ms < lo || ms > hi {
		c.t.Fatalf("%v: PONG server time %d ms, want between %d and %d", c.kind, ms, lo, hi)
	}
}

// ping sends HEARTBEAT with seq and expects its PONG as the very next frame:
// a sentinel proving the connection is open and that nothing else (no ERROR,
// no PUSH) was queued for it before.
func (c *e2eClient) ping(seq uint32) {
	c.t.Helper()
	sent := time.Now()
	c.send(proto.Header{Op: proto.OpHeartbeat, Seq: seq}, nil)
	c.expectPong(seq, sent)
}

// expectAuthOK reads AUTH_OK for seq and checks every field against s.
func (c *e2eClient) expectAuthOK(s *e2eServer, seq uint32) proto.AuthOK {
	c.t.Helper()
	f := c.next()
	if f.Header != (proto.Header{Op: proto.OpAuthOK, Seq: seq}) {
		c.t.Fatalf("%v: got %s, want AUTH_OK seq %d", c.kind, e2eShow(f), seq)
	}
	a, err := proto.ParseAuthOK(f.Body)
	if err != nil {
		c.t.Fatalf("%v: AUTH_OK body: %v", c.kind, err)
	}
	cfg := s.Config()
	maxFrame := cfg.Transport.MaxFrame
	if maxFrame == 0 {
		maxFrame = proto.DefaultMaxFrame
	}
	want := proto.AuthOK{
		ConnID:      a.ConnID,
		HeartbeatMS: uint32(cfg.HeartbeatInterval.Milliseconds()),
		MaxFrame:    uint32(maxFrame),
		NodeID:      []byte(cfg.NodeID),
	}
	if a.ConnID == 0 || !bytes.Equal(f.Body, proto.AppendAuthOK(nil, want)) {
		c.t.Fatalf("%v: AUTH_OK %+v, want %+v with a non-zero conn id", c.kind, a, want)
	}
	return a
}

// e2eWSStatus is the WebSocket close status §11.2 gives for an imgate code.
func e2eWSStatus(code proto.Code) ws.StatusCode {
	switch code {
	case proto.CodeFrameTooLarge:
		return 1009
	case proto.CodeBadFrame, proto.CodeUnknownOp, proto.CodeBadVersion, proto.CodeClientDirection, proto.CodeProtocolError:
		return 1002
	case proto.CodeNotAuthed, proto.CodeAuthFailed, proto.CodeTokenExpired, proto.CodeAuthTimeout, proto.CodeSlowConsumer:
		return 1008
	}
	return 1000
}

// expectClose reads CLOSE with code, then the end of the connection: EOF on
// TCP, on WebSocket a close frame with the status §11.2 names. A CLOSE caused
// by a frame may carry that frame's seq (§4); cause is that seq, 0 if none.
func (c *e2eClient) expectClose(code proto.Code, cause uint32) {
	c.t.Helper()
	c.expectCloseStatus(code, cause, e2eWSStatus(code))
}

func (c *e2eClient) expectCloseStatus(code proto.Code, cause uint32, status ws.StatusCode) {
	c.t.Helper()
	f, err := c.read(e2eWait)
	if c.kind == transport.KindQUIC && err != nil {
		// QUIC discards stream data a client has not read once the server
		// closes the connection (or the client never opened its stream);
		// the connection close itself carries the same code (§11.3).
		var ae *quic.ApplicationError
		if !errors.As(err, &ae) || !ae.Remote || ae.ErrorCode != quic.ApplicationErrorCode(code) {
			c.t.Fatalf("quic: connection ended with %v, want CLOSE %v or a connection close with code %d", err, code, code)
		}
		c.conn.Close()
		return
	}
	if err != nil {
		c.t.Fatalf("%v: reading a frame: %v", c.kind, err)
	}
	e, err := proto.ParseError(f.Body)
	if f.Op != proto.OpClose || f.Flags != 0 || f.SVID != 0 || (f.Seq != 0 && f.Seq != cause) || err != nil || e.Code != code {
		c.t.Fatalf("%v: got %s, want CLOSE %v (seq 0 or %d)", c.kind, e2eShow(f), code, cause)
	}
	c.expectEnd(status)
}

// e2eGracefulWSStatus is how a WebSocket connection ends after the client's
// own CLOSE frame: the server sends no imgate frame (§4: the receiver of a
// CLOSE must not answer) but ends the WebSocket with a normal close (§11.2),
// so a browser sees 1000 rather than 1006.
const e2eGracefulWSStatus = ws.StatusNormalClosure

// expectEnd reads the end of the connection with no frame before it, then
// closes the client side. On WebSocket the end is a close frame with status,
// or EOF when status is 0; on TCP it is always EOF.
func (c *e2eClient) expectEnd(status ws.StatusCode) {
	c.t.Helper()
	defer c.conn.Close()
	f, err := c.read(e2eWait)
	if err == nil {
		c.t.Fatalf("%v: got %s, want the connection to end", c.kind, e2eShow(f))
	}
	if c.kind.WebSocket() && status != 0 {
		var ce wsutil.ClosedError
		if !errors.As(err, &ce) || ce.Code != status {
			c.t.Fatalf("%v: connection ended with %v, want a WebSocket close with status %d", c.kind, err, status)
		}
		return
	}
	if c.kind == transport.KindQUIC {
		// After the stream's FIN the server closes the connection; a read
		// sees one or the other.
		var ae *quic.ApplicationError
		if err == io.EOF || errors.As(err, &ae) && ae.Remote {
			return
		}
	}
	if err != io.EOF {
		c.t.Fatalf("%v: connection ended with %v, want EOF", c.kind, err)
	}
}

// e2eShow renders a frame for failure messages.
func e2eShow(f proto.Frame) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v{flags %#x svid %d seq %d", f.Op, f.Flags, f.SVID, f.Seq)
	switch f.Op {
	case proto.OpError, proto.OpClose:
		if e, err := proto.ParseError(f.Body); err == nil {
			fmt.Fprintf(&b, " code %v %q", e.Code, e.Message)
			break
		}
		fallthrough
	default:
		fmt.Fprintf(&b, " body %d bytes % x", len(f.Body), f.Body[:min(len(f.Body), 48)])
	}
	return b.String() + "}"
}

// e2eBystander is a healthy authenticated connection in a room; check proves
// it still receives room pushes after someone else misbehaved.
type e2eBystander struct {
	s    *e2eServer
	c    *e2eClient
	room string
	n    int
}

// bystander logs a fresh user in over kind and joins room.
func (s *e2eServer) bystander(kind transport.Kind, room string) *e2eBystander {
	s.t.Helper()
	c, _ := s.login(kind, "bystander-"+kind.String(), "desk", nil)
	c.send(proto.Header{Op: proto.OpJoin, Seq: 2}, []byte(room))
	c.expectReply(0, 2, nil)
	return &e2eBystander{s: s, c: c, room: room}
}

// check pushes to the room and expects the push, and only it, at the
// bystander; t is the (sub)test that checks.
func (b *e2eBystander) check(t testing.TB) {
	t.Helper()
	defer func(prev testing.TB) { b.c.t = prev }(b.c.t)
	b.c.t = t
	b.n++
	payload := []byte(fmt.Sprintf("still here %d", b.n))
	if n := b.s.PushRoom(b.room, proto.Push{Payload: payload}); n < 1 {
		t.Fatalf("PushRoom(%q) reached %d members, want at least the bystander", b.room, n)
	}
	b.c.expect(proto.Header{Op: proto.OpPush, Flags: proto.FlagRoom},
		proto.AppendPush(nil, proto.Push{Topic: []byte(b.room), Payload: payload}))
	b.c.ping(uint32(1000 + b.n))
}

// e2eWaitFor polls cond until it holds or the deadline passes.
func e2eWaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// counter reads a counter from the server's /metrics endpoint by its exposed
// name and label pairs; 0 when the series does not exist yet.
func (s *e2eServer) counter(name string, labels ...string) float64 {
	s.t.Helper()
	resp, err := http.Get("http://" + s.HTTPAddr() + "/metrics")
	if err != nil {
		s.t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("GET /metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		s.t.Fatalf("GET /metrics: %v", err)
	}
	mf := mfs[name]
	if mf == nil {
		return 0
	}
series:
	for _, m := range mf.GetMetric() {
		have := make(map[string]string)
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue series
			}
		}
		return m.GetCounter().GetValue()
	}
	return 0
}

// expectCounter waits until a counter reaches want: some are bumped on the
// server's side of a close, after the client has already seen it.
func (s *e2eServer) expectCounter(want float64, name string, labels ...string) {
	s.t.Helper()
	deadline := time.Now().Add(e2eWait)
	for {
		got := s.counter(name, labels...)
		if got == want {
			return
		}
		if got > want || time.Now().After(deadline) {
			s.t.Fatalf("metric %s%v = %v, want %v", name, labels, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// e2eConns is the registry's connection count.
func (s *e2eServer) conns() int {
	n, _ := s.Registry().Counts()
	return n
}

// e2eQUICConn is a QUIC connection's one stream as a net.Conn.
type e2eQUICConn struct {
	*quic.Stream
	conn *quic.Conn
}

func (c *e2eQUICConn) LocalAddr() net.Addr  { return c.conn.LocalAddr() }
func (c *e2eQUICConn) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }
func (c *e2eQUICConn) Close() error {
	c.Stream.Close()
	return c.conn.CloseWithError(0, "")
}
