package weaknet

import (
	"slices"
	"strings"
	"testing"
	"time"

	"imgate/bench/report"
)

func TestParseTransports(t *testing.T) {
	cases := []struct {
		in    string
		names []string
		urls  []string // dial URLs, {gw} filled in
		ok    bool
	}{
		{"tcp,ws,quic", []string{"tcp", "ws", "quic"}, []string{"tcp://10.77.0.1:7100", "ws://10.77.0.1:7101/ws", "quic://10.77.0.1:7103"}, true},
		{" kcp-fast ", []string{"kcp-fast"}, []string{"kcp://10.77.0.1:7104?preset=fast"}, true},
		{"tcp,kcp-turbo=kcp://{gw}:7102?preset=turbo", []string{"tcp", "kcp-turbo"}, []string{"tcp://10.77.0.1:7100", "kcp://10.77.0.1:7102?preset=turbo"}, true},
		{"sctp", nil, nil, false},
		{"x=nourl", nil, nil, false},
		{"=tcp://{gw}:1", nil, nil, false},
		{"", nil, nil, false},
	}
	for _, tc := range cases {
		got, err := ParseTransports(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseTransports(%q): err %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		var names, urls []string
		for _, tr := range got {
			names, urls = append(names, tr.Name), append(urls, tr.DialURL())
		}
		if !slices.Equal(names, tc.names) || !slices.Equal(urls, tc.urls) {
			t.Errorf("ParseTransports(%q) = %v %v, want %v %v", tc.in, names, urls, tc.names, tc.urls)
		}
	}
}

func TestListenURLKeepsPresets(t *testing.T) {
	// Each KCP preset is a listener of its own: the gateway sends the pushes.
	var listen []string
	for _, tr := range DefaultTransports {
		if u := tr.ListenURL(); !slices.Contains(listen, u) {
			listen = append(listen, u)
		}
	}
	want := []string{"tcp://10.77.0.1:7100", "ws://10.77.0.1:7101/ws", "quic://10.77.0.1:7103",
		"kcp://10.77.0.1:7102?preset=normal", "kcp://10.77.0.1:7104?preset=fast", "kcp://10.77.0.1:7105?preset=weak-network",
		"kcp://10.77.0.1:7106?preset=weak-network&datashard=10&parityshard=3"}
	if !slices.Equal(listen, want) {
		t.Fatalf("listeners %v, want %v", listen, want)
	}
}

func TestParseConditions(t *testing.T) {
	cases := []struct {
		in   string
		want []Condition
		keys []string
		ok   bool
	}{
		{"5%/100ms,20%/200ms", DefaultConditions, []string{"loss5_rtt100", "loss20_rtt200"}, true},
		{"0.5%/50ms/5ms", []Condition{{Loss: 0.005, RTT: 50 * time.Millisecond, Jitter: 5 * time.Millisecond}}, []string{"loss0p5_rtt50_jitter5"}, true},
		{"0%/0s", []Condition{{}}, []string{"loss0_rtt0"}, true},
		{"5/100ms", nil, nil, false}, // a bare number is ambiguous: 5 or 5%?
		{"100%/10ms", nil, nil, false},
		{"5%", nil, nil, false},
		{"5%/fast", nil, nil, false},
		{"5%/10ms/-1ms", nil, nil, false},
		{"", nil, nil, false},
	}
	for _, tc := range cases {
		got, err := ParseConditions(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseConditions(%q): err %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("ParseConditions(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
		for i, c := range got {
			if c.Key() != tc.keys[i] {
				t.Errorf("%+v: key %q, want %q", c, c.Key(), tc.keys[i])
			}
		}
	}
	if s := DefaultConditions[0].String(); s != "5% loss, 100 ms RTT" {
		t.Errorf("String() = %q", s)
	}
}

func histogramOf(ds ...time.Duration) *report.Histogram {
	h := report.NewHistogram()
	for _, d := range ds {
		h.Record(d)
	}
	return h
}

func TestMarkdown(t *testing.T) {
	c5, c20 := DefaultConditions[0], DefaultConditions[1]
	results := []Result{
		{Transport: "tcp", Condition: c5, Available: true, Sent: 1000, Reached: 1000, Delivered: 1000, Latency: histogramOf(51*time.Millisecond, 300*time.Millisecond)},
		{Transport: "kcp-fast", Condition: c5, Note: `the gateway refused the listener: unknown scheme "kcp"`},
		{Transport: "kcp-weak", Condition: c5, Note: `the gateway refused the listener: unknown scheme "kcp"`},
		{Transport: "tcp", Condition: c20, Available: true, Sent: 1000, Reached: 1000, Delivered: 998, Lost: 2, Reconnects: 1, Latency: histogramOf(1200 * time.Millisecond)},
		{Transport: "kcp-fast", Condition: c20, Note: `the gateway refused the listener: unknown scheme "kcp"`},
		{Transport: "kcp-weak", Condition: c20, Err: "no ready from the probe within 40s"},
	}
	got := Markdown(results)
	want := `| transport | p50 @ 5% / 100 ms | p99 | delivered/sent | reconnects | p50 @ 20% / 200 ms | p99 | delivered/sent | reconnects |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
| tcp | 51 ms | 300 ms | 1,000/1,000 | 0 | 1,200 ms | 1,200 ms | 998/1,000 (**lost 2, dup 0, reordered 0**) | 1 |
| kcp-fast | not available | – | – | – | not available | – | – | – |
| kcp-weak | not available | – | – | – | failed | – | – | – |

- kcp-fast, kcp-weak: not available: the gateway refused the listener: unknown scheme "kcp"
- kcp-weak @ 20% / 200 ms: failed: no ready from the probe within 40s
`
	if got != want {
		t.Fatalf("Markdown:\n%s\nwant:\n%s", got, want)
	}
	// The terminal table has a row per result.
	var b strings.Builder
	Table(results).Render(&b)
	if n := strings.Count(b.String(), "\n"); n != len(results)+3 {
		t.Fatalf("table has %d lines for %d results:\n%s", n, len(results), b.String())
	}
}

func TestSetResults(t *testing.T) {
	r := report.NewResults()
	SetResults(r, []Result{
		{Transport: "kcp-weak", Condition: DefaultConditions[1], Available: true, Sent: 10, Delivered: 10, Latency: histogramOf(250 * time.Millisecond)},
		{Transport: "ws", Condition: DefaultConditions[0], Note: "not available"},
	})
	if v, ok := r.Get("weaknet_kcp_weak_loss20_rtt200_p99_ms"); !ok || v < 250 || v > 250.5 {
		t.Fatalf("p99 key: %v %v; keys %v", v, ok, r.Keys())
	}
	for _, k := range r.Keys() {
		if strings.Contains(k, "_ws_") {
			t.Fatalf("an unavailable transport got key %s", k)
		}
	}
}

func TestFormatCount(t *testing.T) {
	for in, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -1500: "-1,500"} {
		if got := formatCount(in); got != want {
			t.Errorf("formatCount(%d) = %q, want %q", in, got, want)
		}
	}
}
