package gateway

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"imgate/proto"
	"imgate/transport"
)

// TestDrain drains a node with real clients over the admin port: every
// client gets CLOSE SHUTDOWN within the period, spread over it rather than
// all at once; /readyz turns 503 while /healthz stays 200; INFO says
// draining:1; the TCP listener refuses new connections; Drained closes.
func TestDrain(t *testing.T) {
	s := startOpsServer(t, nil)
	const n, period = 20, 2 * time.Second
	clients := make([]*opsClient, n)
	for i := range clients {
		clients[i] = dialOps(t, s, "u"+string(rune('a'+i)), "phone", "lobby")
	}
	tcpAddr := ""
	for _, l := range s.Listeners() {
		if l.Kind() == transport.KindTCP {
			tcpAddr = l.Addr().String()
		}
	}
	type closed struct {
		at   time.Time
		code proto.Code
		err  error
	}
	results := make([]closed, n)
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			c.conn.SetReadDeadline(time.Now().Add(period + 3*time.Second))
			f, err := c.next()
			if err != nil {
				results[i] = closed{time.Now(), 0, err}
				return
			}
			e, _ := proto.ParseError(f.Body)
			results[i] = closed{time.Now(), e.Code, nil}
			c.conn.Close()
		})
	}

	rdb := newRedis(t, s, "")
	ctx := context.Background()
	start := time.Now()
	if err := rdb.Do(ctx, "DRAIN", "2").Err(); err != nil {
		t.Fatalf("DRAIN 2: %v", err)
	}
	if err := rdb.Do(ctx, "DRAIN").Err(); err == nil || !strings.Contains(err.Error(), "already draining") {
		t.Errorf("second DRAIN: %v, want already draining", err)
	}
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil || !strings.Contains(info, "draining:1\r\n") {
		t.Errorf("INFO server during drain lacks draining:1 (%v):\n%s", err, info)
	}
	get := func(path string) int {
		resp, err := http.Get("http://" + s.HTTPAddr() + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz during drain = %d, want 503", code)
	}
	if code := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz during drain = %d, want 200", code)
	}
	if nc, err := net.DialTimeout("tcp", tcpAddr, time.Second); err == nil {
		// A connect that raced the close must at least not be served.
		nc.SetReadDeadline(time.Now().Add(time.Second))
		_, rerr := bufio.NewReader(nc).ReadByte()
		nc.Close()
		if rerr == nil {
			t.Error("a new TCP connection was served during the drain")
		}
	}

	wg.Wait()
	var at []time.Duration
	for i, r := range results {
		if r.err != nil || r.code != proto.CodeShutdown {
			t.Fatalf("client %d: code %v err %v, want CLOSE SHUTDOWN", i, r.code, r.err)
		}
		at = append(at, r.at.Sub(start))
	}
	sort.Slice(at, func(i, j int) bool { return at[i] < at[j] })
	t.Logf("close times: first %v, median %v, last %v", at[0], at[n/2], at[n-1])
	if at[n-1] > period+500*time.Millisecond {
		t.Errorf("last close at %v, after the %v period", at[n-1], period)
	}
	// Evenly spread: the i-th close is due at period*i/n. Allow generous
	// slack for a loaded machine, but all-at-once must fail.
	if at[n-1]-at[0] < period/2 {
		t.Errorf("closes spread over %v, want about %v (not all at once)", at[n-1]-at[0], period)
	}
	if at[n/2] < period/4 || at[n/2] > 3*period/4+300*time.Millisecond {
		t.Errorf("median close at %v, want about %v", at[n/2], period/2)
	}
	select {
	case <-s.Drained():
	case <-time.After(period + 3*time.Second):
		t.Fatal("Drained not closed after the period")
	}
	if conns, _, _ := s.Counts(); conns != 0 {
		t.Errorf("%d connections after the drain", conns)
	}
}

