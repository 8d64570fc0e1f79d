package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// With two bus paths, a node and a publisher each lose one path (its
// connection cut, as when a NATS server dies) in the middle of steady
// traffic: the client gets every message once, in order.
func TestTwoPathsLoseNothing(t *testing.T) {
	e := startBus(t)
	target := e.srv.Addr().String()
	nodeA, nodeB := newProxy(t, target), newProxy(t, target)
	a := startNode(t, e, "a", func(c *Config) { c.NATS = []string{nodeA.url(), nodeB.url()} })
	if len(a.paths.Conns()) != 2 {
		t.Fatalf("paths: %d", len(a.paths.Conns()))
	}
	c := dial(t, "alice", "phone", a.tcp)
	c.join(t, "lobby")

	pubA, pubB := newProxy(t, target), newProxy(t, target)
	cfg := testConfig("pub")
	cfg.NATS = []string{pubA.url(), pubB.url()}
	paths, err := ConnectPaths(cfg, "pub", nil, testLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(paths.Close)
	pusher := NewPathPusher(paths, "")

	// Wait until the room's subscription is live on both of a's paths.
	waitFor(t, "probe", func() bool {
		pusher.Room("lobby", Message{Payload: []byte("probe")})
		time.Sleep(20 * time.Millisecond)
		return len(c.payloads()) > 0
	})
	time.Sleep(Recovering)
	base := len(c.payloads())
	want := c.payloads()
	const total = 400
	for i := range total {
		if i == total/3 {
			nodeA.cut() // a's primary path
		}
		if i == total/2 {
			pubA.cut() // the publisher's path
		}
		if err := pusher.Room("lobby", Message{Payload: []byte(fmt.Sprint(i))}); err != nil && err != nats.ErrReconnectBufExceeded {
			t.Fatal(err)
		}
		want = append(want, fmt.Sprint(i))
		time.Sleep(time.Millisecond)
	}
	c.waitPayloads(t, want...)
	t.Logf("%d messages, %d before, duplicates dropped by a: %d", total, base, a.stats.duplicates.Load())
}
