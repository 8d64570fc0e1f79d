package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
)

// httpdnsServer answers /v1/endpoints with whatever list it holds; an
// empty list is a 503, as the real one answers when no node is healthy.
type httpdnsServer struct {
	*httptest.Server
	mu        sync.Mutex
	urls      []string
	transport string
	calls     atomic.Int32
}

func newHTTPDNSServer(t *testing.T, urls ...string) *httpdnsServer {
	s := &httpdnsServer{urls: urls}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.calls.Add(1)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.transport = r.URL.Query().Get("transport")
		if r.URL.Path != "/v1/endpoints" || len(s.urls) == 0 {
			http.Error(w, `{"error":"no healthy gateway node"}`, http.StatusServiceUnavailable)
			return
		}
		var eps []map[string]any
		for _, u := range s.urls {
			eps = append(eps, map[string]any{"node": "n", "region": "r", "url": u, "load": 0})
		}
		json.NewEncoder(w).Encode(map[string]any{"region": "r", "ttl": 5, "endpoints": eps})
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *httpdnsServer) set(urls ...string) {
	s.mu.Lock()
	s.urls = urls
	s.mu.Unlock()
}

func TestHTTPDNSFunc(t *testing.T) {
	s := newHTTPDNSServer(t, "quic://10.0.0.1:7103", "quic://10.0.0.2:7103")
	got, err := HTTPDNS(s.URL+"/", "quic")(context.Background())
	if err != nil || !reflect.DeepEqual(got, []string{"quic://10.0.0.1:7103", "quic://10.0.0.2:7103"}) || s.transport != "quic" {
		t.Fatalf("got %v, %v (transport %q)", got, err, s.transport)
	}
	s.set()
	if _, err := HTTPDNS(s.URL, "tcp")(context.Background()); err == nil {
		t.Fatal("503 must be an error")
	}
}

// With EndpointsFunc, Dial needs no Endpoints; every connect pass asks
// again, and a failed or empty answer keeps the list it has.
func TestEndpointsFuncRefreshesEachPass(t *testing.T) {
	a, b := newFakeServer(t), newFakeServer(t)
	dns := newHTTPDNSServer(t, a.url)
	cfg := testConfig()
	cfg.EndpointsFunc = HTTPDNS(dns.URL, "tcp")
	c := dial(t, cfg)
	fa := a.nextConn(t)
	if n := dns.calls.Load(); n != 1 {
		t.Fatalf("%d HTTPDNS calls at Dial, want 1", n)
	}

	// The cluster now ranks b first: the next pass goes there.
	dns.set(b.url, a.url)
	fa.drop()
	fb := b.nextConn(t)
	if n := dns.calls.Load(); n != 2 {
		t.Fatalf("%d HTTPDNS calls after one reconnect, want 2", n)
	}

	// HTTPDNS fails: the client keeps its list [b, a] and, b having
	// failed, goes on to a.
	dns.set()
	fb.drop()
	a.nextConn(t)

	// A list with nothing usable is also kept out.
	dns.set("gopher://x:1")
	if err := c.refreshEndpoints(context.Background()); err == nil {
		t.Error("a list without a usable endpoint must be an error")
	}
	if len(c.endpoints) != 2 || c.endpoints[0].raw != b.url {
		t.Errorf("endpoints after failed refreshes: %v", c.endpoints)
	}
}

func TestEndpointsFuncFailsDial(t *testing.T) {
	dns := newHTTPDNSServer(t)
	cfg := testConfig()
	cfg.EndpointsFunc = HTTPDNS(dns.URL, "tcp")
	if _, err := Dial(ctxT(t), cfg); err == nil {
		t.Fatal("Dial with no endpoint from HTTPDNS must fail")
	}
}
