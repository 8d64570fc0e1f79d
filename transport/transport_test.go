package transport

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"imgate/proto"
)

// echoHandler answers every frame with a REPLY carrying the same body.
type echoHandler struct {
	mu     sync.Mutex
	opens  int
	closes []error
	closed chan error
}

func newEcho() *echoHandler { return &echoHandler{closed: make(chan error, 100)} }

func (h *echoHandler) OnOpen(c Conn) {
	h.mu.Lock()
	h.opens++
	h.mu.Unlock()
}

func (h *echoHandler) OnFrame(c Conn, f proto.Frame) error {
	if f.Op == proto.OpClose {
		return proto.Errorf(proto.CodeClientDirection, "test asked to fail")
	}
	out := proto.AppendFrame(nil, proto.Header{Op: proto.OpReply, SVID: f.SVID, Seq: f.Seq}, f.Body)
	return c.Send(testFrame(out))
}

func (h *echoHandler) OnClose(c Conn, err error) { h.closed <- err }

// testFrame is an unshared frame that knows its WebSocket form.
type testFrame []byte

func (t testFrame) Wire(ws bool) []byte {
	if !ws {
		return t
	}
	return append(appendWSHeader(nil, wsOpBinary, len(t)), t...)
}
func (t testFrame) Release() {}

