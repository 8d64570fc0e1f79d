package weaknet

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// events parses the probe's stdout.
func events(t *testing.T, out string) []probeEvent {
	t.Helper()
	var evs []probeEvent
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev probeEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("probe line %q: %v", line, err)
		}
		evs = append(evs, ev)
	}
	return evs
}

func TestProbeReportsUnknownSchemeAsUnavailable(t *testing.T) {
	t.Setenv(TokenEnv, "token")
	var stdout, stderr bytes.Buffer
	code := RunProbe([]string{"--url", "sctp://127.0.0.1:7102?preset=fast"}, strings.NewReader(""), &stdout, &stderr)
	evs := events(t, stdout.String())
	if code != 0 || len(evs) != 1 || evs[0].Event != "unavailable" || !strings.Contains(evs[0].Error, "unsupported endpoint scheme") {
		t.Fatalf("exit %d, events %+v (stderr %s); want one unavailable event naming the scheme", code, evs, stderr.String())
	}
}

func TestProbeFailsWithoutToken(t *testing.T) {
	t.Setenv(TokenEnv, "")
	var stdout bytes.Buffer
	code := RunProbe([]string{"--url", "tcp://127.0.0.1:1"}, strings.NewReader(""), &stdout, &bytes.Buffer{})
	if evs := events(t, stdout.String()); code == 0 || evs[0].Event != "failed" {
		t.Fatalf("exit %d, events %+v; want a failure", code, evs)
	}
}

func TestProbeFailsWhenNothingListens(t *testing.T) {
	t.Setenv(TokenEnv, "token")
	var stdout bytes.Buffer
	// Port 1 on loopback: refused at once.
	code := RunProbe([]string{"--url", "tcp://127.0.0.1:1", "--dial-timeout", "2s"}, strings.NewReader(""), &stdout, &bytes.Buffer{})
	evs := events(t, stdout.String())
	if last := evs[len(evs)-1]; code == 0 || last.Event != "failed" {
		t.Fatalf("exit %d, events %+v; want a failure", code, evs)
	}
}
