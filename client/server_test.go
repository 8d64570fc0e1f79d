package client

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"io"
	"math/big"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"imgate/proto"
)

// fakeServer is a small in-test gateway on loopback speaking proto over TCP
// or WebSocket. It answers AUTH, HEARTBEAT, JOIN, LEAVE, UPLINK and SYNC, and
// lets a test push, close with a code, or drop a connection.
//
// UPLINK behaviour by svid: 99 answers ERROR NO_HANDLER; holdSVID is held
// until holdCount requests are waiting, then all are answered in reverse
// order; anything else is echoed. JOIN of "forbidden" answers ERROR
// ROOM_FORBIDDEN. SYNC of conv 0 answers ERROR UNSUPPORTED.
type fakeServer struct {
	t         *testing.T
	ln        net.Listener
	ws        bool
	tls       *tls.Config // server side; nil: plain
	url       string
	heartbeat uint32 // ms, sent in AUTH_OK
	node      string
	auth      func(token string) *proto.Error // nil: every token is fine
	holdCount int
	silent    atomic.Bool // read and record, answer nothing (a hung server)

	accepted atomic.Int32   // transport connections accepted
	conns    chan *fakeConn // authenticated connections, in order
	tokens   chan string    // every AUTH token, in order
	nextID   atomic.Uint64  // conn ids
	mu       sync.Mutex     // guards open
	open     map[net.Conn]struct{}
}

const holdSVID = 7

type fakeServerOption func(*fakeServer)

func withWS() fakeServerOption                 { return func(s *fakeServer) { s.ws = true } }
func withTLS(cfg *tls.Config) fakeServerOption { return func(s *fakeServer) { s.tls = cfg } }
func withHeartbeat(ms uint32) fakeServerOption { return func(s *fakeServer) { s.heartbeat = ms } }
func withHold(n int) fakeServerOption          { return func(s *fakeServer) { s.holdCount = n } }
func withAuth(f func(string) *proto.Error) fakeServerOption {
	return func(s *fakeServer) { s.auth = f }
}

func newFakeServer(t *testing.T, opts ...fakeServerOption) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{
		t:         t,
		ln:        ln,
		heartbeat: 10_000,
		node:      "node-test",
		holdCount: 1,
		conns:     make(chan *fakeConn, 16),
		tokens:    make(chan string, 16),
		open:      make(map[net.Conn]struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	scheme := map[[2]bool]string{{false, false}: "tcp", {false, true}: "tls", {true, false}: "ws", {true, true}: "wss"}[[2]bool{s.ws, s.tls != nil}]
	s.url = scheme + "://" + ln.Addr().String()
	if s.ws {
		s.url += "/ws"
	}
	if s.tls != nil {
		ln = tls.NewListener(ln, s.tls)
		s.ln = ln
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.mu.Lock()
			s.open[nc] = struct{}{}
			s.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.serve(nc)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for nc := range s.open {
			nc.Close()
		}
		s.mu.Unlock()
		wg.Wait()
	})
	return s
}

// fakeConn is the server side of one client connection.
type fakeConn struct {
	srv    *fakeServer
	nc     net.Conn
	br     *bufio.Reader
	id     uint64
	token  string
	flags  uint16         // of its AUTH
	frames chan recvFrame // every frame after AUTH, bodies copied

	wmu  sync.Mutex
	held []proto.Frame // UPLINKs of holdSVID waiting to be answered
}

type recvFrame struct {
	proto.Frame
	at time.Time
}

func (s *fakeServer) serve(nc net.Conn) {
	defer func() {
		nc.Close()
		s.mu.Lock()
		delete(s.open, nc)
		s.mu.Unlock()
	}()
	fc := &fakeConn{srv: s, nc: nc, br: bufio.NewReader(nc), frames: make(chan recvFrame, 4096)}
	if s.ws {
		if _, err := ws.Upgrade(nc); err != nil {
			return
		}
	}
	f, err := fc.read()
	if err != nil || f.Op != proto.OpAuth {
		return
	}
	fc.token, fc.flags = string(f.Body), f.Flags
	s.tokens <- fc.token
	if s.auth != nil {
		if pe := s.auth(fc.token); pe != nil {
			fc.closeWith(pe.Code, pe.Msg)
			return
		}
	}
	fc.id = s.nextID.Add(1)
	fc.send(proto.Header{Op: proto.OpAuthOK}, proto.AppendAuthOK(nil, proto.AuthOK{
		ConnID: fc.id, HeartbeatMS: s.heartbeat, MaxFrame: proto.DefaultMaxFrame, NodeID: []byte(s.node),
	}))
	s.conns <- fc
	for {
		f, err := fc.read()
		if err != nil {
			return
		}
		select {
		case fc.frames <- recvFrame{f, time.Now()}:
		default:
			s.t.Errorf("fake server: frame queue full, dropped %s", f.Op)
		}
		if s.silent.Load() {
			continue
		}
		if !fc.handle(f) {
			return
		}
	}
}

