package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"imgate/proto"
)

// The goroutine transport: for connections the reactor cannot drive, TLS
// (crypto/tls needs a blocking net.Conn) and QUIC streams. Each connection
// has a reader goroutine for as long as it lives; it waits with a 512-byte
// buffer of its own and borrows a pooled StreamReadBuffer only while data
// keeps coming. A writer goroutine exists only while it has something to
// write. The codec, outbox and Handler contract are the same as the
// reactor's, so the layers above cannot tell the two apart.

type streamListener struct {
	e      *Engine
	ln     net.Listener
	kind   Kind
	url    string
	closed atomic.Bool
}

func (l *streamListener) Addr() net.Addr { return l.ln.Addr() }
func (l *streamListener) Kind() Kind     { return l.kind }
func (l *streamListener) URL() string    { return l.url }
func (l *streamListener) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	return l.ln.Close()
}

func (e *Engine) serveStream(ln net.Listener, kind Kind, h Handler, path, pub string) Listener {
	l := &streamListener{e: e, ln: ln, kind: kind, url: pub}
	go func() {
		backoff := 5 * time.Millisecond
		for {
			nc, err := ln.Accept()
			if err != nil {
				if l.closed.Load() {
					return
				}
				e.stats.AcceptErrors.Add(1)
				slog.Warn("accept failed", "listener", pub, "err", err)
				time.Sleep(backoff)
				backoff = min(backoff*2, time.Second)
				continue
			}
			backoff = 5 * time.Millisecond
			e.ServeConn(nc, kind, h, path)
		}
	}()
	return l
}

// ServeConn serves an already-accepted connection on the goroutine
// transport; later transports (KCP, QUIC streams) come in this way.
func (e *Engine) ServeConn(nc net.Conn, kind Kind, h Handler, wsPath string) {
	if wsPath == "" {
		wsPath = e.cfg.WSPath
	}
	c := &streamConn{e: e, nc: nc, h: h, kind: kind}
	c.out.limit = e.cfg.QueueBytes
	c.out.ws = kind.WebSocket()
	c.codec = codec{sink: c, maxFrame: e.cfg.MaxFrame, ws: e.newWSState(kind, wsPath)}
	e.mu.Lock()
	e.streams[c] = struct{}{}
	e.mu.Unlock()
	go c.run()
}

type streamConn struct {
	e    *Engine
	nc   net.Conn
	h    Handler
	kind Kind
	ctx  atomic.Value

	// Reader side: touched only by the run goroutine.
	codec   codec
	opened  bool
	failure *proto.Error // why fail closed the connection; OnClose reports it

	closing atomic.Bool
	out     outbox
}

func (c *streamConn) Kind() Kind                    { return c.kind }
func (c *streamConn) RemoteAddr() net.Addr          { return c.nc.RemoteAddr() }
func (c *streamConn) QueuedBytes() int              { return c.out.queued() }
func (c *streamConn) SetContext(v any)              { c.ctx.Store(ctxBox{v}) }
func (c *streamConn) Context() any                  { b, _ := c.ctx.Load().(ctxBox); return b.v }
func (c *streamConn) Enqueue(f Frame) (bool, error) { return c.out.push(f) }
func (c *streamConn) Flush()                        { go c.flushLoop() }

// Early implements EarlyConn: true while a QUIC connection that sent 0-RTT
// data has not completed its handshake; always false on TLS.
func (c *streamConn) Early() bool {
	e, ok := c.nc.(earlyStream)
	return ok && e.Early()
}

// AwaitHandshake implements EarlyConn.
func (c *streamConn) AwaitHandshake(ctx context.Context) error {
	if e, ok := c.nc.(earlyStream); ok {
		return e.AwaitHandshake(ctx)
	}
	return nil
}

// earlyStream is a net.Conn that may read data before its handshake
// completes (a QUIC stream).
type earlyStream interface {
	Early() bool
	AwaitHandshake(ctx context.Context) error
}

// handshaker is a net.Conn with a handshake of its own that the reader must
// wait for before the connection is opened (QUIC; TLS has its own branch).
type handshaker interface {
	HandshakeContext(ctx context.Context) error
}

// smallRead is what a reader holds while it waits; see run.
const smallRead = 512

func (c *streamConn) Send(f Frame) error {
	start, err := c.out.push(f)
	if start {
		go c.flushLoop()
	}
	return err
}

