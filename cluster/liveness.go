package cluster

import (
	"context"
	"encoding/json"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Node liveness: every node publishes a heartbeat on <p>.hb.<node> every
// third of the liveness interval, with its counts; every node listens to
// all of them. A node incarnation silent for a whole interval is dead: every
// node that sees it so purges its registry entries (one idempotent request)
// and its node key. Incarnations found only in the nodes bucket (dead before
// this node started) are judged the same way once this node has listened
// for an interval. A node judges nothing until it has been connected to the
// bus for an interval itself, so its own outage does not make the others
// look dead. Removal completes within about 1⅓ intervals of the last
// heartbeat, inside the 2 the design allows.

// NodeStatus is a heartbeat's body, and a node's description in queries.
type NodeStatus struct {
	Node       string    `json:"node"`
	Boot       string    `json:"boot"`
	Region     string    `json:"region"`
	Started    time.Time `json:"started"`
	Conns      int       `json:"conns"`
	Users      int       `json:"users"`
	Rooms      int       `json:"rooms"`
	IntervalMS int64     `json:"interval_ms"`
	// Draining: the node is leaving service; DNS and HTTPDNS skip it.
	Draining bool `json:"draining,omitempty"`
	// Endpoints are the client URLs of its listeners (tcp://ip:port, ...).
	Endpoints []string `json:"endpoints,omitempty"`
	// Load is connections over the node's configured capacity.
	Load  float64   `json:"load"`
	Bye   bool      `json:"bye,omitempty"` // the node is stopping and has removed its entries
	Heard time.Time `json:"heard"`         // when this node last heard it (set by the listener)
}

type liveness struct {
	n         *Node
	started   time.Time
	endpoints []string // set at Start
	wake      chan struct{}

	mu        sync.Mutex
	peers     map[string]NodeStatus // by <node>.<boot> key
	connected time.Time             // since when the bus has been up without a break; zero while down
	subs      []*nats.Subscription
	reaped    uint64
	seen      map[string]time.Time // when a bucket key was first listed here
	dupWarned time.Time
}

func newLiveness(n *Node) *liveness {
	return &liveness{n: n, started: time.Now(), wake: make(chan struct{}, 1), peers: make(map[string]NodeStatus), seen: make(map[string]time.Time)}
}

func incarnation(node, boot string) string { return Token(node) + "." + boot }

func (l *liveness) start() error {
	for _, nc := range l.n.paths.Conns() {
		sub, err := nc.Subscribe(l.n.subj.Heartbeats(), l.onHeartbeat)
		if err != nil {
			return err
		}
		l.subs = append(l.subs, sub)
	}
	return nil
}

func (l *liveness) onHeartbeat(m *nats.Msg) {
	var st NodeStatus
	if json.Unmarshal(m.Data, &st) != nil || st.Node == "" {
		return
	}
	k := incarnation(st.Node, st.Boot)
	if k == incarnation(l.n.cfg.NodeID, l.n.boot) {
		return
	}
	if st.Node == l.n.cfg.NodeID && !st.Bye && time.Since(l.started) > l.n.cfg.Liveness {
		// Another live process uses this node id: each would take the
		// other's registry entries for leftovers of a previous life.
		l.mu.Lock()
		warn := time.Since(l.dupWarned) > time.Minute
		if warn {
			l.dupWarned = time.Now()
		}
		l.mu.Unlock()
		if warn {
			l.n.log.Error("cluster: another live node uses this node id; give every node its own node_id", "other_boot", st.Boot)
		}
	}
	st.Heard = time.Now()
	l.mu.Lock()
	if st.Bye {
		delete(l.peers, k)
	} else {
		l.peers[k] = st
	}
	l.mu.Unlock()
}

// status describes this node now.
func (l *liveness) status() NodeStatus {
	conns, users, rooms := l.n.srv.Counts()
	return NodeStatus{
		Node:       l.n.cfg.NodeID,
		Boot:       l.n.boot,
		Region:     l.n.cfg.Region,
		Started:    l.started,
		Conns:      conns,
		Users:      users,
		Rooms:      rooms,
		IntervalMS: l.n.cfg.Liveness.Milliseconds(),
		Draining:   l.n.srv.Draining(),
		Endpoints:  l.endpoints,
		Load:       float64(conns) / float64(l.n.cfg.Capacity),
		Heard:      time.Now(),
	}
}

func (l *liveness) beat(bye bool) {
	st := l.status()
	st.Bye = bye
	b, _ := json.Marshal(st)
	_, nc := l.n.paths.Active()
	_ = nc.Publish(l.n.subj.Heartbeat(l.n.cfg.NodeID), b)
}

// beatNow sends a heartbeat at once (the node began draining: the others,
// DNS and HTTPDNS should stop handing it out now, not a third of an
// interval later).
func (l *liveness) beatNow() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// goodbye tells the others this incarnation is leaving.
func (l *liveness) goodbye() {
	if l.n.paths.AnyUp() {
		l.beat(true)
	}
}

func (l *liveness) run(stop <-chan struct{}) {
	every := l.n.cfg.Liveness / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		now := time.Now()
		l.mu.Lock()
		up := l.n.paths.AnyUp()
		switch {
		case !up:
			l.connected = time.Time{}
		case l.connected.IsZero():
			l.connected = now
		}
		listened := up && now.Sub(l.connected) >= l.n.cfg.Liveness
		l.mu.Unlock()
		if up {
			l.beat(false)
		}
		if listened {
			l.reap(now)
		}
		select {
		case <-stop:
			return
		case <-t.C:
		case <-l.wake:
		}
	}
}

