package client

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/url"
	"time"

	"github.com/quic-go/quic-go"

	"imgate/proto"
)

// ALPN is what the gateway's QUIC listener requires.
const ALPN = "imgate/1"

// quicTickets is how many session tickets a QUIC endpoint keeps (the
// gateway may sit behind a name that spreads clients over several nodes).
const quicTickets = 8

// quicDialer dials one QUIC endpoint and keeps the TLS session tickets its
// servers issue, so that the next connect resumes with 0-RTT: AUTH, and
// whatever is pipelined behind it, leaves with the first packet instead of
// one round trip later.
type quicDialer struct {
	sessions tls.ClientSessionCache
}

func newQUICDialer() *quicDialer {
	return &quicDialer{sessions: tls.NewLRUClientSessionCache(quicTickets)}
}

// dial opens a QUIC connection and its one bidirectional stream, which
// carries frames back to back like TCP. quic-go keeps the connection across
// an address change of this client (connection migration). With a ticket
// it returns before the handshake completes (see quicStream.Early).
func (d *quicDialer) dial(ctx context.Context, u *url.URL, cfg *Config) (frameConn, error) {
	tc := &tls.Config{}
	if cfg.TLSConfig != nil {
		tc = cfg.TLSConfig.Clone()
	}
	tc.NextProtos = []string{ALPN}
	if tc.ClientSessionCache == nil {
		tc.ClientSessionCache = d.sessions
	}
	conn, err := DialQUICRetry(ctx, func(ctx context.Context) (*quic.Conn, error) {
		return quic.DialAddrEarly(ctx, u.Host, tc, &quic.Config{
			KeepAlivePeriod: 15 * time.Second, // keeps NAT bindings; imgate heartbeats decide liveness
			MaxIdleTimeout:  90 * time.Second,
		})
	})
	if err != nil {
		return nil, err
	}
	s, err := OpenQUICStream(ctx, conn)
	if err != nil {
		return nil, err
	}
	return newStreamConn(s), nil
}

// DialQUICRetry calls dial until it succeeds, fails for another reason than
// a refusal, or ctx ends. A server that refuses a handshake
// (CONNECTION_REFUSED: its accept queue is full in a connect storm) is
// tried again after a jittered wait from 10 ms, doubling up to 1 s, so that
// a fleet of clients refused together does not come back together. Load
// generators that share UDP sockets call it with their own dial.
func DialQUICRetry(ctx context.Context, dial func(context.Context) (*quic.Conn, error)) (*quic.Conn, error) {
	b := backoff{min: 10 * time.Millisecond, max: time.Second}
	for {
		conn, err := dial(ctx)
		if err == nil || !Refused(err) {
			return conn, err
		}
		t := time.NewTimer(b.next())
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
	}
}

// Refused reports a QUIC handshake the server refused (CONNECTION_REFUSED).
func Refused(err error) bool {
	var te *quic.TransportError
	return errors.As(err, &te) && te.Remote && te.ErrorCode == quic.ConnectionRefused
}

// OpenQUICStream opens the one stream of an imgate QUIC connection and
// returns it as a net.Conn whose Close ends the connection (closing it on
// failure). Load generators that share UDP sockets dial with their own
// quic.Transport and call this. On a connection still in its handshake
// (0-RTT) it does not wait: the stream's first bytes leave as 0-RTT data.
func OpenQUICStream(ctx context.Context, conn *quic.Conn) (net.Conn, error) {
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		conn.CloseWithError(0, "")
		return nil, err
	}
	return &quicStream{Stream: s, conn: conn}, nil
}

// quicStream is the stream as a net.Conn whose Close ends the connection.
type quicStream struct {
	*quic.Stream
	conn *quic.Conn
}

// Read reads the stream. When the server closed the connection with an
// application error code, the error is that imgate close code as a
// *proto.Error, as if its CLOSE frame had arrived: QUIC drops stream data
// once a connection closes, so the code is what always reaches the client
// (PROTOCOL.md §11.3).
func (s *quicStream) Read(p []byte) (int, error) {
	n, err := s.Stream.Read(p)
	var ae *quic.ApplicationError
	if err != nil && errors.As(err, &ae) && ae.Remote && ae.ErrorCode != 0 {
		err = &proto.Error{Code: proto.Code(ae.ErrorCode), Msg: ae.ErrorMessage}
	}
	return n, err
}

func (s *quicStream) LocalAddr() net.Addr  { return s.conn.LocalAddr() }
func (s *quicStream) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

// Early reports whether the handshake is still in progress on a resumed
// connection: what is written now leaves as 0-RTT data, which the server
// serves only where a replay would be harmless (PROTOCOL.md §11.3).
func (s *quicStream) Early() bool {
	select {
	case <-s.conn.HandshakeComplete():
		return false
	default:
		return true
	}
}

// AwaitHandshake waits for the handshake to complete; what is written after
// it leaves in 1-RTT packets, never early.
func (s *quicStream) AwaitHandshake(ctx context.Context) error {
	select {
	case <-s.conn.HandshakeComplete():
		return nil
	case <-s.conn.Context().Done():
		return context.Cause(s.conn.Context())
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Rejected reports whether err means the server refused this connection's
// 0-RTT data (quic-go then fails the stream opened for it).
func (s *quicStream) Rejected(err error) bool { return errors.Is(err, quic.Err0RTTRejected) }

// Resume waits for the handshake after a 0-RTT rejection and opens the
// connection's stream again.
func (s *quicStream) Resume(ctx context.Context) (io.ReadWriteCloser, error) {
	conn, err := s.conn.NextConnection(ctx)
	if err != nil {
		return nil, err
	}
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	return &quicStream{Stream: st, conn: conn}, nil
}

// Used0RTT reports that the server accepted this connection's 0-RTT data
// (meaningful once the handshake has completed).
func (s *quicStream) Used0RTT() bool { return s.conn.ConnectionState().Used0RTT }

// Close sends the stream's FIN after what was written (a CLOSE frame, say)
// and closes the connection a moment later: closing it at once would drop
// stream data not yet on the wire.
func (s *quicStream) Close() error {
	err := s.Stream.Close()
	go func() {
		select {
		case <-s.conn.Context().Done():
		case <-time.After(200 * time.Millisecond):
		}
		s.conn.CloseWithError(0, "")
	}()
	return err
}
