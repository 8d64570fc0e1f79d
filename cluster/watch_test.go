package cluster

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// A Watcher outside the cluster sees real nodes' heartbeats: their
// endpoints, a drain the moment it begins, a clean stop at once, and a
// silent node gone after its liveness interval.
func TestWatcher(t *testing.T) {
	e := startBus(t)
	w, err := Watch([]*nats.Conn{e.mustConn(t)}, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	a := startNode(t, e, "a", nil)
	b := startNode(t, e, "b", func(c *Config) { c.Region = "r2" })
	byID := func() map[string]NodeStatus {
		out := map[string]NodeStatus{}
		for _, st := range w.Nodes() {
			out[st.Node] = st
		}
		return out
	}
	waitFor(t, "both nodes watched", func() bool { return len(byID()) == 2 })
	st := byID()["b"]
	if st.Region != "r2" || len(st.Endpoints) != 1 || st.Draining || st.IntervalMS != testConfig("b").Liveness.Milliseconds() {
		t.Fatalf("b as watched: %+v", st)
	}

	start := time.Now()
	a.srv.Drain(10 * time.Second)
	waitFor(t, "a draining", func() bool { return byID()["a"].Draining })
	if d := time.Since(start); d > testConfig("a").Liveness/3 {
		t.Errorf("drain seen after %v: the heartbeat should go at once", d)
	}

	b.stop() // bye
	waitFor(t, "b gone after its goodbye", func() bool { _, ok := byID()["b"]; return !ok })

	// a stops beating without a goodbye (its bus paths cut).
	a.paths.Close()
	cut := time.Now()
	waitFor(t, "a gone after its liveness", func() bool { return len(byID()) == 0 })
	if d := time.Since(cut); d < testConfig("a").Liveness/2 {
		t.Errorf("a dropped %v after its last beat, before its liveness interval", d)
	}
}
