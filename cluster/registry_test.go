package cluster

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

func userNodes(t testing.TB, n *testNode, uid string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	es, err := n.User(ctx, uid)
	if err != nil {
		return []string{"error: " + err.Error()}
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Node+"/"+e.Device)
	}
	slices.Sort(out)
	return out
}

func waitUser(t testing.TB, n *testNode, uid string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(testWait)
	for {
		got := userNodes(t, n, uid)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry for %s = %q, want %q", uid, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Auth and close write the registry; queries by user, region, room and the
// counts see every node; a node that dies without a goodbye loses its
// entries within two liveness intervals.
func TestRegistry(t *testing.T) {
	e := startBus(t)
	a := startNode(t, e, "a", nil)
	px := newProxy(t, e.srv.Addr().String())
	b := startNode(t, e, "b", func(c *Config) { c.NATS = []string{px.url()}; c.Region = "r2" })

	phone := dial(t, "alice", "phone", a.tcp)
	desk := dial(t, "alice", "desk", b.tcp)
	bob := dial(t, "bob", "phone", b.tcp)
	for _, c := range []*testClient{phone, desk, bob} {
		c.join(t, "lobby")
	}
	waitUser(t, a, "alice", "a/phone", "b/desk")
	waitUser(t, b, "bob", "b/phone")

	waitFor(t, "counts from heartbeats", func() bool {
		c := a.Counts()
		return c.Connections == 3 && c.Nodes == 2 && c.ByNode["b"] == 2 && c.ByRegion["r1"] == 1 && c.ByRegion["r2"] == 2
	})
	ctx := context.Background()
	total, es, err := a.Region(ctx, "r2", 0, 1)
	if err != nil || total != 2 || len(es) != 1 {
		t.Fatalf("region r2: total %d, page %v, %v", total, es, err)
	}
	total, ms, err := a.Room(ctx, "lobby", 1, 5)
	if err != nil || total != 3 || len(ms) != 2 || ms[0].Node != "b" {
		t.Fatalf("room lobby page 1..: total %d, %+v, %v", total, ms, err)
	}
	lines, err := a.admin(t).Do(ctx, "ONLINE", "alice").StringSlice()
	if err != nil || len(lines) != 2 {
		t.Fatalf("ONLINE alice = %q, %v", lines, err)
	}
	// The paged admin queries, with redis-protocol arguments.
	for _, tc := range []struct {
		args []any
		want int
	}{
		{[]any{"ROOMUSERS", "lobby"}, 3},
		{[]any{"ROOMUSERS", "lobby", "1", "1"}, 1},
		{[]any{"REGIONUSERS", "r2"}, 2},
		{[]any{"REGIONUSERS", "r1", "0", "5"}, 1},
	} {
		lines, err := a.admin(t).Do(ctx, tc.args...).StringSlice()
		if err != nil || len(lines) != tc.want {
			t.Errorf("%v = %q, %v; want %d lines", tc.args, lines, err, tc.want)
		}
	}
	if err := a.admin(t).Do(ctx, "ROOMUSERS", "lobby", "x").Err(); err == nil {
		t.Error("ROOMUSERS with a bad offset: no error")
	}

	desk.Close()
	waitUser(t, a, "alice", "a/phone")

	// b is cut off from NATS: it keeps serving its own clients.
	px.cut()
	waitFor(t, "b disconnected", func() bool { return !b.nc.IsConnected() })
	if n, err := b.admin(t).Do(ctx, "PUSH", "bob", "local").Int(); err != nil || n != 1 {
		t.Fatalf("local push during the outage: %d, %v", n, err)
	}
	bob.waitPayloads(t, "local")
	// a sees b as dead after the liveness interval and removes its entries.
	start := time.Now()
	waitUser(t, a, "bob")
	if d := time.Since(start); d > 2*a.cfg.Liveness+time.Second {
		t.Errorf("b's entries removed after %v", d)
	}
	dave := dial(t, "dave", "phone", b.tcp) // logs in while b is cut off
	// Back on the bus, b writes its entries again.
	px.heal()
	waitUser(t, a, "bob", "b/phone")
	waitUser(t, a, "dave", "b/phone")
	_ = dave

	// A clean stop removes the node's entries at once.
	b.stop()
	waitUser(t, a, "bob")
	if a.registry.resyncs.Load() == 0 || b.registry.resyncs.Load() < 2 {
		t.Logf("resyncs: a %d, b %d", a.registry.resyncs.Load(), b.registry.resyncs.Load())
	}
}

// A user the registry lists as online is reachable: the entry is written
// once the node's subscription to the user is confirmed, so a backend that
// pushes as soon as it sees the user in the registry reaches it.
func TestRegistryListsReachableUsers(t *testing.T) {
	e := startBus(t)
	a := startNode(t, e, "a", nil)
	b := startNode(t, e, "b", nil)
	pusher := NewPusher(e.mustConn(t), "")
	for i := range 10 {
		uid := fmt.Sprintf("reach-%d", i)
		c := dial(t, uid, "phone", b.tcp)
		waitUser(t, a, uid, "b/phone")
		if err := pusher.User(uid, Message{Payload: []byte("first")}); err != nil {
			t.Fatal(err)
		}
		c.waitPayloads(t, "first")
		c.Close()
	}
}
