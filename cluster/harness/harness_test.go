package harness

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"imgate/client"
	"imgate/cluster"
)

// The cluster as real processes: a 3-node NATS cluster of nats-server
// processes and 3 imgate gateway processes on loopback, real clients in this
// process. One cluster serves the subtests in order; the last two kill a
// NATS server and a gateway.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 3 nats-server and 3 imgate processes")
	}
	start := time.Now()
	c := newTestCluster(t)
	if err := c.StartNATS(3); err != nil {
		t.Fatal(err)
	}
	var gws []*Gateway
	for i := 1; i <= 3; i++ {
		g, err := c.StartGateway(fmt.Sprintf("g%d", i), fmt.Sprintf("r%d", i))
		if err != nil {
			t.Fatal(err)
		}
		gws = append(gws, g)
	}
	t.Logf("cluster up in %v", time.Since(start).Round(time.Millisecond))
	t.Run("delivery", func(t *testing.T) { testDelivery(t, c, gws) })
	t.Run("svid", func(t *testing.T) { testSVID(t, c, gws) })
	t.Run("nats-node-loss", func(t *testing.T) { testNATSNodeLoss(t, c, gws) })
	t.Run("gateway-kill", func(t *testing.T) { testGatewayKill(t, c, gws) })
	t.Run("drain", func(t *testing.T) { testDrain(t, c, gws[:2]) })
}

// newTestCluster builds the binaries into a fresh directory and returns an
// empty cluster that stops with the test, printing its processes' logs if
// the test failed.
func newTestCluster(t *testing.T) *Cluster {
	t.Helper()
	dir := t.TempDir()
	start := time.Now()
	bin, err := Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built imgate, imgate-echo and nats-server in %v", time.Since(start).Round(time.Millisecond))
	c := New(bin, dir)
	t.Cleanup(c.Close)
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range c.procs {
				t.Logf("--- %s (%s):\n%s", p.Name, p.Log, p.Tail(25))
			}
		}
	})
	return c
}

// member is a client recording its pushes.
type member struct {
	*client.Client
	name string
	mu   sync.Mutex
	got  []received
}

type received struct {
	payload string
	at      time.Time
}

func connect(t *testing.T, c *Cluster, uid, device string, gws ...*Gateway) *member {
	t.Helper()
	m := &member{name: uid + "/" + device}
	cfg := client.DefaultConfig()
	for _, g := range gws {
		cfg.Endpoints = append(cfg.Endpoints, "tcp://"+g.Addr())
	}
	tok, err := c.Token(uid, device)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Token = tok
	cfg.BackoffMin, cfg.BackoffMax = 100*time.Millisecond, time.Second
	cfg.OnPush = func(p client.Push) {
		now := time.Now()
		m.mu.Lock()
		m.got = append(m.got, received{string(p.Payload), now})
		m.mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", m.name, err)
	}
	m.Client = cl
	t.Cleanup(func() { cl.Close() })
	return m
}

// with returns the payloads starting with prefix, in arrival order.
func (m *member) with(prefix string) []received {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []received
	for _, r := range m.got {
		if strings.HasPrefix(r.payload, prefix) {
			out = append(out, r)
		}
	}
	return out
}

func (m *member) join(t *testing.T, room string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Join(ctx, room); err != nil {
		t.Fatalf("%s join %s: %v", m.name, room, err)
	}
}