// TestReload rotates in a new key and changes the room limit on a live node.
func TestReload(t *testing.T) {
	s := startOpsServer(t, nil)
	k2 := KeyConfig{ID: "k2", Alg: AlgHS256, Secret: "second-ops-test-secret-0123456789abcdef"}
	var lastBeat uint32 // heartbeat_ms of the last AUTH_OK
	auth := func(k KeyConfig) proto.Op {
		t.Helper()
		var addr string
		for _, l := range s.Listeners() {
			if l.Kind() == transport.KindTCP {
				addr = l.Addr().String()
			}
		}
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		c := &opsClient{t: t, conn: nc, r: bufio.NewReader(nc)}
		tok, _ := MintToken(k, Claims{UID: "rot", Device: "d", Expiry: time.Now().Add(time.Hour)})
		c.send(proto.OpAuth, []byte(tok))
		f, err := c.next()
		if err != nil {
			return 0
		}
		if a, err := proto.ParseAuthOK(f.Body); f.Op == proto.OpAuthOK && err == nil {
			lastBeat = a.HeartbeatMS
		}
		return f.Op
	}
	if op := auth(k2); op == proto.OpAuthOK {
		t.Fatal("a k2 token was accepted before the reload")
	}
	cfg := s.Config()
	cfg.Auth.Keys = []KeyConfig{opsKey, k2}
	cfg.MaxRoomsPerConn = 1
	old := cfg.HeartbeatInterval
	cfg.HeartbeatInterval = old + 7*time.Second
	if err := s.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if op := auth(k2); op != proto.OpAuthOK {
		t.Fatalf("k2 token after reload: %v, want AUTH_OK", op)
	}
	if want := uint32(cfg.HeartbeatInterval / time.Millisecond); lastBeat != want {
		t.Errorf("AUTH_OK after the reload announces heartbeat %dms, want %dms", lastBeat, want)
	}
	if op := auth(opsKey); op != proto.OpAuthOK {
		t.Fatalf("k1 token after reload: %v, want AUTH_OK", op)
	}
	c := dialOps(t, s, "limited", "d", "one")
	seq := c.send(proto.OpJoin, []byte("two"))
	if f := c.read(); f.Op != proto.OpError || f.Seq != seq {
		t.Errorf("second JOIN with max_rooms_per_conn 1: %v, want ERROR", f.Op)
	}
	bad := cfg
	bad.Auth.Keys = []KeyConfig{{ID: "k3", Alg: AlgHS256, SecretFile: "/nonexistent/key"}}
	if err := s.Reload(bad); err == nil {
		t.Fatal("a reload with an unreadable key file must fail")
	}
	if op := auth(k2); op != proto.OpAuthOK {
		t.Fatalf("a failed reload changed the keys: k2 now %v", op)
	}
}

// TestDrainRefusesDatagramSessions: KCP and QUIC listeners share their UDP
// socket with the live sessions, so they stay open while the node drains;
// a new session there is answered with CLOSE SHUTDOWN (on QUIC, where the
// client may not have opened its stream yet, the connection close carries
// the code), so the client goes elsewhere at once.
func TestDrainRefusesDatagramSessions(t *testing.T) {
	for _, kind := range []transport.Kind{transport.KindKCP, transport.KindQUIC} {
		t.Run(kind.String(), func(t *testing.T) {
			s := newE2EServer(t, nil)
			first, _ := s.login(kind, "first", "d", nil)
			s.Drain(20 * time.Second) // one client: closed at once
			first.expectClose(proto.CodeShutdown, 0)

			c := s.dial(kind)
			c.send(proto.Header{Op: proto.OpAuth, Seq: 1}, []byte(e2eToken(t, e2eClaims("late", "d", nil))))
			c.expectClose(proto.CodeShutdown, 0)
			e2eWaitFor(t, e2eWait, "the refused session to leave the registry", func() bool { return s.conns() == 0 })
			s.expectCounter(2, "imgate_connections_closed_total", "reason", "SHUTDOWN")
			select {
			case <-s.Drained():
			case <-time.After(e2eWait):
				t.Fatal("Drained not closed once the node was empty")
			}
		})
	}
}
