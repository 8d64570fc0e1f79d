package steer

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"imgate/cluster"
)

func TestHTTPDNS(t *testing.T) {
	now := time.Now()
	drain := cluster.NodeStatus{Node: "eu-3", Region: "eu", Heard: now, Draining: true, Endpoints: []string{"quic://10.0.1.3:7103"}}
	src := staticSource{
		{Node: "eu-1", Region: "eu", Load: 0.5, Heard: now, Endpoints: []string{"tcp://10.0.1.1:7100", "quic://10.0.1.1:7103"}},
		{Node: "eu-2", Region: "eu", Load: 0.1, Heard: now, Endpoints: []string{"tcp://10.0.1.2:7100"}},
		{Node: "us-1", Region: "us", Load: 0.2, Heard: now, Endpoints: []string{"tcp://10.0.2.1:7100", "quic://10.0.2.1:7103"}},
		drain,
	}
	for _, c := range []struct {
		name   string
		trust  bool
		query  string
		xff    string
		remote string
		status int
		region string
		urls   []string
	}{
		{"quic for an eu client by ?ip", false, "?transport=quic&ip=10.1.2.3", "", "127.0.0.1:1", 200, "eu",
			[]string{"quic://10.0.1.1:7103", "quic://10.0.2.1:7103"}},
		{"every transport for a us client", false, "?ip=10.2.0.1", "", "127.0.0.1:1", 200, "us",
			[]string{"tcp://10.0.2.1:7100", "quic://10.0.2.1:7103", "tcp://10.0.1.2:7100", "tcp://10.0.1.1:7100", "quic://10.0.1.1:7103"}},
		{"peer address", false, "?transport=tcp", "", "127.0.0.3:5555", 200, "us",
			[]string{"tcp://10.0.2.1:7100", "tcp://10.0.1.2:7100", "tcp://10.0.1.1:7100"}},
		{"X-Forwarded-For ignored unless trusted", false, "?transport=tcp", "10.1.0.1", "127.0.0.3:5555", 200, "us",
			[]string{"tcp://10.0.2.1:7100", "tcp://10.0.1.2:7100", "tcp://10.0.1.1:7100"}},
		{"X-Forwarded-For trusted: the last entry", true, "?transport=tcp", "10.2.0.9, 10.1.0.1", "127.0.0.3:5555", 200, "eu",
			[]string{"tcp://10.0.1.2:7100", "tcp://10.0.1.1:7100", "tcp://10.0.2.1:7100"}},
		{"no such transport endpoint: 503", false, "?transport=kcp", "", "127.0.0.1:1", 503, "", nil},
		{"bad transport", false, "?transport=gopher", "", "127.0.0.1:1", 400, "", nil},
		{"bad ip", false, "?ip=10.1", "", "127.0.0.1:1", 400, "", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Regions, cfg.TrustForwarded, cfg.TTL = testRegions, c.trust, 9*time.Second
			h, err := NewHTTPDNS(cfg, src, nil)
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest("GET", "/v1/endpoints"+c.query, nil)
			req.RemoteAddr = c.remote
			if c.xff != "" {
				req.Header.Set("X-Forwarded-For", c.xff)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != c.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, c.status, rec.Body)
			}
			if c.status != http.StatusOK {
				return
			}
			var ans EndpointsAnswer
			if err := json.Unmarshal(rec.Body.Bytes(), &ans); err != nil {
				t.Fatal(err)
			}
			var urls []string
			for _, e := range ans.Endpoints {
				urls = append(urls, e.URL)
				if e.Node == "" || e.Region == "" {
					t.Errorf("endpoint without node or region: %+v", e)
				}
			}
			if ans.Region != c.region || ans.TTL != 9 || !reflect.DeepEqual(urls, c.urls) {
				t.Errorf("got region %q ttl %d %v, want %q 9 %v", ans.Region, ans.TTL, urls, c.region, c.urls)
			}
			if cc := rec.Header().Get("Cache-Control"); cc != "max-age=9" {
				t.Errorf("Cache-Control %q", cc)
			}
		})
	}
}
