package load

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"imgate/client"
)

// quicDialer multiplexes many QUIC connections over one UDP socket per
// source address, as a load generator must: a socket per connection would
// spend the generator's descriptors, which is what QUIC spares the server.
type quicDialer struct {
	srcs []net.IP
	mu   sync.Mutex
	trs  map[int]*quic.Transport
}

func newQUICDialer(srcs []net.IP) *quicDialer {
	return &quicDialer{srcs: srcs, trs: make(map[int]*quic.Transport)}
}

func (q *quicDialer) transport(i int) (*quic.Transport, error) {
	k := i % len(q.srcs)
	q.mu.Lock()
	defer q.mu.Unlock()
	if tr := q.trs[k]; tr != nil {
		return tr, nil
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: q.srcs[k]})
	if err != nil {
		return nil, err
	}
	tr := &quic.Transport{Conn: udp}
	q.trs[k] = tr
	return tr, nil
}

// dial opens connection i and its stream; the gateway's certificate is not
// checked (benchmarks run against generated development certificates).
func (q *quicDialer) dial(addr string, i int) (net.Conn, error) {
	tr, err := q.transport(i)
	if err != nil {
		return nil, err
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A refused handshake (the node's accept queue full in a connect storm)
	// is tried again after a jittered wait, as the client library does.
	conn, err := client.DialQUICRetry(ctx, func(ctx context.Context) (*quic.Conn, error) {
		return tr.Dial(ctx, ua, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{client.ALPN}},
			// A handshake may wait long on a node busy with a connect
			// storm on two shared cores; the load side waits for it.
			// Keep-alives every 45 s (under the node's 90 s idle timeout):
			// 50,000 connections pinging every 15 s are 3,300 packets a
			// second each end must seal and open.
			&quic.Config{KeepAlivePeriod: 45 * time.Second, MaxIdleTimeout: 90 * time.Second, HandshakeIdleTimeout: 25 * time.Second})
	})
	if err != nil {
		return nil, err
	}
	return client.OpenQUICStream(ctx, conn)
}

func (q *quicDialer) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, tr := range q.trs {
		tr.Close()
	}
}
