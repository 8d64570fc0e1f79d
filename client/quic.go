package client

import (
	"context"
	"crypto/tls"
	"net"
	"net/url"
	"time"

	"github.com/quic-go/quic-go"
)

// ALPN is what the gateway's QUIC listener requires.
const ALPN = "imgate/1"

// dialQUIC opens a QUIC connection and its one bidirectional stream, which
// carries frames back to back like TCP. quic-go keeps the connection across
// an address change of this client (connection migration).
func dialQUIC(ctx context.Context, u *url.URL, cfg *Config) (frameConn, error) {
	tc := &tls.Config{}
	if cfg.TLSConfig != nil {
		tc = cfg.TLSConfig.Clone()
	}
	tc.NextProtos = []string{ALPN}
	conn, err := quic.DialAddr(ctx, u.Host, tc, &quic.Config{
		KeepAlivePeriod: 15 * time.Second, // keeps NAT bindings; imgate heartbeats decide liveness
		MaxIdleTimeout:  90 * time.Second,
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

// OpenQUICStream opens the one stream of an imgate QUIC connection and
// returns it as a net.Conn whose Close ends the connection (closing it on
// failure). Load generators that share UDP sockets dial with their own
// quic.Transport and call this.
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

func (s *quicStream) LocalAddr() net.Addr  { return s.conn.LocalAddr() }
func (s *quicStream) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

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
