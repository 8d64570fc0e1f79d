// Command imgate-netem is a userspace network impairment shim, for kernels
// without tc netem: it forwards IP packets between two TUN devices, usually
// one in each of two network namespaces, and on the way drops, delays,
// jitters and reorders them, independently in each direction.
//
//	imgate-netem --ns-a imgate-gw-1 --tun-a imgw0 --ns-b imgate-cl-1 --tun-b imcl0 \
//	    --loss 5% --delay 50ms [--jitter 5ms] [--reorder 1% --reorder-delay 10ms] \
//	    [--rate 10mbit] [--backlog 1000] [--mtu 1500] [--seed 1]
//
// The impairment flags apply to each direction on its own, so --delay 50ms
// makes a 100 ms round trip and --loss 5% drops 5% of the packets each way.
// The TUN devices are attached by name (created when missing); addresses and
// routes are the caller's business (`ip addr add` inside each namespace).
//
// Output: JSON lines on stdout, {"event":"ready"} once both devices are
// attached, then {"event":"stats",...} on SIGUSR1, every --stats-every, and
// on exit (SIGINT or SIGTERM); a readable summary goes to stderr on exit.
//
// Invariants:
//   - Nothing is allocated per packet: buffers come from a per-direction
//     slab of backlog+2, the delay queue is a heap in a preallocated array.
//   - A direction holds at most --backlog packets (delayed or waiting for
//     the rate limiter); the next is dropped and counted, never queued.
//   - Without --reorder, packets leave each direction in the order they came.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	os.Exit(run(ctx, os.Args[1:], usr1, os.Stdout, os.Stderr))
}

// options are the parsed command line.
type options struct {
	nsA, tunA, nsB, tunB string
	im                   Impairment
	mtu                  int
	seed                 uint64
	statsEvery           time.Duration
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	o := options{im: Impairment{Backlog: DefaultBacklog, ReorderDelay: DefaultReorderDelay}}
	fs := flag.NewFlagSet("imgate-netem", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.nsA, "ns-a", "", "network namespace of side A (a name from `ip netns`, or a path; empty: this one)")
	fs.StringVar(&o.tunA, "tun-a", "", "TUN device of side A (required)")
	fs.StringVar(&o.nsB, "ns-b", "", "network namespace of side B")
	fs.StringVar(&o.tunB, "tun-b", "", "TUN device of side B (required)")
	fs.Func("loss", "probability a packet is dropped, per direction (0.05 or 5%)", probability(&o.im.Loss))
	fs.DurationVar(&o.im.Delay, "delay", 0, "one-way delay (half the added round trip)")
	fs.DurationVar(&o.im.Jitter, "jitter", 0, "the delay varies uniformly within delay ± jitter (order is kept)")
	fs.Func("reorder", "probability a packet is held back behind later ones (0.01 or 1%)", probability(&o.im.Reorder))
	fs.DurationVar(&o.im.ReorderDelay, "reorder-delay", DefaultReorderDelay, "how long a reordered packet is held back")
	fs.Func("rate", "link rate per direction in bits/s, k/m/g suffixes allowed (10mbit); 0: unlimited", bitRate(&o.im.Rate))
	fs.IntVar(&o.im.Backlog, "backlog", DefaultBacklog, "packets one direction holds at most; more are dropped and counted")
	fs.IntVar(&o.mtu, "mtu", 1500, "largest packet forwarded; set the TUN devices' MTU no higher")
	fs.Uint64Var(&o.seed, "seed", 1, "random seed: the same seed draws the same loss, jitter and reorder sequence")
	fs.DurationVar(&o.statsEvery, "stats-every", 0, "also print a stats line this often (0: on SIGUSR1 and exit only)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case o.tunA == "" || o.tunB == "":
		return o, errors.New("--tun-a and --tun-b are required")
	case o.nsA == o.nsB && o.tunA == o.tunB:
		return o, errors.New("side A and side B are the same device")
	case o.mtu < 68 || o.mtu > 65535:
		return o, fmt.Errorf("--mtu %d: want 68..65535", o.mtu)
	}
	return o, o.im.Validate()
}

// probability parses "0.05" or "5%".
func probability(dst *float64) func(string) error {
	return func(s string) error {
		v, err := parseProbability(s)
		*dst = v
		return err
	}
}

func parseProbability(s string) (float64, error) {
	s = strings.TrimSpace(s)
	scale := 1.0
	if t, ok := strings.CutSuffix(s, "%"); ok {
		s, scale = t, 100
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, err
	}
	v /= scale
	if v < 0 || v > 1 {
		return 0, fmt.Errorf("%v is not a probability", v)
	}
	return v, nil
}

