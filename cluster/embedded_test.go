package cluster

import (
	"fmt"
	"testing"
	"time"
)

// Two embedded servers form one NATS cluster (several `imgate all` nodes,
// no separate NATS): a room push through one node reaches members on both.
func TestEmbeddedCluster(t *testing.T) {
	free := func() string {
		px := newProxy(t, "127.0.0.1:1") // only to reserve a free port number
		px.ln.Close()
		return px.addr
	}
	r1, r2 := free(), free()
	start := func(name, listen, route string) *Embedded {
		e, err := StartEmbedded(EmbeddedConfig{Listen: "127.0.0.1:0", ClusterName: "emb", ClusterListen: listen,
			Routes: []string{"nats-route://" + route}}, name, t.TempDir(), testLog())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.Close)
		return e
	}
	e1 := start("e1", r1, r2)
	e2 := start("e2", r2, r1)
	waitFor(t, "route between the embedded servers", func() bool {
		return e1.srv.NumRoutes() > 0 && e2.srv.NumRoutes() > 0
	})
	a := startNode(t, e1, "a", func(c *Config) { c.Replicas = 1 })
	b := startNode(t, e2, "b", func(c *Config) { c.Replicas = 1 })
	ca := dial(t, "alice", "phone", a.tcp)
	cb := dial(t, "bob", "phone", b.tcp)
	ca.join(t, "lobby")
	cb.join(t, "lobby")
	pusher := NewPusher(e1.mustConn(t), "")
	var want []string
	waitFor(t, "probe through both servers", func() bool {
		pusher.Room("lobby", Message{Payload: []byte("probe")})
		time.Sleep(20 * time.Millisecond)
		return len(cb.payloads()) > 0 && len(ca.payloads()) > 0
	})
	time.Sleep(50 * time.Millisecond)
	base := cb.payloads()
	for i := range 10 {
		pusher.Room("lobby", Message{Payload: []byte(fmt.Sprint(i))})
		want = append(want, fmt.Sprint(i))
	}
	cb.waitPayloads(t, append(base, want...)...)
}
