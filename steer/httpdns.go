package steer

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"
)

// HTTPDNS answers GET /v1/endpoints?transport=quic&ip=... with the same
// ranking as the DNS responder, as client URLs: for clients that cannot
// trust their resolver (or sit behind one without ECS), and for the Go
// client's EndpointsFunc. The client's address is ?ip=, else the last
// X-Forwarded-For entry when TrustForwarded is set, else the peer.
type HTTPDNS struct {
	src     Source
	metrics *Metrics
	conf    atomic.Pointer[httpdnsConf] // swapped whole by Reload
}

type httpdnsConf struct {
	table          *Table
	ttl            time.Duration
	trustForwarded bool
}

// EndpointsAnswer is the JSON body of /v1/endpoints.
type EndpointsAnswer struct {
	Region    string     `json:"region"`
	TTL       int        `json:"ttl"` // seconds the answer may be kept
	Endpoints []Endpoint `json:"endpoints"`
}

// NewHTTPDNS builds the handler from the [dns] section (regions, ttl,
// trust_forwarded).
func NewHTTPDNS(cfg Config, src Source, m *Metrics) (*HTTPDNS, error) {
	if m == nil {
		m = NewMetrics(nil, src)
	}
	h := &HTTPDNS{src: src, metrics: m}
	return h, h.Reload(cfg)
}

// Reload applies new regions, TTL and trust_forwarded; an invalid
// configuration changes nothing.
func (h *HTTPDNS) Reload(cfg Config) error {
	cfg = cfg.withDefaults()
	table, err := NewTable(cfg.Regions)
	if err != nil {
		return err
	}
	h.conf.Store(&httpdnsConf{table: table, ttl: cfg.TTL, trustForwarded: cfg.TrustForwarded})
	return nil
}

// Pattern is where the handler is mounted.
const Pattern = "GET /v1/endpoints"

func (h *HTTPDNS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	transport := r.URL.Query().Get("transport")
	if !validScheme(transport) {
		h.fail(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("transport %q: want tcp, ws, tls, wss, kcp or quic", transport))
		return
	}
	conf := h.conf.Load()
	client, err := conf.clientAddr(r)
	if err != nil {
		h.fail(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	region := conf.table.Lookup(client)
	ranked := Rank(h.src.Nodes(), region, conf.table.Fallback(region), time.Now())
	eps := endpoints(ranked, transport)
	if len(eps) == 0 {
		// As DNS answers SERVFAIL: an empty list is an outage, not an answer
		// to cache.
		h.fail(w, http.StatusServiceUnavailable, "unavailable", "no healthy gateway node with a "+orAny(transport)+" endpoint")
		return
	}
	h.metrics.httpdns.WithLabelValues("ok").Inc()
	h.metrics.answers.WithLabelValues(regionLabel(region)).Inc()
	secs := int(conf.ttl / time.Second)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", fmt.Sprintf("max-age=%d", secs))
	json.NewEncoder(w).Encode(EndpointsAnswer{Region: region, TTL: secs, Endpoints: eps})
}

func (h *HTTPDNS) fail(w http.ResponseWriter, status int, result, msg string) {
	h.metrics.httpdns.WithLabelValues(result).Inc()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func (h *httpdnsConf) clientAddr(r *http.Request) (netip.Addr, error) {
	if ip := r.URL.Query().Get("ip"); ip != "" {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return a, fmt.Errorf("ip %q: not an address", ip)
		}
		return a.Unmap(), nil
	}
	if h.trustForwarded {
		if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
			all := strings.Split(xff[len(xff)-1], ",")
			if a, err := netip.ParseAddr(strings.TrimSpace(all[len(all)-1])); err == nil {
				return a.Unmap(), nil
			}
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, _ := netip.ParseAddr(host) // invalid: no region, the global ranking
	return a.Unmap(), nil
}

func validScheme(s string) bool {
	switch s {
	case "", "tcp", "ws", "tls", "wss", "kcp", "quic":
		return true
	}
	return false
}

func orAny(transport string) string {
	if transport == "" {
		return "client"
	}
	return transport
}
