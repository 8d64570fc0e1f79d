package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/quic-go/qlogwriter"

	"imgate/proto"
)

// QUIC on quic-go: one UDP socket per listener carries every connection, so
// QUIC connections do not count against the descriptor limit. Each
// connection opens one bidirectional stream that carries the same frame
// stream as TCP, served by the goroutine transport (stream.go). quic-go
// validates and follows a client whose address changes (connection
// migration), so a session survives a move from Wi-Fi to cellular.
//
// 0-RTT: the listener hands over a connection as soon as the client's
// ClientHello is in. One that resumed with 0-RTT is served at once, its
// early frames included; EarlyConn tells the gateway that they may be
// replays until the handshake completes. Any other connection is opened only
// once its handshake has completed, as before, so half-open handshakes cost
// no session.
//
// What the node drops is counted (Stats): every datagram that reaches no
// connection (quic-go reports them to the transport's tracer, non-QUIC ones
// we read ourselves) and every failed handshake, by reason (watched from the
// connection's context, which quic-go ends with the cause).

// ALPN is the application protocol a QUIC client must offer.
const ALPN = "imgate/1"

// quicAcceptors is how many goroutines wait in Accept per listener. quic-go
// queues at most 32 connections for Accept and refuses the next handshake
// (CONNECTION_REFUSED) while that queue is full; a goroutine already
// waiting in Accept takes its connection straight from the handshake, not
// from the queue, so each one is a slot that cannot overflow even while the
// scheduler has not run it yet. In a burst of thousands of handshakes on a
// busy machine a few acceptors were not enough (tens to hundreds refused in
// 2,000, TestQUICHandshakeBurst); 256 idle goroutines cost about 1 MB.
const quicAcceptors = 256

type quicListener struct {
	e      *Engine
	udp    *net.UDPConn
	tr     *quic.Transport
	ln     *quic.EarlyListener
	url    string
	closed atomic.Bool
	stop   context.CancelFunc // ends the non-QUIC datagram counter

	mu    sync.Mutex
	conns map[*quicStream]struct{} // accepted and not yet closed
}

func (l *quicListener) Addr() net.Addr { return l.ln.Addr() }
func (l *quicListener) Kind() Kind     { return KindQUIC }
func (l *quicListener) URL() string    { return l.url }

// Close stops accepting and closes every QUIC connection of the listener,
// each with its close code (SHUTDOWN when none was set), before the socket
// goes: closing the transport alone would drop them without a word, and
// clients would learn it only from their idle timeout.
func (l *quicListener) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	l.stop()
	l.ln.Close()
	l.mu.Lock()
	conns := l.conns
	l.conns = nil
	l.mu.Unlock()
	var wg sync.WaitGroup
	for q := range conns {
		// CloseWithError returns once the CONNECTION_CLOSE is written.
		wg.Go(func() { q.closeConn(proto.CodeShutdown, "listener closed") })
	}
	wg.Wait()
	l.tr.Close()
	return l.udp.Close()
}

// forget drops a closed connection from the listener's set.
func (l *quicListener) forget(q *quicStream) {
	l.mu.Lock()
	delete(l.conns, q)
	l.mu.Unlock()
}

