package baseline

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

const natsFlushTimeout = 30 * time.Second

// Subscribers is a set of nats.go client connections, one subscription each.
//
// nats.go runs four goroutines per connection (reader, flusher, async-callback
// dispatcher, and one per async subscription) and keeps a 32 KiB read buffer per
// connection, so the load side of the NATS baseline costs more memory per receiver
// than the floor's.
type Subscribers struct {
	conns []*nats.Conn
	gates []callbackGate

	slowConsumers atomic.Int64 // client-side: pending limits exceeded, messages dropped
	asyncErrors   atomic.Int64 // any other error the server or client reported async
	disconnects   atomic.Int64 // connections lost while open (a server-side slow consumer lands here)
	closing       atomic.Bool
}

// Subscribe opens n nats.go connections to url from srcs (round-robin), each with one
// async subscription to subject delivering to onMsg(i, payload). Pending limits are
// lifted so the client never drops; reconnects are off so a lost connection shows
// up in Disconnects instead of silently resubscribing. On error everything opened
// so far is closed.
func Subscribe(url, subject string, n int, srcs []net.IP, onMsg func(i int, payload []byte), progress func(int)) (*Subscribers, error) {
	s := &Subscribers{conns: make([]*nats.Conn, n), gates: make([]callbackGate, n)}
	err := openAll(n, func(i int) error {
		nc, err := nats.Connect(url,
			nats.Name(fmt.Sprintf("baseline-sub-%d", i)),
			nats.SetCustomDialer(dialerFor(srcs, i)),
			nats.Timeout(dialTimeout),
			nats.NoReconnect(),
			nats.NoCallbacksAfterClientClose(),
			nats.ErrorHandler(s.onAsyncError),
			nats.DisconnectErrHandler(s.onDisconnect),
		)
		if err != nil {
			return fmt.Errorf("subscriber %d: connect %s: %w", i, url, err)
		}
		s.conns[i] = nc
		gate := &s.gates[i]
		sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
			gate.mu.Lock()
			if !gate.closed {
				onMsg(i, m.Data)
			}
			gate.mu.Unlock()
		})
		if err != nil {
			return fmt.Errorf("subscriber %d: subscribe %s: %w", i, subject, err)
		}
		if err := sub.SetPendingLimits(-1, -1); err != nil {
			return fmt.Errorf("subscriber %d: pending limits: %w", i, err)
		}
		return nil
	}, progress)
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Subscribers) onAsyncError(_ *nats.Conn, _ *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrSlowConsumer) {
		s.slowConsumers.Add(1)
		return
	}
	s.asyncErrors.Add(1)
}

func (s *Subscribers) onDisconnect(_ *nats.Conn, err error) {
	if !s.closing.Load() {
		s.disconnects.Add(1)
	}
}

// Flush does a PING/PONG round trip on every connection, so every subscription is
// registered at the server before the caller publishes.
func (s *Subscribers) Flush() error {
	return openAll(len(s.conns), func(i int) error {
		if err := s.conns[i].FlushTimeout(natsFlushTimeout); err != nil {
			return fmt.Errorf("subscriber %d: flush: %w", i, err)
		}
		return nil
	}, nil)
}

// SlowConsumerErrors counts nats.go's client-side slow-consumer errors. With the
// pending limits lifted it should stay 0; if it does not, messages were dropped.
func (s *Subscribers) SlowConsumerErrors() int64 { return s.slowConsumers.Load() }

// AsyncErrors counts asynchronous errors other than slow consumers (e.g. -ERR from
// the server).
func (s *Subscribers) AsyncErrors() int64 { return s.asyncErrors.Load() }

// Disconnects counts connections lost before Close, e.g. cut off by the server as
// slow consumers (see NATSServer.SlowConsumers).
func (s *Subscribers) Disconnects() int64 { return s.disconnects.Load() }

// callbackGate lets Close promise that no onMsg call is running or will start once
// it returns: nats.go's Close does not wait for a message handler in progress.
// Uncontended, it costs one lock per message next to nats.go's own per-message
// allocation and locking.
type callbackGate struct {
	mu     sync.Mutex
	closed bool
}

// Close closes every connection; no onMsg call runs after it returns.
func (s *Subscribers) Close() {
	s.closing.Store(true)
	var wg sync.WaitGroup
	sem := make(chan struct{}, dialConcurrency)
	for i, nc := range s.conns {
		if nc == nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			nc.Close()
			s.gates[i].mu.Lock()
			s.gates[i].closed = true
			s.gates[i].mu.Unlock()
			<-sem
		})
	}
	wg.Wait()
}
