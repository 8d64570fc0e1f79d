package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"imgate/bench/load"
	"imgate/bench/report"
)

// receivers are a scenario's member connections: in this process, or spread
// over child generator processes when one process cannot hold them all (a
// process may hold 20,000 descriptors here). Scenarios cannot tell which.
type receivers interface {
	Begin(first uint64)
	Received() int64
	WaitTotal(total int64, timeout time.Duration) bool
	ResultTotal(total int64) load.Outcome
	Latency() *report.Histogram
	AuthTime() *report.Histogram
	Dropped() int64
	// Redials is how many members were dialled again while opening.
	Redials() int64
	Close()
}

// roomPlan says which rooms member i joins, by name, so that a child
// process can rebuild it from JSON.
type roomPlan struct {
	Kind  string // "none", "fanout", "idle", "groups", "udp-<transport>"
	Small int    // fanout: members below it also join fan-small
	Size  int    // groups: members per room
}

func (p roomPlan) rooms(i int) []string {
	switch p.Kind {
	case "fanout":
		if i < p.Small {
			return []string{"fan", "fan-small"}
		}
		return []string{"fan"}
	case "idle":
		return []string{fmt.Sprintf("idle%d", i%1000)}
	case "groups":
		return []string{fmt.Sprintf("g%d", i/p.Size)}
	}
	if tr, ok := strings.CutPrefix(p.Kind, "udp-"); ok {
		return []string{"all", tr}
	}
	return nil
}

// openSpec is one set of members: global indexes First..First+N-1.
type openSpec struct {
	Target      load.Target
	Transport   string
	KCPPreset   string
	Retries     int // see load.Dial.Retries
	First, N    int
	Src         string
	Plan        roomPlan
	Concurrency int
}

// openMembers opens spec's members here (load.Open) with a tracker.
func openMembers(spec openSpec, progress func(int)) (*localReceivers, error) {
	srcs, err := load.ParseSources(spec.Src)
	if err != nil {
		return nil, err
	}
	tr := load.NewTracker(spec.N)
	m, err := load.Open(load.Dial{Target: spec.Target, Transport: spec.Transport, KCPPreset: spec.KCPPreset, Retries: spec.Retries, N: spec.N, Srcs: srcs,
		Concurrency: spec.Concurrency,
		UID:         func(i int) string { return fmt.Sprintf("b%d", spec.First+i) },
		Rooms:       func(i int) []string { return spec.Plan.rooms(spec.First + i) },
		Progress:    progress}, tr)
	if err != nil {
		return nil, err
	}
	return &localReceivers{Tracker: tr, members: m}, nil
}

