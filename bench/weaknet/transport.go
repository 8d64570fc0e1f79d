package weaknet

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// GatewayAddr and ClientAddr are the two ends of the impaired link, inside
// the lab's namespaces (so they never clash with anything outside them).
const (
	GatewayAddr = "10.77.0.1"
	ClientAddr  = "10.77.0.2"
)

// Transport is one row of the table: a name and the URL the probe dials,
// where {gw} stands for GatewayAddr. The gateway listens on the same URL:
// each KCP preset has a port of its own, so that both ends (and above all
// the gateway, which sends the pushes measured) run that preset.
type Transport struct {
	Name string
	URL  string
}

// DefaultTransports are every transport imgate has or is getting.
var DefaultTransports = []Transport{
	{"tcp", "tcp://{gw}:7100"},
	{"ws", "ws://{gw}:7101/ws"},
	{"quic", "quic://{gw}:7103"},
	{"kcp-normal", "kcp://{gw}:7102?preset=normal"},
	{"kcp-fast", "kcp://{gw}:7104?preset=fast"},
	{"kcp-weak", "kcp://{gw}:7105?preset=weak-network"},
	{"kcp-weak-fec", "kcp://{gw}:7106?preset=weak-network&datashard=10&parityshard=3"},
}

// DialURL is the URL the probe dials.
func (t Transport) DialURL() string { return strings.ReplaceAll(t.URL, "{gw}", GatewayAddr) }

// ListenURL is the gateway listener that serves t: the same URL (a kcp://
// query carries the listener's options too).
func (t Transport) ListenURL() string { return t.DialURL() }

// ParseTransports reads a comma-separated list whose entries are names from
// DefaultTransports or name=URL ("kcp-turbo=kcp://{gw}:7102?preset=turbo").
func ParseTransports(s string) ([]Transport, error) {
	var out []Transport
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if name, u, ok := strings.Cut(item, "="); ok {
			if name == "" || !strings.Contains(u, "://") {
				return nil, fmt.Errorf("transport %q: want name=scheme://host:port", item)
			}
			out = append(out, Transport{Name: name, URL: u})
			continue
		}
		found := false
		for _, t := range DefaultTransports {
			if t.Name == item {
				out, found = append(out, t), true
			}
		}
		if !found {
			return nil, fmt.Errorf("transport %q: not one of %s; give name=URL for another", item, transportNames())
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no transports in %q", s)
	}
	return out, nil
}

func transportNames() string {
	var names []string
	for _, t := range DefaultTransports {
		names = append(names, t.Name)
	}
	return strings.Join(names, ", ")
}

// Condition is one network condition, applied by the shim to each
// direction on its own.
type Condition struct {
	Loss   float64       // probability each packet is dropped, each way
	RTT    time.Duration // added round trip: half of it each way
	Jitter time.Duration // one-way delay varies within ±Jitter (order kept)
}

// DefaultConditions are the two of issue 5.
var DefaultConditions = []Condition{
	{Loss: 0.05, RTT: 100 * time.Millisecond},
	{Loss: 0.20, RTT: 200 * time.Millisecond},
}

// String is the condition for people: "5% loss, 100 ms RTT".
func (c Condition) String() string {
	s := fmt.Sprintf("%s%% loss, %d ms RTT", strconv.FormatFloat(100*c.Loss, 'f', -1, 64), c.RTT.Milliseconds())
	if c.Jitter > 0 {
		s += fmt.Sprintf(", ±%d ms jitter", c.Jitter.Milliseconds())
	}
	return s
}

// short is the condition in a column header: "5% / 100 ms".
func (c Condition) short() string {
	s := fmt.Sprintf("%s%% / %d ms", strconv.FormatFloat(100*c.Loss, 'f', -1, 64), c.RTT.Milliseconds())
	if c.Jitter > 0 {
		s += fmt.Sprintf(" ±%d ms", c.Jitter.Milliseconds())
	}
	return s
}

// Key is the condition in metric names: "loss5_rtt100".
func (c Condition) Key() string {
	k := fmt.Sprintf("loss%s_rtt%d", strconv.FormatFloat(100*c.Loss, 'f', -1, 64), c.RTT.Milliseconds())
	if c.Jitter > 0 {
		k += fmt.Sprintf("_jitter%d", c.Jitter.Milliseconds())
	}
	return strings.ReplaceAll(k, ".", "p")
}

// ParseConditions reads "5%/100ms,20%/200ms": loss/RTT pairs, each with an
// optional one-way jitter ("5%/100ms/10ms").
func ParseConditions(s string) ([]Condition, error) {
	var out []Condition
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		parts := strings.Split(item, "/")
		if len(parts) < 2 || len(parts) > 3 {
			return nil, fmt.Errorf("condition %q: want loss/rtt[/jitter], such as 5%%/100ms", item)
		}
		loss, err := strconv.ParseFloat(strings.TrimSuffix(parts[0], "%"), 64)
		if err != nil || loss < 0 || loss >= 100 || !strings.HasSuffix(parts[0], "%") {
			return nil, fmt.Errorf("condition %q: loss %q: want a percentage below 100%%", item, parts[0])
		}
		c := Condition{Loss: loss / 100}
		if c.RTT, err = time.ParseDuration(parts[1]); err != nil || c.RTT < 0 {
			return nil, fmt.Errorf("condition %q: rtt %q: want a duration such as 100ms", item, parts[1])
		}
		if len(parts) == 3 {
			if c.Jitter, err = time.ParseDuration(parts[2]); err != nil || c.Jitter < 0 {
				return nil, fmt.Errorf("condition %q: jitter %q: want a duration such as 10ms", item, parts[2])
			}
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no conditions in %q", s)
	}
	return out, nil
}
