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

	"imgate/proto"
)

// QUIC on quic-go: one UDP socket per listener carries every connection, so
// QUIC connections do not count against the descriptor limit. Each
// connection opens one bidirectional stream that carries the same frame
// stream as TCP, served by the goroutine transport (stream.go). quic-go
// validates and follows a client whose address changes (connection
// migration), so a session survives a move from Wi-Fi to cellular.

// ALPN is the application protocol a QUIC client must offer.
const ALPN = "imgate/1"

type quicListener struct {
	e      *Engine
	ln     *quic.Listener
	url    string
	closed atomic.Bool
}

func (l *quicListener) Addr() net.Addr { return l.ln.Addr() }
func (l *quicListener) Kind() Kind     { return KindQUIC }
func (l *quicListener) URL() string    { return l.url }
func (l *quicListener) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	return l.ln.Close()
}

func (e *Engine) listenQUIC(host string, h Handler, tlsCfg *tls.Config) (Listener, error) {
	if tlsCfg == nil {
		return nil, fmt.Errorf("listen quic://%s: QUIC needs a certificate", host)
	}
	tc := tlsCfg.Clone()
	tc.NextProtos = []string{ALPN}
	tc.MinVersion = tls.VersionTLS13
	qc := &quic.Config{
		HandshakeIdleTimeout: e.cfg.HandshakeTimeout,
		MaxIdleTimeout:       e.cfg.QUICIdleTimeout,
		// Client keep-alives (and imgate heartbeats) keep NAT bindings open;
		// the server does not ping idle clients.
		MaxIncomingStreams:    1,
		MaxIncomingUniStreams: -1,
	}
	ln, err := quic.ListenAddr(host, tc, qc)
	if err != nil {
		return nil, fmt.Errorf("listen quic://%s: %w", host, err)
	}
	l := &quicListener{e: e, ln: ln, url: "quic://" + ln.Addr().String()}
	go l.acceptLoop(h)
	return l, nil
}

func (l *quicListener) acceptLoop(h Handler) {
	for {
		conn, err := l.ln.Accept(context.Background())
		if err != nil {
			if !l.closed.Load() && !errors.Is(err, quic.ErrServerClosed) {
				l.e.stats.AcceptErrors.Add(1)
				slog.Warn("quic accept failed", "listener", l.url, "err", err)
			}
			return
		}
		l.serve(conn, h)
	}
}

// serve hands the connection to the goroutine transport at once, so that
// the auth deadline runs from the connection, as on TCP; reads wait for the
// client's stream, which QUIC makes visible only with its first bytes.
func (l *quicListener) serve(conn *quic.Conn, h Handler) {
	l.e.ServeConn(newQUICStream(conn), KindQUIC, h, "")
}

// quicStream is a QUIC connection's one stream as a net.Conn. Close ends
// the whole connection with the imgate close code as its application error
// code: QUIC discards stream data a peer has not read once the connection
// closes, so the code is what always reaches the client.
type quicStream struct {
	conn  *quic.Conn
	ready chan struct{} // closed once the stream is accepted (or never will be)
	s     *quic.Stream
	err   error

	mu       sync.Mutex
	deadline time.Time // write deadline set before the stream arrived
	code     quic.ApplicationErrorCode
	reason   string
}

var _ net.Conn = (*quicStream)(nil)

func newQUICStream(conn *quic.Conn) *quicStream {
	q := &quicStream{conn: conn, ready: make(chan struct{})}
	go func() {
		q.s, q.err = conn.AcceptStream(conn.Context())
		close(q.ready)
	}()
	return q
}

func (q *quicStream) LocalAddr() net.Addr  { return q.conn.LocalAddr() }
func (q *quicStream) RemoteAddr() net.Addr { return q.conn.RemoteAddr() }

func (q *quicStream) Read(p []byte) (int, error) {
	<-q.ready
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