func (e *Engine) listenQUIC(host string, h Handler, tlsCfg *tls.Config) (Listener, error) {
	if tlsCfg == nil {
		return nil, fmt.Errorf("listen quic://%s: QUIC needs a certificate", host)
	}
	tc := tlsCfg.Clone()
	tc.NextProtos = []string{ALPN}
	tc.MinVersion = tls.VersionTLS13
	// Session tickets (crypto/tls's default, keys rotated by crypto/tls) are
	// what resuming clients present for 0-RTT; they are valid on this
	// process only.
	tc.SessionTicketsDisabled = false
	window := uint64(e.cfg.QUICReceiveWindow)
	initial := min(uint64(e.cfg.MaxFrame), window)
	qc := &quic.Config{
		HandshakeIdleTimeout: e.cfg.HandshakeTimeout,
		MaxIdleTimeout:       e.cfg.QUICIdleTimeout,
		// Client keep-alives (and imgate heartbeats) keep NAT bindings open;
		// the server does not ping idle clients.
		MaxIncomingStreams:             1,
		MaxIncomingUniStreams:          -1,
		InitialStreamReceiveWindow:     initial,
		MaxStreamReceiveWindow:         window,
		InitialConnectionReceiveWindow: initial * 3 / 2,
		MaxConnectionReceiveWindow:     window * 3 / 2,
		Allow0RTT:                      !e.cfg.QUICDisable0RTT,
	}
	addr, err := net.ResolveUDPAddr("udp", host)
	if err != nil {
		return nil, fmt.Errorf("listen quic://%s: %w", host, err)
	}
	udp, err := net.ListenUDP("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen quic://%s: %w", host, err)
	}
	l := &quicListener{e: e, udp: udp, url: "quic://" + udp.LocalAddr().String(), conns: make(map[*quicStream]struct{})}
	l.tr = &quic.Transport{
		Conn:        udp,
		Tracer:      datagramCounter{&e.stats},
		ConnContext: l.connContext,
	}
	ln, err := l.tr.ListenEarly(tc, qc)
	if err != nil {
		udp.Close()
		return nil, fmt.Errorf("listen quic://%s: %w", host, err)
	}
	l.ln = ln
	ctx, stop := context.WithCancel(context.Background())
	l.stop = stop
	go l.countNonQUIC(ctx)
	for range quicAcceptors {
		go l.acceptLoop(h)
	}
	return l, nil
}

func (l *quicListener) acceptLoop(h Handler) {
	for {
		conn, err := l.ln.Accept(context.Background())
		if err != nil {
			if !l.closed.Load() && !errors.Is(err, quic.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				l.e.stats.AcceptErrors.Add(1)
				slog.Warn("quic accept failed", "listener", l.url, "err", err)
			}
			return
		}
		q := &quicStream{conn: conn, l: l, ready: make(chan struct{})}
		q.watch, _ = conn.Context().Value(handshakeWatchKey{}).(*handshakeWatch)
		if q.watch != nil {
			q.watch.conn.Store(conn)
		}
		l.mu.Lock()
		if l.conns == nil { // closing
			l.mu.Unlock()
			conn.CloseWithError(quic.ApplicationErrorCode(proto.CodeShutdown), "listener closed")
			continue
		}
		l.conns[q] = struct{}{}
		l.mu.Unlock()
		// The reader goroutine waits for the handshake (unless the client
		// resumed with 0-RTT) and then for the client's stream, so the auth
		// deadline runs from the handshake, as on TLS.
		l.e.ServeConn(q, KindQUIC, h, "")
	}
}

// countNonQUIC counts datagrams quic-go does not consider QUIC at all: it
// hands them to whoever reads them, and drops them silently otherwise.
func (l *quicListener) countNonQUIC(ctx context.Context) {
	var b [1]byte // only the count matters
	for {
		if _, _, err := l.tr.ReadNonQUICPacket(ctx, b[:]); err != nil {
			return
		}
		l.e.stats.AddBadDatagram(KindQUIC, DropNotQUIC)
	}
}

// datagramCounter is the quic.Transport's tracer. quic-go reports to it the
// datagrams it drops before any connection takes them (and a few events we
// ignore); connections have no tracer, so nothing is recorded per packet of
// a live connection.
type datagramCounter struct{ stats *Stats }

func (d datagramCounter) RecordEvent(ev qlogwriter.Event) {
	switch ev := ev.(type) {
	case qlog.PacketDropped:
		d.stats.AddBadDatagram(KindQUIC, dropReason(ev.Trigger))
	case qlog.VersionNegotiationSent:
		// The answer to a packet of a version we do not speak.
		d.stats.AddBadDatagram(KindQUIC, DropVersion)
	}
}

func (datagramCounter) Close() error { return nil }

