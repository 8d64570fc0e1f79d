package steer

import (
	"net/netip"
	"net/url"
	"sort"
	"time"

	"imgate/cluster"
)

// Source lists the cluster's live nodes: a cluster.Node inside a gateway,
// a cluster.Watcher in the standalone daemon.
type Source interface {
	Nodes() []cluster.NodeStatus
}

// Rank orders the nodes a client of region should try: draining, leaving
// and dead nodes dropped; the client's region first, then its fallback
// regions in order, then every other node; within each group by load
// ascending, ties by node id. now judges death by each node's announced
// liveness interval (the source applies the same rule; this catches a
// stale snapshot).
func Rank(nodes []cluster.NodeStatus, region string, fallback []string, now time.Time) []cluster.NodeStatus {
	group := make(map[string]int, len(fallback)+1)
	if region != "" {
		group[region] = 0
	}
	for i, f := range fallback {
		if _, ok := group[f]; !ok {
			group[f] = i + 1
		}
	}
	rest := len(fallback) + 1
	groupOf := func(st cluster.NodeStatus) int {
		if g, ok := group[st.Region]; ok {
			return g
		}
		return rest
	}
	out := make([]cluster.NodeStatus, 0, len(nodes))
	for _, st := range nodes {
		if healthy(st, now) {
			out = append(out, st)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		gi, gj := groupOf(out[i]), groupOf(out[j])
		if gi != gj {
			return gi < gj
		}
		if out[i].Load != out[j].Load {
			return out[i].Load < out[j].Load
		}
		return out[i].Node < out[j].Node
	})
	return out
}

// healthy: in service and heard within its liveness interval.
func healthy(st cluster.NodeStatus, now time.Time) bool {
	if st.Draining || st.Bye || st.Node == "" {
		return false
	}
	if st.IntervalMS > 0 && !st.Heard.IsZero() && now.Sub(st.Heard) > time.Duration(st.IntervalMS)*time.Millisecond {
		return false
	}
	return true
}

// hostAddrs returns the IP hosts of ranked nodes' endpoints of one family
// (IPv6 when v6), deduplicated, in rank order, at most limit. Names and
// addresses of the other family are skipped: DNS answers carry addresses.
func hostAddrs(ranked []cluster.NodeStatus, v6 bool, limit int) []netip.Addr {
	var out []netip.Addr
	for _, st := range ranked {
		for _, raw := range st.Endpoints {
			u, err := url.Parse(raw)
			if err != nil {
				continue
			}
			a, err := netip.ParseAddr(u.Hostname())
			if err != nil {
				continue
			}
			a = a.Unmap()
			if a.Is6() != v6 || a.IsUnspecified() || contains(out, a) {
				continue
			}
			out = append(out, a)
			if len(out) >= limit {
				return out
			}
		}
	}
	return out
}

func contains(list []netip.Addr, a netip.Addr) bool {
	for _, b := range list {
		if a == b {
			return true
		}
	}
	return false
}

// Endpoint is one entry of an HTTPDNS answer.
type Endpoint struct {
	Node   string  `json:"node"`
	Region string  `json:"region"`
	URL    string  `json:"url"`
	Load   float64 `json:"load"`
}

// endpoints lists ranked nodes' client URLs of transport (every URL when
// transport is ""), in rank order.
func endpoints(ranked []cluster.NodeStatus, transport string) []Endpoint {
	out := []Endpoint{}
	for _, st := range ranked {
		for _, raw := range st.Endpoints {
			u, err := url.Parse(raw)
			if err != nil || (transport != "" && u.Scheme != transport) {
				continue
			}
			out = append(out, Endpoint{Node: st.Node, Region: st.Region, URL: raw, Load: st.Load})
		}
	}
	return out
}