// reap removes dead incarnations.
func (l *liveness) reap(now time.Time) {
	ctx, cancel := context.WithTimeout(l.n.ctx, l.n.cfg.Liveness)
	defer cancel()
	r := l.n.registry
	r.checkSelf(ctx)
	keys, err := r.incarnations(ctx)
	if err != nil {
		return
	}
	self := incarnation(l.n.cfg.NodeID, l.n.boot)
	l.mu.Lock()
	var dead []string
	listed := make(map[string]bool, len(keys))
	for _, k := range keys {
		listed[k] = true
		if k == self {
			continue
		}
		first, ok := l.seen[k]
		if !ok {
			first = now
			l.seen[k] = now
		}
		// A key never heard is judged from when it was first listed: a
		// node that just started may have written it before its first
		// heartbeat arrived.
		last := first
		if st, heard := l.peers[k]; heard && st.Heard.After(last) {
			last = st.Heard
		}
		if now.Sub(last) > l.n.cfg.Liveness {
			dead = append(dead, k)
		}
	}
	for k := range l.seen {
		if !listed[k] {
			delete(l.seen, k)
		}
	}
	// Peers silent for long and already gone from the bucket.
	for k, st := range l.peers {
		if now.Sub(st.Heard) > 3*l.n.cfg.Liveness {
			delete(l.peers, k)
		}
	}
	l.mu.Unlock()
	for _, k := range dead {
		tok, boot, ok := strings.Cut(k, ".")
		node, ok2 := ParseToken(tok)
		if !ok || !ok2 {
			continue
		}
		if err := r.reap(ctx, node, boot); err != nil {
			l.n.log.Warn("cluster: reap", "dead", node, "boot", boot, "err", err)
			continue
		}
		l.mu.Lock()
		delete(l.peers, k)
		l.reaped++
		l.mu.Unlock()
		l.n.log.Warn("cluster: node is gone; its registry entries were removed", "dead", node, "boot", boot)
	}
}

// nodes returns this node and every live peer, by node id.
func (l *liveness) nodes() []NodeStatus {
	out := []NodeStatus{l.status()}
	now := time.Now()
	l.mu.Lock()
	for _, st := range l.peers {
		if now.Sub(st.Heard) <= l.n.cfg.Liveness {
			out = append(out, st)
		}
	}
	l.mu.Unlock()
	sortNodes(out)
	return out
}

// sortNodes orders statuses by node id, then incarnation.
func sortNodes(out []NodeStatus) {
	sort.Slice(out, func(i, j int) bool {
		if out[i].Node != out[j].Node {
			return out[i].Node < out[j].Node
		}
		return out[i].Boot < out[j].Boot
	})
}
