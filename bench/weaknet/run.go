package weaknet

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"imgate/bench/load"
	"imgate/bench/report"
	"imgate/gateway"
)

// Result is one transport under one condition.
type Result struct {
	Transport string
	URL       string
	Condition Condition
	// Available is false, with Note saying why, when the client library or
	// the gateway does not know the transport.
	Available bool
	Note      string
	// Err says what went wrong when the run itself failed (no connect
	// within the dial timeout, the probe died, ...).
	Err string

	Sent       int64 // messages pushed
	Reached    int64 // pushes the gateway handed to a connection of the probe
	Delivered  int64 // distinct messages the probe received
	Lost       int64 // reached the connection but never delivered
	Duplicated int64 // delivered more than once
	Reordered  int64 // delivered after a later message
	Reconnects int   // connections the probe lost (and made again)
	Latency    *report.Histogram
	Link       LinkStats // the packets the shim saw during the run
}

// OK reports a run in which every message arrived exactly once, in order.
func (r Result) OK() bool {
	return r.Available && r.Err == "" && r.Sent > 0 && r.Delivered == r.Sent &&
		r.Lost == 0 && r.Duplicated == 0 && r.Reordered == 0
}

// Quantile reads the latency histogram (0 when there is none).
func (r Result) Quantile(q float64) time.Duration {
	if r.Latency == nil {
		return 0
	}
	return r.Latency.Quantile(q)
}

func (r Result) String() string {
	head := fmt.Sprintf("%s @ %s", r.Transport, r.Condition)
	switch {
	case !r.Available && r.Err == "":
		return head + ": not available: " + r.Note
	case r.Err != "":
		return head + ": FAILED: " + r.Err
	}
	return fmt.Sprintf("%s: %d/%d delivered (reached %d), lost %d, duplicated %d, reordered %d, reconnects %d; p50 %s p99 %s max %s; link dropped %.1f%% of %d packets",
		head, r.Delivered, r.Sent, r.Reached, r.Lost, r.Duplicated, r.Reordered, r.Reconnects,
		report.FormatMillis(r.Quantile(50)), report.FormatMillis(r.Quantile(99)), report.FormatMillis(r.Quantile(100)),
		100*r.Link.LossRate(), r.Link.Down.In+r.Link.Up.In)
}

// Measure runs every transport under every condition, one lab per
// condition, one transport after another, and returns a result for each
// pair it reached (all of them unless ctx ends or a lab cannot start).
func Measure(ctx context.Context, cfg Config) ([]Result, error) {
	cfg = cfg.withDefaults()
	if err := Available(); err != nil {
		return nil, fmt.Errorf("weak-network lab: %w", err)
	}
	var results []Result
	for _, cond := range cfg.Conditions {
		c := cfg
		if cfg.Dir != "" {
			c.Dir = filepath.Join(cfg.Dir, cond.Key())
			if err := os.MkdirAll(c.Dir, 0o755); err != nil {
				return results, err
			}
		}
		lab, err := StartLab(ctx, c, cond)
		if err != nil {
			return results, fmt.Errorf("%s: %w", cond, err)
		}
		for _, t := range cfg.Transports {
			if ctx.Err() != nil {
				break
			}
			r := lab.Run(ctx, t)
			cfg.Progress(r.String())
			results = append(results, r)
		}
		lab.Close()
		if err := ctx.Err(); err != nil {
			return results, err
		}
	}
	return results, nil
}

