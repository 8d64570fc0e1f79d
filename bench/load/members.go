package load

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"imgate/bench/report"
	"imgate/gateway"
	"imgate/proto"
)

// Target says where a gateway listens and how to sign its tokens.
type Target struct {
	TCP           string // host:port of the tcp:// listener
	WS            string // ws://host:port/ws
	QUIC          string // host:port of the quic:// listener
	KCP           string // host:port of the kcp:// listener
	Admin         string // host:port of the admin port
	AdminPassword string
	HTTP          string // host:port of the HTTP API
	Key           gateway.KeyConfig
}

// Dial describes a set of member connections to open.
type Dial struct {
	Target      Target
	Transport   string // "tcp", "tls", "ws", "wss" (Target.WS is then a wss:// URL), "kcp" or "quic"
	KCPPreset   string // KCP: the client side's preset (default normal)
	N           int
	Srcs        []net.IP
	UID         func(i int) string   // default "b<i>"
	Rooms       func(i int) []string // rooms to join
	Concurrency int                  // default 64
	Progress    func(opened int)     // called every 1,000
	Heartbeat   time.Duration        // 0: send none (the gateway's interval must be long)
	// Retries is how many more times a member whose dial, handshake or
	// AUTH failed or stalled (20 s) is tried, as a real client reconnects;
	// 0: the first failure fails Open. Members.Redials counts them.
	Retries int
}

// benchTLS skips certificate checks: benchmarks run against generated
// development certificates.
var benchTLS = &tls.Config{InsecureSkipVerify: true}

// Members is a set of authenticated connections, each with one reader that
// hands push payloads to a Tracker. A connection holds a goroutine and a
// small read buffer: the load side is not what is being measured.
type Members struct {
	conns   []net.Conn
	ws      bool
	tracker *Tracker
	wg      sync.WaitGroup
	hbStop  chan struct{}
	// AuthTime holds dial-to-AUTH_OK times (the storm scenario's figure).
	AuthTime *report.Histogram
	dropped  atomic.Int64 // connections the gateway closed
	// Redials counts members dialled again after a failed attempt (Dial.Retries).
	Redials atomic.Int64
	closing atomic.Bool // Close is ending the connections itself
	quic    *quicDialer // QUIC: shared UDP sockets, one per source address
	kcp     *kcpDialers // KCP: likewise
}

// Open dials d.N members; t receives their pushes (t.Len() must be >= d.N).
func Open(d Dial, t *Tracker) (*Members, error) {
	if d.Concurrency <= 0 {
		d.Concurrency = 64
	}
	if d.UID == nil {
		d.UID = func(i int) string { return fmt.Sprintf("b%d", i) }
	}
	if len(d.Srcs) == 0 {
		d.Srcs = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	m := &Members{conns: make([]net.Conn, d.N), ws: d.Transport == "ws" || d.Transport == "wss", tracker: t, hbStop: make(chan struct{}), AuthTime: report.NewHistogram()}
	switch d.Transport {
	case "quic":
		m.quic = newQUICDialer(d.Srcs)
	case "kcp":
		m.kcp = newKCPDialers(d.Srcs, d.KCPPreset)
	}
	var next, opened atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < d.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= d.N || firstErr.Load() != nil {
					return
				}
				start := time.Now()
				c, br, err := m.dialOne(d, i)
				for try := 0; err != nil && try < d.Retries; try++ {
					m.Redials.Add(1)
					time.Sleep(time.Duration(100+rand.IntN(900)) * time.Millisecond)
					c, br, err = m.dialOne(d, i)
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, fmt.Errorf("member %d: %w", i, err))
					return
				}
				m.AuthTime.Record(time.Since(start))
				m.conns[i] = c
				m.wg.Add(1)
				go m.read(i, c, br)
				if n := opened.Add(1); d.Progress != nil && n%1000 == 0 {
					d.Progress(int(n))
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		m.Close()
		return nil, err
	}
	if d.Heartbeat > 0 {
		go m.heartbeats(d.Heartbeat)
	}
	return m, nil
}

