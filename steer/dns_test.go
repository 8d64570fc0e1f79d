package steer

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"imgate/cluster"
)

var testRegions = []Region{
	{Name: "eu", CIDRs: []string{"10.1.0.0/16", "127.0.0.2/32"}, Fallback: []string{"us"}},
	{Name: "us", CIDRs: []string{"10.2.0.0/16", "127.0.0.3/32"}},
	{Name: "ap", CIDRs: []string{"10.3.0.0/16", "2001:db8:3::/48"}},
}

func testDNSConfig() Config {
	c := DefaultConfig()
	c.Listen = "127.0.0.1:0"
	c.Zone = "gw.test"
	c.Hostnames = []string{"gw.test", "push.gw.test"}
	c.Nameservers = []Nameserver{{Name: "ns1.gw.test", Addrs: []string{"192.0.2.53", "2001:db8::53"}}}
	c.TTL = 7 * time.Second
	c.Regions = testRegions
	return c
}

func startResponder(t *testing.T, cfg Config, src Source) (*Responder, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	r, err := NewResponder(cfg, src, NewMetrics(reg, src), testLog())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r, reg
}

// Three gateways in two regions, and one in a third with IPv6 only.
func threeNodes(f *fakeCluster) {
	f.set(cluster.NodeStatus{Node: "eu-1", Region: "eu", Load: 0.5, Endpoints: []string{"tcp://10.0.1.1:7100", "quic://10.0.1.1:7103"}})
	f.set(cluster.NodeStatus{Node: "eu-2", Region: "eu", Load: 0.1, Endpoints: []string{"tcp://10.0.1.2:7100", "ws://10.0.1.2:7101/ws"}})
	f.set(cluster.NodeStatus{Node: "us-1", Region: "us", Load: 0.2, Endpoints: []string{"tcp://10.0.2.1:7100", "quic://[2001:db8:2::1]:7103"}})
}

func addrs(r digResult) []string {
	var out []string
	for _, a := range r.answers {
		_, data, _ := strings.Cut(a, " ")
		out = append(out, data)
	}
	return out
}

func TestResponderRegions(t *testing.T) {
	needDig(t)
	f, w := startFakeCluster(t)
	threeNodes(f)
	r, reg := startResponder(t, testDNSConfig(), w)
	waitFor(t, "three nodes known", func() bool { return len(w.Nodes()) == 3 })

	for _, c := range []struct {
		name   string
		args   []string
		want   []string
		subnet string
	}{
		{"ECS in eu: eu by load, then its fallback us", []string{"gw.test", "A", "+subnet=10.1.7.0/24"},
			[]string{"10.0.1.2", "10.0.1.1", "10.0.2.1"}, "10.1.7.0/24/32"},
		{"ECS in us: us, then the rest by load", []string{"gw.test", "A", "+subnet=10.2.0.0/16"},
			[]string{"10.0.2.1", "10.0.1.2", "10.0.1.1"}, "10.2.0.0/16/32"},
		{"ECS outside the table: by load", []string{"gw.test", "A", "+subnet=198.51.100.0/24"},
			[]string{"10.0.1.2", "10.0.2.1", "10.0.1.1"}, "198.51.100.0/24/32"},
		{"ECS source 0: the resolver's address, scope 0", []string{"-b", "127.0.0.3", "gw.test", "A", "+subnet=0.0.0.0/0"},
			[]string{"10.0.2.1", "10.0.1.2", "10.0.1.1"}, "0.0.0.0/0/0"},
		{"no ECS: the source address (eu)", []string{"-b", "127.0.0.2", "gw.test", "A"},
			[]string{"10.0.1.2", "10.0.1.1", "10.0.2.1"}, ""},
		{"no ECS: the source address (us), over TCP", []string{"-b", "127.0.0.3", "+tcp", "gw.test", "A"},
			[]string{"10.0.2.1", "10.0.1.2", "10.0.1.1"}, ""},
		{"second hostname, any case", []string{"-b", "127.0.0.3", "PuSh.Gw.TeSt", "A"},
			[]string{"10.0.2.1", "10.0.1.2", "10.0.1.1"}, ""},
		{"AAAA: only nodes with an IPv6 endpoint", []string{"gw.test", "AAAA", "+subnet=10.1.0.0/16"},
			[]string{"2001:db8:2::1"}, "10.1.0.0/16/32"},
	} {
		t.Run(c.name, func(t *testing.T) {
			res := dig(t, r.Addr(), c.args...)
			if res.status != "NOERROR" || !reflect.DeepEqual(addrs(res), c.want) {
				t.Fatalf("status %s answers %v, want NOERROR %v\n%s", res.status, addrs(res), c.want, res.out)
			}
			if !strings.Contains(res.flags, "aa") || strings.Contains(res.flags, "ra") {
				t.Errorf("flags %q: want aa, not ra", res.flags)
			}
			for _, ttl := range res.ttls {
				if ttl != "7" {
					t.Errorf("ttl %s, want 7", ttl)
				}
			}
			if res.subnet != c.subnet {
				t.Errorf("client subnet echoed %q, want %q", res.subnet, c.subnet)
			}
		})
	}
	if got := testutil.ToFloat64(r.metrics.answers.WithLabelValues("eu")); got < 2 {
		t.Errorf("answers for eu counted %v", got)
	}
	n, err := testutil.GatherAndCount(reg, "imgate_dns_queries_total", "imgate_dns_nodes")
	if err != nil || n == 0 {
		t.Errorf("metrics: %d series, %v", n, err)
	}
}

