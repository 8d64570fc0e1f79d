package transport

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Engine owns the epoll loops and the listeners that share them.
type Engine struct {
	cfg     Config
	pollers []*poller
	next    atomic.Uint32
	// table maps a descriptor to its connection; sized by RLIMIT_NOFILE.
	table    []atomic.Pointer[pollConn]
	jan      *janitor
	stats    Stats
	stopping atomic.Bool

	mu        sync.Mutex
	listeners []Listener
	streams   map[*streamConn]struct{}
}

// NewEngine starts cfg.Loops epoll loops.
func NewEngine(cfg Config) (*Engine, error) {
	cfg = cfg.withDefaults()
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return nil, fmt.Errorf("getrlimit: %w", err)
	}
	size := rl.Cur
	if size > 1<<24 {
		size = 1 << 24
	}
	e := &Engine{
		cfg:     cfg,
		table:   make([]atomic.Pointer[pollConn], size),
		streams: make(map[*streamConn]struct{}),
	}
	e.jan = newJanitor()
	for i := 0; i < cfg.Loops; i++ {
		p, err := newPoller(e)
		if err != nil {
			e.Close()
			return nil, fmt.Errorf("epoll loop: %w", err)
		}
		e.pollers = append(e.pollers, p)
		go p.run()
	}
	return e, nil
}

// Config returns the engine's settings with defaults filled in.
func (e *Engine) Config() Config { return e.cfg }

// Stats returns the engine's counters.
func (e *Engine) Stats() *Stats { return &e.stats }

func (e *Engine) conn(fd int) *pollConn {
	if fd < 0 || fd >= len(e.table) {
		return nil
	}
	return e.table[fd].Load()
}

// Listen starts a listener for rawURL: tcp://host:port, ws://host:port/path,
// tls://host:port, wss://host:port/path, kcp://host:port?preset=fast (UDP; see
// ParseKCPOptions) or quic://host:port (UDP). TLS kinds
// and QUIC need tlsCfg.
func (e *Engine) Listen(rawURL string, h Handler, tlsCfg *tls.Config) (Listener, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("listen %q: %w", rawURL, err)
	}
	var kind Kind
	switch u.Scheme {
	case "tcp":
		kind = KindTCP
	case "ws":
		kind = KindWS
	case "tls":
		kind = KindTLS
	case "wss":
		kind = KindWSS
	case "kcp":
		l, err := e.listenKCP(u)
		if err != nil {
			return nil, err
		}
		e.mu.Lock()
		e.listeners = append(e.listeners, l)
		e.mu.Unlock()
		l.start(h)
		return l, nil
	case "quic":
		l, err := e.listenQUIC(u.Host, h, tlsCfg)
		if err == nil {
			e.mu.Lock()
			e.listeners = append(e.listeners, l)
			e.mu.Unlock()
		}
		return l, err
	default:
		return nil, fmt.Errorf("listen %q: unknown scheme %q (want tcp, ws, tls, wss, kcp, quic)", rawURL, u.Scheme)
	}
	path := u.Path
	if path == "" {
		path = e.cfg.WSPath
	}
	ln, err := net.Listen("tcp", u.Host)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", rawURL, err)
	}
	pub := publicURL(u.Scheme, ln.Addr(), path)
	var l Listener
	if kind == KindTLS || kind == KindWSS {
		if tlsCfg == nil {
			ln.Close()
			return nil, fmt.Errorf("listen %s: TLS listener needs a certificate", rawURL)
		}
		l = e.serveStream(tls.NewListener(ln, tlsCfg), kind, h, path, pub)
	} else {
		pl, err := e.servePoll(ln.(*net.TCPListener), kind, h, path, pub)
		if err != nil {
			return nil, err
		}
		l = pl
	}
	e.mu.Lock()
	e.listeners = append(e.listeners, l)
	e.mu.Unlock()
	return l, nil
}

func publicURL(scheme string, a net.Addr, path string) string {
	s := scheme + "://" + a.String()
	if scheme == "ws" || scheme == "wss" {
		s += path
	}
	return s
}

func (e *Engine) newWSState(kind Kind, path string) *wsState {
	if !kind.WebSocket() {
		return nil
	}
	return &wsState{path: path, origins: e.cfg.WSOrigins}
}

