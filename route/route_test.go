package route

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"imgate/cluster"
	"imgate/proto"
)

func startBus(t *testing.T) (*cluster.Embedded, *nats.Conn) {
	t.Helper()
	e, err := cluster.StartEmbedded(cluster.EmbeddedConfig{Listen: "127.0.0.1:0"}, "route-test", t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	nc, err := cluster.Connect(cluster.Config{}, "route-test", e, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return e, nc
}

// request sends an uplink the way a gateway does and returns the reply
// payload or the imgate code of the error.
func request(t *testing.T, nc *nats.Conn, svid uint32, payload string) (string, proto.Code) {
	t.Helper()
	m := &nats.Msg{Subject: cluster.NewSubjects("").SVID(svid), Data: []byte(payload), Header: nats.Header{}}
	m.Header.Set(cluster.HeaderUID, "alice")
	m.Header.Set(cluster.HeaderSVID, strconv.Itoa(int(svid)))
	r, err := nc.RequestMsg(m, 5*time.Second)
	if err != nil {
		if err == nats.ErrNoResponders {
			return "", proto.CodeNoHandler
		}
		t.Fatalf("request %q: %v", payload, err)
	}
	if st := r.Header.Get(cluster.HeaderStatus); st != "" {
		n, _ := strconv.Atoi(st)
		return string(r.Data), proto.Code(n)
	}
	return string(r.Data), 0
}

// The bridge: replies, a 4xx's chosen code, 5xx retried, a timeout, the
// concurrency limit, the circuit breaker opening and closing again.
func TestBridge(t *testing.T) {
	_, nc := startBus(t)
	var calls atomic.Int64
	var flaky atomic.Int64
	down := atomic.Bool{}
	release := make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		body, _ := io.ReadAll(r.Body)
		if down.Load() {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		switch string(body) {
		case "flaky":
			if flaky.Add(1) < 3 {
				http.Error(w, "try again", http.StatusServiceUnavailable)
				return
			}
		case "refuse":
			w.Header().Set("X-Imgate-Status", strconv.Itoa(int(proto.CodeBadRequest)))
			http.Error(w, "no such thing", http.StatusBadRequest)
			return
		case "hold":
			<-release
		case "slow":
			time.Sleep(400 * time.Millisecond)
		}
		io.WriteString(w, r.Header.Get("X-Imgate-Uid")+":"+string(body))
	}))
	t.Cleanup(func() { once.Do(func() { close(release) }); srv.Close() })

	d, err := New(Config{Bridges: []Bridge{
		{SVID: 5, URL: srv.URL, Timeout: 200 * time.Millisecond, Retries: 2, Backoff: 5 * time.Millisecond, Concurrency: 1, BreakerFailures: 2, BreakerCooldown: 300 * time.Millisecond},
	}}, cluster.NewPaths(nil, nc), "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })

	if got, code := request(t, nc, 5, "hi"); code != 0 || got != "alice:hi" {
		t.Fatalf("hi: %q %v", got, code)
	}
	if got, code := request(t, nc, 5, "flaky"); code != 0 || got != "alice:flaky" {
		t.Fatalf("flaky (two 503s, then fine): %q %v", got, code)
	}
	if _, code := request(t, nc, 5, "refuse"); code != proto.CodeBadRequest {
		t.Fatalf("refuse: %v", code)
	}
	if _, code := request(t, nc, 5, "slow"); code != proto.CodeTimeout {
		t.Fatalf("slow: %v", code)
	}

	// Concurrency 1: a second request while one is held waits one timeout,
	// then RATE_LIMITED.
	held := make(chan proto.Code)
	go func() { _, code := request(t, nc, 5, "hold"); held <- code }()
	time.Sleep(50 * time.Millisecond)
	if _, code := request(t, nc, 5, "hi"); code != proto.CodeRateLimited {
		t.Fatalf("over the concurrency limit: %v", code)
	}
	once.Do(func() { close(release) })
	<-held

	// Two failed requests open the circuit: the third is refused without a call.
	down.Store(true)
	request(t, nc, 5, "x")
	request(t, nc, 5, "x")
	before := calls.Load()
	if _, code := request(t, nc, 5, "x"); code != proto.CodeBackendError || calls.Load() != before {
		t.Fatalf("open circuit: code %v, calls %d -> %d", code, before, calls.Load())
	}
	if s := d.SVIDs(); len(s) != 1 || s[0].Bridge.Circuit != "open" {
		t.Fatalf("svids: %+v", s)
	}
	// The same state on /metrics.
	if v := metric(t, d, "imgate_route_breaker_open", "5", ""); v != 1 {
		t.Errorf("imgate_route_breaker_open{svid=5} = %v, want 1", v)
	}
	if v := metric(t, d, "imgate_route_requests_total", "5", "served"); v != 3 {
		t.Errorf("served = %v, want 3 (hi, flaky, the held one)", v)
	}
	if v := metric(t, d, "imgate_route_requests_total", "5", "refused"); v < 2 {
		t.Errorf("refused = %v, want at least 2 (rate limited, open circuit)", v)
	}
	// After the cooldown one trial closes it again.
	down.Store(false)
	time.Sleep(350 * time.Millisecond)
	if got, code := request(t, nc, 5, "back"); code != 0 || got != "alice:back" {
		t.Fatalf("after cooldown: %q %v", got, code)
	}
}

// The push API publishes on the bus; /svids lists SVIDs whose backends
// announce themselves.
func TestPushAPIAndSVIDs(t *testing.T) {
	_, nc := startBus(t)
	d, err := New(Config{HTTPAddr: "127.0.0.1:0", HTTPToken: "s3cret"}, cluster.NewPaths(nil, nc), "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	be, err := cluster.ServeSVID(nc, "", 9, "echo-1", func(r cluster.Request) ([]byte, error) { return r.Payload, nil })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })

	got := make(chan *nats.Msg, 10)
	for _, s := range []string{"imgate.user.alice", "imgate.room.lobby", "imgate.all"} {
		if _, err := nc.ChanSubscribe(s, got); err != nil {
			t.Fatal(err)
		}
	}
	nc.Flush()
	post := func(path, body string) (int, string) {
		req, _ := http.NewRequest("POST", "http://"+d.HTTPAddr()+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer s3cret")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	for _, c := range []struct{ path, body, subject, data string }{
		{"/push/user", `{"uid":"alice","payload":"hi","conv_id":3,"seq":4}`, "imgate.user.alice", "hi"},
		{"/push/room", `{"room":"lobby","payload_b64":"aGV5"}`, "imgate.room.lobby", "hey"},
		{"/push/all", `{"payload":"all"}`, "imgate.all", "all"},
	} {
		if code, body := post(c.path, c.body); code != 200 || body != `{"published":1}` {
			t.Fatalf("%s: %d %s", c.path, code, body)
		}
		select {
		case m := <-got:
			if m.Subject != c.subject || string(m.Data) != c.data {
				t.Fatalf("%s published %s %q", c.path, m.Subject, m.Data)
			}
			if c.path == "/push/user" && (m.Header.Get(cluster.HeaderConvID) != "3" || m.Header.Get(cluster.HeaderMsgSeq) != "4") {
				t.Fatalf("conv headers: %v", m.Header)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: nothing published", c.path)
		}
	}
	if code, _ := post("/push/room", `{"room":"","payload":"x"}`); code != 400 {
		t.Fatalf("empty room: %d", code)
	}
	if code, _ := post("/push/user", `{"uid":"alice"}`); code != 400 {
		t.Fatalf("no payload: %d", code)
	}

	deadline := time.Now().Add(5 * time.Second)
	for {
		req, _ := http.NewRequest("GET", "http://"+d.HTTPAddr()+"/svids", nil)
		req.Header.Set("Authorization", "Bearer s3cret")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var out struct{ SVIDs []SVIDStatus }
		json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if len(out.SVIDs) == 1 && out.SVIDs[0].SVID == 9 && out.SVIDs[0].Live && out.SVIDs[0].Backends[0].Instance == "echo-1" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("svids: %+v", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metric reads one series of the daemon's registry (result "" for series
// without that label).
func metric(t *testing.T, d *Daemon, name, svid, result string) float64 {
	t.Helper()
	mfs, err := d.registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["svid"] != svid || labels["result"] != result {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no series %s{svid=%s,result=%s}", name, svid, result)
	return 0
}