func TestResponderOtherNames(t *testing.T) {
	needDig(t)
	f, w := startFakeCluster(t)
	threeNodes(f)
	r, _ := startResponder(t, testDNSConfig(), w)
	waitFor(t, "nodes known", func() bool { return len(w.Nodes()) == 3 })
	for _, c := range []struct {
		args    []string
		status  string
		answers []string
		auth    []string
	}{
		{[]string{"gw.test", "SOA"}, "NOERROR", []string{"SOA ns1.gw.test. hostmaster.gw.test."}, nil},
		{[]string{"gw.test", "NS"}, "NOERROR", []string{"NS ns1.gw.test."}, nil},
		{[]string{"ns1.gw.test", "A"}, "NOERROR", []string{"A 192.0.2.53"}, nil},
		{[]string{"ns1.gw.test", "AAAA"}, "NOERROR", []string{"AAAA 2001:db8::53"}, nil},
		{[]string{"gw.test", "MX"}, "NOERROR", nil, []string{"SOA"}},          // NODATA
		{[]string{"gw.test", "TXT", "+tcp"}, "NOERROR", nil, []string{"SOA"}}, // NODATA over TCP
		{[]string{"nope.gw.test", "A"}, "NXDOMAIN", nil, []string{"SOA"}},
		{[]string{"a.b.push.gw.test", "AAAA"}, "NXDOMAIN", nil, []string{"SOA"}},
		{[]string{"example.com", "A"}, "REFUSED", nil, nil},
		{[]string{"test", "SOA"}, "REFUSED", nil, nil}, // the parent zone
		{[]string{"-c", "CH", "version.bind", "TXT"}, "REFUSED", nil, nil},
	} {
		res := dig(t, r.Addr(), c.args...)
		var got []string
		for _, a := range res.answers {
			f := strings.Fields(a)
			got = append(got, strings.Join(f[:min(3, len(f))], " "))
		}
		if res.status != c.status || !reflect.DeepEqual(got, c.answers) || !reflect.DeepEqual(res.auth, c.auth) {
			t.Errorf("dig %v: %s %v auth %v, want %s %v auth %v\n%s", c.args, res.status, got, res.auth, c.status, c.answers, c.auth, res.out)
		}
	}
}

func TestResponderDrainAndFailover(t *testing.T) {
	needDig(t)
	f, w := startFakeCluster(t)
	threeNodes(f)
	cfg := testDNSConfig()
	cfg.MaxAnswers = 2
	r, _ := startResponder(t, cfg, w)
	eu := func() []string { return addrs(dig(t, r.Addr(), "gw.test", "A", "+subnet=10.1.0.0/16")) }
	waitFor(t, "nodes known", func() bool { return len(w.Nodes()) == 3 })
	if got := eu(); !reflect.DeepEqual(got, []string{"10.0.1.2", "10.0.1.1"}) {
		t.Fatalf("max_answers 2: %v", got)
	}

	// eu-2 begins draining: its next heartbeat says so and it is out.
	f.set(cluster.NodeStatus{Node: "eu-2", Region: "eu", Load: 0.1, Draining: true, Endpoints: []string{"tcp://10.0.1.2:7100"}})
	waitFor(t, "draining eu-2 left out", func() bool { return reflect.DeepEqual(eu(), []string{"10.0.1.1", "10.0.2.1"}) })

	// eu-1 dies: no goodbye, gone one liveness interval after its last beat.
	silent := time.Now()
	f.silence("eu-1")
	waitFor(t, "dead eu-1 left out", func() bool { return reflect.DeepEqual(eu(), []string{"10.0.2.1"}) })
	if d := time.Since(silent); d > 3*testLiveness {
		t.Errorf("eu-1 handed out for %s after its last heartbeat (liveness %s)", d, testLiveness)
	}

	// The last healthy node leaves: SERVFAIL, not an empty answer.
	f.silence("us-1")
	waitFor(t, "SERVFAIL with no healthy node", func() bool {
		return dig(t, r.Addr(), "gw.test", "A", "+subnet=10.1.0.0/16").status == "SERVFAIL"
	})
	// eu-2 comes back into service.
	f.set(cluster.NodeStatus{Node: "eu-2", Region: "eu", Load: 0.3, Endpoints: []string{"tcp://10.0.1.2:7100"}})
	waitFor(t, "eu-2 back", func() bool { return reflect.DeepEqual(eu(), []string{"10.0.1.2"}) })
	// No IPv6 endpoint anywhere: AAAA is NODATA, not SERVFAIL.
	res := dig(t, r.Addr(), "gw.test", "AAAA")
	if res.status != "NOERROR" || len(res.answers) != 0 || !reflect.DeepEqual(res.auth, []string{"SOA"}) {
		t.Errorf("AAAA without IPv6 nodes: %s %v %v\n%s", res.status, res.answers, res.auth, res.out)
	}
}