// servePoll moves a bound listener's socket into the reactor. The standard
// library binds it (SO_REUSEADDR, backlog from somaxconn); we keep a
// duplicate descriptor and close the original.
func (e *Engine) servePoll(ln *net.TCPListener, kind Kind, h Handler, path, pub string) (*pollListener, error) {
	f, err := ln.File()
	addr := ln.Addr()
	ln.Close()
	if err != nil {
		return nil, fmt.Errorf("listener descriptor: %w", err)
	}
	fd, err := unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("listener descriptor: %w", err)
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	p := e.pollers[int(e.next.Add(1))%len(e.pollers)]
	l := &pollListener{e: e, fd: fd, kind: kind, h: h, addr: addr, url: pub, path: path, loop: p}
	for {
		old := p.listeners.Load()
		next := append(append([]*pollListener{}, *old...), l)
		if p.listeners.CompareAndSwap(old, &next) {
			break
		}
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		l.Close()
		return nil, fmt.Errorf("epoll add listener: %w", err)
	}
	return l, nil
}

// adopt registers an accepted socket with a loop. OnOpen runs before the
// socket is in epoll, so no event for it can overlap the call.
func (e *Engine) adopt(fd int, sa unix.Sockaddr, l *pollListener) {
	if fd >= len(e.table) {
		e.stats.AcceptErrors.Add(1)
		l.warn("accept", errTooManyFDs)
		unix.Close(fd)
		return
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if e.cfg.SendBuffer > 0 {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, e.cfg.SendBuffer)
	}
	p := e.pollers[int(e.next.Add(1))%len(e.pollers)]
	c := &pollConn{fd: fd, p: p, h: l.h, kind: l.kind, raddr: sockaddrToTCP(sa)}
	c.out.limit = e.cfg.QueueBytes
	c.out.ws = l.kind.WebSocket()
	c.codec = codec{sink: c, maxFrame: e.cfg.MaxFrame, ws: e.newWSState(l.kind, l.path)}
	if c.codec.ws == nil {
		c.opened = true
		l.h.OnOpen(c)
	} else {
		e.jan.add(c, time.Now().Add(e.cfg.HandshakeTimeout))
	}
	// Publishing c in the table is also what orders the writes above before
	// the loop's reads (the race detector cannot see through epoll).
	e.table[fd].Store(c)
	ev := unix.EpollEvent{Events: readEvents, Fd: int32(fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		c.released = true
		c.out.mu.Lock()
		c.out.closed = true
		c.out.drop()
		c.closeFDLocked()
		c.out.mu.Unlock()
		if c.opened {
			l.h.OnClose(c, err)
		}
	}
}

// Close stops the listeners, cuts every connection (each gets OnClose) and
// stops the loops.
func (e *Engine) Close() error {
	e.mu.Lock()
	ls := e.listeners
	e.listeners = nil
	streams := make([]*streamConn, 0, len(e.streams))
	for c := range e.streams {
		streams = append(streams, c)
	}
	e.mu.Unlock()
	for _, l := range ls {
		l.Close()
	}
	for i := range e.table {
		if c := e.table[i].Load(); c != nil {
			c.cut()
		}
	}
	for _, c := range streams {
		c.cut()
	}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) && e.liveConns() > 0 {
		time.Sleep(10 * time.Millisecond)
	}
	e.stopping.Store(true)
	for _, p := range e.pollers {
		p.wake()
		<-p.done
		unix.Close(p.epfd)
		unix.Close(p.wakeFD)
	}
	e.jan.stop()
	return nil
}

func (e *Engine) liveConns() int {
	n := 0
	for i := range e.table {
		if e.table[i].Load() != nil {
			n++
		}
	}
	e.mu.Lock()
	n += len(e.streams)
	e.mu.Unlock()
	return n
}

// janitor cuts connections whose deadline passed: WebSocket upgrades that
// never finish and closing connections whose peer lingers. One goroutine
// for the whole engine, ticking four times a second.
type janitor struct {
	mu    sync.Mutex
	due   map[expirer]time.Time
	close chan struct{}
	done  chan struct{}
}

type expirer interface{ expire() }

func newJanitor() *janitor {
	j := &janitor{due: make(map[expirer]time.Time), close: make(chan struct{}), done: make(chan struct{})}
	go j.run()
	return j
}

func (j *janitor) add(c expirer, at time.Time) {
	j.mu.Lock()
	j.due[c] = at
	j.mu.Unlock()
}

func (j *janitor) remove(c expirer) {
	j.mu.Lock()
	delete(j.due, c)
	j.mu.Unlock()
}

func (j *janitor) run() {
	defer close(j.done)
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	var expired []expirer
	for {
		select {
		case <-j.close:
			return
		case now := <-t.C:
			expired = expired[:0]
			j.mu.Lock()
			for c, at := range j.due {
				if now.After(at) {
					expired = append(expired, c)
					delete(j.due, c)
				}
			}
			j.mu.Unlock()
			for _, c := range expired {
				c.expire()
			}
		}
	}
}

func (j *janitor) stop() {
	select {
	case <-j.close:
	default:
		close(j.close)
		<-j.done
	}
}
