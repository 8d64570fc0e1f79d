package cluster

import (
	"github.com/prometheus/client_golang/prometheus"
)

// collectors exports the node's cluster counters to the gateway's
// Prometheus registry. They read the same atomics INFO does, at scrape
// time: nothing is counted twice on the delivery path.
func (n *Node) collectors() []prometheus.Collector {
	counter := func(name, help string, v func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "imgate", Subsystem: "cluster", Name: name, Help: help}, v)
	}
	gauge := func(name, help string, v func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "imgate", Subsystem: "cluster", Name: name, Help: help}, v)
	}
	u := func(f func() uint64) func() float64 { return func() float64 { return float64(f()) } }
	h := n.handoff
	return []prometheus.Collector{
		gauge("bus_connected", "1 while the primary bus path is connected to NATS.", func() float64 {
			if n.nc.IsConnected() {
				return 1
			}
			return 0
		}),
		counter("bus_reconnects_total", "Reconnects of the primary bus path.", u(func() uint64 { return n.nc.Stats().Reconnects })),
		counter("bus_messages_in_total", "Bus messages received for local delivery (every path).", u(n.stats.busIn.Load)),
		counter("bus_duplicates_total", "Bus messages dropped as already delivered (the other path's copy, or a hand-over overlap).", u(n.stats.duplicates.Load)),
		gauge("inbound_queued", "Bus messages waiting for local delivery on the primary path.", func() float64 { return float64(len(n.inbound[0])) }),
		gauge("room_subscriptions", "Room subjects this node subscribes (rooms with a local member).", func() float64 { r, _ := n.interest.counts(); return float64(r) }),
		gauge("user_subscriptions", "User subjects this node subscribes (users with a local connection or a held hand-over).", func() float64 { _, us := n.interest.counts(); return float64(us) }),
		counter("relayed_total", "Pushes from this node's admin port or HTTP API published to the other nodes.", u(n.stats.relayed.Load)),
		counter("relay_errors_total", "Relays that failed to publish.", u(n.stats.relayErrors.Load)),
		counter("svid_requests_total", "Uplinks sent to backends over the bus.", u(n.stats.requests.Load)),
		counter("svid_errors_total", "Uplinks answered with an error (no backend, backend error).", u(n.stats.requestErrors.Load)),
		counter("svid_timeouts_total", "Uplinks whose backend did not answer in time.", u(n.stats.requestTimeouts.Load)),
		gauge("registry_ready", "1 once the online registry is synchronised.", func() float64 {
			if n.registry.ready.Load() {
				return 1
			}
			return 0
		}),
		counter("registry_writes_total", "Online-registry writes.", u(n.registry.writes.Load)),
		counter("registry_resyncs_total", "Registry resynchronisations after a bus outage.", u(n.registry.resyncs.Load)),
		counter("registry_dropped_ops_total", "Registry operations dropped because the queue was full (a resync repairs them).", u(n.registry.dropped.Load)),
		gauge("nodes", "Live nodes this node hears, itself included.", func() float64 { return float64(len(n.live.nodes())) }),
		gauge("nodes_draining", "Live nodes that are draining.", func() float64 {
			d := 0
			for _, st := range n.live.nodes() {
				if st.Draining {
					d++
				}
			}
			return float64(d)
		}),
		counter("nodes_reaped_total", "Dead nodes whose registry entries this node removed.", func() float64 {
			n.live.mu.Lock()
			defer n.live.mu.Unlock()
			return float64(n.live.reaped)
		}),
		counter("handoff_held_total", "Drained connections whose pushes this node held for their next node.", u(h.held.Load)),
		counter("handoff_claimed_total", "Holds claimed by the drained client's next node.", u(h.claimed.Load)),
		counter("handoff_unclaimed_total", "Claims by moved clients that found no hold (their old node held nothing or was gone).", u(h.unclaimed.Load)),
		counter("handoff_expired_total", "Holds dropped unclaimed at the end of the hold window or at exit.", u(h.expired.Load)),
		counter("handoff_dropped_total", "Held pushes dropped because a hold passed handoff_bytes (oldest first).", u(h.dropped.Load)),
		counter("handoff_delivered_total", "Pushes this node delivered by the hand-over: held ones after a claim, and forwarded late ones it had not seen.", u(h.delivered.Load)),
		counter("handoff_shared_total", "Claims for a user who already had another connection on this node (held pushes go to the moved connection alone, without the gate).", u(h.shared.Load)),
		counter("handoff_forwarded_total", "Pushes that reached this (draining) node after a claim, forwarded to the moved connection.", u(h.forwarded.Load)),
	}
}
