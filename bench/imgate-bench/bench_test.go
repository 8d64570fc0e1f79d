package main

import (
	"os"
	"testing"
	"time"

	"imgate/bench/load"
	"imgate/bench/report"
	"imgate/gateway"
)

// The test binary doubles as the generator child when asked to.
func TestMain(m *testing.M) {
	if os.Getenv("IMGATE_BENCH_GENERATOR") == "1" {
		runGenerator()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestRoomPlan(t *testing.T) {
	cases := []struct {
		plan roomPlan
		i    int
		want []string
	}{
		{roomPlan{Kind: "none"}, 5, nil},
		{roomPlan{Kind: "fanout", Small: 10}, 3, []string{"fan", "fan-small"}},
		{roomPlan{Kind: "fanout", Small: 10}, 10, []string{"fan"}},
		{roomPlan{Kind: "idle"}, 1234, []string{"idle234"}},
		{roomPlan{Kind: "groups", Size: 20}, 41, []string{"g2"}},
	}
	for _, tc := range cases {
		got := tc.plan.rooms(tc.i)
		if len(got) != len(tc.want) {
			t.Fatalf("%+v member %d: %v, want %v", tc.plan, tc.i, got, tc.want)
		}
		for k := range got {
			if got[k] != tc.want[k] {
				t.Fatalf("%+v member %d: %v, want %v", tc.plan, tc.i, got, tc.want)
			}
		}
	}
}

func TestStepVerdict(t *testing.T) {
	fast := report.NewHistogram()
	fast.Record(10 * time.Millisecond)
	slow := report.NewHistogram()
	slow.Record(900 * time.Millisecond)
	ok := load.Outcome{Expected: 10, Received: 10}
	cases := []struct {
		name string
		st   step
		want bool
	}{
		{"clean", step{rate: 10, sent: 30, publish: 3 * time.Second, out: ok, lat: fast}, true},
		{"p99 over 500ms", step{rate: 10, sent: 30, publish: 3 * time.Second, out: ok, lat: slow}, false},
		{"lost", step{rate: 10, sent: 30, publish: 3 * time.Second, out: load.Outcome{Expected: 10, Received: 9, Lost: 1}, lat: fast}, false},
		{"receiver cut", step{rate: 10, sent: 30, publish: 3 * time.Second, out: ok, lat: fast, dropped: 1}, false},
		{"publisher fell behind", step{rate: 10, sent: 30, publish: 5 * time.Second, out: ok, lat: fast}, false},
	}
	for _, tc := range cases {
		if got := tc.st.passed(); got != tc.want {
			t.Errorf("%s: passed %v, want %v", tc.name, got, tc.want)
		}
	}
}

// Members spread over three generator processes report as one: every
// delivery counted once, latencies merged, auth times merged.
func TestGeneratorsAggregate(t *testing.T) {
	if testing.Short() {
		t.Skip("starts generator processes")
	}
	t.Setenv("IMGATE_BENCH_GENERATOR", "1")
	cfg := gateway.DefaultConfig()
	cfg.Listen = []string{"tcp://127.0.0.1:0"}
	cfg.AdminAddr, cfg.HTTPAddr, cfg.DataDir = "127.0.0.1:0", "", t.TempDir()
	cfg.Auth.Keys = []gateway.KeyConfig{{ID: "k", Alg: "HS256", Secret: "generator-test-secret-0123456789abcdef"}}
	s, err := gateway.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	target := load.Target{TCP: s.Listeners()[0].Addr().String(), Admin: s.AdminAddr(), Key: cfg.Auth.Keys[0]}

	b := &bench{o: options{src: "127.0.0.2-127.0.0.4", perGenerator: 20}, progress: report.NewProgress(os.Stderr)}
	const members, msgs = 60, 10
	rx, err := b.open(openSpec{Target: target, Transport: "tcp", N: members, Plan: roomPlan{Kind: "fanout", Small: members}}, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	if g, ok := rx.(*generators); !ok || len(g.children) != 3 {
		t.Fatalf("want 3 generators, got %T", rx)
	}
	if n := rx.AuthTime().Count(); n != members {
		t.Fatalf("auth times %d, want %d", n, members)
	}
	admin, err := load.DialAdmin(target.Admin, "")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	rx.Begin(0)
	payload := make([]byte, 128)
	for i := 0; i < msgs; i++ {
		load.Stamp(payload, uint64(i))
		admin.RoomPush("fan", payload)
	}
	admin.Flush()
	if !rx.WaitTotal(members*msgs, 10*time.Second) {
		t.Fatalf("received %d of %d", rx.Received(), members*msgs)
	}
	if o := rx.ResultTotal(members * msgs); !o.OK() {
		t.Fatalf("%+v", o)
	}
	if n := rx.Latency().Count(); n != members*msgs {
		t.Fatalf("merged latency samples %d", n)
	}
}

// baddata against an in-process gateway: every garbage datagram sent is
// rejected and counted by the node, and a cost per datagram comes out.
func TestBadData(t *testing.T) {
	cfg := gateway.DefaultConfig()
	cfg.Listen = []string{"quic://127.0.0.1:0"}
	cfg.AdminAddr, cfg.HTTPAddr, cfg.DataDir = "", "127.0.0.1:0", t.TempDir()
	cfg.Auth.Keys = []gateway.KeyConfig{{ID: "k", Alg: "HS256", Secret: "baddata-test-secret-0123456789abcdef"}}
	s, err := gateway.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	srcs, _ := load.ParseSources("127.0.0.2-127.0.0.4")
	b := &bench{o: options{badN: 3000, badRate: 10000, out: t.TempDir()}, srcs: srcs, progress: report.NewProgress(os.Stderr), results: report.NewResults(), table: &report.Table{}}
	g := &node{pid: os.Getpid(), target: load.Target{HTTP: s.HTTPAddr(), QUIC: s.Listeners()[0].Addr().String()}}
	ns, err := b.badDatagrams(g, "quic", g.target.QUIC)
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := g.badCount("quic"); !ok || n != 3000 {
		t.Fatalf("the node counted %d (reported: %v), want 3000", n, ok)
	}
	if ns <= 0 {
		t.Fatalf("%v ns per datagram", ns)
	}
}