// open gives a scenario its members, in this process or in generators.
func (b *bench) open(spec openSpec, label string) (receivers, error) {
	spec.Src = b.o.src
	progress := func(k int) { b.progress.Update("%s: %d/%d connections", label, k, spec.N) }
	per := b.o.perGenerator
	if per <= 0 || spec.N <= per {
		return openMembers(spec, progress)
	}
	g := &generators{auth: report.NewHistogram()}
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for first := 0; first < spec.N; first += per {
		part := spec
		part.First, part.N = spec.First+first, min(per, spec.N-first)
		c, err := startGenerator()
		if err != nil {
			g.Close()
			return nil, err
		}
		g.children = append(g.children, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var rep genReply
			err := c.call(genCommand{Op: "open", Spec: &part}, &rep)
			mu.Lock()
			defer mu.Unlock()
			if err == nil && rep.Error != "" {
				err = fmt.Errorf("generator: %s", rep.Error)
			}
			if rep.Auth != nil {
				g.auth.Merge(rep.Auth)
				g.redials += rep.Redials
			}
			if err != nil && firstErr == nil {
				firstErr = err
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		g.Close()
		return nil, firstErr
	}
	b.progress.Done("%s: %d connections over %d generator processes", label, spec.N, len(g.children))
	return g, nil
}

// localReceivers: members in this process (also wraps bare trackers for
// the nats and floor baselines, whose members is nil).
type localReceivers struct {
	*load.Tracker
	members *load.Members
}

func (l *localReceivers) Latency() *report.Histogram { return l.Tracker.Latency.Snapshot() }

func (l *localReceivers) Redials() int64 {
	if l.members == nil {
		return 0
	}
	return l.members.Redials.Load()
}
func (l *localReceivers) AuthTime() *report.Histogram {
	if l.members == nil {
		return report.NewHistogram()
	}
	return l.members.AuthTime
}
func (l *localReceivers) Dropped() int64 {
	if l.members == nil {
		return 0
	}
	return l.members.Dropped()
}
func (l *localReceivers) Close() {
	if l.members != nil {
		l.members.Close()
	}
}

// The generator protocol: one JSON command per line on the child's stdin,
// one JSON reply per line on its stdout.
type genCommand struct {
	Op    string    `json:"op"` // open, begin, count, stats, close
	Spec  *openSpec `json:"spec,omitempty"`
	First uint64    `json:"first,omitempty"`
}

type genReply struct {
	Error     string            `json:"error,omitempty"`
	Received  int64             `json:"received"`
	Dups      int64             `json:"dups"`
	Reordered int64             `json:"reordered"`
	Dropped   int64             `json:"dropped"`
	Latency   *report.Histogram `json:"latency,omitempty"`
	Auth      *report.Histogram `json:"auth,omitempty"`
	Redials   int64             `json:"redials,omitempty"`
}

// runGenerator is the child process: imgate-bench gen.
func runGenerator() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := json.NewEncoder(os.Stdout)
	var rx *localReceivers
	for in.Scan() {
		var cmd genCommand
		var rep genReply
		if err := json.Unmarshal(in.Bytes(), &cmd); err != nil {
			rep.Error = err.Error()
			out.Encode(rep)
			continue
		}
		switch {
		case cmd.Op == "open" && cmd.Spec != nil:
			var err error
			if rx, err = openMembers(*cmd.Spec, nil); err != nil {
				rep.Error = err.Error()
			} else {
				rep.Auth = rx.AuthTime()
				rep.Redials = rx.Redials()
			}
		case rx == nil:
			rep.Error = "no members open"
		case cmd.Op == "begin":
			rx.Begin(cmd.First)
		case cmd.Op == "count":
			rep.Received = rx.Received()
		case cmd.Op == "stats":
			o := rx.ResultTotal(0)
			rep.Received, rep.Dups, rep.Reordered, rep.Dropped = o.Received, o.Duplicated, o.Reordered, rx.Dropped()
			rep.Latency = rx.Latency()
		case cmd.Op == "close":
			rx.Close()
			out.Encode(rep)
			return
		default:
			rep.Error = "unknown op " + cmd.Op
		}
		out.Encode(rep)
	}
	if rx != nil {
		rx.Close()
	}
}

type generator struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *json.Decoder
	mu  sync.Mutex
}

func startGenerator() (*generator, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "gen")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &generator{cmd: cmd, in: in, out: json.NewDecoder(out)}, nil
}

func (g *generator) call(cmd genCommand, rep *genReply) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	b, _ := json.Marshal(cmd)
	if _, err := g.in.Write(append(b, '\n')); err != nil {
		return err
	}
	return g.out.Decode(rep)
}

// generators is a receivers over child processes; answers are sums.
type generators struct {
	children []*generator
	auth     *report.Histogram
	redials  int64
}

func (g *generators) Redials() int64 { return g.redials }

func (g *generators) each(cmd genCommand) []genReply {
	reps := make([]genReply, len(g.children))
	var wg sync.WaitGroup
	for i, c := range g.children {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.call(cmd, &reps[i]); err != nil {
				reps[i].Error = err.Error()
			}
		}()
	}
	wg.Wait()
	return reps
}

func (g *generators) Begin(first uint64) { g.each(genCommand{Op: "begin", First: first}) }

func (g *generators) Received() int64 {
	var n int64
	for _, r := range g.each(genCommand{Op: "count"}) {
		n += r.Received
	}
	return n
}

func (g *generators) WaitTotal(total int64, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for g.Received() < total {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

func (g *generators) stats() (o load.Outcome, dropped int64, lat *report.Histogram) {
	lat = report.NewHistogram()
	for _, r := range g.each(genCommand{Op: "stats"}) {
		o.Received += r.Received
		o.Duplicated += r.Dups
		o.Reordered += r.Reordered
		dropped += r.Dropped
		if r.Latency != nil {
			lat.Merge(r.Latency)
		}
	}
	return o, dropped, lat
}

func (g *generators) ResultTotal(total int64) load.Outcome {
	o, _, _ := g.stats()
	o.Expected = total
	o.Lost = max(0, total-(o.Received-o.Duplicated))
	return o
}

func (g *generators) Latency() *report.Histogram  { _, _, l := g.stats(); return l }
func (g *generators) Dropped() int64              { _, d, _ := g.stats(); return d }
func (g *generators) AuthTime() *report.Histogram { return g.auth }

func (g *generators) Close() {
	g.each(genCommand{Op: "close"})
	for _, c := range g.children {
		c.in.Close()
		c.cmd.Wait()
	}
}
