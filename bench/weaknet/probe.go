package weaknet

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"imgate/bench/load"
	"imgate/bench/report"
	"imgate/client"
)

// The probe is the client side of a run, a process of its own inside the
// client namespace (the client library dials, and redials, from goroutines
// of its own, so the whole process must live there). It talks to the
// harness in lines:
//
//	probe -> harness (stdout, JSON)   {"event":"ready"}, {"event":"state",...},
//	                                  {"event":"unavailable"|"failed","error":...},
//	                                  {"event":"summary",...} last
//	harness -> probe (stdin, text)    "end SENT REACHED": publishing is over;
//	                                  wait for REACHED messages, then summarise

// TokenEnv carries the probe's token (kept off the command line).
const TokenEnv = "IMGATE_WEAKNET_TOKEN"

// probeEvent is one line from the probe.
type probeEvent struct {
	Event      string            `json:"event"`
	Error      string            `json:"error,omitempty"`
	State      string            `json:"state,omitempty"`
	Conn       uint64            `json:"conn,omitempty"`
	Received   int64             `json:"received,omitempty"`
	Duplicated int64             `json:"duplicated,omitempty"`
	Reordered  int64             `json:"reordered,omitempty"`
	Reconnects int               `json:"reconnects,omitempty"`
	Latency    *report.Histogram `json:"latency,omitempty"`
}

// RunProbe is the probe's main: it dials --url, records every push (payloads
// stamped by load.Stamp: send time and sequence number), and reports as
// described above. It returns the exit status.
func RunProbe(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("weaknet-probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "", "gateway URL to dial")
	dialTimeout := fs.Duration("dial-timeout", 30*time.Second, "bound on the first connect (a lossy handshake can take seconds)")
	drain := fs.Duration("drain", 60*time.Second, "after the end line, how long to wait for messages still on their way")
	maxTime := fs.Duration("max-time", 10*time.Minute, "the probe exits after this long whatever happens")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	out := &eventWriter{w: stdout}
	token := os.Getenv(TokenEnv)
	if *url == "" || token == "" {
		out.send(probeEvent{Event: "failed", Error: "--url and " + TokenEnv + " are required"})
		return 2
	}
	watchdog := time.AfterFunc(*maxTime, func() {
		out.send(probeEvent{Event: "failed", Error: fmt.Sprintf("probe still running after --max-time %v", *maxTime)})
		os.Exit(3)
	})
	defer watchdog.Stop()

	tracker := load.NewTracker(1)
	var connected atomic.Bool
	var reconnects atomic.Int64
	cfg := client.DefaultConfig()
	cfg.Endpoints = []string{*url}
	cfg.Token = token
	cfg.DialTimeout = *dialTimeout
	cfg.RequestTimeout = *dialTimeout
	cfg.BackoffMin, cfg.BackoffMax = 100*time.Millisecond, 2*time.Second
	cfg.TLSConfig = &tls.Config{InsecureSkipVerify: true} // the gateway's generated certificate
	cfg.OnPush = func(p client.Push) { tracker.Observe(0, p.Payload) }
	cfg.OnState = func(s client.State, err error) {
		if s == client.StateDisconnected && connected.Load() {
			reconnects.Add(1)
		}
		ev := probeEvent{Event: "state", State: s.String()}
		if err != nil {
			ev.Error = err.Error()
		}
		out.send(ev)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *dialTimeout)
	c, err := client.Dial(ctx, cfg)
	cancel()
	switch {
	case errors.Is(err, client.ErrUnsupportedScheme):
		out.send(probeEvent{Event: "unavailable", Error: err.Error()})
		return 0
	case err != nil:
		out.send(probeEvent{Event: "failed", Error: err.Error()})
		return 1
	}
	defer func() {
		c.Close()
		select {
		case <-c.Closed():
		case <-time.After(2 * time.Second):
		}
	}()
	connected.Store(true)
	out.send(probeEvent{Event: "ready", Conn: c.ConnID()})

	reached, err := readEnd(stdin)
	if err != nil {
		out.send(probeEvent{Event: "failed", Error: err.Error()})
		return 1
	}
	// Every message that reached the connection must arrive: wait for them
	// (the drain bounds a transport that lost some), then report.
	tracker.WaitTotal(reached, *drain)
	o := tracker.ResultTotal(reached)
	out.send(probeEvent{Event: "summary", Received: o.Received, Duplicated: o.Duplicated, Reordered: o.Reordered,
		Reconnects: int(reconnects.Load()), Latency: tracker.Latency.Snapshot()})
	return 0
}

// readEnd waits for the harness's "end SENT REACHED" line and returns
// REACHED.
func readEnd(stdin io.Reader) (int64, error) {
	sc := bufio.NewScanner(stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "end" {
			return strconv.ParseInt(f[2], 10, 64)
		}
	}
	return 0, errors.New("stdin ended before the end line: the harness is gone")
}

// eventWriter writes one JSON line per event, whole.
type eventWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (e *eventWriter) send(ev probeEvent) {
	b, _ := json.Marshal(ev)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.w.Write(append(b, '\n'))
}