func (m *Members) dialOne(d Dial, i int) (net.Conn, *bufio.Reader, error) {
	tok, err := gateway.MintToken(d.Target.Key, gateway.Claims{UID: d.UID(i), Expiry: time.Now().Add(24 * time.Hour)})
	if err != nil {
		return nil, nil, err
	}
	nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: d.Srcs[i%len(d.Srcs)]}, Timeout: 30 * time.Second}
	var c net.Conn
	if m.quic != nil {
		c, err = m.quic.dial(d.Target.QUIC, i)
	} else if m.kcp != nil {
		c, err = m.kcp.dial(d.Target.KCP, i)
	} else if d.Transport == "kcpgo" {
		c, err = dialKCPGo(d.Target.KCP)
	} else if m.ws {
		wd := ws.Dialer{Timeout: 30 * time.Second, TLSConfig: benchTLS, NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return nd.DialContext(ctx, network, addr)
		}}
		c, _, _, err = wd.Dial(context.Background(), d.Target.WS)
	} else if d.Transport == "tls" {
		c, err = tls.DialWithDialer(&nd, "tcp", d.Target.TCP, benchTLS)
	} else {
		c, err = nd.Dial("tcp", d.Target.TCP)
	}
	if err != nil {
		return nil, nil, err
	}
	br := bufio.NewReaderSize(c, 4096)
	authWait := 60 * time.Second
	if d.Retries > 0 {
		authWait = 20 * time.Second // stalled: give up and dial again
	}
	c.SetDeadline(time.Now().Add(authWait))
	steps := []struct {
		op   proto.Op
		body string
		want proto.Op
	}{{proto.OpAuth, tok, proto.OpAuthOK}}
	if d.Rooms != nil {
		for _, room := range d.Rooms(i) {
			steps = append(steps, struct {
				op   proto.Op
				body string
				want proto.Op
			}{proto.OpJoin, room, proto.OpReply})
		}
	}
	var buf []byte
	for k, s := range steps {
		if err := m.write(c, proto.AppendFrame(nil, proto.Header{Op: s.op, Seq: uint32(k + 1)}, []byte(s.body))); err != nil {
			c.Close()
			return nil, nil, err
		}
		var f proto.Frame
		f, buf, err = m.readFrame(br, buf)
		if err != nil || f.Op != s.want {
			c.Close()
			if err == nil {
				err = fmt.Errorf("%v answered with %v %q", s.op, f.Op, f.Body)
			}
			return nil, nil, err
		}
	}
	c.SetDeadline(time.Time{})
	return c, br, nil
}

func (m *Members) write(c net.Conn, frame []byte) error {
	if m.ws {
		return wsutil.WriteClientBinary(c, frame)
	}
	_, err := c.Write(frame)
	return err
}

// readFrame reads one frame into buf (grown as needed, reused).
func (m *Members) readFrame(br *bufio.Reader, buf []byte) (proto.Frame, []byte, error) {
	var n int
	if m.ws {
		for {
			h, err := ws.ReadHeader(br)
			if err != nil {
				return proto.Frame{}, buf, err
			}
			if h.OpCode == ws.OpClose {
				return proto.Frame{}, buf, io.EOF
			}
			if int64(cap(buf)) < h.Length {
				buf = make([]byte, h.Length)
			}
			buf = buf[:h.Length]
			if _, err := io.ReadFull(br, buf); err != nil {
				return proto.Frame{}, buf, err
			}
			if h.OpCode == ws.OpBinary {
				break
			}
		}
		n = len(buf)
	} else {
		var hdr [4]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return proto.Frame{}, buf, err
		}
		n = 4 + int(binary.BigEndian.Uint32(hdr[:]))
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		copy(buf, hdr[:])
		if _, err := io.ReadFull(br, buf[4:]); err != nil {
			return proto.Frame{}, buf, err
		}
	}
	f, err := proto.DecodeExact(buf[:n], proto.MaxFrameLimit)
	return f, buf, err
}

func (m *Members) read(i int, c net.Conn, br *bufio.Reader) {
	defer m.wg.Done()
	var buf []byte
	for {
		var f proto.Frame
		var err error
		f, buf, err = m.readFrame(br, buf)
		if err != nil {
			if !m.closing.Load() {
				m.dropped.Add(1) // the gateway ended it, not our Close
			}
			return
		}
		switch f.Op {
		case proto.OpPush:
			if p, err := proto.ParsePush(f.Body); err == nil {
				m.tracker.Observe(i, p.Payload)
			}
		case proto.OpClose:
			m.dropped.Add(1)
			return
		}
	}
}

// Dropped counts connections the gateway closed while the test ran.
func (m *Members) Dropped() int64 { return m.dropped.Load() }

// heartbeats sends HEARTBEAT on every connection once per interval, spread
// over the interval.
func (m *Members) heartbeats(every time.Duration) {
	frame := proto.AppendFrame(nil, proto.Header{Op: proto.OpHeartbeat}, nil)
	t := time.NewTicker(every / 2)
	defer t.Stop()
	for {
		select {
		case <-m.hbStop:
			return
		case <-t.C:
			for _, c := range m.conns {
				if c != nil {
					m.write(c, frame)
				}
			}
		}
	}
}

// Len is the number of members.
func (m *Members) Len() int { return len(m.conns) }

// Close closes every connection and waits for the readers.
func (m *Members) Close() {
	m.closing.Store(true)
	select {
	case <-m.hbStop:
	default:
		close(m.hbStop)
	}
	for _, c := range m.conns {
		if c != nil {
			c.Close()
		}
	}
	m.wg.Wait()
	if m.kcp != nil {
		m.kcp.close()
	}
	if m.quic != nil {
		m.quic.close()
	}
}