func dropReason(t qlog.PacketDropReason) DropReason {
	switch t {
	case qlog.PacketDropHeaderParseError:
		return DropHeader
	case qlog.PacketDropUnknownConnectionID:
		return DropUnknownConn
	case qlog.PacketDropUnexpectedPacket:
		return DropUnexpected
	case qlog.PacketDropUnexpectedVersion, qlog.PacketDropUnsupportedVersion:
		return DropVersion
	case qlog.PacketDropDOSPrevention:
		return DropOverload
	}
	return DropOther
}

// handshakeWatch follows one connection from its first packet until its
// handshake completes, to count the handshakes that never do.
type handshakeWatch struct {
	stop func() bool // cancels the watch (context.AfterFunc)
	conn atomic.Pointer[quic.Conn]
	done atomic.Bool
}

type handshakeWatchKey struct{}

// connContext runs for every connection quic-go creates, before its
// handshake: the context it returns ends when the connection does, with the
// cause, whether or not the connection was ever accepted.
func (l *quicListener) connContext(ctx context.Context, _ *quic.ClientInfo) (context.Context, error) {
	w := &handshakeWatch{}
	ctx = context.WithValue(ctx, handshakeWatchKey{}, w)
	w.stop = context.AfterFunc(ctx, func() { l.handshakeEnded(ctx, w) })
	return ctx, nil
}

// handshakeEnded runs when a watched connection ends.
func (l *quicListener) handshakeEnded(ctx context.Context, w *handshakeWatch) {
	if w.done.Load() {
		return
	}
	if c := w.conn.Load(); c != nil {
		select {
		case <-c.HandshakeComplete():
			return // a 0-RTT connection that completed and has now ended
		default:
		}
	}
	cause := context.Cause(ctx)
	if l.closed.Load() || errors.Is(cause, quic.ErrServerClosed) || errors.Is(cause, quic.ErrTransportClosed) {
		return
	}
	l.e.stats.AddHandshakeFailure(KindQUIC, quicFailure(cause))
}

// finished marks the handshake complete, once, and lets go of the watch.
func (w *handshakeWatch) finished() {
	if w != nil && !w.done.Swap(true) {
		w.stop()
		w.stop = nil // only the caller that set done touches stop
		w.conn.Store(nil)
	}
}

// quicFailure classifies why a QUIC handshake ended.
func quicFailure(err error) HandshakeFailure {
	var te *quic.TransportError
	var ae *quic.ApplicationError
	var hte *quic.HandshakeTimeoutError
	var ite *quic.IdleTimeoutError
	switch {
	case errors.As(err, &hte), errors.As(err, &ite):
		return HandshakeTimeout
	case errors.As(err, &te):
		switch {
		case te.ErrorCode == quic.ConnectionRefused && !te.Remote:
			return HandshakeRefused
		case te.ErrorCode.IsCryptoError() && te.ErrorCode == 0x100+120: // TLS alert no_application_protocol
			return HandshakeALPN
		case te.ErrorCode.IsCryptoError():
			return HandshakeTLS
		case te.Remote:
			return HandshakePeer
		}
	case errors.As(err, &ae) && ae.Remote:
		return HandshakePeer
	}
	return HandshakeOther
}

// quicStream is a QUIC connection's one stream as a net.Conn. Close ends
// the whole connection with the imgate close code as its application error
// code: QUIC discards stream data a peer has not read once the connection
// closes, so the code is what always reaches the client.
//
// The stream is accepted by the first Read, on the connection's reader
// goroutine: no goroutine of its own waits for it.
type quicStream struct {
	conn  *quic.Conn
	l     *quicListener   // nil for connections not made by a quicListener
	watch *handshakeWatch // nil for connections not made by a quicListener
	ready chan struct{}   // closed once the stream is accepted (or never will be)
	s     *quic.Stream    // written before ready is closed, by the reader
	err   error

	mu       sync.Mutex
	deadline time.Time // write deadline set before the stream arrived
	code     quic.ApplicationErrorCode
	reason   string
}

var _ net.Conn = (*quicStream)(nil)

func (q *quicStream) LocalAddr() net.Addr  { return q.conn.LocalAddr() }
func (q *quicStream) RemoteAddr() net.Addr { return q.conn.RemoteAddr() }

