package cluster

import (
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Paths are a component's connections to the bus: one, or two kept on
// different NATS servers of a cluster. With two, a node subscribes on both
// and keeps the first copy of each stamped message (see dedup.go), and a
// Pusher republishes its last moments on the other path when its path
// fails: losing one NATS server then loses no push. Requests and registry
// writes use one path at a time.
type Paths struct {
	conns []*nats.Conn
	log   *slog.Logger

	mu       sync.Mutex
	up       []bool
	upSince  []time.Time
	active   int // the path publishes use; moves only when it goes down
	watchers []func(path int, up bool)
	stop     chan struct{}
	wg       sync.WaitGroup
}

// Recovering is how long a path that came back is not trusted to deliver
// alone: while the other path is up, its messages are left to the other,
// which carried everything meanwhile.
const Recovering = time.Second

// ConnectPaths opens the bus connections of a component: two when the
// configuration lists at least two NATS servers (each given them in a
// different order, so they start on different servers), else one.
func ConnectPaths(cfg Config, name string, embedded *Embedded, log *slog.Logger, extra ...nats.Option) (*Paths, error) {
	cfg = cfg.withDefaults()
	n := 1
	if len(cfg.NATS) >= 2 && cfg.Paths != 1 {
		n = 2
	}
	var conns []*nats.Conn
	first := rand.IntN(len(cfg.NATS) + 1) // spread the processes' paths over the servers
	for i := range n {
		c := cfg
		opts := extra
		if n == 2 {
			k := (first + i) % len(cfg.NATS)
			c.NATS = append(slices.Clone(cfg.NATS[k:]), cfg.NATS[:k]...)
			opts = append(slices.Clone(extra), nats.DontRandomize())
		}
		nc, err := Connect(c, name, embedded, log, opts...)
		if err != nil {
			for _, nc := range conns {
				nc.Close()
			}
			return nil, err
		}
		conns = append(conns, nc)
	}
	return NewPaths(log, conns...), nil
}

// NewPaths watches already open connections.
func NewPaths(log *slog.Logger, conns ...*nats.Conn) *Paths {
	if log == nil {
		log = slog.Default()
	}
	p := &Paths{conns: conns, log: log, up: make([]bool, len(conns)), upSince: make([]time.Time, len(conns)), stop: make(chan struct{})}
	now := time.Now()
	for i, nc := range conns {
		ch := nc.StatusChanged(nats.CONNECTED, nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
		if nc.IsConnected() {
			p.up[i], p.upSince[i] = true, now.Add(-Recovering)
		}
		p.wg.Add(1)
		go p.watch(i, nc, ch)
	}
	for i := range conns {
		if p.up[i] {
			p.active = i
			break
		}
	}
	if len(conns) > 1 {
		p.wg.Add(1)
		go p.keepApart()
	}
	return p
}

// Conns returns the connections, primary first.
func (p *Paths) Conns() []*nats.Conn { return p.conns }

// Primary is the first connection (registry writes, queries).
func (p *Paths) Primary() *nats.Conn { return p.conns[0] }

// Active returns the path publishes use now.
func (p *Paths) Active() (int, *nats.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.active, p.conns[p.active]
}

// AnyUp reports whether some path is connected.
func (p *Paths) AnyUp() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Contains(p.up, true)
}

// Trusted reports whether messages from path i should be delivered: it is
// up and out of recovery, or no other path is up and trusted.
func (p *Paths) Trusted(i int, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.trusted(i, now)
}

func (p *Paths) trusted(i int, now time.Time) bool {
	if len(p.conns) == 1 {
		return true
	}
	settled := func(j int) bool { return p.up[j] && now.Sub(p.upSince[j]) >= Recovering }
	if settled(i) {
		return true
	}
	for j := range p.conns {
		// The flags lag a dead connection by a moment; ask it too, so that
		// a recovering path is not ignored while the other one is gone.
		if j != i && settled(j) && p.conns[j].IsConnected() {
			return false
		}
	}
	return true
}

// Watch calls fn after every change of a path's state (from the watcher
// goroutine; fn must not block long).
func (p *Paths) Watch(fn func(path int, up bool)) {
	p.mu.Lock()
	p.watchers = append(p.watchers, fn)
	p.mu.Unlock()
}

func (p *Paths) watch(i int, nc *nats.Conn, ch chan nats.Status) {
	defer p.wg.Done()
	defer nc.RemoveStatusListener(ch)
	for {
		select {
		case <-p.stop:
			return
		case st := <-ch:
			up := st == nats.CONNECTED
			// The event may be stale: the connection's state decides.
			up = up && nc.IsConnected()
			p.mu.Lock()
			changed := p.up[i] != up
			p.up[i] = up
			if up && changed {
				p.upSince[i] = time.Now()
			}
			if up && !p.up[p.active] {
				p.active = i // publishes were going nowhere
			}
			if !up && p.active == i {
				for j := range p.conns {
					if p.up[j] {
						p.active = j
						break
					}
				}
			}
			watchers := slices.Clone(p.watchers)
			p.mu.Unlock()
			if changed {
				for _, fn := range watchers {
					fn(i, up)
				}
			}
			if st == nats.CLOSED {
				return
			}
		}
	}
}

// keepApart moves the second path off the first one's server when both
// ended up on the same one (after a failover), so that one server's loss
// cannot take both.
func (p *Paths) keepApart() {
	defer p.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-p.stop:
			return
		case now := <-t.C:
			a, b := p.conns[0], p.conns[1]
			if !a.IsConnected() || !b.IsConnected() || now.Sub(last) < 5*time.Second {
				continue
			}
			if a.ConnectedAddr() != "" && a.ConnectedAddr() == b.ConnectedAddr() && len(b.Servers()) > 1 {
				// Move the path that came up last: it is still recovering,
				// the other carries the traffic.
				p.mu.Lock()
				move := 1
				if p.upSince[0].After(p.upSince[1]) {
					move = 0
				}
				p.mu.Unlock()
				last = now
				p.log.Info("cluster: both bus paths on one server; moving one", "server", b.ConnectedServerName(), "path", move)
				_ = p.conns[move].ForceReconnect()
			}
		}
	}
}

// Flush flushes every connected path.
func (p *Paths) Flush(timeout time.Duration) {
	for _, nc := range p.conns {
		if nc.IsConnected() {
			_ = nc.FlushTimeout(timeout)
		}
	}
}

// Close closes every connection.
func (p *Paths) Close() {
	select {
	case <-p.stop:
		return
	default:
	}
	close(p.stop)
	for _, nc := range p.conns {
		nc.Close()
	}
	p.wg.Wait()
}
