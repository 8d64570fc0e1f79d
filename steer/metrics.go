package steer

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the responder's and HTTPDNS's Prometheus series. Label
// values come from fixed sets (query types, results, configured regions),
// never from the query, so a flood of odd queries cannot grow the series.
type Metrics struct {
	queries *prometheus.CounterVec // type, result
	answers *prometheus.CounterVec // region of the client ("none": no CIDR matched)
	httpdns *prometheus.CounterVec // result
}

// NewMetrics registers the series on reg (nil: keep them unregistered),
// with gauges of the nodes src knows, read at scrape time.
func NewMetrics(reg prometheus.Registerer, src Source) *Metrics {
	m := &Metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imgate_dns_queries_total", Help: "DNS queries by type and result.",
		}, []string{"type", "result"}),
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imgate_dns_answers_total", Help: "Gateway answers (DNS and HTTPDNS) by the client's region.",
		}, []string{"region"}),
		httpdns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imgate_httpdns_requests_total", Help: "HTTPDNS requests by result.",
		}, []string{"result"}),
	}
	if reg == nil {
		return m
	}
	count := func(draining bool) func() float64 {
		return func() float64 {
			n := 0
			now := time.Now()
			for _, st := range src.Nodes() {
				if draining && st.Draining || !draining && healthy(st, now) {
					n++
				}
			}
			return float64(n)
		}
	}
	reg.MustRegister(m.queries, m.answers, m.httpdns,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "imgate_dns_nodes", Help: "Gateway nodes known and in service.", ConstLabels: prometheus.Labels{"state": "healthy"},
		}, count(false)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "imgate_dns_nodes", Help: "Gateway nodes known and in service.", ConstLabels: prometheus.Labels{"state": "draining"},
		}, count(true)),
	)
	return m
}
