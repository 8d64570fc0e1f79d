package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"imgate/proto"
)

// A push to a user reaches every connection of the user on every node,
// once; a room push reaches members on every node once, in order; pushes
// accepted by one node's admin port reach the other nodes and are not
// delivered twice on their own node.
func TestCrossNodePush(t *testing.T) {
	e := startBus(t)
	a := startNode(t, e, "a", nil)
	b := startNode(t, e, "b", nil)

	alicePhone := dial(t, "alice", "phone", a.tcp)
	aliceDesk := dial(t, "alice", "desk", b.tcp)
	bob := dial(t, "bob", "phone", b.tcp)
	for _, c := range []*testClient{alicePhone, aliceDesk, bob} {
		c.join(t, "lobby")
	}
	waitFor(t, "user subscriptions", func() bool {
		_, ua := a.interest.counts()
		_, ub := b.interest.counts()
		return ua == 1 && ub == 2
	})

	pusher := NewPusher(e.mustConn(t), "")
	for i := range 20 {
		if err := pusher.Room("lobby", Message{Payload: []byte(fmt.Sprintf("r%d", i))}); err != nil {
			t.Fatal(err)
		}
	}
	var want []string
	for i := range 20 {
		want = append(want, fmt.Sprintf("r%d", i))
	}
	for _, c := range []*testClient{alicePhone, aliceDesk, bob} {
		c.waitPayloads(t, want...)
	}

	if err := pusher.User("alice", Message{Payload: []byte("u1")}); err != nil {
		t.Fatal(err)
	}
	alicePhone.waitPayloads(t, append(want, "u1")...)
	aliceDesk.waitPayloads(t, append(want, "u1")...)

	// Through a node's admin port: local delivery plus the relay, no echo.
	ctx := context.Background()
	if n, err := a.admin(t).Do(ctx, "PUSH", "alice", "u2").Int(); err != nil || n != 1 {
		t.Fatalf("PUSH on a = %d, %v", n, err)
	}
	if n, err := a.admin(t).Do(ctx, "ROOMPUSH", "lobby", "r20").Int(); err != nil || n != 1 {
		t.Fatalf("ROOMPUSH on a = %d, %v", n, err)
	}
	if n, err := b.admin(t).Do(ctx, "BROADCAST", "all").Int(); err != nil || n != 2 {
		t.Fatalf("BROADCAST on b = %d, %v", n, err)
	}
	// r20 and all come from different nodes' operators: each arrives
	// once, in no particular order between them.
	for _, c := range []*testClient{alicePhone, aliceDesk} {
		waitFor(t, "u2, r20 and all", func() bool { return len(c.payloads()) >= len(want)+4 })
	}
	waitFor(t, "r20 and all", func() bool { return len(bob.payloads()) >= len(want)+2 })
	for _, c := range []*testClient{alicePhone, aliceDesk} {
		got := c.payloads()
		tail := slices.Sorted(slices.Values(got[len(want)+2:]))
		if !slices.Equal(got[:len(want)+2], append(want, "u1", "u2")) || !slices.Equal(tail, []string{"all", "r20"}) {
			t.Fatalf("alice got %q", got)
		}
	}
	if got := slices.Sorted(slices.Values(bob.payloads()[len(want):])); !slices.Equal(got, []string{"all", "r20"}) {
		t.Fatalf("bob got %q", bob.payloads())
	}

	// Leaving drops the node's room subscription once its last member goes.
	ctx2, cancel := context.WithTimeout(ctx, testWait)
	defer cancel()
	if err := alicePhone.Leave(ctx2, "lobby"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "room unsubscribed on a", func() bool { r, _ := a.interest.counts(); return r == 0 })

	// Control over the bus: a backend kicks bob wherever he is.
	if err := pusher.Kick("bob", "test"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-bob.Closed():
	case <-time.After(testWait):
		t.Fatal("bob was not kicked")
	}
	if pe := codeOf(bob.Err()); pe != proto.CodeKicked {
		t.Fatalf("bob stopped with %v", bob.Err())
	}
}

// Uplinks become requests on <p>.svc.<svid>: balanced over the backends of
// the queue group, with clear errors for no backend, a timeout and a
// backend's error.
func TestSVIDRouting(t *testing.T) {
	e := startBus(t)
	a := startNode(t, e, "a", nil)
	nc := e.mustConn(t)
	served := map[string]int{}
	var mu sync.Mutex
	var seen Request
	for _, name := range []string{"b1", "b2"} {
		name := name
		be, err := ServeSVID(nc, "", 7, name, func(r Request) ([]byte, error) {
			switch string(r.Payload) {
			case "fail":
				return nil, errors.New("it broke")
			case "busy":
				return nil, proto.Errorf(proto.CodeRateLimited, "slow down")
			case "sleep":
				time.Sleep(2 * time.Second)
			}
			mu.Lock()
			seen = r
			mu.Unlock()
			return append([]byte(name+":"), r.Payload...), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { be.Close() })
	}
	nc.Flush()
	c := dial(t, "carol", "tab", a.tcp)
	ctx := context.Background()
	for i := range 40 {
		reply, err := c.Request(ctx, 7, []byte(fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		name, _, _ := strings.Cut(string(reply), ":")
		served[name]++
	}
	if served["b1"] == 0 || served["b2"] == 0 {
		t.Fatalf("not balanced: %v", served)
	}
	mu.Lock()
	defer mu.Unlock()
	if seen.UID != "carol" || seen.Device != "tab" || seen.Node != "a" || seen.SVID != 7 || len(seen.Conn) != 16 || seen.Transport != "tcp" {
		t.Fatalf("request metadata: %+v", seen)
	}
	for _, tc := range []struct {
		svid    uint32
		payload string
		code    proto.Code
	}{
		{8, "x", proto.CodeNoHandler},
		{7, "fail", proto.CodeBackendError},
		{7, "busy", proto.CodeRateLimited},
		{7, "sleep", proto.CodeTimeout},
	} {
		_, err := c.Request(ctx, tc.svid, []byte(tc.payload))
		if codeOf(err) != tc.code {
			t.Errorf("svid %d %q: %v, want %v", tc.svid, tc.payload, err, tc.code)
		}
	}
}