// HandshakeContext is what the reader waits for before opening the
// connection: nothing for a client that resumed with 0-RTT (its early frames
// are served now; Early guards them), the completed handshake otherwise.
func (q *quicStream) HandshakeContext(ctx context.Context) error {
	if q.conn.ConnectionState().Used0RTT {
		return nil
	}
	return q.AwaitHandshake(ctx)
}

// AwaitHandshake waits for the handshake to complete.
func (q *quicStream) AwaitHandshake(ctx context.Context) error {
	select {
	case <-q.conn.HandshakeComplete():
		q.watch.finished()
		return nil
	case <-q.conn.Context().Done():
		return fmt.Errorf("quic handshake: %w", context.Cause(q.conn.Context()))
	case <-ctx.Done():
		return fmt.Errorf("quic handshake: %w", ctx.Err())
	}
}

// Early reports whether the handshake is still incomplete: what was read so
// far may be 0-RTT data replayed by someone who recorded it.
func (q *quicStream) Early() bool {
	select {
	case <-q.conn.HandshakeComplete():
		q.watch.finished()
		return false
	default:
		return true
	}
}

// Read is called by the reader goroutine only.
func (q *quicStream) Read(p []byte) (int, error) {
	if q.s == nil && q.err == nil {
		q.s, q.err = q.conn.AcceptStream(q.conn.Context())
		close(q.ready)
	}
	if q.err != nil {
		return 0, q.err
	}
	return q.s.Read(p)
}

func (q *quicStream) Write(p []byte) (int, error) {
	<-q.ready
	if q.err != nil {
		return 0, q.err
	}
	q.mu.Lock()
	if !q.deadline.IsZero() {
		q.s.SetWriteDeadline(q.deadline)
	}
	q.mu.Unlock()
	return q.s.Write(p)
}

func (q *quicStream) stream() *quic.Stream {
	select {
	case <-q.ready:
		return q.s
	default:
		return nil
	}
}

func (q *quicStream) SetDeadline(t time.Time) error {
	q.SetReadDeadline(t)
	return q.SetWriteDeadline(t)
}

func (q *quicStream) SetReadDeadline(t time.Time) error {
	if s := q.stream(); s != nil {
		return s.SetReadDeadline(t)
	}
	return nil
}

func (q *quicStream) SetWriteDeadline(t time.Time) error {
	q.mu.Lock()
	q.deadline = t
	q.mu.Unlock()
	if s := q.stream(); s != nil {
		return s.SetWriteDeadline(t)
	}
	return nil
}

// setCloseCode records why the connection ends (see streamConn.Close).
func (q *quicStream) setCloseCode(code proto.Code, reason string) {
	q.mu.Lock()
	q.code, q.reason = quic.ApplicationErrorCode(code), reason
	q.mu.Unlock()
}

// CloseWrite sends the stream's FIN after what was written.
func (q *quicStream) CloseWrite() error {
	if s := q.stream(); s != nil {
		return s.Close()
	}
	return nil
}

// Close sends FIN and, a moment later (so the last frames reach the wire),
// closes the connection with the recorded code. Without a stream there is
// nothing to flush: the connection closes at once.
func (q *quicStream) Close() error {
	if q.l != nil {
		q.l.forget(q)
	}
	q.mu.Lock()
	code, reason := q.code, q.reason
	q.mu.Unlock()
	s := q.stream()
	if s == nil {
		return q.conn.CloseWithError(code, reason)
	}
	s.Close()
	go func() {
		select {
		case <-q.conn.Context().Done():
		case <-time.After(500 * time.Millisecond):
		}
		q.conn.CloseWithError(code, reason)
	}()
	return nil
}

// closeConn closes the connection now, with the recorded code, or with code
// when none was recorded.
func (q *quicStream) closeConn(code proto.Code, reason string) {
	q.mu.Lock()
	if q.code == 0 {
		q.code, q.reason = quic.ApplicationErrorCode(code), reason
	}
	c, r := q.code, q.reason
	q.mu.Unlock()
	q.conn.CloseWithError(c, r)
}
