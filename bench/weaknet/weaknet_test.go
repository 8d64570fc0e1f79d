package weaknet

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

// probeEnv makes the test binary run as the probe (see TestMain).
const probeEnv = "IMGATE_WEAKNET_PROBE"

// The test binary doubles as the probe in the client namespace.
func TestMain(m *testing.M) {
	if os.Getenv(probeEnv) == "1" {
		os.Exit(RunProbe(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// buildTools builds the gateway and the shim into a temporary directory
// (from the build cache once `make build` has run: a link each).
func buildTools(t *testing.T) (gatewayBin, netemBin string) {
	t.Helper()
	dir := t.TempDir()
	for _, pkg := range []string{"imgate/cmd/imgate", "imgate/tools/imgate-netem"} {
		out, err := exec.Command("go", "build", "-o", dir+"/", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	return filepath.Join(dir, "imgate"), filepath.Join(dir, "imgate-netem")
}

// TestNothingLostAtFivePercentLoss runs every transport for a few seconds
// through the shim at 5% loss each way and 100 ms RTT: each message pushed
// must arrive exactly once and in order, without a reconnect. Transports
// the client library or the gateway does not know yet are logged as not
// available; tcp, ws and quic must be there.
func TestNothingLostAtFivePercentLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("weaknet: starts namespaces, a gateway and a shim; not in -short")
	}
	if err := Available(); err != nil {
		t.Skipf("weaknet: SKIPPED, the weak-network lab cannot run here: %v", err)
	}
	gatewayBin, netemBin := buildTools(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// A new loss pattern every run, so runs add up to coverage; the seed is
	// logged, and IMGATE_WEAKNET_SEED replays it.
	seed := uint64(time.Now().UnixNano())
	if s, err := strconv.ParseUint(os.Getenv("IMGATE_WEAKNET_SEED"), 10, 64); err == nil {
		seed = s
	}
	t.Logf("shim seed %d (IMGATE_WEAKNET_SEED=%d replays its loss pattern)", seed, seed)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	cfg := Config{
		GatewayBin:  gatewayBin,
		NetemBin:    netemBin,
		ProbeCmd:    []string{exe},
		ProbeEnv:    []string{probeEnv + "=1"},
		Transports:  DefaultTransports,
		Conditions:  []Condition{{Loss: 0.05, RTT: 100 * time.Millisecond}},
		Rate:        50,
		Duration:    3 * time.Second,
		DialTimeout: 10 * time.Second,
		Drain:       10 * time.Second,
		Seed:        seed,
		Dir:         t.TempDir(),
		Progress:    func(line string) { t.Log(line) },
	}
	results, err := Measure(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", Markdown(results))
	if len(results) != len(DefaultTransports) {
		t.Fatalf("%d results for %d transports", len(results), len(DefaultTransports))
	}
	for _, r := range results {
		required := slices.Contains([]string{"tcp", "ws", "quic"}, r.Transport)
		switch {
		case r.Err != "":
			t.Errorf("%s: %s", r.Transport, r.Err)
		case !r.Available && required:
			t.Errorf("%s: not available: %s", r.Transport, r.Note)
		case !r.Available:
			t.Logf("%s: not available (not yet in this branch): %s", r.Transport, r.Note)
		case !r.OK() || r.Reconnects != 0:
			t.Errorf("%s: %d of %d delivered (reached the connection: %d), lost %d, duplicated %d, reordered %d, reconnects %d",
				r.Transport, r.Delivered, r.Sent, r.Reached, r.Lost, r.Duplicated, r.Reordered, r.Reconnects)
		}
		// The shim must really have dropped packets, or the test proved
		// nothing about loss.
		if r.Available && r.Err == "" && r.Link.Down.Lost+r.Link.Up.Lost == 0 {
			t.Errorf("%s: the shim dropped no packet over %d: the link was not impaired", r.Transport, r.Link.Down.In+r.Link.Up.In)
		}
	}
}
