package route

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"imgate/cluster"
	"imgate/proto"
)

// maxReply bounds an endpoint's answer (the gateway's hard frame ceiling).
const maxReply = proto.MaxFrameLimit

// bridge serves one SVID from an HTTP endpoint.
type bridge struct {
	cfg     Bridge
	client  *http.Client
	slots   chan struct{}
	breaker *breaker
	backend *cluster.Backend

	inFlight atomic.Int64
	served   atomic.Uint64
	failed   atomic.Uint64
	refused  atomic.Uint64
}

func newBridge(cfg Bridge, client *http.Client) *bridge {
	cfg = cfg.withDefaults()
	return &bridge{
		cfg:     cfg,
		client:  client,
		slots:   make(chan struct{}, cfg.Concurrency),
		breaker: &breaker{failures: cfg.BreakerFailures, cooldown: cfg.BreakerCooldown},
	}
}

// healthy is false while the circuit is open.
func (b *bridge) healthy() bool {
	st, _ := b.breaker.current()
	return st != open
}

// onRequest takes an uplink from the bus; the work runs in its own
// goroutine so the subscription keeps reading.
func (b *bridge) onRequest(m *nats.Msg) {
	go func() {
		reply, err := b.serve(cluster.RequestOf(m))
		if err != nil {
			b.failed.Add(1)
		} else {
			b.served.Add(1)
		}
		_ = cluster.Respond(m, reply, err)
	}()
}

func (b *bridge) serve(r cluster.Request) ([]byte, error) {
	// A slot first: a request that waits longer than one attempt's
	// timeout would reach the endpoint after the client gave up.
	t := time.NewTimer(b.cfg.Timeout)
	select {
	case b.slots <- struct{}{}:
		t.Stop()
	case <-t.C:
		b.refused.Add(1)
		return nil, proto.Errorf(proto.CodeRateLimited, "%d requests in flight to the endpoint (limit)", b.cfg.Concurrency)
	}
	defer func() { <-b.slots }()
	if !b.breaker.allow(time.Now()) {
		b.refused.Add(1)
		return nil, proto.Errorf(proto.CodeBackendError, "endpoint circuit open after %d failures", b.cfg.BreakerFailures)
	}
	b.inFlight.Add(1)
	defer b.inFlight.Add(-1)
	var last error
	for attempt := 0; attempt <= b.cfg.Retries; attempt++ {
		if attempt > 0 {
			wait := b.cfg.Backoff << (attempt - 1)
			wait = wait/2 + rand.N(wait/2+1)
			time.Sleep(wait)
		}
		reply, err, retry := b.call(r)
		if err == nil {
			b.breaker.done(true, time.Now())
			return reply, nil
		}
		last = err
		if !retry {
			// The endpoint answered: it is up, the request was refused.
			b.breaker.done(true, time.Now())
			return nil, err
		}
	}
	b.breaker.done(false, time.Now())
	var pe *proto.Error
	if errors.As(last, &pe) {
		return nil, last
	}
	return nil, proto.Errorf(proto.CodeBackendError, "%v", last)
}

// call makes one attempt; retry says whether another may help.
func (b *bridge) call(r cluster.Request) (reply []byte, err error, retry bool) {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.cfg.URL, bytes.NewReader(r.Payload))
	if err != nil {
		return nil, err, false
	}
	h := req.Header
	h.Set("Content-Type", "application/octet-stream")
	h.Set("X-Imgate-Svid", strconv.FormatUint(uint64(r.SVID), 10))
	h.Set("X-Imgate-Uid", r.UID)
	h.Set("X-Imgate-Device", r.Device)
	h.Set("X-Imgate-Conn", r.Conn)
	h.Set("X-Imgate-Node", r.Node)
	h.Set("X-Imgate-Region", r.Region)
	h.Set("X-Imgate-Transport", r.Transport)
	resp, err := b.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, proto.Errorf(proto.CodeTimeout, "endpoint did not answer within %v", b.cfg.Timeout), true
		}
		return nil, err, true
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxReply+1))
	if err != nil {
		return nil, err, true
	}
	switch {
	case resp.StatusCode/100 == 2:
		if len(body) > maxReply {
			return nil, proto.Errorf(proto.CodeBackendError, "reply over %d bytes", maxReply), false
		}
		return body, nil, false
	case resp.StatusCode >= 500:
		return nil, fmt.Errorf("endpoint answered %s: %s", resp.Status, trim(body)), true
	}
	// 4xx: the endpoint refused this request; its X-Imgate-Status may pick
	// the client's code.
	code := proto.CodeBackendError
	if n, err := strconv.Atoi(resp.Header.Get("X-Imgate-Status")); err == nil && n > 0 && n < 100 {
		code = proto.Code(n)
	}
	return nil, proto.Errorf(code, "%s", trim(body)), false
}

func trim(b []byte) string {
	if len(b) > 256 {
		b = b[:256]
	}
	return string(bytes.TrimSpace(b))
}
