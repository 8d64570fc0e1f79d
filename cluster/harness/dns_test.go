package harness

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"imgate/client"
)

// Smart DNS with real processes: gateways in two regions, each advertising
// its own loopback address, and an `imgate dns` process following their
// heartbeats. dig sees each region's clients sent to their own gateway
// first; a gateway drained over its admin port (redis-cli DRAIN) leaves
// the answers at once; with the other killed, the responder says
// SERVFAIL. A Go client locates gateways through HTTPDNS.
func TestSmartDNS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nats-server, 2 imgate gateways and imgate dns")
	}
	if _, err := exec.LookPath("dig"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("dig not found and CI is set: install dnsutils (.ci/run does)")
		}
		t.Skip("dig not installed (apt-get install dnsutils)")
	}
	c := newTestCluster(t)
	if err := c.StartNATS(1); err != nil {
		t.Fatal(err)
	}
	// Each gateway listens on its own loopback address, which its
	// heartbeats advertise (IMGATE_LISTEN overrides the harness's listen
	// when the process starts; port 0 picks one).
	t.Setenv("IMGATE_LISTEN", "tcp://127.0.0.11:0")
	eu, err := c.StartGateway("eu1", "eu")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("IMGATE_LISTEN", "tcp://127.0.0.12:0")
	us, err := c.StartGateway("us1", "us", "[dns]\n[[dns.region]]\nname = \"eu\"\ncidrs = [\"10.1.0.0/16\"]\n[[dns.region]]\nname = \"us\"\ncidrs = [\"10.2.0.0/16\"]")
	if err != nil {
		t.Fatal(err)
	}
	d, err := c.StartDNS("dns", `zone = "gw.test"`, `ttl = "3s"`,
		"[[dns.region]]\nname = \"eu\"\ncidrs = [\"10.1.0.0/16\"]\nfallback = [\"us\"]",
		"[[dns.region]]\nname = \"us\"\ncidrs = [\"10.2.0.0/16\"]\nfallback = [\"eu\"]")
	if err != nil {
		t.Fatal(err)
	}
	dig := func(args ...string) (string, []string) {
		out, err := exec.Command("dig", append([]string{"@127.0.0.1", "-p", fmt.Sprint(d.Port), "+norecurse", "+time=2", "+tries=1", "gw.test", "A"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("dig: %v\n%s", err, out)
		}
		status := ""
		var addrs []string
		for _, line := range strings.Split(string(out), "\n") {
			if _, s, ok := strings.Cut(line, "status: "); ok {
				status, _, _ = strings.Cut(s, ",")
			}
			if f := strings.Fields(line); len(f) == 5 && f[3] == "A" && !strings.HasPrefix(line, ";") {
				addrs = append(addrs, f[4])
			}
		}
		return status, addrs
	}
	region := func(subnet string) []string { _, a := dig("+subnet=" + subnet); return a }
	if err := Wait(10*time.Second, func() bool { return len(region("10.1.0.0/16")) == 2 }); err != nil {
		t.Fatalf("dns never saw both gateways: %v", region("10.1.0.0/16"))
	}
	if got := region("10.1.0.0/16"); !reflect.DeepEqual(got, []string{"127.0.0.11", "127.0.0.12"}) {
		t.Errorf("eu clients get %v", got)
	}
	if got := region("10.2.0.0/16"); !reflect.DeepEqual(got, []string{"127.0.0.12", "127.0.0.11"}) {
		t.Errorf("us clients get %v", got)
	}

	// HTTPDNS on a gateway's API and on the dns process: the same ranking.
	var ans struct {
		Region    string
		Endpoints []struct{ Node, URL string }
	}
	if err := us.GetJSON("/v1/endpoints?transport=tcp&ip=10.1.2.3", &ans); err != nil {
		t.Fatal(err)
	}
	if ans.Region != "eu" || len(ans.Endpoints) != 2 || ans.Endpoints[0].Node != "eu1" || !strings.HasPrefix(ans.Endpoints[0].URL, "tcp://127.0.0.11:") {
		t.Errorf("gateway HTTPDNS: %+v", ans)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", us.HTTP))
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`imgate_httpdns_requests_total{result="ok"} 1`, `imgate_dns_answers_total{region="eu"} 1`, `imgate_dns_nodes{state="healthy"} 2`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("gateway /metrics lacks %s", want)
		}
	}
	// A client that locates its gateway by HTTPDNS (from 127.0.0.1: no
	// region, so the least loaded; both are empty, so by node id: eu1).
	cfg := client.DefaultConfig()
	cfg.EndpointsFunc = client.HTTPDNS(fmt.Sprintf("http://127.0.0.1:%d", d.HTTP), "tcp")
	cfg.Token, _ = c.Token("alice", "phone")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if cl.NodeID() != "eu1" {
		t.Errorf("HTTPDNS client on %q, want eu1", cl.NodeID())
	}

	// Drain eu1: its heartbeat says so at once, and it leaves the answers.
	start := time.Now()
	if err := eu.Do(ctx, "DRAIN", "5").Err(); err != nil {
		t.Fatal(err)
	}
	if err := Wait(5*time.Second, func() bool { return reflect.DeepEqual(region("10.1.0.0/16"), []string{"127.0.0.12"}) }); err != nil {
		t.Fatalf("drained eu1 still handed out: %v", region("10.1.0.0/16"))
	}
	t.Logf("drained gateway out of DNS answers %v after DRAIN", time.Since(start).Round(time.Millisecond))
	// The client, closed with SHUTDOWN, asks HTTPDNS again and moves to us1.
	if err := Wait(10*time.Second, func() bool { return cl.NodeID() == "us1" }); err != nil {
		t.Errorf("client still on %q after the drain", cl.NodeID())
	}

	// Kill us1: no healthy gateway after the liveness interval: SERVFAIL.
	us.Kill()
	killed := time.Now()
	if err := Wait(3*c.Liveness, func() bool { s, _ := dig("+subnet=10.2.0.0/16"); return s == "SERVFAIL" }); err != nil {
		s, a := dig("+subnet=10.2.0.0/16")
		t.Fatalf("after us1's death: %s %v, want SERVFAIL", s, a)
	}
	t.Logf("dead gateway out of DNS answers %v after SIGKILL (liveness %v)", time.Since(killed).Round(time.Millisecond), c.Liveness)
}