// probe pushes to room until every member has heard a probe: interest has
// reached every NATS server.
func probe(t *testing.T, g *Gateway, room string, ms []*member) {
	t.Helper()
	ctx := context.Background()
	err := Wait(15*time.Second, func() bool {
		g.Do(ctx, "ROOMPUSH", room, "probe")
		time.Sleep(30 * time.Millisecond)
		for _, m := range ms {
			if len(m.with("probe")) == 0 {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("room %s: not every member hears probes", room)
	}
	time.Sleep(100 * time.Millisecond)
}

// expectSeq waits until m holds exactly prefix0..prefix(n-1), in order.
func expectSeq(t *testing.T, m *member, prefix string, n int, within time.Duration) []received {
	t.Helper()
	var got []received
	Wait(within, func() bool { got = m.with(prefix); return len(got) >= n })
	time.Sleep(50 * time.Millisecond) // a duplicate would come right behind
	got = m.with(prefix)
	if len(got) != n {
		seen := map[string]int{}
		for _, r := range got {
			p, _, _ := strings.Cut(r.payload, " ")
			seen[p]++
		}
		var missing, doubled []string
		for i := range n {
			switch k := prefix + strconv.Itoa(i); seen[k] {
			case 0:
				missing = append(missing, k)
			case 1:
			default:
				doubled = append(doubled, k)
			}
		}
		t.Fatalf("%s (on %s): %d %q messages, want %d; missing %v; repeated %v", m.name, m.NodeID(), len(got), prefix, n, missing, doubled)
	}
	for i, r := range got {
		if want := prefix + strconv.Itoa(i); !strings.HasPrefix(r.payload, want+" ") && r.payload != want {
			t.Fatalf("%s: message %d is %q, want %s (out of order, lost or duplicated)", m.name, i, r.payload, want)
		}
	}
	return got
}

// Cross-node unicast and room broadcast arrive exactly once and in order.
func testDelivery(t *testing.T, c *Cluster, gws []*Gateway) {
	var ms []*member
	for _, g := range gws {
		for i := range 4 {
			ms = append(ms, connect(t, c, fmt.Sprintf("%s-u%d", g.ID, i), "phone", g))
		}
	}
	phone := connect(t, c, "multi", "phone", gws[0])
	desk := connect(t, c, "multi", "desk", gws[2])
	ms = append(ms, phone, desk)
	for _, m := range ms {
		m.join(t, "all-hands")
	}
	probe(t, gws[1], "all-hands", ms)

	ctx := context.Background()
	const rooms, unicasts = 200, 100
	for i := range rooms {
		if err := gws[1].Do(ctx, "ROOMPUSH", "all-hands", fmt.Sprintf("room-%d", i)).Err(); err != nil {
			t.Fatal(err)
		}
		if i < unicasts {
			if err := gws[1].Do(ctx, "PUSH", "multi", fmt.Sprintf("uni-%d", i)).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, m := range ms {
		expectSeq(t, m, "room-", rooms, 10*time.Second)
	}
	expectSeq(t, phone, "uni-", unicasts, 10*time.Second)
	expectSeq(t, desk, "uni-", unicasts, 10*time.Second)
	var online struct{ Sessions []cluster.Entry }
	if err := gws[0].GetJSON("/cluster/user?uid=multi", &online); err != nil || len(online.Sessions) != 2 {
		t.Fatalf("registry for multi: %+v, %v", online, err)
	}
	t.Logf("%d room pushes to %d members on 3 nodes and %d unicasts to 2 devices on 2 nodes: each once, in order", rooms, len(ms), unicasts)
}

// SVID requests balance over 2 backends and survive one being killed.
func testSVID(t *testing.T, c *Cluster, gws []*Gateway) {
	e1, err := c.StartEcho("echo-1", 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.StartEcho("echo-2", 2); err != nil {
		t.Fatal(err)
	}
	m := connect(t, c, "requester", "phone", gws[1])
	ctx := context.Background()
	served := map[string]int{}
	for i := range 100 {
		reply, err := m.Request(ctx, 2, []byte(strconv.Itoa(i)))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		name, body, _ := strings.Cut(string(reply), ":")
		if body != strconv.Itoa(i) {
			t.Fatalf("request %d answered %q", i, reply)
		}
		served[name]++
	}
	if served["echo-1"] < 10 || served["echo-2"] < 10 {
		t.Fatalf("not balanced over two backends: %v", served)
	}
	// A request sent in the instant after the kill may still be routed to
	// the dead backend (NATS servers learn of the lost interest over their
	// routes a moment later): it times out, the client sees TIMEOUT.
	// Anything sent after that window must be served by the survivor.
	killed := time.Now()
	e1.Kill()
	after := map[string]int{}
	var lost []string
	for i := range 100 {
		sent := time.Now()
		reply, err := m.Request(ctx, 2, []byte(strconv.Itoa(i)))
		if err != nil {
			if sent.Sub(killed) > 500*time.Millisecond {
				t.Fatalf("request %d, %v after echo-1 was killed: %v", i, sent.Sub(killed), err)
			}
			lost = append(lost, err.Error())
			continue
		}
		name, _, _ := strings.Cut(string(reply), ":")
		after[name]++
	}
	if after["echo-2"] != 100-len(lost) {
		t.Fatalf("after the kill: %v", after)
	}
	_, err = m.Request(ctx, 99, []byte("x"))
	if err == nil || !strings.Contains(err.Error(), "NO_HANDLER") {
		t.Fatalf("svid without backend: %v", err)
	}
	t.Logf("before the kill %v; after SIGKILL of echo-1: %v; requests lost in the instant of the kill: %d %q", served, after, len(lost), lost)
}

// Killing one NATS server during steady traffic loses no message for
// clients of the gateways (all of which stay up).
func testNATSNodeLoss(t *testing.T, c *Cluster, gws []*Gateway) {
	var ms []*member
	for _, g := range gws {
		for i := range 3 {
			ms = append(ms, connect(t, c, fmt.Sprintf("steady-%s-%d", g.ID, i), "phone", g))
		}
	}
	for _, m := range ms {
		m.join(t, "steady")
	}
	probe(t, gws[0], "steady", ms)

	// A backend's publisher with two paths, like the route daemon's.
	cfg := cluster.DefaultConfig()
	cfg.NATS = c.NATSURLs()
	paths, err := cluster.ConnectPaths(cfg, "steady-publisher", nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer paths.Close()
	pusher := cluster.NewPathPusher(paths, "")
	// The victim: the server gateway g2's primary path is on.
	info, err := gws[1].Info()
	if err != nil {
		t.Fatal(err)
	}
	victim := c.NATS[0]
	for _, n := range c.NATS {
		if strings.HasSuffix(fmt.Sprint(info["bus_server"]), fmt.Sprintf(":%d", n.Port)) {
			victim = n
		}
	}
	const total = 1500
	var killed time.Time
	for i := range total {
		if i == total/3 {
			killed = time.Now()
			victim.Kill()
		}
		payload := fmt.Sprintf("steady-%d %d", i, time.Now().UnixNano())
		if err := pusher.Room("steady", cluster.Message{Payload: []byte(payload)}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	delayed, slowed, worst := 0, 0, time.Duration(0)
	for _, m := range ms {
		got := expectSeq(t, m, "steady-", total, 20*time.Second)
		for _, r := range got {
			_, sent, _ := strings.Cut(r.payload, " ")
			ns, _ := strconv.ParseInt(sent, 10, 64)
			lat := r.at.Sub(time.Unix(0, ns))
			worst = max(worst, lat)
			if lat > 100*time.Millisecond {
				delayed++
			}
			if lat > 20*time.Millisecond {
				slowed++
			}
		}
	}
	t.Logf("killed %s (g2's server) at message %d; %d members x %d messages: none lost, none repeated, in order; deliveries delayed over 20ms: %d, over 100ms: %d (worst %v)",
		victim.Name, total/3, len(ms), total, slowed, delayed, worst.Round(time.Millisecond))

	// The registry (a JetStream KV with 3 replicas) keeps working on the
	// two servers left: a login on every node is written and found.
	var late []*member
	for _, g := range gws {
		late = append(late, connect(t, c, "after-"+g.ID, "phone", g))
	}
	err = Wait(30*time.Second, func() bool {
		for _, g := range gws {
			var out struct{ Sessions []cluster.Entry }
			if gws[0].GetJSON("/cluster/user?uid=after-"+g.ID, &out) != nil || len(out.Sessions) != 1 {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatal("the registry did not record logins after the NATS server's loss")
	}
	t.Logf("registry writes and queries work on the 2 NATS servers left (%v after the kill)", time.Since(killed).Round(time.Millisecond))
	for _, m := range late {
		m.Close()
	}
}

// SIGKILL of a gateway: its clients move to the others within a bound,
// re-join their rooms, and the registry keeps no ghost of the dead node.
func testGatewayKill(t *testing.T, c *Cluster, gws []*Gateway) {
	g1, g2, g3 := gws[0], gws[1], gws[2]
	const n = 12
	var movers []*member
	for i := range n {
		// Clients list the nodes in different orders (as a real fleet
		// would get them), so the survivors share the reconnects.
		order := []*Gateway{g3, g1, g2}
		if i%2 == 1 {
			order = []*Gateway{g3, g2, g1}
		}
		m := connect(t, c, fmt.Sprintf("mover-%d", i), "phone", order...)
		m.join(t, "fail")
		movers = append(movers, m)
	}
	watcher := connect(t, c, "watcher", "phone", g1)
	watcher.join(t, "fail")
	regionCount := func(region string) int {
		var out struct{ Connections int }
		if err := g1.GetJSON("/cluster/region?name="+region+"&limit=0", &out); err != nil {
			return -1
		}
		return out.Connections
	}
	// After the NATS server's loss in the previous subtest, JetStream may
	// still be electing the registry stream's leader (seconds): allow it.
	if err := Wait(30*time.Second, func() bool { return regionCount("r3") == n }); err != nil {
		t.Fatalf("registry: %d entries in r3, want %d", regionCount("r3"), n)
	}

	killed := time.Now()
	g3.Kill()
	err := Wait(20*time.Second, func() bool {
		for _, m := range movers {
			if node := m.NodeID(); node == "g3" || m.Client.ConnID() == 0 {
				return false
			}
		}
		return true
	})
	moved := time.Since(killed)
	if err != nil {
		t.Fatalf("clients did not leave g3 within 20s")
	}
	if err := Wait(10*time.Second, func() bool { return regionCount("r3") == 0 }); err != nil {
		t.Fatalf("ghosts: %d registry entries of the dead node remain", regionCount("r3"))
	}
	cleaned := time.Since(killed)
	if cleaned > 2*c.Liveness+2*time.Second {
		t.Errorf("dead node's entries gone after %v; the bound is 2 liveness intervals (%v) plus query time", cleaned, 2*c.Liveness)
	}
	// Every mover is in the registry once, on a live node.
	for _, m := range movers {
		uid, _, _ := strings.Cut(m.name, "/")
		err := Wait(10*time.Second, func() bool {
			var out struct{ Sessions []cluster.Entry }
			if g1.GetJSON("/cluster/user?uid="+uid, &out) != nil || len(out.Sessions) != 1 {
				return false
			}
			return out.Sessions[0].Node == m.NodeID()
		})
		if err != nil {
			t.Fatalf("registry for %s did not converge on %s", uid, m.NodeID())
		}
	}
	// They are back in their room.
	probe(t, g2, "fail", append(movers, watcher))
	byNode := map[string]int{}
	for _, m := range movers {
		byNode[m.NodeID()]++
	}
	t.Logf("SIGKILL g3: %d clients moved to %v within %v; the dead node's registry entries were gone %v after the kill (liveness %v); rooms re-joined",
		n, byNode, moved.Round(time.Millisecond), cleaned.Round(time.Millisecond), c.Liveness)
}

// A drained node's clients end up on the other nodes, their reconnects
// spread over the drain period, and no push to them is lost, repeated or
// reordered: the pushes published while a client is between nodes are held
// by the draining node and claimed by the next (cluster/handoff.go).
func testDrain(t *testing.T, c *Cluster, others []*Gateway) {
	const period = 2 * time.Second
	g4, err := c.StartGateway("g4", "r1", fmt.Sprintf("drain_timeout = %q", period))
	if err != nil {
		t.Fatal(err)
	}
	const n = 16
	var ms []*member
	for i := range n {
		// g4 first; the others in alternating orders.
		order := []*Gateway{g4, others[i%2], others[(i+1)%2]}
		m := connect(t, c, fmt.Sprintf("drained-%d", i), "phone", order...)
		if m.NodeID() != "g4" {
			t.Fatalf("%s connected to %s, want g4", m.name, m.NodeID())
		}
		ms = append(ms, m)
	}
	cfg := cluster.DefaultConfig()
	cfg.NATS = c.NATSURLs()
	paths, err := cluster.ConnectPaths(cfg, "drain-publisher", nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer paths.Close()
	pusher := cluster.NewPathPusher(paths, "")

	// Record when each client leaves g4.
	moved := make([]time.Time, n)
	stopWatch := make(chan struct{})
	var watch sync.WaitGroup
	watch.Add(1)
	go func() {
		defer watch.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopWatch:
				return
			case now := <-tick.C:
				for i, m := range ms {
					if moved[i].IsZero() && m.NodeID() != "g4" && m.NodeID() != "" {
						moved[i] = now
					}
				}
			}
		}
	}()

	// Pushes to every client, every 10ms, from before the drain to after it.
	const rounds = 400
	ctx := context.Background()
	var drained time.Time
	for r := range rounds {
		if r == 50 {
			if err := g4.Do(ctx, "DRAIN", int(period/time.Second)).Err(); err != nil {
				t.Fatalf("DRAIN: %v", err)
			}
			drained = time.Now()
		}
		for i := range n {
			payload := fmt.Sprintf("d-%d %d", r, time.Now().UnixNano())
			if err := pusher.User(fmt.Sprintf("drained-%d", i), cluster.Message{Payload: []byte(payload)}); err != nil {
				t.Fatalf("push: %v", err)
			}
		}
		if r == 60 {
			// The draining node tells the cluster at once: its heartbeat
			// says draining, so the others (and DNS) stop handing it out.
			var out struct{ Nodes []cluster.NodeStatus }
			if err := others[0].GetJSON("/cluster/nodes", &out); err != nil {
				t.Fatal(err)
			}
			seen := false
			for _, st := range out.Nodes {
				if st.Node == "g4" {
					seen = st.Draining
				}
			}
			if !seen {
				t.Errorf("g4 is not listed as draining on %s 100ms into the drain: %+v", others[0].ID, out.Nodes)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stopWatch)
	watch.Wait()

	byNode := map[string]int{}
	var after []time.Duration
	for i, m := range ms {
		expectSeq(t, m, "d-", rounds, 15*time.Second)
		if moved[i].IsZero() {
			t.Fatalf("%s never left g4", m.name)
		}
		byNode[m.NodeID()]++
		after = append(after, moved[i].Sub(drained))
	}
	slices.Sort(after)
	first, median, last := after[0], after[n/2], after[n-1]
	// The closes go out at period*i/n: the first at once, the last one
	// step before the end. Spread means the reconnects cover most of the
	// period, not a burst at its start.
	if last-first < period/2 || median < period/4 || median > 3*period/4 {
		t.Errorf("reconnects not spread over the %v drain: first %v, median %v, last %v", period, first, median, last)
	}
	if err := Wait(10*time.Second, g4.Exited); err != nil {
		t.Errorf("g4 did not exit after its drain")
	}
	handed := 0
	for _, g := range others {
		info, err := g.Info()
		if err != nil {
			t.Fatal(err)
		}
		h, _ := info["handoff_delivered"].(float64)
		handed += int(h)
	}
	t.Logf("DRAIN %v on g4: %d clients moved to %v; reconnects after the DRAIN: first %v, median %v, last %v; %d pushes each during it: none lost, none repeated, in order; %d pushes were held by g4 and handed to the new nodes",
		period, n, byNode, first.Round(time.Millisecond), median.Round(time.Millisecond), last.Round(time.Millisecond), rounds, handed)
}