// handle answers one frame; false ends the connection.
func (fc *fakeConn) handle(f proto.Frame) bool {
	switch f.Op {
	case proto.OpHeartbeat:
		fc.send(proto.Header{Op: proto.OpPong}, binary.BigEndian.AppendUint64(nil, uint64(time.Now().UnixMilli())))
	case proto.OpJoin, proto.OpLeave:
		if string(f.Body) == "forbidden" {
			fc.send(proto.Header{Op: proto.OpError, Seq: f.Seq}, proto.AppendError(nil, proto.CodeRoomForbidden, "not for you"))
		} else {
			fc.send(proto.Header{Op: proto.OpReply, Seq: f.Seq}, nil)
		}
	case proto.OpUplink:
		switch f.SVID {
		case 99:
			fc.send(proto.Header{Op: proto.OpError, Seq: f.Seq}, proto.AppendError(nil, proto.CodeNoHandler, "no backend for svid 99"))
		case holdSVID:
			fc.held = append(fc.held, f)
			if len(fc.held) >= fc.srv.holdCount {
				for _, h := range slices.Backward(fc.held) {
					fc.send(proto.Header{Op: proto.OpReply, SVID: h.SVID, Seq: h.Seq}, h.Body)
				}
				fc.held = nil
			}
		default:
			fc.send(proto.Header{Op: proto.OpReply, SVID: f.SVID, Seq: f.Seq}, f.Body)
		}
	case proto.OpSync:
		req, err := proto.ParseSync(f.Body)
		if err != nil || req.ConvID == 0 {
			fc.send(proto.Header{Op: proto.OpError, Seq: f.Seq}, proto.AppendError(nil, proto.CodeUnsupported, "no storage"))
			break
		}
		last := req.AfterSeq
		for range req.Limit {
			last++
			fc.push(proto.FlagResend, proto.Push{ConvID: req.ConvID, Seq: last, Payload: []byte("old")})
		}
		fc.send(proto.Header{Op: proto.OpReply, Seq: f.Seq}, proto.AppendSyncDone(nil, proto.SyncDone{LastSeq: last}))
	case proto.OpClose:
		return false
	}
	return true
}

// read returns the next frame with its body copied.
func (fc *fakeConn) read() (proto.Frame, error) {
	var msg []byte
	if fc.srv.ws {
		// ReadClientData rejects unmasked frames, so every test over ws
		// also checks that the client masks.
		data, _, err := wsutil.ReadClientData(struct {
			io.Reader
			io.Writer
		}{fc.br, fc.nc})
		if err != nil {
			return proto.Frame{}, err
		}
		msg = data
	} else {
		var prefix [4]byte
		if _, err := io.ReadFull(fc.br, prefix[:]); err != nil {
			return proto.Frame{}, err
		}
		size, err := proto.FrameSize(prefix[:], proto.DefaultMaxFrame)
		if err != nil {
			return proto.Frame{}, err
		}
		msg = make([]byte, size)
		copy(msg, prefix[:])
		if _, err := io.ReadFull(fc.br, msg[4:]); err != nil {
			return proto.Frame{}, err
		}
	}
	return proto.DecodeExact(msg, proto.DefaultMaxFrame)
}

func (fc *fakeConn) send(h proto.Header, body []byte) {
	frame := proto.AppendFrame(nil, h, body)
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	if fc.srv.ws {
		_ = wsutil.WriteServerBinary(fc.nc, frame)
	} else {
		_, _ = fc.nc.Write(frame)
	}
}

func (fc *fakeConn) push(flags uint16, p proto.Push) {
	fc.send(proto.Header{Op: proto.OpPush, Flags: flags}, proto.AppendPush(nil, p))
}

// closeWith sends CLOSE with code and closes the connection.
func (fc *fakeConn) closeWith(code proto.Code, reason string) {
	fc.send(proto.Header{Op: proto.OpClose}, proto.AppendError(nil, code, reason))
	fc.nc.Close()
}

// drop closes the connection without a word.
func (fc *fakeConn) drop() { fc.nc.Close() }

// nextConn waits for the next authenticated connection.
func (s *fakeServer) nextConn(t *testing.T) *fakeConn {
	t.Helper()
	select {
	case fc := <-s.conns:
		return fc
	case <-time.After(waitLimit):
		t.Fatal("no client connection within the deadline")
		return nil
	}
}

// expect waits for the next frame with op, skipping others (heartbeats).
func (fc *fakeConn) expect(t *testing.T, op proto.Op) recvFrame {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		select {
		case f := <-fc.frames:
			if f.Op == op {
				return f
			}
		case <-deadline:
			t.Fatalf("no %s frame within the deadline", op)
			return recvFrame{}
		}
	}
}

// waitLimit bounds every wait in these tests; generous for -race on busy
// machines, and only reached when a test is failing anyway.
const waitLimit = 10 * time.Second

// deadPort returns a loopback address nothing listens on.
func deadPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// testTLS returns a server config with a fresh self-signed certificate for
// 127.0.0.1 and a client config that trusts it.
func testTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "imgate test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	return server, &tls.Config{RootCAs: roots}
}
