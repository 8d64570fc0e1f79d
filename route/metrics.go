package route

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metricsCollector exports each bridge's counters at scrape time, labelled
// by SVID; the request path only bumps the bridge's atomics.
type metricsCollector struct{ d *Daemon }

var (
	descRequests = prometheus.NewDesc("imgate_route_requests_total",
		"Uplinks a bridge took from the bus, by SVID and result: served (endpoint answered 2xx), failed (endpoint error or timeout), refused (concurrency limit or open circuit).",
		[]string{"svid", "result"}, nil)
	descInFlight = prometheus.NewDesc("imgate_route_in_flight",
		"Requests a bridge has open to its endpoint.", []string{"svid"}, nil)
	descBreaker = prometheus.NewDesc("imgate_route_breaker_open",
		"1 while a bridge's circuit breaker is open (its endpoint is given a rest).", []string{"svid"}, nil)
)

func (m metricsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRequests
	ch <- descInFlight
	ch <- descBreaker
}

func (m metricsCollector) Collect(ch chan<- prometheus.Metric) {
	for _, b := range m.d.bridges {
		svid := strconv.FormatUint(uint64(b.cfg.SVID), 10)
		ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(b.served.Load()), svid, "served")
		ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(b.failed.Load()), svid, "failed")
		ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(b.refused.Load()), svid, "refused")
		ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(b.inFlight.Load()), svid)
		open := 0.0
		if !b.healthy() {
			open = 1
		}
		ch <- prometheus.MustNewConstMetric(descBreaker, prometheus.GaugeValue, open, svid)
	}
}

// registry is the daemon's own: when `imgate all` runs it beside a
// gateway, each keeps its /metrics (the Go and process series then appear
// on both).
func (d *Daemon) registry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(metricsCollector{d},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "imgate_route_bus_connected", Help: "1 while the route daemon is connected to NATS."}, func() float64 {
			if d.nc.IsConnected() {
				return 1
			}
			return 0
		}))
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}