func newTestEngine(t *testing.T, cfg Config) *Engine {
	t.Helper()
	e, err := NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func readFrame(t *testing.T, r io.Reader) proto.Frame {
	t.Helper()
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		t.Fatalf("read length: %v", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	buf := make([]byte, 4+n)
	copy(buf, hdr[:])
	if _, err := io.ReadFull(r, buf[4:]); err != nil {
		t.Fatalf("read frame: %v", err)
	}
	f, err := proto.DecodeExact(buf, proto.MaxFrameLimit)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	return f
}

func TestTCPEchoSplitAndBatched(t *testing.T) {
	e := newTestEngine(t, Config{MaxFrame: 1 << 20})
	h := newEcho()
	l, err := e.Listen("tcp://127.0.0.1:0", h, nil)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	// Many frames in one write, then one frame written a byte at a time,
	// then a frame bigger than the loop's read buffer.
	var batch []byte
	for i := 1; i <= 50; i++ {
		batch = proto.AppendFrame(batch, proto.Header{Op: proto.OpUplink, SVID: 7, Seq: uint32(i)}, []byte("hello"))
	}
	nc.Write(batch)
	one := proto.AppendFrame(nil, proto.Header{Op: proto.OpUplink, SVID: 7, Seq: 51}, []byte("split"))
	for _, b := range one {
		nc.Write([]byte{b})
	}
	big := proto.AppendFrame(nil, proto.Header{Op: proto.OpUplink, SVID: 7, Seq: 52}, make([]byte, 200<<10))
	nc.Write(big)
	br := bufio.NewReader(nc)
	for i := 1; i <= 52; i++ {
		f := readFrame(t, br)
		if f.Op != proto.OpReply || f.Seq != uint32(i) {
			t.Fatalf("frame %d: got %v seq %d", i, f.Op, f.Seq)
		}
		if i == 52 && len(f.Body) != 200<<10 {
			t.Fatalf("big body %d", len(f.Body))
		}
	}
}

func TestTCPBadInputClosesOnlyOffender(t *testing.T) {
	cases := []struct {
		name string
		data []byte
		code proto.Code
	}{
		{"oversize", binary.BigEndian.AppendUint32(nil, 1<<30), proto.CodeFrameTooLarge},
		{"short length", binary.BigEndian.AppendUint32(nil, 3), proto.CodeBadFrame},
		{"bad version", []byte{0, 0, 0, 12, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, proto.CodeBadVersion},
		{"unknown op", []byte{0, 0, 0, 12, 1, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, proto.CodeUnknownOp},
		{"handler error", proto.AppendFrame(nil, proto.Header{Op: proto.OpClose}, nil), proto.CodeClientDirection},
	}
	e := newTestEngine(t, Config{})
	h := newEcho()
	l, err := e.Listen("tcp://127.0.0.1:0", h, nil)
	if err != nil {
		t.Fatal(err)
	}
	good, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	gr := bufio.NewReader(good)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			nc.SetDeadline(time.Now().Add(5 * time.Second))
			nc.Write(tc.data)
			br := bufio.NewReader(nc)
			f := readFrame(t, br)
			eb, _ := proto.ParseError(f.Body)
			if f.Op != proto.OpClose || eb.Code != tc.code {
				t.Fatalf("got %v code %v (%s), want CLOSE %v", f.Op, eb.Code, eb.Message, tc.code)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Fatalf("connection not closed after CLOSE: %v", err)
			}
			// The well-behaved connection is untouched.
			good.SetDeadline(time.Now().Add(5 * time.Second))
			good.Write(proto.AppendFrame(nil, proto.Header{Op: proto.OpUplink, Seq: 9}, []byte("x")))
			if f := readFrame(t, gr); f.Seq != 9 {
				t.Fatalf("good conn got seq %d", f.Seq)
			}
		})
	}
}

func wsDial(t *testing.T, url string, hdr ws.HandshakeHeader) net.Conn {
	t.Helper()
	d := ws.Dialer{Header: hdr, Timeout: 5 * time.Second}
	nc, _, _, err := d.Dial(context.Background(), url)
	if err != nil {
		t.Fatalf("ws dial %s: %v", url, err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	return nc
}

func TestWebSocketEchoFragmentsPingClose(t *testing.T) {
	e := newTestEngine(t, Config{})
	h := newEcho()
	l, err := e.Listen("ws://127.0.0.1:0/ws", h, nil)
	if err != nil {
		t.Fatal(err)
	}
	nc := wsDial(t, l.URL(), nil)
	frame := proto.AppendFrame(nil, proto.Header{Op: proto.OpUplink, SVID: 3, Seq: 1}, []byte("over websocket"))
	if err := wsutil.WriteClientBinary(nc, frame); err != nil {
		t.Fatal(err)
	}
	msg, op, err := wsutil.ReadServerData(nc)
	if err != nil || op != ws.OpBinary {
		t.Fatalf("read: %v op %v", err, op)
	}
	f, err := proto.DecodeExact(msg, proto.DefaultMaxFrame)
	if err != nil || f.Seq != 1 || string(f.Body) != "over websocket" {
		t.Fatalf("echo %v %+v", err, f)
	}
	// A fragmented message with a ping between its fragments.
	frame = proto.AppendFrame(nil, proto.Header{Op: proto.OpUplink, Seq: 2}, []byte("fragmented body"))
	ws.WriteFrame(nc, ws.MaskFrame(ws.NewFrame(ws.OpBinary, false, frame[:5])))
	ws.WriteFrame(nc, ws.MaskFrame(ws.NewPingFrame([]byte("p"))))
	ws.WriteFrame(nc, ws.MaskFrame(ws.NewFrame(ws.OpContinuation, false, frame[5:10])))
	ws.WriteFrame(nc, ws.MaskFrame(ws.NewFrame(ws.OpContinuation, true, frame[10:])))
	hd, err := ws.ReadHeader(nc)
	if err != nil || hd.OpCode != ws.OpPong {
		t.Fatalf("want pong, got %v %v", hd.OpCode, err)
	}
	io.CopyN(io.Discard, nc, hd.Length)
	msg, _, err = wsutil.ReadServerData(nc)
	if err != nil {
		t.Fatal(err)
	}
	if f, _ := proto.DecodeExact(msg, proto.DefaultMaxFrame); f.Seq != 2 || string(f.Body) != "fragmented body" {
		t.Fatalf("fragmented echo %+v", f)
	}
	// Client close is echoed and the connection ends in order.
	ws.WriteFrame(nc, ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))))
	hd, err = ws.ReadHeader(nc)
	if err != nil || hd.OpCode != ws.OpClose {
		t.Fatalf("want close echo, got %v %v", hd.OpCode, err)
	}
	select {
	case err := <-h.closed:
		if err != nil {
			t.Fatalf("orderly close reported %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no OnClose")
	}
}

func TestWebSocketViolations(t *testing.T) {
	e := newTestEngine(t, Config{MaxFrame: 1024})
	h := newEcho()
	l, err := e.Listen("ws://127.0.0.1:0/ws", h, nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		frame  ws.Frame
		status ws.StatusCode
	}{
		{"unmasked", ws.NewBinaryFrame([]byte("x")), ws.StatusProtocolError},
		{"text", ws.MaskFrame(ws.NewTextFrame([]byte("hi"))), ws.StatusUnsupportedData},
		{"too big", ws.MaskFrame(ws.NewBinaryFrame(make([]byte, 2000))), ws.StatusMessageTooBig},
		{"stray continuation", ws.MaskFrame(ws.NewFrame(ws.OpContinuation, true, []byte("x"))), ws.StatusProtocolError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nc := wsDial(t, l.URL(), nil)
			ws.WriteFrame(nc, tc.frame)
			var got ws.StatusCode
			for {
				hd, err := ws.ReadHeader(nc)
				if err != nil {
					t.Fatalf("no close frame: %v", err)
				}
				body := make([]byte, hd.Length)
				io.ReadFull(nc, body)
				if hd.OpCode == ws.OpClose {
					got, _ = ws.ParseCloseFrameData(body)
					break
				}
			}
			if got != tc.status {
				t.Fatalf("close status %d, want %d", got, tc.status)
			}
		})
	}
}