// bitRate parses "10mbit", "500kbit", "1g", "64000".
func bitRate(dst *int64) func(string) error {
	return func(s string) error {
		v, err := parseBitRate(s)
		*dst = v
		return err
	}
}

func parseBitRate(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "bps"), "bit")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k':
			mult, t = 1e3, t[:n-1]
		case 'm':
			mult, t = 1e6, t[:n-1]
		case 'g':
			mult, t = 1e9, t[:n-1]
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("rate %q: want bits per second such as 64000, 500kbit, 10mbit", s)
	}
	return int64(v * float64(mult)), nil
}

// link is the two directions between side A and side B.
type link struct {
	files   []io.Closer
	ab      *direction
	ba      *direction
	start   time.Time
	stopped []<-chan struct{} // one per direction, closed when it has stopped
}

func run(ctx context.Context, args []string, usr1 <-chan os.Signal, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "imgate-netem:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	l, err := openLink(o)
	if err != nil {
		fmt.Fprintln(stderr, "imgate-netem:", err)
		return 1
	}
	out := &lineWriter{w: stdout}
	done := l.run()
	out.write(map[string]any{"event": "ready", "a": o.nsA + "/" + o.tunA, "b": o.nsB + "/" + o.tunB})
	log.Info("forwarding", "a", o.nsA+"/"+o.tunA, "b", o.nsB+"/"+o.tunB, "loss", o.im.Loss, "delay", o.im.Delay,
		"jitter", o.im.Jitter, "reorder", o.im.Reorder, "rate", o.im.Rate, "backlog", o.im.Backlog, "seed", o.seed)

	var tick <-chan time.Time
	if o.statsEvery > 0 {
		t := time.NewTicker(o.statsEvery)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-usr1:
			out.write(l.stats())
		case <-tick:
			out.write(l.stats())
		case <-done:
			// A device went away under us (its namespace was deleted).
			l.close()
			out.write(l.stats())
			log.Error("a device closed; stopping")
			return 1
		case <-ctx.Done():
			l.close()
			st := l.stats()
			out.write(st)
			ab, ba := st["a_to_b"].(Stats), st["b_to_a"].(Stats)
			log.Info("stopped", "a_to_b", summary(ab), "b_to_a", summary(ba))
			return 0
		}
	}
}

// openLink opens both devices, each in its namespace, and prepares the two
// directions.
func openLink(o options) (*link, error) {
	var a, b *os.File
	if err := inNamespace(o.nsA, func() (err error) { a, err = openTUN(o.tunA); return err }); err != nil {
		return nil, fmt.Errorf("side A: %w", err)
	}
	if err := inNamespace(o.nsB, func() (err error) { b, err = openTUN(o.tunB); return err }); err != nil {
		a.Close()
		return nil, fmt.Errorf("side B: %w", err)
	}
	start := time.Now()
	return &link{
		files: []io.Closer{a, b},
		start: start,
		ab:    newDirection("a->b", a, b, o.im, o.seed, 1, o.mtu, start),
		ba:    newDirection("b->a", b, a, o.im, o.seed, 2, o.mtu, start),
	}, nil
}

// run starts both directions; done is closed when either has stopped.
func (l *link) run() <-chan struct{} {
	done := make(chan struct{})
	var once sync.Once
	for _, d := range []*direction{l.ab, l.ba} {
		stopped := d.start()
		l.stopped = append(l.stopped, stopped)
		go func() { <-stopped; once.Do(func() { close(done) }) }()
	}
	return done
}

// close stops both directions and closes the devices, which ends the
// readers, and waits until both directions have stopped.
func (l *link) close() {
	l.ab.close()
	l.ba.close()
	for _, f := range l.files {
		f.Close()
	}
	for _, s := range l.stopped {
		<-s
	}
}

func (l *link) stats() map[string]any {
	return map[string]any{
		"event":     "stats",
		"elapsed_s": time.Since(l.start).Seconds(),
		"a_to_b":    l.ab.snapshot(),
		"b_to_a":    l.ba.snapshot(),
	}
}

// summary is one direction's counters for the log.
func summary(s Stats) string {
	pct := func(n int64) float64 {
		if s.In == 0 {
			return 0
		}
		return 100 * float64(n) / float64(s.In)
	}
	return fmt.Sprintf("in %d out %d lost %d (%.1f%%) queue-full %d held %d oversize %d max-queued %d errors %d/%d",
		s.In, s.Out, s.Lost, pct(s.Lost), s.QueueFull, s.Held, s.Oversize, s.MaxQueued, s.ReadErrors, s.WriteErrors)
}

// lineWriter writes one JSON object per line, whole lines at a time.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (lw *lineWriter) write(v any) {
	b, _ := json.Marshal(v)
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.w.Write(append(b, '\n'))
}