func (c *streamConn) run() {
	cfg := c.e.cfg
	var err error
	defer func() { c.release(err) }()
	switch nc := c.nc.(type) {
	case *tls.Conn:
		nc.SetDeadline(time.Now().Add(cfg.HandshakeTimeout))
		if err = nc.Handshake(); err != nil {
			c.e.stats.AddHandshakeFailure(c.kind, tlsFailure(err))
			return
		}
		nc.SetDeadline(time.Time{})
	case handshaker:
		// QUIC bounds its handshake itself (HandshakeTimeout without a
		// packet, twice that in all), and its listener counts the failures:
		// most end before a connection is ever accepted.
		if err = nc.HandshakeContext(context.Background()); err != nil {
			return
		}
	}
	if c.codec.ws == nil {
		c.opened = true
		c.h.OnOpen(c)
	} else {
		c.e.jan.add(c, time.Now().Add(cfg.HandshakeTimeout))
	}
	// An idle connection waits in Read forever, so it waits on a small
	// buffer of its own; a read that fills it suggests more is queued, and
	// the next reads borrow a pooled StreamReadBuffer until one comes back
	// short (drained). At rest that saves the big buffer per connection.
	small := make([]byte, smallRead)
	buf, borrowed := small, false
	defer func() {
		if borrowed {
			putBuf(buf)
		}
	}()
	for {
		n, rerr := c.nc.Read(buf)
		if n > 0 && !c.closing.Load() {
			if ferr := c.codec.feed(buf[:n]); ferr != nil {
				c.fail(ferr)
			}
		}
		switch {
		case !borrowed && n == len(buf) && cfg.StreamReadBuffer > smallRead:
			buf, borrowed = getBuf(cfg.StreamReadBuffer), true
			buf = buf[:cap(buf)]
		case borrowed && n < len(buf):
			putBuf(buf)
			buf, borrowed = small, false
		}
		if rerr != nil {
			if !errors.Is(rerr, io.EOF) || !c.closing.Load() {
				err = rerr
				if errors.Is(rerr, io.EOF) {
					err = ErrPeerGone
				}
			}
			return
		}
	}
}

func (c *streamConn) release(err error) {
	if c.failure != nil {
		err = c.failure
	}
	c.closing.Store(true)
	o := &c.out
	o.mu.Lock()
	o.closing, o.closed = true, true
	if !o.flushing {
		o.drop()
	}
	o.mu.Unlock()
	c.nc.Close()
	c.codec.release()
	c.e.jan.remove(c)
	c.e.mu.Lock()
	delete(c.e.streams, c)
	c.e.mu.Unlock()
	if c.opened {
		c.h.OnClose(c, err)
	}
}

// tlsFailure classifies a failed TLS handshake for the metrics.
func tlsFailure(err error) HandshakeFailure {
	var ne net.Error
	var alert tls.AlertError
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return HandshakeTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return HandshakePeer
	case errors.As(err, &alert) && alert == 120: // no_application_protocol
		return HandshakeALPN
	}
	return HandshakeTLS
}

// flushLoop writes the queue in chunks of up to 64 KiB: TLS turns each write
// into records, so one gathered write beats many small ones.
func (c *streamConn) flushLoop() {
	buf := getBuf(64 << 10)
	defer func() { putBuf(buf) }()
	o := &c.out
	o.mu.Lock()
	for {
		if o.closed {
			o.drop()
			o.flushing = false
			o.mu.Unlock()
			return
		}
		if len(o.frames) == 0 {
			o.flushing = false
			closing := o.closing
			o.mu.Unlock()
			if closing {
				if tc, ok := c.nc.(*tls.Conn); ok {
					tc.CloseWrite()
				} else if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
					cw.CloseWrite()
				}
			}
			return
		}
		buf = buf[:0]
		for i, f := range o.frames {
			w := f.Wire(o.ws)
			if i == 0 {
				w = w[o.sent:]
			}
			if len(buf) > 0 && len(buf)+len(w) > cap(buf) {
				break
			}
			buf = append(buf, w...)
		}
		// The chunk is copied out: it leaves the queue now, as bytes handed
		// to a kernel socket would, so the queue limit counts only what
		// waits behind the write in progress.
		o.consume(len(buf))
		o.mu.Unlock()
		c.nc.SetWriteDeadline(time.Now().Add(c.e.cfg.WriteTimeout))
		_, err := c.nc.Write(buf)
		o.mu.Lock()
		if err != nil {
			o.drop()
			o.closing = true
			c.closing.Store(true)
			o.flushing = false
			o.mu.Unlock()
			c.nc.Close()
			return
		}
	}
}

func (c *streamConn) Close(last Frame) {
	if cf, ok := last.(codedFrame); ok {
		if cc, ok := c.nc.(closeCoder); ok {
			cc.setCloseCode(cf.code, cf.reason)
		}
	}
	ok, start, _ := c.out.startClose(closingFrame(last, c.codec.ws))
	if !ok {
		return
	}
	c.closing.Store(true)
	c.e.jan.add(c, time.Now().Add(c.e.cfg.Linger))
	if start {
		go c.flushLoop()
	}
}

func (c *streamConn) cut() {
	c.closing.Store(true)
	c.nc.Close()
}

func (c *streamConn) expire() { c.cut() }

func (c *streamConn) fail(err error) {
	if err == errHandled {
		return
	}
	c.failure = closeReason(err)
	if c.kind.WebSocket() && !c.codec.ws.upgraded.Load() {
		c.cut()
		return
	}
	c.Close(closeFrame(err, c.kind.WebSocket()))
}

// sink implementation.

func (c *streamConn) deliver(f proto.Frame) error {
	if c.closing.Load() {
		return nil
	}
	return c.h.OnFrame(c, f)
}

func (c *streamConn) reply(f Frame) { c.Send(f) }

func (c *streamConn) upgraded() {
	c.e.jan.remove(c)
	c.opened = true
	c.h.OnOpen(c)
}

func (c *streamConn) finish(last Frame) { c.Close(last) }
