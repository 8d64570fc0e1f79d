package transport

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"imgate/proto"
	"imgate/transport/arq"
)

// ErrDeadLink closes a KCP session whose peer stopped acknowledging.
var ErrDeadLink = errors.New("transport: kcp peer stopped acknowledging")

type kcpListener struct {
	e    *Engine
	h    Handler
	sock *kcpSocket
	url  string

	embryonic atomic.Int64
}

func (l *kcpListener) Addr() net.Addr { return l.sock.udp().LocalAddr() }
func (l *kcpListener) Kind() Kind     { return KindKCP }
func (l *kcpListener) URL() string    { return l.url }

// Close stops reading and ends every session with GOING_AWAY.
func (l *kcpListener) Close() error {
	if l.sock.closed.Swap(true) {
		return nil
	}
	for _, p := range l.sock.peers() {
		c := p.(*kcpConn)
		c.setCode(proto.CodeShutdown)
		c.end(ErrClosed)
	}
	l.sock.timers.close()
	return l.sock.udp().Close()
}

// Sessions is the number of live KCP sessions on this listener.
func (l *kcpListener) Sessions() int { return l.sock.count() }

func (e *Engine) listenKCP(u *url.URL) (*kcpListener, error) {
	base := e.cfg.KCP
	opts, err := ParseKCPOptions(u.Query(), base)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", u.Redacted(), err)
	}
	if opts.MaxEmbryonic <= 0 {
		opts.MaxEmbryonic = 10000
	}
	addr, err := net.ResolveUDPAddr("udp", u.Host)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", u.Redacted(), err)
	}
	conn, err := net.ListenUDP("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", u.Redacted(), err)
	}
	sock, err := newKCPSocket(conn, opts, &e.stats.KCP)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("listen %s: %w", u.Redacted(), err)
	}
	l := &kcpListener{e: e, sock: sock, url: "kcp://" + conn.LocalAddr().String()}
	sock.drop = func(r DropReason) {
		e.stats.KCP.BadDatagrams.Add(1)
		e.stats.AddBadDatagram(KindKCP, r)
	}
	sock.unknown = l.accept
	return l, nil
}

func (l *kcpListener) start(h Handler) {
	l.h = h
	go l.sock.readLoop(l.sock.udp())
}

// accept opens a session for a conversation id the socket does not know,
// or, for data of a session this node has forgotten, tells the peer so.
func (l *kcpListener) accept(conv uint32, token uint64, segs []byte, from netip.AddrPort) kcpPeer {
	if token == 0 || !isSessionStart(segs) {
		if token != 0 && l.sock.resets.allow() {
			l.e.stats.KCP.Resets.Add(1)
			l.sock.sendClose(conv, token, proto.CodeShutdown, from)
		} else {
			l.sock.drop(DropUnknownConn)
		}
		return nil
	}
	if l.embryonic.Load() >= int64(l.sock.opts.MaxEmbryonic) {
		l.e.stats.KCP.Refused.Add(1)
		l.sock.drop(DropOverload)
		return nil
	}
	c := &kcpConn{l: l, h: l.h}
	c.init(l.sock, conv, token, from)
	c.out.limit = l.e.cfg.QueueBytes
	c.codec = codec{sink: c, maxFrame: l.e.cfg.MaxFrame}
	if !l.sock.add(c) {
		return l.sock.lookup(conv) // lost a race with another datagram of it
	}
	c.embryo.Store(true)
	l.embryonic.Add(1)
	c.opened = true
	l.h.OnOpen(c)
	return c
}

// kcpConn is a server-side KCP session: the transport.Conn the layers above
// see. Inbound frames are parsed on the socket's read goroutine; outbound
// frames move from the outbox into the engine in whichever goroutine queued
// them (or the one that sees the window open), bounded by the send window,
// so the outbox limit keeps its meaning: bytes not yet taken by the network.
type kcpConn struct {
	kcpSession
	l   *kcpListener
	h   Handler
	ctx atomic.Value
	out outbox

	// feedMu serialises the reader side: codec and handler calls.
	feedMu   sync.Mutex
	codec    codec
	opened   bool
	notified bool         // OnClose delivered (under feedMu)
	failure  *proto.Error // why fail closed the connection
	closeErr error        // why the session ended (set once, under mu)

	closing atomic.Bool
	embryo  atomic.Bool // counted in the listener's embryonic sessions
	code    atomic.Uint32
}

func (c *kcpConn) sess() *kcpSession             { return &c.kcpSession }
func (c *kcpConn) Kind() Kind                    { return KindKCP }
func (c *kcpConn) QueuedBytes() int              { return c.out.queued() }
func (c *kcpConn) SetContext(v any)              { c.ctx.Store(ctxBox{v}) }
func (c *kcpConn) Context() any                  { b, _ := c.ctx.Load().(ctxBox); return b.v }
func (c *kcpConn) Enqueue(f Frame) (bool, error) { return c.out.push(f) }
func (c *kcpConn) Flush()                        { c.pump() }
func (c *kcpConn) RemoteAddr() net.Addr          { return net.UDPAddrFromAddrPort(c.remote()) }
func (c *kcpConn) setCode(code proto.Code)       { c.code.Store(uint32(code)) }
func (c *kcpConn) stats() *KCPStats              { return &c.l.e.stats.KCP }

// Timer, janitor and socket callbacks.
func (c *kcpConn) onTimer()                   { c.pump() }
func (c *kcpConn) expire()                    { c.end(ErrClosed) }
func (c *kcpConn) peerClosed(code proto.Code) { c.end(ErrPeerGone) }
func (c *kcpConn) schedule(due uint32)        { c.sock.timers.schedule(&c.kcpSession, due) }

