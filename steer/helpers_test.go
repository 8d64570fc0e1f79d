package steer

import (
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"imgate/cluster"
)

// The responder tests run against the real thing: an embedded NATS server,
// heartbeats published on it the way gateways publish them, a
// cluster.Watcher following them, and the real dig talking to the
// responder over UDP and TCP.

const testLiveness = 600 * time.Millisecond

func testLog() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.DiscardHandler)
}

// needDig returns dig's path. Without it the test skips, except under CI,
// where a missing tool must not pass for a green run (.ci/run installs it).
func needDig(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("dig")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("dig not found and CI is set: install dnsutils (.ci/run does)")
		}
		t.Skip("dig not installed (apt-get install dnsutils): skipping the responder tests")
	}
	return p
}

// fakeCluster publishes heartbeats for nodes it is told about, every third
// of testLiveness, like gateways do.
type fakeCluster struct {
	nc   *nats.Conn
	mu   sync.Mutex
	live map[string]cluster.NodeStatus
	wake chan struct{}
}

func startFakeCluster(t *testing.T) (*fakeCluster, *cluster.Watcher) {
	t.Helper()
	bus, err := cluster.StartEmbedded(cluster.EmbeddedConfig{Listen: "127.0.0.1:0"}, "steer-test", t.TempDir(), testLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Close)
	pub, err := nats.Connect(bus.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	sub, err := nats.Connect(bus.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	w, err := cluster.Watch([]*nats.Conn{sub}, "", testLiveness)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}
	f := &fakeCluster{nc: pub, live: map[string]cluster.NodeStatus{}, wake: make(chan struct{}, 1)}
	stop := make(chan struct{})
	done := make(chan struct{})
	t.Cleanup(func() { close(stop); <-done })
	go func() {
		defer close(done)
		tick := time.NewTicker(testLiveness / 3)
		defer tick.Stop()
		for {
			f.beat()
			select {
			case <-stop:
				return
			case <-tick.C:
			case <-f.wake:
			}
		}
	}()
	return f, w
}

func (f *fakeCluster) beat() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, st := range f.live {
		b, _ := json.Marshal(st)
		f.nc.Publish("imgate.hb."+st.Node, b)
	}
	f.nc.Flush()
}

// set starts (or changes) a node's heartbeats; they go out at once.
func (f *fakeCluster) set(st cluster.NodeStatus) {
	st.Boot = "b1"
	st.IntervalMS = testLiveness.Milliseconds()
	f.mu.Lock()
	f.live[st.Node] = st
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// silence stops a node's heartbeats without a goodbye, as a crash does.
func (f *fakeCluster) silence(id string) {
	f.mu.Lock()
	delete(f.live, id)
	f.mu.Unlock()
}

// digResult is what one dig run printed.
type digResult struct {
	status  string
	answers []string // "TYPE data" per answer record, in order
	ttls    []string
	auth    []string // types in the authority section
	subnet  string   // the CLIENT-SUBNET the server echoed
	flags   string
	out     string
}

var (
	statusRE = regexp.MustCompile(`status: ([A-Z]+)`)
	flagsRE  = regexp.MustCompile(`;; flags: ([a-z ]+);`)
	subnetRE = regexp.MustCompile(`CLIENT-SUBNET: (\S+)`)
)

// dig queries the responder at addr (host:port) with extra dig arguments.
func dig(t *testing.T, addr string, args ...string) digResult {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	full := append([]string{"@" + host, "-p", port, "+norecurse", "+time=2", "+tries=1", "+noall", "+comments", "+answer", "+authority"}, args...)
	out, err := exec.Command(needDig(t), full...).CombinedOutput()
	if err != nil {
		t.Fatalf("dig %v: %v\n%s", full, err, out)
	}
	r := digResult{out: string(out)}
	if m := statusRE.FindStringSubmatch(r.out); m != nil {
		r.status = m[1]
	}
	if m := flagsRE.FindStringSubmatch(r.out); m != nil {
		r.flags = m[1]
	}
	if m := subnetRE.FindStringSubmatch(r.out); m != nil {
		r.subnet = m[1]
	}
	section := ""
	for _, line := range strings.Split(r.out, "\n") {
		switch {
		case strings.HasPrefix(line, ";; ANSWER SECTION"):
			section = "answer"
		case strings.HasPrefix(line, ";; AUTHORITY SECTION"):
			section = "authority"
		case strings.HasPrefix(line, ";"), strings.TrimSpace(line) == "":
			if strings.HasPrefix(line, ";;") {
				section = ""
			}
		default:
			f := strings.Fields(line)
			if len(f) < 5 {
				continue
			}
			switch section {
			case "answer":
				r.answers = append(r.answers, f[3]+" "+strings.Join(f[4:], " "))
				r.ttls = append(r.ttls, f[1])
			case "authority":
				r.auth = append(r.auth, f[3])
			}
		}
	}
	return r
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
