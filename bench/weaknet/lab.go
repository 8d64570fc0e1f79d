package weaknet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"imgate/gateway"
)

// Config says what to measure and with which binaries.
type Config struct {
	GatewayBin string   // the imgate binary
	NetemBin   string   // the imgate-netem binary
	ProbeCmd   []string // runs RunProbe; probe flags are appended
	ProbeEnv   []string // added to the probe's environment

	Transports []Transport
	Conditions []Condition

	Rate        float64       // messages per second pushed to the probe
	Duration    time.Duration // publishing time per transport and condition
	PayloadSize int           // bytes per message, stamp included
	DialTimeout time.Duration // the probe's first connect
	Drain       time.Duration // wait for messages in flight after publishing
	Seed        uint64        // the shim's random seed
	MTU         int           // of the TUN devices and the shim

	Dir      string            // data and logs; a temporary directory when empty
	Progress func(line string) // one line per step; nil: silent
}

// Defaults for zero Config fields.
const (
	DefaultRate        = 50
	DefaultDuration    = 30 * time.Second
	DefaultPayloadSize = 128
	DefaultDialTimeout = 30 * time.Second
	DefaultDrain       = 60 * time.Second
)

func (c Config) withDefaults() Config {
	if c.Rate <= 0 {
		c.Rate = DefaultRate
	}
	if c.Duration <= 0 {
		c.Duration = DefaultDuration
	}
	if c.PayloadSize < 16 {
		c.PayloadSize = DefaultPayloadSize
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.Drain <= 0 {
		c.Drain = DefaultDrain
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.MTU <= 0 {
		c.MTU = 1500
	}
	if c.Transports == nil {
		c.Transports = DefaultTransports
	}
	if c.Conditions == nil {
		c.Conditions = DefaultConditions
	}
	if c.Progress == nil {
		c.Progress = func(string) {}
	}
	return c
}

// The lab's fixed layout inside its namespaces.
const (
	gatewayTUN = "imgw0"
	clientTUN  = "imcl0"
	adminAddr  = "127.0.0.1:7379" // inside the gateway namespace
	httpAddr   = "127.0.0.1:7180"
)

// Lab is one network condition set up: the two namespaces and their TUN
// devices, the shim between them, and the gateway. Close takes it down. Its
// methods are called from one goroutine, one Run at a time: the shim's link
// and the admin connection are shared by the runs.
type Lab struct {
	cfg    Config
	cond   Condition
	gw, cl namespace
	dir    string

	shim        *process
	shimStats   chan LinkStats // the shim's stats lines, as they come
	gateway     *process
	admin       *adminConn
	key         gateway.KeyConfig
	unavailable map[string]string // listen URL -> why the gateway refused it

	closeOnce sync.Once
	cleanups  []func() // run in reverse by Close
}

// StartLab sets up a lab for cond, with a gateway listener for each of
// cfg.Transports. On error everything already set up is taken down again.
func StartLab(ctx context.Context, cfg Config, cond Condition) (_ *Lab, err error) {
	cfg = cfg.withDefaults()
	l := &Lab{cfg: cfg, cond: cond, unavailable: map[string]string{}}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	removeStale()
	l.dir = cfg.Dir
	if l.dir == "" {
		if l.dir, err = os.MkdirTemp("", fmt.Sprintf("imgate-weaknet-%d-", os.Getpid())); err != nil {
			return nil, err
		}
		l.cleanups = append(l.cleanups, func() { os.RemoveAll(l.dir) })
	}
	l.gw, l.cl = labNames()
	for _, side := range []struct {
		ns        namespace
		dev, addr string
	}{{l.gw, gatewayTUN, GatewayAddr + "/30"}, {l.cl, clientTUN, ClientAddr + "/30"}} {
		if err := side.ns.create(); err != nil {
			return nil, err
		}
		l.cleanups = append(l.cleanups, func() { side.ns.delete() })
		if err := side.ns.addTUN(side.dev, side.addr, cfg.MTU); err != nil {
			return nil, err
		}
	}
	if err := l.startShim(ctx); err != nil {
		return nil, err
	}
	if err := l.startGateway(ctx); err != nil {
		return nil, err
	}
	cfg.Progress(fmt.Sprintf("lab %s / %s: %s, gateway up", l.gw, l.cl, cond))
	return l, nil
}

// Close stops the gateway and the shim and deletes the namespaces (and
// with them the TUN devices). It always runs every step.
func (l *Lab) Close() {
	l.closeOnce.Do(func() {
		if l.admin != nil {
			l.admin.close()
		}
		l.gateway.stop(10 * time.Second)
		l.shim.stop(5 * time.Second)
		for i := len(l.cleanups) - 1; i >= 0; i-- {
			l.cleanups[i]()
		}
	})
}

// startShim runs imgate-netem between the two devices and waits until it
// has attached both.
func (l *Lab) startShim(ctx context.Context) error {
	half := l.cond.RTT / 2
	argv := []string{l.cfg.NetemBin,
		"--ns-a", string(l.gw), "--tun-a", gatewayTUN,
		"--ns-b", string(l.cl), "--tun-b", clientTUN,
		"--loss", strconv.FormatFloat(l.cond.Loss, 'f', -1, 64),
		"--delay", half.String(), "--jitter", l.cond.Jitter.String(),
		"--mtu", strconv.Itoa(l.cfg.MTU),
		"--seed", strconv.FormatUint(l.cfg.Seed, 10)}
	p, err := startProcess("imgate-netem", filepath.Join(l.dir, "netem.log"), argv, nil, true, false)
	if err != nil {
		return err
	}
	l.shim = p
	l.shimStats = make(chan LinkStats, 4)
	ready := make(chan struct{})
	go func() {
		var once sync.Once
		for line := range p.lines {
			var ev struct {
				Event string `json:"event"`
				LinkStats
			}
			if json.Unmarshal(line, &ev) != nil {
				continue
			}
			switch ev.Event {
			case "ready":
				once.Do(func() { close(ready) })
			case "stats":
				select {
				case l.shimStats <- ev.LinkStats:
				default: // nobody asked for this one
				}
			}
		}
	}()
	select {
	case <-ready:
		return nil
	case <-p.done:
		return fmt.Errorf("imgate-netem exited: %v: %s", p.err, p.logTail())
	case <-time.After(10 * time.Second):
		return fmt.Errorf("imgate-netem not ready after 10s: %s", p.logTail())
	case <-ctx.Done():
		return ctx.Err()
	}
}

// linkStats asks the shim for its counters so far.
func (l *Lab) linkStats() (LinkStats, error) {
stale:
	for {
		select {
		case <-l.shimStats: // an answer nobody waited for
		default:
			break stale
		}
	}
	if err := l.shim.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		return LinkStats{}, err
	}
	select {
	case s := <-l.shimStats:
		return s, nil
	case <-time.After(3 * time.Second):
		return LinkStats{}, errors.New("imgate-netem gave no stats within 3s")
	}
}

// startGateway runs the gateway in its namespace with a listener for every
// transport. A listener the gateway refuses (a scheme it does not know yet)
// is dropped and its transports marked unavailable; the gateway is started
// again without it.
func (l *Lab) startGateway(ctx context.Context) error {
	data := filepath.Join(l.dir, "data")
	key, err := gateway.DefaultDevKey(data) // created here, found by the gateway
	if err != nil {
		return err
	}
	l.key = key
	var listen []string
	for _, t := range l.cfg.Transports {
		if u := t.ListenURL(); !slices.Contains(listen, u) {
			listen = append(listen, u)
		}
	}
	bin, err := filepath.Abs(l.cfg.GatewayBin)
	if err != nil {
		return err
	}
	for attempt := 1; len(listen) > 0; attempt++ {
		argv := []string{"ip", "netns", "exec", string(l.gw), bin, "all", "--data", data, "--node", "weaknet",
			"--log-level", "warn", "--listen", strings.Join(listen, ","), "--admin", adminAddr, "--http", httpAddr}
		p, err := startProcess("imgate", filepath.Join(l.dir, fmt.Sprintf("gateway-%d.log", attempt)), argv, nil, false, false)
		if err != nil {
			return err
		}
		admin, err := l.waitAdmin(ctx, p)
		if err == nil {
			l.gateway, l.admin = p, admin
			return nil
		}
		p.stop(5 * time.Second)
		if !p.exited() || ctx.Err() != nil {
			return err
		}
		// It exited: see which listener it refused.
		tail := p.logTail()
		refused := slices.IndexFunc(listen, func(u string) bool { return strings.Contains(tail, `"`+u+`"`) })
		if refused < 0 {
			return fmt.Errorf("gateway exited: %v: %s", p.err, tail)
		}
		l.unavailable[listen[refused]] = lastLine(tail)
		l.cfg.Progress(fmt.Sprintf("gateway refused %s: %s", listen[refused], lastLine(tail)))
		listen = slices.Delete(listen, refused, refused+1)
	}
	return errors.New("gateway refused every listener")
}

// waitAdmin waits until the gateway's admin port answers PING (20 s at most)
// and returns a connection to it, opened from inside the gateway namespace.
func (l *Lab) waitAdmin(ctx context.Context, p *process) (*adminConn, error) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		c, err := l.gw.dial(dctx, "tcp", adminAddr)
		cancel()
		if err == nil {
			a := newAdminConn(c)
			if err = a.ping(); err == nil {
				return a, nil
			}
			a.close()
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("gateway exited: %v", p.err)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("gateway admin port not answering after 20s (last: %v): %s", err, p.logTail())
		}
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// DirectionStats are the shim's counters for one direction.
type DirectionStats struct {
	In          int64 `json:"in"`
	Out         int64 `json:"out"`
	Lost        int64 `json:"lost"`
	QueueFull   int64 `json:"queue_full"`
	Held        int64 `json:"held"`
	WriteErrors int64 `json:"write_errors"`
}

// LinkStats are both directions: Down from the gateway to the client, Up
// back.
type LinkStats struct {
	Down DirectionStats `json:"a_to_b"`
	Up   DirectionStats `json:"b_to_a"`
}

func (d DirectionStats) minus(o DirectionStats) DirectionStats {
	return DirectionStats{In: d.In - o.In, Out: d.Out - o.Out, Lost: d.Lost - o.Lost, QueueFull: d.QueueFull - o.QueueFull,
		Held: d.Held - o.Held, WriteErrors: d.WriteErrors - o.WriteErrors}
}

func (s LinkStats) minus(o LinkStats) LinkStats {
	return LinkStats{Down: s.Down.minus(o.Down), Up: s.Up.minus(o.Up)}
}

// LossRate is the fraction of packets the shim dropped, both ways.
func (s LinkStats) LossRate() float64 {
	in := s.Down.In + s.Up.In
	if in == 0 {
		return 0
	}
	return float64(s.Down.Lost+s.Up.Lost+s.Down.QueueFull+s.Up.QueueFull) / float64(in)
}
