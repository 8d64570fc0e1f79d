package cluster

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"imgate/client"
	"imgate/gateway"
	"imgate/proto"
)

// In-process cluster tests: one embedded NATS server, several gateway
// servers in this process, real clients on loopback. The multi-process
// tests (real nats-server cluster, gateway processes, SIGKILL) live in
// cmd/imgate.

var testKey = gateway.KeyConfig{ID: "k1", Alg: gateway.AlgHS256, Secret: "0123456789abcdef0123456789abcdef"}

const testWait = 10 * time.Second

func testLog() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

func startBus(t testing.TB) *Embedded {
	t.Helper()
	e, err := StartEmbedded(EmbeddedConfig{Listen: "127.0.0.1:0"}, "test-bus", t.TempDir(), testLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

type testNode struct {
	*Node
	srv   *gateway.Server
	paths *Paths
	tcp   string
}

func testConfig(id string) Config {
	c := DefaultConfig()
	c.NodeID = id
	c.Region = "r1"
	c.Liveness = 600 * time.Millisecond
	c.RequestTimeout = time.Second
	return c
}

func startNode(t testing.TB, e *Embedded, id string, edit func(*Config)) *testNode {
	t.Helper()
	gc := gateway.DefaultConfig()
	gc.NodeID = id
	gc.DataDir = t.TempDir()
	gc.Listen = []string{"tcp://127.0.0.1:0"}
	gc.AdminAddr = "127.0.0.1:0"
	gc.HTTPAddr = "127.0.0.1:0"
	gc.Auth = gateway.AuthConfig{Keys: []gateway.KeyConfig{testKey}}
	gc.Transport.Linger = 100 * time.Millisecond
	srv, err := gateway.New(gc, testLog())
	if err != nil {
		t.Fatal(err)
	}
	cc := testConfig(id)
	if edit != nil {
		edit(&cc)
	}
	paths, err := ConnectPaths(cc, id, e, testLog(), nats.NoEcho())
	if err != nil {
		t.Fatal(err)
	}
	n, err := Attach(srv, paths, cc, testLog())
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	tn := &testNode{Node: n, srv: srv, paths: paths, tcp: srv.Listeners()[0].Addr().String()}
	t.Cleanup(tn.stop)
	return tn
}

func (tn *testNode) stop() {
	tn.srv.Close()
	tn.Node.Close()
	tn.paths.Close()
}

func (tn *testNode) admin(t testing.TB) *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: tn.srv.AdminAddr(), PoolSize: 1})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

func token(t testing.TB, uid, device string) string {
	t.Helper()
	tok, err := gateway.MintToken(testKey, gateway.Claims{UID: uid, Device: device, Expiry: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// testClient is a client that records its pushes.
type testClient struct {
	*client.Client
	mu     sync.Mutex
	pushes []client.Push
	notify chan struct{}
}

func dial(t testing.TB, uid, device string, endpoints ...string) *testClient {
	t.Helper()
	tc := &testClient{notify: make(chan struct{}, 1)}
	cfg := client.DefaultConfig()
	for _, e := range endpoints {
		cfg.Endpoints = append(cfg.Endpoints, "tcp://"+e)
	}
	cfg.Token = token(t, uid, device)
	cfg.BackoffMin = 50 * time.Millisecond
	cfg.BackoffMax = 500 * time.Millisecond
	cfg.OnPush = func(p client.Push) {
		tc.mu.Lock()
		tc.pushes = append(tc.pushes, p)
		tc.mu.Unlock()
		select {
		case tc.notify <- struct{}{}:
		default:
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", uid, err)
	}
	tc.Client = c
	t.Cleanup(func() { c.Close() })
	return tc
}

// payloads returns the payloads received so far.
func (tc *testClient) payloads() []string {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	out := make([]string, len(tc.pushes))
	for i, p := range tc.pushes {
		out[i] = string(p.Payload)
	}
	return out
}

// waitPayloads waits until the client holds exactly want, in order.
func (tc *testClient) waitPayloads(t testing.TB, want ...string) {
	t.Helper()
	deadline := time.Now().Add(testWait)
	for {
		got := tc.payloads()
		if slices.Equal(got, want) {
			return
		}
		if len(got) > len(want) || time.Now().After(deadline) {
			t.Fatalf("pushes = %q, want %q", got, want)
		}
		select {
		case <-tc.notify:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (tc *testClient) join(t testing.TB, room string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	if err := tc.Join(ctx, room); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func codeOf(err error) proto.Code {
	var pe *proto.Error
	if err == nil {
		return 0
	}
	if ok := asProto(err, &pe); ok {
		return pe.Code
	}
	return proto.CodeInternal
}

func asProto(err error, pe **proto.Error) bool {
	for err != nil {
		if p, ok := err.(*proto.Error); ok {
			*pe = p
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

// mustConn opens a plain bus connection (a backend's) closed at the end.
func (e *Embedded) mustConn(t testing.TB) *nats.Conn {
	t.Helper()
	nc, err := Connect(Config{}, "test", e, testLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// proxy is a TCP relay between a node and the bus that a test can cut, to
// play a NATS outage for one node only.
type proxy struct {
	t      testing.TB
	target string
	ln     net.Listener
	addr   string
	mu     sync.Mutex
	conns  []net.Conn
	down   bool
}

func newProxy(t testing.TB, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, target: target, ln: ln, addr: ln.Addr().String()}
	go p.accept()
	t.Cleanup(func() { p.ln.Close(); p.cut() })
	return p
}

func (p *proxy) url() string { return "nats://" + p.addr }

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		go func() { io.Copy(s, c); s.Close() }()
		go func() { io.Copy(c, s); c.Close() }()
	}
}

// cut drops every relayed connection and refuses new ones until heal.
func (p *proxy) cut() {
	p.mu.Lock()
	p.down = true
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

func (p *proxy) heal() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}