// sink implementation (the codec's side).
func (c *kcpConn) reply(f Frame)     { c.Send(f) }
func (c *kcpConn) upgraded()         {}
func (c *kcpConn) finish(last Frame) { c.Close(last) }

func (c *kcpConn) remote() netip.AddrPort {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.addr
}

func (c *kcpConn) isGone() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gone
}

func (c *kcpConn) releaseEmbryo() {
	if c.embryo.CompareAndSwap(true, false) {
		c.l.embryonic.Add(-1)
	}
}

func (c *kcpConn) Send(f Frame) error {
	start, err := c.out.push(f)
	if start {
		c.pump()
	}
	return err
}

// input runs on the read goroutine for every datagram of this session.
func (c *kcpConn) input(segs []byte, from netip.AddrPort) {
	c.feedMu.Lock()
	c.mu.Lock()
	if c.gone {
		c.mu.Unlock()
		c.feedMu.Unlock()
		return
	}
	now := arq.Clock()
	acked, err := c.eng.Input(segs, now)
	if err != nil {
		c.mu.Unlock()
		c.feedMu.Unlock()
		c.sock.drop(DropUnexpected)
		return
	}
	if from != c.addr {
		c.addr = from // the token vouched for it: follow the client
		c.stats().Migrations.Add(1)
	}
	var stack [16][]byte
	ready := c.eng.TakeReady(stack[:0])
	owed := c.eng.Owed()
	c.mu.Unlock()

	for _, d := range ready {
		if !c.closing.Load() {
			if err := c.codec.feed(d); err != nil {
				c.fail(err)
			}
		}
		arq.Recycle(d)
	}
	c.feedMu.Unlock()
	c.notifyIfGone()
	if acked || c.closing.Load() {
		c.pump()
	} else if owed || c.fecOut != nil {
		c.schedule(now + uint32(c.sock.opts.ARQ.Interval))
	}
}

// pump moves queued frames into the engine as far as the send window
// allows, flushes, and finishes a closing session once all is acknowledged.
func (c *kcpConn) pump() {
	c.mu.Lock()
	if c.gone {
		c.mu.Unlock()
		return
	}
	o := &c.out
	o.mu.Lock()
	for len(o.frames) > 0 {
		room := c.eng.SendRoom()
		if room == 0 {
			break
		}
		w := o.frames[0].Wire(false)[o.sent:]
		k := min(room, len(w))
		c.eng.Send(w[:k])
		o.consume(k)
	}
	drained := len(o.frames) == 0
	if drained {
		o.flushing = false
	}
	closing := o.closing
	o.mu.Unlock()
	now := arq.Clock()
	next, busy := c.flush(now)
	dead := c.eng.Dead()
	done := closing && drained && c.eng.WaitSnd() == 0
	c.mu.Unlock()
	switch {
	case dead:
		c.end(ErrDeadLink)
	case done:
		c.end(nil)
	case busy:
		c.schedule(next)
	}
}

func (c *kcpConn) Close(last Frame) {
	if cf, ok := last.(codedFrame); ok {
		c.setCode(cf.code)
	}
	ok, _, _ := c.out.startClose(last)
	if !ok {
		return
	}
	c.closing.Store(true)
	c.l.e.jan.add(c, time.Now().Add(c.l.e.cfg.Linger))
	c.pump()
}

func (c *kcpConn) fail(err error) {
	if err == errHandled {
		return
	}
	c.failure = closeReason(err)
	c.Close(closeFrame(err, false))
}

func (c *kcpConn) deliver(f proto.Frame) error {
	if c.closing.Load() {
		return nil
	}
	err := c.h.OnFrame(c, f)
	if err == nil {
		c.releaseEmbryo()
	}
	return err
}

// markGone ends the session once; it reports whether this call did.
func (c *kcpConn) markGone(err error) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone {
		return false
	}
	c.gone = true
	c.closeErr = err
	c.eng.Release()
	return true
}

// end removes the session, tells the peer with a CLOSE datagram and
// reports OnClose (once, never during an OnFrame of the same session).
func (c *kcpConn) end(err error) {
	if !c.markGone(err) {
		return
	}
	code := proto.Code(c.code.Load())
	if code == 0 {
		code = proto.CodeNormal
	}
	if !errors.Is(err, ErrPeerGone) {
		// Twice: a lost CLOSE costs the client a heartbeat timeout.
		addr := c.remote()
		c.sock.sendClose(c.conv, c.token, code, addr)
		c.sock.sendClose(c.conv, c.token, code, addr)
	}
	c.sock.remove(c)
	c.l.e.jan.remove(c)
	c.releaseEmbryo()
	o := &c.out
	o.mu.Lock()
	o.closing, o.closed = true, true
	o.drop()
	o.mu.Unlock()
	c.notifyIfGone()
}

// notifyIfGone delivers OnClose when the session is gone and no reader
// holds feedMu; a reader that does calls it again on its way out.
func (c *kcpConn) notifyIfGone() {
	if !c.isGone() || !c.feedMu.TryLock() {
		return
	}
	defer c.feedMu.Unlock()
	if c.notified {
		return
	}
	c.notified = true
	c.codec.release()
	c.closing.Store(true)
	err := c.closeErr
	if c.failure != nil {
		err = c.failure
	}
	if c.opened {
		c.h.OnClose(c, err)
	}
}
