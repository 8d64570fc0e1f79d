package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"imgate/proto"
	"imgate/transport"
)

// earlyConn is a frameConn that may still be in its handshake, writing
// 0-RTT data (QUIC resuming with a session ticket).
type earlyConn interface {
	// Early reports whether what is written now leaves as 0-RTT data.
	Early() bool
	// AwaitHandshake waits until the handshake has completed.
	AwaitHandshake(ctx context.Context) error
	// Rejected reports whether err means the server refused the 0-RTT data:
	// none of it was served, and this frameConn is dead, but the
	// connection under it is not (see Resume).
	Rejected(err error) bool
	// Resume returns a fresh frameConn on the same connection once its
	// handshake has completed, after Rejected.
	Resume(ctx context.Context) (frameConn, error)
}

// frameConn is one transport connection seen as a sequence of whole frames.
// ReadFrame is called from one goroutine only; WriteFrame calls are
// serialized by the caller; Close may be called from any goroutine, at any
// time, to unblock both.
type frameConn interface {
	// ReadFrame returns the next frame. Its Body aliases a reused buffer and
	// is valid only until the next call. After an error the conn has given
	// its buffer back and ReadFrame must not be called again.
	ReadFrame() (proto.Frame, error)
	// WriteFrame writes b, exactly one encoded frame. b is not retained.
	WriteFrame(b []byte) error
	// SetLimits sets the largest frame accepted from the peer and the
	// deadline for each later write (0: none). Called before the reader
	// starts, never concurrently with ReadFrame or WriteFrame.
	SetLimits(maxFrame int, writeTimeout time.Duration)
	Close() error
}

// dialFunc opens a transport to one endpoint. ctx bounds the dial and any
// transport handshake. A new scheme (kcp://, quic://) is one dialFunc that
// wraps what it opened with newStreamConn (a byte stream carrying frames back
// to back) or newMessageConn (one frame per message), plus one line in
// dialers.
type dialFunc func(ctx context.Context, u *url.URL, cfg *Config) (frameConn, error)

var dialers = map[string]dialFunc{
	"tcp":  dialTCP,
	"tls":  dialTLS,
	"ws":   dialWS,
	"wss":  dialWS,
	"quic": nil, // per endpoint: see parseEndpoint
	"kcp":  dialKCP,
}

// endpoint is a parsed Config.Endpoints entry.
type endpoint struct {
	raw  string
	url  *url.URL
	dial dialFunc
	quic *quicDialer // quic:// endpoints: keeps their session tickets
}

func parseEndpoint(raw string) (endpoint, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return endpoint{}, fmt.Errorf("endpoint %q: %w", raw, err)
	}
	dial, ok := dialers[u.Scheme]
	if !ok {
		return endpoint{}, fmt.Errorf("endpoint %q: %w %q", raw, ErrUnsupportedScheme, u.Scheme)
	}
	if u.Host == "" {
		return endpoint{}, fmt.Errorf("endpoint %q: no host", raw)
	}
	if (u.Scheme == "ws" || u.Scheme == "wss") && (u.Path == "" || u.Path == "/") {
		u.Path = "/ws"
	}
	ep := endpoint{raw: raw, url: u, dial: dial}
	if u.Scheme == "quic" {
		// Each QUIC endpoint keeps the session tickets its server issued,
		// so that reconnects resume with 0-RTT.
		ep.quic = newQUICDialer()
		ep.dial = ep.quic.dial
	}
	return ep, nil
}

func dialTCP(ctx context.Context, u *url.URL, _ *Config) (frameConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, err
	}
	return newStreamConn(c), nil
}

// dialKCP opens a KCP session (transport.DialKCP): the URL's query picks
// the preset and options, e.g. kcp://host:7102?preset=fast.
func dialKCP(ctx context.Context, u *url.URL, _ *Config) (frameConn, error) {
	c, err := transport.DialKCP(ctx, u.String())
	if err != nil {
		return nil, err
	}
	return newStreamConn(c), nil
}