// A reload swaps regions, TTL and hostnames for the next query.
func TestResponderReload(t *testing.T) {
	needDig(t)
	f, w := startFakeCluster(t)
	threeNodes(f)
	cfg := testDNSConfig()
	r, _ := startResponder(t, cfg, w)
	waitFor(t, "nodes known", func() bool { return len(w.Nodes()) == 3 })
	before := dig(t, r.Addr(), "gw.test", "A", "+subnet=10.1.0.0/16")
	cfg.Regions = []Region{{Name: "us", CIDRs: []string{"10.1.0.0/16"}}}
	cfg.TTL = 2 * time.Second
	cfg.Hostnames = []string{"edge.gw.test"}
	if err := r.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	after := dig(t, r.Addr(), "edge.gw.test", "A", "+subnet=10.1.0.0/16")
	if addrs(before)[0] != "10.0.1.2" || addrs(after)[0] != "10.0.2.1" || after.ttls[0] != "2" {
		t.Errorf("before %v, after reload %v ttl %v", addrs(before), addrs(after), after.ttls)
	}
	if res := dig(t, r.Addr(), "push.gw.test", "A"); res.status != "NXDOMAIN" {
		t.Errorf("a hostname removed by the reload: %s", res.status)
	}
	cfg.Regions = []Region{{Name: "x", CIDRs: []string{"bad"}}}
	if r.Reload(cfg) == nil {
		t.Error("a bad table must be refused")
	}
}

// Garbage on both listeners costs nothing but the parse: the responder
// keeps answering.
func TestResponderGarbage(t *testing.T) {
	needDig(t)
	f, w := startFakeCluster(t)
	threeNodes(f)
	r, _ := startResponder(t, testDNSConfig(), w)
	waitFor(t, "nodes known", func() bool { return len(w.Nodes()) == 3 })
	udp, err := net.Dial("udp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 600)
	for i := range 500 {
		n := rng.IntN(len(buf))
		for j := range n {
			buf[j] = byte(rng.Uint32())
		}
		if i%2 == 0 && n > 12 { // half look like one-question queries
			copy(buf, []byte{0xab, 0xcd, 0x01, 0x00, 0x00, 0x01})
		}
		udp.Write(buf[:n])
	}
	tcp, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	tcp.Write([]byte{0xff, 0xff, 1, 2, 3}) // announces 65535 bytes, sends 3
	tcp.Close()
	if res := dig(t, r.Addr(), "gw.test", "A", "+subnet=10.2.0.0/16"); res.status != "NOERROR" || len(res.answers) != 3 {
		t.Fatalf("after garbage: %s %v", res.status, res.answers)
	}
}

func BenchmarkRespond(b *testing.B) {
	now := time.Now()
	var src staticSource
	for i := range 30 {
		src = append(src, cluster.NodeStatus{Node: fmt.Sprintf("n%02d", i), Region: []string{"eu", "us", "ap"}[i%3], Load: float64(i%7) / 10,
			Heard: now, IntervalMS: 3_600_000, Endpoints: []string{fmt.Sprintf("tcp://10.0.%d.1:7100", i), fmt.Sprintf("quic://10.0.%d.1:7103", i)}})
	}
	r, err := NewResponder(testDNSConfig(), src, nil, testLog())
	if err != nil {
		b.Fatal(err)
	}
	q := new(dns.Msg)
	q.SetQuestion("gw.test.", dns.TypeA)
	q.SetEdns0(1232, false)
	q.IsEdns0().Option = append(q.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.IPv4(10, 1, 7, 0).To4()})
	client := netip.MustParseAddr("192.0.2.1")
	b.ReportAllocs()
	for b.Loop() {
		if m := r.respond(q, client, false); len(m.Answer) != 4 {
			b.Fatal(m)
		}
	}
}