// Run measures one transport in the lab: it starts a probe in the client
// namespace, waits for it to connect, pushes messages at the configured
// rate, tells the probe how many reached it and collects its summary.
func (l *Lab) Run(ctx context.Context, t Transport) Result {
	r := Result{Transport: t.Name, URL: t.DialURL(), Condition: l.cond}
	if why, ok := l.unavailable[t.ListenURL()]; ok {
		r.Note = "the gateway refused the listener: " + why
		return r
	}
	uid := "weaknet-" + t.Name
	token, err := gateway.MintToken(l.key, gateway.Claims{UID: uid, Expiry: time.Now().Add(24 * time.Hour)})
	if err != nil {
		r.Err = err.Error()
		return r
	}
	cfg := l.cfg
	maxTime := cfg.DialTimeout + cfg.Duration + cfg.Drain + time.Minute
	argv := append([]string{"ip", "netns", "exec", string(l.cl)}, cfg.ProbeCmd...)
	argv = append(argv, "--url", r.URL, "--dial-timeout", cfg.DialTimeout.String(),
		"--drain", cfg.Drain.String(), "--max-time", maxTime.String())
	env := append(slices.Clone(cfg.ProbeEnv), TokenEnv+"="+token)
	p, err := startProcess("probe", filepath.Join(l.dir, "probe-"+t.Name+".log"), argv, env, true, true)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	defer p.stop(5 * time.Second)

	ev, err := l.await(ctx, p, t, cfg.DialTimeout+10*time.Second, "ready", "unavailable", "failed")
	switch {
	case err != nil:
		r.Err = err.Error()
		return r
	case ev.Event == "unavailable":
		r.Note = "the client library: " + ev.Error
		return r
	case ev.Event == "failed":
		r.Err = "probe: " + ev.Error
		return r
	}
	r.Available = true
	before, err := l.linkStats()
	if err != nil {
		r.Err = err.Error()
		return r
	}
	r.Sent, r.Reached, err = l.publish(ctx, uid)
	if err != nil {
		r.Err = fmt.Sprintf("publishing: %v", err)
		return r
	}
	if _, err := fmt.Fprintf(p.stdin, "end %d %d\n", r.Sent, r.Reached); err != nil {
		r.Err = fmt.Sprintf("probe: %v: %s", err, p.logTail())
		return r
	}
	sum, err := l.await(ctx, p, t, cfg.Drain+15*time.Second, "summary", "failed")
	if err == nil && sum.Event == "failed" {
		err = fmt.Errorf("probe: %s", sum.Error)
	}
	if err != nil {
		r.Err = err.Error()
		return r
	}
	after, err := l.linkStats()
	if err != nil {
		r.Err = err.Error()
		return r
	}
	r.Link = after.minus(before)
	r.Delivered = sum.Received - sum.Duplicated
	r.Lost = max(0, r.Reached-r.Delivered)
	r.Duplicated, r.Reordered, r.Reconnects, r.Latency = sum.Duplicated, sum.Reordered, sum.Reconnects, sum.Latency
	return r
}

// await reads the probe's events until one of want arrives, reporting state
// changes on the way; it fails when the probe exits first or timeout passes.
func (l *Lab) await(ctx context.Context, p *process, t Transport, timeout time.Duration, want ...string) (probeEvent, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				<-p.done
				return probeEvent{}, fmt.Errorf("probe exited (%v) before %v: %s", p.err, want, p.logTail())
			}
			var ev probeEvent
			if err := json.Unmarshal(line, &ev); err != nil {
				return probeEvent{}, fmt.Errorf("probe said %q: %w", line, err)
			}
			if slices.Contains(want, ev.Event) {
				return ev, nil
			}
			if ev.Event == "state" && ev.State != "connecting" {
				l.cfg.Progress(fmt.Sprintf("%s: %s %s", t.Name, ev.State, ev.Error))
			}
		case <-deadline.C:
			return probeEvent{}, fmt.Errorf("no %v from the probe within %v: %s", want, timeout, p.logTail())
		case <-ctx.Done():
			return probeEvent{}, ctx.Err()
		}
	}
}

// publish pushes Rate messages a second for Duration to uid through the
// admin port, each stamped with its send time and number, and counts those
// the gateway handed to a connection.
func (l *Lab) publish(ctx context.Context, uid string) (sent, reached int64, err error) {
	count := int64(l.cfg.Rate * l.cfg.Duration.Seconds())
	payload := make([]byte, l.cfg.PayloadSize)
	for i := range len(payload) - load.PayloadHeader {
		payload[load.PayloadHeader+i] = 'a' + byte(i%26)
	}
	start := time.Now()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for i := range count {
		due := start.Add(time.Duration(float64(i) / l.cfg.Rate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return sent, reached, ctx.Err()
			case <-timer.C:
			}
		}
		load.Stamp(payload, uint64(i))
		n, err := l.admin.push(uid, payload)
		if err != nil {
			return sent, reached, err
		}
		sent++
		if n > 0 {
			reached++
		}
	}
	return sent, reached, nil
}

// metricName is a transport's name as it appears in results.json keys.
func metricName(transport string) string {
	b := []byte(transport)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

// SetResults files each result under weaknet_<transport>_<condition>_<metric>.
// Transports that were not measured get no keys.
func SetResults(dst *report.Results, results []Result) {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	for _, r := range results {
		if !r.Available || r.Err != "" {
			continue
		}
		k := "weaknet_" + metricName(r.Transport) + "_" + r.Condition.Key() + "_"
		dst.Set(k+"p50_ms", ms(r.Quantile(50)))
		dst.Set(k+"p99_ms", ms(r.Quantile(99)))
		dst.Set(k+"max_ms", ms(r.Quantile(100)))
		dst.Set(k+"sent", float64(r.Sent))
		dst.Set(k+"delivered", float64(r.Delivered))
		dst.Set(k+"lost", float64(r.Lost))
		dst.Set(k+"duplicated", float64(r.Duplicated))
		dst.Set(k+"reordered", float64(r.Reordered))
		dst.Set(k+"reconnects", float64(r.Reconnects))
		dst.Set(k+"link_loss", r.Link.LossRate())
	}
}

// formatCount writes n with thousands separators.
func formatCount(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