func dialTLS(ctx context.Context, u *url.URL, cfg *Config) (frameConn, error) {
	d := tls.Dialer{Config: cfg.TLSConfig}
	c, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, err
	}
	return newStreamConn(c), nil
}

func dialWS(ctx context.Context, u *url.URL, cfg *Config) (frameConn, error) {
	d := ws.Dialer{TLSConfig: cfg.TLSConfig}
	c, br, _, err := d.Dial(ctx, u.String())
	if err != nil {
		return nil, err
	}
	return newMessageConn(newWSConn(c, br)), nil
}

// writeDeadliner is what a transport needs for bounded writes; net.Conn has it.
type writeDeadliner interface {
	SetWriteDeadline(time.Time) error
}

// setWriteDeadline arms a write deadline on w when it supports one.
func setWriteDeadline(w any, timeout time.Duration) {
	if d, ok := w.(writeDeadliner); ok && timeout > 0 {
		_ = d.SetWriteDeadline(time.Now().Add(timeout))
	}
}

// readBufSize is the pooled read buffer's size: large enough that one read
// usually brings several small frames, small enough to keep idle clients
// cheap. Frames larger than this grow a private buffer up to maxFrame.
const readBufSize = 16 << 10

var readBufPool = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

func getReadBuf() []byte { return *readBufPool.Get().(*[]byte) }

func putReadBuf(b []byte) {
	if cap(b) == readBufSize {
		b = b[:readBufSize]
		readBufPool.Put(&b)
	}
}

// streamConn frames a byte stream (TCP, TLS, later a KCP session or a QUIC
// stream): frames lie back to back, each found by its length field.
type streamConn struct {
	rwc          io.ReadWriteCloser
	buf          []byte // buf[r:w] holds bytes read but not yet returned
	r, w         int
	maxFrame     int
	writeTimeout time.Duration
	err          error // read error held back until buffered frames are returned
}

func newStreamConn(rwc io.ReadWriteCloser) *streamConn {
	return &streamConn{rwc: rwc, maxFrame: proto.DefaultMaxFrame}
}

func (s *streamConn) SetLimits(maxFrame int, writeTimeout time.Duration) {
	s.maxFrame, s.writeTimeout = maxFrame, writeTimeout
}

func (s *streamConn) ReadFrame() (proto.Frame, error) {
	if s.buf == nil {
		if s.err != nil {
			return proto.Frame{}, s.err
		}
		s.buf = getReadBuf()
	}
	for {
		f, n, err := proto.Decode(s.buf[s.r:s.w], s.maxFrame)
		if err != nil {
			return f, s.fail(err)
		}
		if n > 0 {
			s.r += n
			return f, nil
		}
		if s.err != nil {
			if s.w > s.r && errors.Is(s.err, io.EOF) {
				s.err = io.ErrUnexpectedEOF
			}
			return f, s.fail(s.err)
		}
		s.fill()
	}
}

// fill makes room for the frame that buf[r:w] starts and reads once.
func (s *streamConn) fill() {
	need := proto.HeaderSize
	if s.w-s.r >= 4 {
		// Decode has already checked the length field against maxFrame.
		need, _ = proto.FrameSize(s.buf[s.r:s.r+4], s.maxFrame)
	}
	if s.r == s.w {
		s.r, s.w = 0, 0
	}
	if len(s.buf)-s.r < need {
		if len(s.buf) < need {
			nb := make([]byte, max(need, 2*len(s.buf)))
			s.w = copy(nb, s.buf[s.r:s.w])
			putReadBuf(s.buf)
			s.buf = nb
		} else {
			s.w = copy(s.buf, s.buf[s.r:s.w])
		}
		s.r = 0
	} else if s.w == len(s.buf) {
		s.w = copy(s.buf, s.buf[s.r:s.w])
		s.r = 0
	}
	n, err := s.rwc.Read(s.buf[s.w:])
	s.w += n
	if err != nil {
		s.err = err
	}
}

// fail gives the buffer back once the reader is done with it.
func (s *streamConn) fail(err error) error {
	s.err = err
	if s.buf != nil {
		if cap(s.buf) == readBufSize {
			putReadBuf(s.buf)
		}
		s.buf, s.r, s.w = nil, 0, 0
	}
	return err
}

