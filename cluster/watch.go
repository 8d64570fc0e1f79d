package cluster

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Watcher follows the nodes' heartbeats without being a node: the view of
// the cluster that processes outside it (the smart-DNS daemon) rank nodes
// from. It applies the nodes' own liveness rule: a node not heard for the
// interval it announces (interval_ms, else the watcher's default) is dead,
// and a "bye" heartbeat removes it at once. It never touches the registry:
// reaping is the nodes' job.
type Watcher struct {
	liveness time.Duration
	subs     []*nats.Subscription

	mu    sync.Mutex
	peers map[string]NodeStatus // by <node>.<boot>
}

// Watch subscribes to every heartbeat under prefix on each of conns (a
// node's two bus paths, or one connection). liveness is the default
// interval for heartbeats that do not announce theirs.
func Watch(conns []*nats.Conn, prefix string, liveness time.Duration) (*Watcher, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if liveness <= 0 {
		liveness = DefaultConfig().Liveness
	}
	w := &Watcher{liveness: liveness, peers: make(map[string]NodeStatus)}
	subj := NewSubjects(prefix)
	for _, nc := range conns {
		// Heartbeats come on both paths: the map keeps the latest either way.
		sub, err := nc.Subscribe(subj.Heartbeats(), w.onHeartbeat)
		if err != nil {
			w.Close()
			return nil, err
		}
		w.subs = append(w.subs, sub)
	}
	return w, nil
}

func (w *Watcher) onHeartbeat(m *nats.Msg) {
	var st NodeStatus
	if json.Unmarshal(m.Data, &st) != nil || st.Node == "" {
		return
	}
	st.Heard = time.Now()
	k := incarnation(st.Node, st.Boot)
	w.mu.Lock()
	if st.Bye {
		delete(w.peers, k)
	} else {
		w.peers[k] = st
	}
	w.mu.Unlock()
}

// Nodes returns the live nodes, draining ones included, by node id.
func (w *Watcher) Nodes() []NodeStatus {
	now := time.Now()
	w.mu.Lock()
	out := make([]NodeStatus, 0, len(w.peers))
	for k, st := range w.peers {
		age := now.Sub(st.Heard)
		live := w.liveness
		if st.IntervalMS > 0 {
			live = time.Duration(st.IntervalMS) * time.Millisecond
		}
		switch {
		case age <= live:
			out = append(out, st)
		case age > 3*live:
			delete(w.peers, k) // long gone: forget it
		}
	}
	w.mu.Unlock()
	sortNodes(out)
	return out
}

// Close unsubscribes.
func (w *Watcher) Close() {
	for _, s := range w.subs {
		_ = s.Unsubscribe()
	}
}
