package gateway

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"imgate/proto"
	"imgate/transport"
)

// TestConnectStorm: 2,000 TCP clients from eight source addresses connect
// and authenticate at once (200 at a time); every one gets AUTH_OK, the
// registry counts them all, and it is empty again once they have gone. The
// 10,000-connection storm runs against a separate gateway process (one
// process holding both ends would need 20,000 descriptors).
func TestConnectStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("connect storm: skipped in -short mode")
	}
	const (
		conns   = 2000
		workers = 200
		sources = 8 // 127.0.0.2 .. 127.0.0.9
		within  = 15 * time.Second
	)
	s := newE2EServer(t, nil)

	tokens := make([]string, conns)
	for i := range tokens {
		tokens[i] = e2eToken(t, e2eClaims(fmt.Sprintf("storm-%d", i), "d", nil))
	}
	clients := make([]*e2eClient, conns)
	var (
		next     atomic.Int64
		errMu    sync.Mutex
		firstErr error
		failures int
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		errMu.Lock()
		defer errMu.Unlock()
		if firstErr == nil {
			firstErr = err
		}
		failures++
	}
	start := time.Now()
	deadline := start.Add(within)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= conns {
					return
				}
				src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%sources))}
				c, err := s.tryDial(transport.KindTCP, e2eDialOptions{local: src})
				if err != nil {
					fail(fmt.Errorf("client %d from %v: dial: %w", i, src.IP, err))
					continue
				}
				clients[i] = c
				seq := uint32(i + 1)
				if err := c.trySend(proto.Header{Op: proto.OpAuth, Seq: seq}, []byte(tokens[i])); err != nil {
					fail(fmt.Errorf("client %d: send AUTH: %w", i, err))
					continue
				}
				f, err := c.read(time.Until(deadline))
				if err != nil {
					fail(fmt.Errorf("client %d: no AUTH_OK within %v: %w", i, within, err))
					continue
				}
				if _, perr := proto.ParseAuthOK(f.Body); f.Header != (proto.Header{Op: proto.OpAuthOK, Seq: seq}) || perr != nil {
					fail(fmt.Errorf("client %d: got %s, want AUTH_OK seq %d", i, e2eShow(f), seq))
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if firstErr != nil {
		t.Fatalf("%d of %d clients failed; first: %v", failures, conns, firstErr)
	}
	t.Logf("%d connections authenticated in %v (%.0f/s)", conns, took, conns/took.Seconds())

	if n, users := s.Registry().Counts(); n != conns || users != conns {
		t.Fatalf("registry: %d connections of %d users, want %d of %d", n, users, conns, conns)
	}
	if got := s.ConnsByTransport()["tcp"]; got != conns {
		t.Fatalf("%d tcp connections by transport, want %d", got, conns)
	}
	s.expectCounter(conns, "imgate_connections_opened_total", "transport", "tcp")

	for _, c := range clients {
		c.conn.Close()
	}
	e2eWaitFor(t, 10*time.Second, "the registry to empty", func() bool {
		n, users := s.Registry().Counts()
		return n == 0 && users == 0
	})
	s.expectCounter(conns, "imgate_connections_closed_total", "reason", "peer")
}
