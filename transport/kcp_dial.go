package transport

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"time"

	"imgate/proto"
	"imgate/transport/arq"
)

// The client side of KCP: a KCPDialer owns one UDP socket and opens any
// number of sessions over it (a load generator holds thousands per socket),
// each a net.Conn carrying the imgate frame stream. Rebind moves every
// session to a new socket, as a phone moving from Wi-Fi to cellular does.

// KCPDialer opens KCP sessions over one UDP socket.
type KCPDialer struct {
	sock  *kcpSocket
	stats KCPStats
}

// NewKCPDialer binds laddr ("" or ":0" for any) with opts.
func NewKCPDialer(laddr string, opts KCPOptions) (*KCPDialer, error) {
	if opts.ARQ == (arq.Config{}) {
		cfg, err := arq.Preset(opts.Preset)
		if err != nil {
			return nil, err
		}
		opts.ARQ = cfg
	}
	conn, err := listenUDP(laddr)
	if err != nil {
		return nil, err
	}
	d := &KCPDialer{}
	sock, err := newKCPSocket(conn, opts, &d.stats)
	if err != nil {
		conn.Close()
		return nil, err
	}
	d.sock = sock
	go sock.readLoop(conn)
	return d, nil
}

func listenUDP(laddr string) (*net.UDPConn, error) {
	if laddr == "" {
		laddr = ":0"
	}
	a, err := net.ResolveUDPAddr("udp", laddr)
	if err != nil {
		return nil, err
	}
	return net.ListenUDP("udp", a)
}

// LocalAddr is the socket's address.
func (d *KCPDialer) LocalAddr() net.Addr { return d.sock.udp().LocalAddr() }

// Sessions is the number of open sessions.
func (d *KCPDialer) Sessions() int { return d.sock.count() }

// Dial opens a session to raddr. No packet leaves until the first Write:
// KCP has no handshake, the first data opens the session on the server.
func (d *KCPDialer) Dial(raddr string) (net.Conn, error) {
	ap, err := resolveAddrPort(raddr)
	if err != nil {
		return nil, err
	}
	for range 8 {
		var b [4]byte
		rand.Read(b[:])
		c := &kcpClientConn{d: d, readable: make(chan struct{}, 1), writable: make(chan struct{}, 1), done: make(chan struct{})}
		c.init(d.sock, binary.LittleEndian.Uint32(b[:]), newToken(), ap)
		if d.sock.add(c) {
			return c, nil
		}
	}
	return nil, errors.New("kcp: no free conversation id")
}

