package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"imgate/proto"
	"imgate/transport"
)

// metrics are the gateway's Prometheus series. Each Server has its own
// registry so that tests can run several servers in one process. Counters on
// the fan-out path are bumped once per publish, never once per recipient.
type metrics struct {
	reg *prometheus.Registry

	connsOpened       *prometheus.CounterVec                // by transport
	connsClosed       *prometheus.CounterVec                // by reason
	framesIn          *prometheus.CounterVec                // by op
	framesInByOp      [proto.OpClose + 1]prometheus.Counter // resolved once: no label lookup per frame
	framesOut         prometheus.Counter
	bytesIn           prometheus.Counter
	bytesOut          prometheus.Counter
	pushes            *prometheus.CounterVec // by kind: conn, user, users, room, all
	badFrames         *prometheus.CounterVec // by code
	authFailures      *prometheus.CounterVec // by code
	heartbeatTimeouts prometheus.Counter
	authTimeouts      prometheus.Counter
	slowConsumers     prometheus.Counter
	kicks             prometheus.Counter
	replaced          prometheus.Counter
	uplinks           prometheus.Counter
	uplinkErrors      *prometheus.CounterVec // by code
	fanoutSeconds     prometheus.Histogram
}

func newMetrics(s *Server) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "imgate", Name: name, Help: help})
		f(c)
		return c
	}
	vec := func(name, help, label string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "imgate", Name: name, Help: help}, []string{label})
		f(c)
		return c
	}
	m.connsOpened = vec("connections_opened_total", "Connections accepted, by transport.", "transport")
	m.connsClosed = vec("connections_closed_total", "Connections closed, by reason.", "reason")
	m.framesIn = vec("frames_in_total", "Frames received from clients, by op.", "op")
	for op := proto.OpAuth; op <= proto.OpClose; op++ {
		m.framesInByOp[op] = m.framesIn.WithLabelValues(op.String())
	}
	m.framesOut = counter("frames_out_total", "Frames queued to clients (a room push counts once per recipient).")
	m.bytesIn = counter("bytes_in_total", "Frame bytes received from clients.")
	m.bytesOut = counter("bytes_out_total", "Frame bytes queued to clients (per recipient).")
	m.pushes = vec("pushes_total", "Downlink pushes, by target kind.", "kind")
	m.badFrames = vec("bad_frames_total", "Connections closed for bad input, by code.", "code")
	m.authFailures = vec("auth_failures_total", "Failed authentications, by code.", "code")
	m.heartbeatTimeouts = counter("heartbeat_timeouts_total", "Connections closed after two silent heartbeat intervals.")
	m.authTimeouts = counter("auth_timeouts_total", "Connections closed for not authenticating in time.")
	m.slowConsumers = counter("slow_consumer_drops_total", "Connections closed because their outbound queue overflowed.")
	m.kicks = counter("kicks_total", "Connections kicked by an operator or backend.")
	m.replaced = counter("replaced_total", "Connections closed because the same user and device logged in again.")
	m.uplinks = counter("uplinks_total", "Uplink requests received.")
	m.uplinkErrors = vec("uplink_errors_total", "Uplink requests answered with an error, by code.", "code")
	m.fanoutSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "imgate", Name: "fanout_seconds",
		Help:    "Time from publish until the last recipient's write of a room or node-wide push was issued.",
		Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
	})
	f(m.fanoutSeconds)

	conns := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "imgate", Name: "connections", Help: "Open connections, by transport."}, []string{"transport"})
	f(gaugeFunc{conns, func() { s.fillConnGauge(conns) }})
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "imgate", Name: "users_online", Help: "Distinct authenticated users on this node."},
		func() float64 { _, u := s.reg.Counts(); return float64(u) }))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "imgate", Name: "draining", Help: "1 while the node drains (lame duck: no new connections, clients closed with SHUTDOWN), else 0."},
		func() float64 {
			if s.Draining() {
				return 1
			}
			return 0
		}))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "imgate", Name: "rooms", Help: "Rooms with at least one member on this node."},
		func() float64 { return float64(s.hub.RoomCount()) }))
	// The engine starts after the metrics: resolve its counters per scrape.
	for _, c := range []struct {
		name, help string
		v          func(*transport.KCPStats) int64
	}{
		{"kcp_fec_rebuilt_total", "KCP datagrams lost on the way and rebuilt from FEC parity.", func(k *transport.KCPStats) int64 { return k.FECRebuilt.Load() }},
		{"kcp_sessions_refused_total", "New KCP sessions refused over the embryonic-session limit.", func(k *transport.KCPStats) int64 { return k.Refused.Load() }},
		{"kcp_resets_total", "CLOSE datagrams sent for data of sessions this node does not know.", func(k *transport.KCPStats) int64 { return k.Resets.Load() }},
		{"kcp_migrations_total", "KCP sessions that moved to a new client address.", func(k *transport.KCPStats) int64 { return k.Migrations.Load() }},
	} {
		f(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "imgate", Name: c.name, Help: c.help},
			func() float64 { return float64(c.v(&s.EngineStats().KCP)) }))
	}
	f(engineCollector{s,
		prometheus.NewDesc("imgate_udp_bad_datagrams_total", "Datagrams a UDP listener (QUIC, KCP) dropped because they belong to no connection (garbage, probes, wrong version...), by transport and reason.", []string{"transport", "reason"}, nil),
		prometheus.NewDesc("imgate_handshake_failures_total", "Transport handshakes (TLS, QUIC) that failed, by transport and reason (alpn, tls, timeout, refused, peer, other).", []string{"transport", "reason"}, nil),
	})
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// engineCollector reports the transport engine's counters at scrape time,
// for the kinds the node listens on.
type engineCollector struct {
	s               *Server
	bad, handshakes *prometheus.Desc
}

func (c engineCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.bad
	ch <- c.handshakes
}

func (c engineCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.EngineStats()
	seen := map[transport.Kind]bool{}
	for _, l := range c.s.Listeners() {
		k := l.Kind()
		if seen[k] || k == transport.KindTCP || k == transport.KindWS {
			continue // plain TCP and WebSocket have no handshake to fail and no datagrams
		}
		seen[k] = true
		if k.Datagrams() {
			for _, r := range transport.DropReasons {
				ch <- prometheus.MustNewConstMetric(c.bad, prometheus.CounterValue, float64(st.BadDatagrams(k, r)), k.String(), r.String())
			}
		}
		for _, f := range transport.HandshakeFailures {
			ch <- prometheus.MustNewConstMetric(c.handshakes, prometheus.CounterValue, float64(st.Handshakes(k, f)), k.String(), f.String())
		}
	}
}

// gaugeFunc refreshes a gauge vector just before each scrape.
type gaugeFunc struct {
	*prometheus.GaugeVec
	refresh func()
}

func (g gaugeFunc) Collect(ch chan<- prometheus.Metric) {
	g.refresh()
	g.GaugeVec.Collect(ch)
}

func (s *Server) fillConnGauge(g *prometheus.GaugeVec) {
	counts := s.ConnsByTransport()
	for _, k := range transport.Kinds {
		g.WithLabelValues(k.String()).Set(float64(counts[k.String()]))
	}
}
