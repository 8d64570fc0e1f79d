package steer

import (
	"reflect"
	"testing"
	"time"

	"imgate/cluster"
)

func node(id, region string, load float64, endpoints ...string) cluster.NodeStatus {
	return cluster.NodeStatus{Node: id, Region: region, Load: load, Endpoints: endpoints, IntervalMS: 3000, Heard: time.Now()}
}

func ids(nodes []cluster.NodeStatus) []string {
	out := []string{}
	for _, n := range nodes {
		out = append(out, n.Node)
	}
	return out
}

func TestRank(t *testing.T) {
	now := time.Now()
	draining := node("d", "eu", 0)
	draining.Draining = true
	bye := node("b", "eu", 0)
	bye.Bye = true
	dead := node("x", "eu", 0)
	dead.Heard = now.Add(-4 * time.Second)
	nodes := []cluster.NodeStatus{
		node("us-2", "us", 0.5), node("us-1", "us", 0.5), node("eu-1", "eu", 0.9), node("eu-2", "eu", 0.1),
		node("ap-1", "ap", 0.0), node("sa-1", "sa", 0.2), draining, bye, dead,
	}
	for _, c := range []struct {
		name     string
		region   string
		fallback []string
		want     []string
	}{
		{"own region by load, then the rest by load", "eu", nil, []string{"eu-2", "eu-1", "ap-1", "sa-1", "us-1", "us-2"}},
		{"fallback order before the rest", "eu", []string{"us", "sa"}, []string{"eu-2", "eu-1", "us-1", "us-2", "sa-1", "ap-1"}},
		{"region without nodes: fallback first", "af", []string{"sa"}, []string{"sa-1", "ap-1", "eu-2", "us-1", "us-2", "eu-1"}},
		{"no region: by load", "", nil, []string{"ap-1", "eu-2", "sa-1", "us-1", "us-2", "eu-1"}},
		{"fallback naming own region", "eu", []string{"eu", "ap"}, []string{"eu-2", "eu-1", "ap-1", "sa-1", "us-1", "us-2"}},
	} {
		if got := ids(Rank(nodes, c.region, c.fallback, now)); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
	if got := Rank([]cluster.NodeStatus{draining, bye, dead}, "eu", nil, now); len(got) != 0 {
		t.Errorf("unhealthy nodes ranked: %v", ids(got))
	}
}

func TestHostAddrs(t *testing.T) {
	ranked := []cluster.NodeStatus{
		node("a", "eu", 0, "tcp://10.0.0.1:7100", "ws://10.0.0.1:7101/ws", "quic://[2001:db8::1]:7103"),
		node("b", "eu", 0, "tcp://gw-b.example.com:7100", "tcp://[::ffff:10.0.0.2]:7100"),
		node("c", "eu", 0, "tcp://10.0.0.3:7100", "tcp://0.0.0.0:7100", "%zz"),
		node("d", "eu", 0, "tcp://10.0.0.4:7100"),
	}
	for _, c := range []struct {
		v6    bool
		limit int
		want  []string
	}{
		{false, 10, []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"}},
		{false, 2, []string{"10.0.0.1", "10.0.0.2"}},
		{true, 10, []string{"2001:db8::1"}},
	} {
		var got []string
		for _, a := range hostAddrs(ranked, c.v6, c.limit) {
			got = append(got, a.String())
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("v6=%v limit=%d: got %v, want %v", c.v6, c.limit, got, c.want)
		}
	}
	eps := endpoints(ranked[:1], "quic")
	if len(eps) != 1 || eps[0].URL != "quic://[2001:db8::1]:7103" || eps[0].Node != "a" {
		t.Errorf("quic endpoints %+v", eps)
	}
	if n := len(endpoints(ranked, "")); n != 8 {
		t.Errorf("all endpoints: %d, want 8", n)
	}
}