func TestWebSocketHandshakeRules(t *testing.T) {
	e := newTestEngine(t, Config{WSOrigins: []string{"https://app.example"}})
	l, err := e.Listen("ws://127.0.0.1:0/ws", newEcho(), nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	status := func(req string) string {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(nc, req)
		line, _ := bufio.NewReader(nc).ReadString('\n')
		return strings.TrimSpace(line)
	}
	up := "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	if s := status("GET /ws HTTP/1.1\r\nHost: x\r\n" + up + "Origin: https://app.example\r\n\r\n"); !strings.Contains(s, "101") {
		t.Fatalf("allowed origin: %q", s)
	}
	if s := status("GET /ws HTTP/1.1\r\nHost: x\r\n" + up + "Origin: https://evil.example\r\n\r\n"); !strings.Contains(s, "403") {
		t.Fatalf("bad origin: %q", s)
	}
	if s := status("GET /other HTTP/1.1\r\nHost: x\r\n" + up + "\r\n"); !strings.Contains(s, "404") {
		t.Fatalf("bad path: %q", s)
	}
	if s := status("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n"); !strings.Contains(s, "400") {
		t.Fatalf("not an upgrade: %q", s)
	}
}

// A client that never reads fills its queue: Send reports ErrQueueFull, and
// other connections keep flowing.
func TestSlowReaderQueueBound(t *testing.T) {
	e := newTestEngine(t, Config{QueueBytes: 64 << 10})
	var mu sync.Mutex
	var conns []Conn
	h := &funcHandler{open: func(c Conn) { mu.Lock(); conns = append(conns, c); mu.Unlock() }}
	l, err := e.Listen("tcp://127.0.0.1:0", h, nil)
	if err != nil {
		t.Fatal(err)
	}
	slow, _ := net.Dial("tcp", l.Addr().String())
	defer slow.Close()
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(conns) == 1 })
	c := conns[0]
	payload := make([]byte, 16<<10)
	frame := testFrame(proto.AppendFrame(nil, proto.Header{Op: proto.OpPush}, payload))
	var full bool
	for i := 0; i < 10000 && !full; i++ {
		if err := c.Send(frame); errors.Is(err, ErrQueueFull) {
			full = true
		}
	}
	if !full {
		t.Fatal("queue never filled")
	}
	if q := c.QueuedBytes(); q > 64<<10 {
		t.Fatalf("queue %d over limit", q)
	}
	c.Close(nil)
}

type funcHandler struct {
	open func(Conn)
}

func (h *funcHandler) OnOpen(c Conn) {
	if h.open != nil {
		h.open(c)
	}
}
func (h *funcHandler) OnFrame(Conn, proto.Frame) error { return nil }
func (h *funcHandler) OnClose(Conn, error)             {}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func selfSigned(t *testing.T) *tls.Config {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

func TestTLSAndWSS(t *testing.T) {
	e := newTestEngine(t, Config{})
	srv := selfSigned(t)
	l, err := e.Listen("tls://127.0.0.1:0", newEcho(), srv)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	nc.Write(proto.AppendFrame(nil, proto.Header{Op: proto.OpUplink, Seq: 5}, []byte("secure")))
	if f := readFrame(t, nc); f.Seq != 5 || string(f.Body) != "secure" {
		t.Fatalf("tls echo %+v", f)
	}

	wl, err := e.Listen("wss://127.0.0.1:0/ws", newEcho(), srv)
	if err != nil {
		t.Fatal(err)
	}
	d := ws.Dialer{TLSConfig: &tls.Config{InsecureSkipVerify: true}, Timeout: 5 * time.Second}
	wc, _, _, err := d.Dial(context.Background(), wl.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	wsutil.WriteClientBinary(wc, proto.AppendFrame(nil, proto.Header{Op: proto.OpUplink, Seq: 6}, []byte("wss")))
	msg, _, err := wsutil.ReadServerData(wc)
	if err != nil {
		t.Fatal(err)
	}
	if f, _ := proto.DecodeExact(msg, proto.DefaultMaxFrame); f.Seq != 6 {
		t.Fatalf("wss echo %+v", f)
	}
}