func (s *streamConn) WriteFrame(b []byte) error {
	setWriteDeadline(s.rwc, s.writeTimeout)
	_, err := s.rwc.Write(b)
	return err
}

func (s *streamConn) Close() error { return s.rwc.Close() }

// Early implements earlyConn for streams that have a handshake of their own.
func (s *streamConn) Early() bool {
	e, ok := s.rwc.(earlyStream)
	return ok && e.Early()
}

// AwaitHandshake implements earlyConn.
func (s *streamConn) AwaitHandshake(ctx context.Context) error {
	if e, ok := s.rwc.(earlyStream); ok {
		return e.AwaitHandshake(ctx)
	}
	return nil
}

// Rejected implements earlyConn.
func (s *streamConn) Rejected(err error) bool {
	e, ok := s.rwc.(earlyStream)
	return ok && e.Rejected(err)
}

// Resume implements earlyConn.
func (s *streamConn) Resume(ctx context.Context) (frameConn, error) {
	e, ok := s.rwc.(earlyStream)
	if !ok {
		return nil, errors.New("client: this transport has no early data to resume from")
	}
	rwc, err := e.Resume(ctx)
	if err != nil {
		return nil, err
	}
	return newStreamConn(rwc), nil
}

// earlyStream is a byte stream with a handshake of its own (a QUIC stream).
type earlyStream interface {
	Early() bool
	AwaitHandshake(ctx context.Context) error
	Rejected(err error) bool
	Resume(ctx context.Context) (io.ReadWriteCloser, error)
}

// messageTransport carries one whole frame per message (WebSocket, later
// QUIC datagrams).
type messageTransport interface {
	// ReadMessage appends the next message to dst and returns it; a message
	// longer than limit is an error wrapping proto.ErrTooLarge.
	ReadMessage(dst []byte, limit int) ([]byte, error)
	// WriteMessage sends b as one message; b is not retained.
	WriteMessage(b []byte) error
	SetWriteTimeout(time.Duration)
	Close() error
}

// messageConn adapts a messageTransport to frameConn, reusing one buffer.
type messageConn struct {
	m        messageTransport
	buf      []byte
	maxFrame int
	err      error
}

func newMessageConn(m messageTransport) *messageConn {
	return &messageConn{m: m, maxFrame: proto.DefaultMaxFrame}
}

func (c *messageConn) SetLimits(maxFrame int, writeTimeout time.Duration) {
	c.maxFrame = maxFrame
	c.m.SetWriteTimeout(writeTimeout)
}

func (c *messageConn) ReadFrame() (proto.Frame, error) {
	if c.err != nil {
		return proto.Frame{}, c.err
	}
	if c.buf == nil {
		c.buf = getReadBuf()
	}
	msg, err := c.m.ReadMessage(c.buf[:0], c.maxFrame)
	if cap(msg) > cap(c.buf) {
		// Keep a grown buffer for this connection; the pool only takes the
		// standard size back.
		putReadBuf(c.buf)
		c.buf = msg[:cap(msg)]
	}
	if err != nil {
		return proto.Frame{}, c.fail(err)
	}
	f, err := proto.DecodeExact(msg, c.maxFrame)
	if err != nil {
		return f, c.fail(err)
	}
	return f, nil
}

func (c *messageConn) fail(err error) error {
	c.err = err
	putReadBuf(c.buf)
	c.buf = nil
	return err
}

func (c *messageConn) WriteFrame(b []byte) error { return c.m.WriteMessage(b) }
func (c *messageConn) Close() error              { return c.m.Close() }

// wsConn is the client side of a WebSocket: it reads unmasked server
// messages, answers control frames, and writes each frame as one masked
// binary message.
type wsConn struct {
	conn net.Conn
	rd   wsutil.Reader
	ctl  wsutil.ControlHandler

	wmu          sync.Mutex // control replies come from the reader, frames from the writer
	wbuf         []byte
	writeTimeout time.Duration
}