func resolveAddrPort(raddr string) (netip.AddrPort, error) {
	a, err := net.ResolveUDPAddr("udp", raddr)
	if err != nil {
		return netip.AddrPort{}, err
	}
	ap := a.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// Rebind moves the dialer, and every session on it, to a new socket bound to
// laddr; the server follows each session on its next datagram.
func (d *KCPDialer) Rebind(laddr string) error {
	conn, err := listenUDP(laddr)
	if err != nil {
		return err
	}
	old := d.sock.swap(conn)
	go d.sock.readLoop(conn)
	old.Close()
	return nil
}

// Close ends every session and the socket.
func (d *KCPDialer) Close() error {
	for _, p := range d.sock.peers() {
		p.(*kcpClientConn).Close()
	}
	if d.sock.closed.Swap(true) {
		return nil
	}
	d.sock.timers.close()
	return d.sock.udp().Close()
}

// DialKCP opens one session on a dialer of its own, closed with the session.
// The URL's query carries the options (see ParseKCPOptions).
func DialKCP(ctx context.Context, rawURL string) (net.Conn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	opts, err := ParseKCPOptions(u.Query(), KCPOptions{})
	if err != nil {
		return nil, err
	}
	d, err := NewKCPDialer("", opts)
	if err != nil {
		return nil, err
	}
	c, err := d.Dial(u.Host)
	if err != nil {
		d.Close()
		return nil, err
	}
	c.(*kcpClientConn).ownDialer = true
	return c, nil
}

// KCPCloseError is what Read returns once the server closed the session
// with a CLOSE datagram; Code is the imgate close code.
type KCPCloseError struct{ Code proto.Code }

func (e *KCPCloseError) Error() string {
	return fmt.Sprintf("kcp: session closed by peer (code %d)", e.Code)
}

// kcpClientConn is a client session as a net.Conn.
type kcpClientConn struct {
	kcpSession
	d         *KCPDialer
	ownDialer bool

	// Guarded by kcpSession.mu.
	rbuf          []byte
	err           error // why the session ended
	readDeadline  time.Time
	writeDeadline time.Time

	readable chan struct{} // data arrived (or a deadline changed)
	writable chan struct{} // the send window opened (or a deadline changed)
	done     chan struct{}
}

var _ net.Conn = (*kcpClientConn)(nil)

func (c *kcpClientConn) sess() *kcpSession { return &c.kcpSession }

func (c *kcpClientConn) LocalAddr() net.Addr { return c.d.LocalAddr() }
func (c *kcpClientConn) RemoteAddr() net.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	return net.UDPAddrFromAddrPort(c.addr)
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (c *kcpClientConn) input(segs []byte, _ netip.AddrPort) {
	c.mu.Lock()
	if c.gone {
		c.mu.Unlock()
		return
	}
	now := arq.Clock()
	acked, err := c.eng.Input(segs, now)
	if err != nil {
		c.mu.Unlock()
		c.sock.drop(DropUnexpected)
		return
	}
	// Received data moves to rbuf only while the application keeps up;
	// the rest stays in the engine, whose receive window then closes and
	// stops the server, so a client that does not read holds at most rbuf
	// plus one window.
	var ready [][]byte
	if len(c.rbuf) < kcpClientReadBuf {
		var stack [16][]byte
		ready = c.takeReady(stack[:0])
	}
	next, busy := uint32(0), false
	if acked {
		next, busy = c.flush(now)
	} else if c.eng.Owed() || c.fecOut != nil {
		next, busy = now+uint32(c.sock.opts.ARQ.Interval), true
	}
	c.mu.Unlock()
	if busy {
		c.sock.timers.schedule(&c.kcpSession, next)
	}
	if len(ready) > 0 {
		wake(c.readable)
	}
	if acked {
		wake(c.writable)
	}
}

func (c *kcpClientConn) onTimer() {
	c.mu.Lock()
	if c.gone {
		c.mu.Unlock()
		return
	}
	now := arq.Clock()
	next, busy := c.flush(now)
	dead := c.eng.Dead()
	c.mu.Unlock()
	if dead {
		c.end(ErrDeadLink, 0)
		return
	}
	if busy {
		c.sock.timers.schedule(&c.kcpSession, next)
	}
}

func (c *kcpClientConn) peerClosed(code proto.Code) { c.end(&KCPCloseError{Code: code}, 0) }

// end closes the session once: err is what Read and Write return after any
// data already received; a nonzero code is sent to the server.
func (c *kcpClientConn) end(err error, code proto.Code) {
	c.mu.Lock()
	if c.gone {
		c.mu.Unlock()
		return
	}
	c.gone, c.err = true, err
	c.eng.Release()
	addr := c.addr
	c.mu.Unlock()
	if code != 0 {
		c.sock.sendClose(c.conv, c.token, code, addr)
	}
	c.sock.remove(c)
	close(c.done)
	if c.ownDialer {
		c.d.Close()
	}
}

// kcpClientReadBuf bounds the bytes a client session takes from its engine
// ahead of the application's reads.
const kcpClientReadBuf = 64 << 10

// takeReady moves the engine's in-order data to rbuf (c.mu held).
func (c *kcpClientConn) takeReady(dst [][]byte) [][]byte {
	ready := c.eng.TakeReady(dst)
	for _, b := range ready {
		c.rbuf = append(c.rbuf, b...)
		arq.Recycle(b)
	}
	return ready
}

func (c *kcpClientConn) Read(p []byte) (int, error) {
	for {
		c.mu.Lock()
		if len(c.rbuf) == 0 && !c.gone {
			// What the engine kept while rbuf was full; taking it may
			// reopen the window, which the next flush tells the server.
			var stack [16][]byte
			if len(c.takeReady(stack[:0])) > 0 && c.eng.Owed() {
				c.sock.timers.schedule(&c.kcpSession, arq.Clock())
			}
		}
		if len(c.rbuf) > 0 {
			n := copy(p, c.rbuf)
			c.rbuf = c.rbuf[n:]
			if len(c.rbuf) == 0 {
				c.rbuf = nil
			}
			c.mu.Unlock()
			return n, nil
		}
		if c.gone {
			err := c.err
			c.mu.Unlock()
			var ce *KCPCloseError
			if errors.As(err, &ce) || err == net.ErrClosed {
				return 0, io.EOF
			}
			return 0, err
		}
		deadline := c.readDeadline
		c.mu.Unlock()
		if err := c.wait(c.readable, deadline); err != nil {
			return 0, err
		}
	}
}

// wait blocks until something changes or the deadline passes.
func (c *kcpClientConn) wait(ch chan struct{}, deadline time.Time) error {
	var timeout <-chan time.Time
	if !deadline.IsZero() {
		d := time.Until(deadline)
		if d <= 0 {
			return os.ErrDeadlineExceeded
		}
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-ch:
	case <-c.done:
	case <-timeout:
		return os.ErrDeadlineExceeded
	}
	return nil
}

func (c *kcpClientConn) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		c.mu.Lock()
		if c.gone {
			err := c.err
			c.mu.Unlock()
			return written, err
		}
		room := c.eng.SendRoom()
		if room == 0 {
			deadline := c.writeDeadline
			c.mu.Unlock()
			if err := c.wait(c.writable, deadline); err != nil {
				return written, err
			}
			continue
		}
		k := min(room, len(p))
		c.eng.Send(p[:k])
		now := arq.Clock()
		next, busy := c.flush(now)
		c.mu.Unlock()
		if busy {
			c.sock.timers.schedule(&c.kcpSession, next)
		}
		p, written = p[k:], written+k
	}
	return written, nil
}

// Close sends CLOSE (normal) to the server and ends the session at once;
// data not yet acknowledged is dropped, as the frames' CLOSE semantics allow.
func (c *kcpClientConn) Close() error {
	c.end(net.ErrClosed, proto.CodeNormal)
	return nil
}

func (c *kcpClientConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

func (c *kcpClientConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.readDeadline = t
	c.mu.Unlock()
	wake(c.readable)
	return nil
}

func (c *kcpClientConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.writeDeadline = t
	c.mu.Unlock()
	wake(c.writable)
	return nil
}
