package transport

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"imgate/proto"
)

func quicClientTLS(alpn string) *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, NextProtos: []string{alpn}}
}

func TestQUICEcho(t *testing.T) {
	e := newTestEngine(t, Config{})
	l, err := e.Listen("quic://127.0.0.1:0", newEcho(), selfSigned(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, l.Addr().String(), quicClientTLS(ALPN), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.SetDeadline(time.Now().Add(5 * time.Second))
	s.Write(proto.AppendFrame(nil, proto.Header{Op: proto.OpUplink, Seq: 1}, []byte("over quic")))
	if f := readFrame(t, s); f.Seq != 1 || string(f.Body) != "over quic" {
		t.Fatalf("echo %+v", f)
	}
}

func TestQUICWrongALPNRefused(t *testing.T) {
	e := newTestEngine(t, Config{})
	l, err := e.Listen("quic://127.0.0.1:0", newEcho(), selfSigned(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := quic.DialAddr(ctx, l.Addr().String(), quicClientTLS("h3"), nil); err == nil {
		t.Fatal("a handshake offering another ALPN must fail")
	}
}

// Connection migration for real: the client moves to a new UDP socket (a new
// local port, as after a Wi-Fi to cellular switch) mid-session and the same
// session keeps answering.
func TestQUICMigration(t *testing.T) {
	e := newTestEngine(t, Config{})
	rec := &openRecorder{echoHandler: &echoHandler{closed: make(chan error, 10)}}
	l, err := e.Listen("quic://127.0.0.1:0", rec, selfSigned(t))
	if err != nil {
		t.Fatal(err)
	}
	udpA, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	trA := &quic.Transport{Conn: udpA}
	defer trA.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := trA.Dial(ctx, l.Addr(), quicClientTLS(ALPN), &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.SetDeadline(time.Now().Add(10 * time.Second))
	s.Write(proto.AppendFrame(nil, proto.Header{Op: proto.OpUplink, Seq: 1}, []byte("before")))
	if f := readFrame(t, s); f.Seq != 1 {
		t.Fatalf("before migration: %+v", f)
	}
	before := conn.LocalAddr().String()

	udpB, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	trB := &quic.Transport{Conn: udpB}
	defer trB.Close()
	path, err := conn.AddPath(trB)
	if err != nil {
		t.Fatal(err)
	}
	if err := path.Probe(ctx); err != nil {
		t.Fatalf("probe new path: %v", err)
	}
	if err := path.Switch(); err != nil {
		t.Fatalf("switch path: %v", err)
	}
	s.Write(proto.AppendFrame(nil, proto.Header{Op: proto.OpUplink, Seq: 2}, []byte("after")))
	if f := readFrame(t, s); f.Seq != 2 || string(f.Body) != "after" {
		t.Fatalf("after migration: %+v", f)
	}
	if n := len(rec.conns()); n != 1 {
		t.Fatalf("the server saw %d sessions, want the same one throughout", n)
	}
	// The server follows the client to its new address. (Closing the old
	// socket would close quic-go's Transport that owns the connection, so
	// the test checks the server's view instead.)
	now := udpB.LocalAddr().String()
	waitFor(t, func() bool { return rec.conns()[0].RemoteAddr().String() == now })
	if now == before {
		t.Fatalf("the client did not move: %s", now)
	}
}

// openRecorder is an echo handler that keeps the connections it opened.
type openRecorder struct {
	*echoHandler
	opened []Conn // under echoHandler.mu
}

func (o *openRecorder) OnOpen(c Conn) {
	o.mu.Lock()
	o.opened = append(o.opened, c)
	o.mu.Unlock()
	o.echoHandler.OnOpen(c)
}

// conns returns the connections opened so far.
func (o *openRecorder) conns() []Conn {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]Conn(nil), o.opened...)
}