func newWSConn(conn net.Conn, br *bufio.Reader) *wsConn {
	var src io.Reader = conn
	if br != nil {
		// The server spoke right after the handshake; those bytes sit in br.
		src = br
	}
	c := &wsConn{conn: conn}
	c.rd = wsutil.Reader{Source: src, State: ws.StateClientSide}
	c.ctl = wsutil.ControlHandler{Src: &c.rd, Dst: lockedWriter{c}, State: ws.StateClientSide, DisableSrcCiphering: true}
	c.rd.OnIntermediate = func(h ws.Header, r io.Reader) error {
		return wsutil.ControlHandler{Src: r, Dst: lockedWriter{c}, State: ws.StateClientSide, DisableSrcCiphering: true}.Handle(h)
	}
	return c
}

func (c *wsConn) SetWriteTimeout(d time.Duration) { c.writeTimeout = d }

func (c *wsConn) ReadMessage(dst []byte, limit int) ([]byte, error) {
	for {
		h, err := c.rd.NextFrame()
		if err != nil {
			return dst, err
		}
		if h.OpCode.IsControl() {
			if err := c.ctl.Handle(h); err != nil {
				return dst, err
			}
			continue
		}
		if h.OpCode != ws.OpBinary {
			return dst, fmt.Errorf("websocket: %w: message opcode %d, want binary", proto.ErrBadBody, h.OpCode)
		}
		if h.Length > int64(limit) {
			return dst, fmt.Errorf("websocket: %w: message of %d bytes", proto.ErrTooLarge, h.Length)
		}
		if h.Fin {
			// The common case: one unfragmented message of known length.
			n := int(h.Length)
			dst = slices.Grow(dst, n)[:len(dst)+n]
			if _, err := io.ReadFull(&c.rd, dst[len(dst)-n:]); err != nil {
				return dst, err
			}
			// ReadFull's last read has already reset the reader for the next
			// message, and Fin has cleared its fragmented state.
			return dst, nil
		}
		return c.readFragmented(dst, limit)
	}
}

func (c *wsConn) readFragmented(dst []byte, limit int) ([]byte, error) {
	for {
		if len(dst) == cap(dst) {
			if len(dst) >= limit {
				return dst, fmt.Errorf("websocket: %w: fragmented message over %d bytes", proto.ErrTooLarge, limit)
			}
			dst = slices.Grow(dst, min(max(len(dst), 512), limit-len(dst)))
		}
		n, err := c.rd.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
	}
}

func (c *wsConn) WriteMessage(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	h := ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: ws.NewMask(), Length: int64(len(b))}
	// Header and masked payload go out in one write (one syscall, one TCP
	// segment for small frames).
	c.wbuf = appendWSHeader(c.wbuf[:0], h)
	start := len(c.wbuf)
	c.wbuf = append(c.wbuf, b...)
	ws.Cipher(c.wbuf[start:], h.Mask, 0)
	setWriteDeadline(c.conn, c.writeTimeout)
	_, err := c.conn.Write(c.wbuf)
	if cap(c.wbuf) > 4*readBufSize {
		c.wbuf = nil // do not pin one large frame's buffer for the connection's life
	}
	return err
}

func (c *wsConn) Close() error { return c.conn.Close() }

// appendWSHeader appends an RFC 6455 frame header to dst.
func appendWSHeader(dst []byte, h ws.Header) []byte {
	b0 := byte(h.OpCode)
	if h.Fin {
		b0 |= 0x80
	}
	var b1 byte
	if h.Masked {
		b1 = 0x80
	}
	switch n := h.Length; {
	case n < 126:
		dst = append(dst, b0, b1|byte(n))
	case n <= 0xffff:
		dst = append(dst, b0, b1|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, b0, b1|127,
			byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	if h.Masked {
		dst = append(dst, h.Mask[:]...)
	}
	return dst
}

// lockedWriter lets the reader's control-frame replies share the write lock.
type lockedWriter struct{ c *wsConn }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.c.wmu.Lock()
	defer w.c.wmu.Unlock()
	setWriteDeadline(w.c.conn, w.c.writeTimeout)
	return w.c.conn.Write(p)
}
