package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"imgate/proto"
)

func listenKCPTest(t *testing.T, e *Engine, query string, h Handler) *kcpListener {
	t.Helper()
	l, err := e.Listen("kcp://127.0.0.1:0"+query, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	return l.(*kcpListener)
}

func echoOnce(t *testing.T, c net.Conn, seq uint32, body string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(proto.AppendFrame(nil, proto.Header{Op: proto.OpUplink, Seq: seq}, []byte(body))); err != nil {
		t.Fatal(err)
	}
	if f := readFrame(t, c); f.Seq != seq || string(f.Body) != body {
		t.Fatalf("echo %+v, want seq %d %q", f, seq, body)
	}
}

func TestKCPEcho(t *testing.T) {
	for _, query := range []string{"", "?preset=fast", "?preset=weak-network", "?preset=fast&crypt=aes&key=s3cret", "?preset=normal&crypt=salsa20&key=k",
		"?preset=weak-network&datashard=10&parityshard=3", "?preset=fast&datashard=4&parityshard=2&crypt=aes&key=k"} {
		t.Run(query, func(t *testing.T) {
			e := newTestEngine(t, Config{})
			l := listenKCPTest(t, e, query, newEcho())
			c, err := DialKCP(context.Background(), l.URL()+query)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for i := range 20 {
				echoOnce(t, c, uint32(i+1), string(make([]byte, i*500))) // up to ~10 KB: several segments
			}
		})
	}
}

// TestKCPMigration: the client moves to a new UDP socket mid-session and the
// same server session keeps answering; the token, not the address, names it.
func TestKCPMigration(t *testing.T) {
	e := newTestEngine(t, Config{})
	h := &openRecorder{echoHandler: newEcho()}
	l := listenKCPTest(t, e, "?preset=fast", h)
	d, err := NewKCPDialer("127.0.0.1:0", KCPOptions{Preset: "fast"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c, err := d.Dial(l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, c, 1, "before")
	before := h.conns()[0].RemoteAddr().String()
	if err := d.Rebind("127.0.0.2:0"); err != nil {
		t.Fatal(err)
	}
	echoOnce(t, c, 2, "after")
	if n := len(h.conns()); n != 1 {
		t.Fatalf("%d sessions opened, want the one session to follow the client", n)
	}
	if after := h.conns()[0].RemoteAddr().String(); after == before {
		t.Fatalf("server still sends to %s after the move", before)
	}
	if n := e.Stats().KCP.Migrations.Load(); n != 1 {
		t.Fatalf("migrations counted %d, want 1", n)
	}
}

// TestKCPCloseSignals: a server close reaches the client as the CLOSE frame
// and then end of stream; a client close ends the server session at once;
// either way nothing is left on the socket.
func TestKCPCloseSignals(t *testing.T) {
	e := newTestEngine(t, Config{})
	h := newEcho()
	l := listenKCPTest(t, e, "?preset=fast", h)

	// Client closes: the server hears it without waiting for a timeout.
	c, err := DialKCP(context.Background(), l.URL()+"?preset=fast")
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, c, 1, "hi")
	c.Close()
	select {
	case err := <-h.closed:
		if !errors.Is(err, ErrPeerGone) {
			t.Fatalf("server saw %v, want ErrPeerGone", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server never saw the client's close")
	}
	waitFor(t, func() bool { return l.Sessions() == 0 })

	// Server closes (the handler fails the connection on an OpClose from
	// the client): CLOSE frame, then EOF.
	c, err = DialKCP(context.Background(), l.URL()+"?preset=fast")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write(proto.AppendFrame(nil, proto.Header{Op: proto.OpClose}, nil))
	f := readFrame(t, c)
	if f.Op != proto.OpClose {
		t.Fatalf("got %v, want CLOSE", f.Op)
	}
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after CLOSE: %v, want EOF", err)
	}
	<-h.closed
	waitFor(t, func() bool { return l.Sessions() == 0 })
}

// TestKCPDeadPeerLeavesNothing: a client that vanishes without a word is
// closed by the layer above (here: at once); its unacknowledged close frame
// lingers, then the session is cut and nothing remains.
func TestKCPDeadPeerLeavesNothing(t *testing.T) {
	e := newTestEngine(t, Config{Linger: 300 * time.Millisecond})
	h := &openRecorder{echoHandler: newEcho()}
	l := listenKCPTest(t, e, "?preset=fast", h)
	d, err := NewKCPDialer("127.0.0.1:0", KCPOptions{Preset: "fast"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.Dial(l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, c, 1, "hi")
	d.sock.udp().Close() // the peer vanishes: no CLOSE, no acks
	h.conns()[0].Close(CloseFrame(proto.CodeHeartbeatTimeout, "", false))
	select {
	case <-h.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("session never closed")
	}
	waitFor(t, func() bool { return l.Sessions() == 0 })
	waitFor(t, func() bool {
		l.sock.timers.mu.Lock()
		defer l.sock.timers.mu.Unlock()
		return len(l.sock.timers.heap) == 0
	})
}

// TestKCPForgottenSession: data for a session the server does not know (it
// restarted) is answered with CLOSE, so the client's Read ends at once.
func TestKCPForgottenSession(t *testing.T) {
	e := newTestEngine(t, Config{})
	l := listenKCPTest(t, e, "?preset=fast", newEcho())
	c, err := DialKCP(context.Background(), l.URL()+"?preset=fast")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoOnce(t, c, 1, "hi")
	for _, p := range l.sock.peers() { // forget it without telling the client
		l.sock.remove(p)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write(proto.AppendFrame(nil, proto.Header{Op: proto.OpUplink, Seq: 2}, []byte("anyone?")))
	if _, err := c.Read(make([]byte, 16)); err != io.EOF {
		t.Fatalf("read: %v, want EOF from the server's CLOSE", err)
	}
	if n := e.Stats().KCP.Resets.Load(); n < 1 {
		t.Fatalf("resets counted %d", n)
	}
}

// TestKCPBadDatagrams: garbage, a wrong token on a live conversation, a
// wrong key and a flood of new sessions over the embryonic limit are all
// dropped and counted; the established session is unaffected.
func TestKCPBadDatagrams(t *testing.T) {
	e := newTestEngine(t, Config{KCP: KCPOptions{MaxEmbryonic: 5}})
	l := listenKCPTest(t, e, "?preset=fast", newEcho())
	good, err := NewKCPDialer("127.0.0.1:0", KCPOptions{Preset: "fast"})
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	c, err := good.Dial(l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, c, 1, "established")
	live := c.(*kcpClientConn)

	raw, err := net.DialUDP("udp", nil, l.Addr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	stats := &e.Stats().KCP
	cases := []struct {
		name string
		dgm  func() []byte
	}{
		{"empty", func() []byte { return []byte{} }},
		{"short", func() []byte { return []byte{kcpData, 1, 2} }},
		{"unknown type", func() []byte { return make([]byte, 40) }},
		{"spoofed token on a live conversation", func() []byte {
			b := make([]byte, kcpEnvelope+24)
			b[0] = kcpData
			binary.BigEndian.PutUint64(b[1:], live.token+1)
			binary.LittleEndian.PutUint32(b[kcpEnvelope:], live.conv)
			b[kcpEnvelope+4] = 81
			return b
		}},
		{"bad segment for the live session", func() []byte {
			b := make([]byte, kcpEnvelope+24)
			b[0] = kcpData
			binary.BigEndian.PutUint64(b[1:], live.token)
			binary.LittleEndian.PutUint32(b[kcpEnvelope:], live.conv)
			b[kcpEnvelope+4] = 99
			return b
		}},
		{"oversized", func() []byte { return make([]byte, 3000) }},
	}
	for _, tc := range cases {
		before := stats.BadDatagrams.Load()
		raw.Write(tc.dgm())
		waitFor(t, func() bool { return stats.BadDatagrams.Load() > before })
	}

	// Wrong key: the datagram is not even readable.
	wrong, err := DialKCP(context.Background(), l.URL()+"?preset=fast&crypt=aes&key=nope")
	if err != nil {
		t.Fatal(err)
	}
	before := stats.BadDatagrams.Load()
	wrong.Write([]byte{0})
	waitFor(t, func() bool { return stats.BadDatagrams.Load() > before })
	wrong.Close()

	// Flood of sessions that never send a whole frame: the sixth is refused.
	flood, err := NewKCPDialer("127.0.0.1:0", KCPOptions{Preset: "fast"})
	if err != nil {
		t.Fatal(err)
	}
	defer flood.Close()
	for range 8 {
		fc, err := flood.Dial(l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fc.Write([]byte{0, 0})
	}
	waitFor(t, func() bool { return stats.Refused.Load() > 0 })
	if n := l.embryonic.Load(); n != 5 {
		t.Fatalf("embryonic sessions %d, want the limit 5", n)
	}
	echoOnce(t, c, 2, "still fine")
}

// TestKCPManySessionsOneSocket: a dialer multiplexes many sessions over one
// socket, each its own stream.
func TestKCPManySessionsOneSocket(t *testing.T) {
	e := newTestEngine(t, Config{})
	const n = 200
	l := listenKCPTest(t, e, "?preset=fast", &echoHandler{closed: make(chan error, n)})
	d, err := NewKCPDialer("127.0.0.1:0", KCPOptions{Preset: "fast"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	conns := make([]net.Conn, n)
	for i := range conns {
		if conns[i], err = d.Dial(l.Addr().String()); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 3 {
		for i, c := range conns {
			echoOnce(t, c, uint32(round*n+i+1), "x")
		}
	}
	if l.Sessions() != n || d.Sessions() != n {
		t.Fatalf("sessions: server %d, dialer %d, want %d", l.Sessions(), d.Sessions(), n)
	}
}

func TestParseKCPOptions(t *testing.T) {
	cases := []struct {
		query string
		ok    bool
	}{
		{"preset=fast", true},
		{"preset=weak-network&sndwnd=64&interval=15&nodelay=1", true},
		{"crypt=aes&key=k", true},
		{"preset=turbo", false},
		{"interval=x", false},
		{"mtu=9000", false},
		{"crypt=aes", false},
		{"crypt=rot13&key=k", false},
		{"nc=maybe", false},
	}
	for _, tc := range cases {
		u, _ := url.Parse("kcp://h:1?" + tc.query)
		_, err := ParseKCPOptions(u.Query(), KCPOptions{})
		if (err == nil) != tc.ok {
			t.Errorf("%q: err %v, want ok=%v", tc.query, err, tc.ok)
		}
	}
}

// lossyRelay forwards datagrams between a client and the server, dropping
// every dropEvery-th one in each direction: a deterministic lossy path.
type lossyRelay struct {
	conn      *net.UDPConn
	server    *net.UDPAddr
	client    atomic.Pointer[net.UDPAddr]
	dropEvery int
}

func newLossyRelay(t *testing.T, server net.Addr, dropEvery int) *lossyRelay {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &lossyRelay{conn: conn, server: server.(*net.UDPAddr), dropEvery: dropEvery}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 2048)
		n := 0
		for {
			k, from, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			n++
			if n%r.dropEvery == 0 {
				continue
			}
			if from.Port == r.server.Port && from.IP.Equal(r.server.IP) {
				if c := r.client.Load(); c != nil {
					conn.WriteToUDP(buf[:k], c)
				}
			} else {
				r.client.Store(from)
				conn.WriteToUDP(buf[:k], r.server)
			}
		}
	}()
	return r
}

// TestKCPFECRebuildsLosses: over a path losing one datagram in five, with
// FEC on both sides the lost datagrams are rebuilt from parity (counted on
// both ends) and the stream arrives whole.
func TestKCPFECRebuildsLosses(t *testing.T) {
	e := newTestEngine(t, Config{})
	const q = "?preset=weak-network&datashard=4&parityshard=2"
	l := listenKCPTest(t, e, q, newEcho())
	relay := newLossyRelay(t, l.Addr(), 5)
	d, err := NewKCPDialer("127.0.0.1:0", KCPOptions{Preset: "weak-network", DataShards: 4, ParityShards: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c, err := d.Dial(relay.conn.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 60 {
		echoOnce(t, c, uint32(i+1), string(make([]byte, 100+i*40)))
	}
	if n, m := e.Stats().KCP.FECRebuilt.Load(), d.stats.FECRebuilt.Load(); n == 0 || m == 0 {
		t.Fatalf("datagrams rebuilt: server %d, client %d; want both > 0 over a lossy path", n, m)
	}
}
