package transport

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"imgate/proto"
)

// The epoll reactor. A few loops (one per core) wait on epoll; a readable
// connection is read into the loop's shared buffer and its frames are handed
// to the Handler right there, so a connection at rest owns no goroutine and
// no buffer: only its struct, its socket and its place in the fd table.
//
// Writes are made by whoever queues a frame (see outbox): a vectored write of
// everything pending, straight from the shared frame buffers. A full socket
// turns on EPOLLOUT interest and the loop resumes the write when it drains.

const (
	readEvents  = unix.EPOLLIN | unix.EPOLLRDHUP
	writeEvents = readEvents | unix.EPOLLOUT
	maxIov      = 64 // frames per writev
	acceptBatch = 256
)

type poller struct {
	e      *Engine
	epfd   int
	wakeFD int // eventfd: wakes the loop for shutdown
	buf    []byte
	// listeners whose accept runs on this loop (copy-on-write).
	listeners atomic.Pointer[[]*pollListener]
	done      chan struct{}
}

func newPoller(e *Engine) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wfd)
		return nil, err
	}
	p := &poller{e: e, epfd: epfd, wakeFD: wfd, buf: make([]byte, e.cfg.ReadBuffer), done: make(chan struct{})}
	empty := []*pollListener{}
	p.listeners.Store(&empty)
	return p, nil
}

func (p *poller) run() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			slog.Error("epoll wait failed", "err", err)
			return
		}
		for i := 0; i < n; i++ {
			fd, ev := int(events[i].Fd), events[i].Events
			if fd == p.wakeFD {
				if p.e.stopping.Load() {
					return
				}
				continue
			}
			if l := p.listenerFor(fd); l != nil {
				l.accept(p)
				continue
			}
			c := p.e.conn(fd)
			if c == nil {
				continue
			}
			if ev&unix.EPOLLOUT != 0 {
				c.onWritable()
			}
			if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				p.onReadable(c)
			}
		}
	}
}

func (p *poller) listenerFor(fd int) *pollListener {
	for _, l := range *p.listeners.Load() {
		if l.fd == fd {
			return l
		}
	}
	return nil
}

func (p *poller) wake() {
	var one = [8]byte{1}
	unix.Write(p.wakeFD, one[:])
}

func (p *poller) onReadable(c *pollConn) {
	n, err := unix.Read(c.fd, p.buf)
	if n > 0 {
		if c.closing.Load() {
			return // draining a closing connection: input is ignored
		}
		if ferr := c.codec.feed(p.buf[:n]); ferr != nil {
			c.fail(ferr)
		}
		return
	}
	if err == unix.EAGAIN || err == unix.EINTR {
		return
	}
	if err == nil && c.closing.Load() {
		p.release(c, nil)
		return
	}
	if err == nil {
		err = ErrPeerGone
	}
	p.release(c, err)
}

// release ends a connection; only its loop calls it. The socket is closed
// here unless a writer is mid-write, in which case that writer closes it.
func (p *poller) release(c *pollConn, err error) {
	if c.released {
		return
	}
	c.released = true
	c.closing.Store(true)
	unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	c.out.mu.Lock()
	c.out.closing, c.out.closed = true, true
	if !c.out.flushing {
		c.out.drop()
		c.closeFDLocked()
	}
	c.out.mu.Unlock()
	c.codec.release()
	p.e.jan.remove(c)
	if c.failure != nil {
		err = c.failure
	}
	if c.opened {
		c.h.OnClose(c, err)
	}
}

// pollConn is a TCP or WebSocket connection served by the reactor.
type pollConn struct {
	fd    int
	p     *poller
	h     Handler
	kind  Kind
	raddr net.Addr
	ctx   atomic.Value

	// Reader side: touched only by the owning loop.
	codec    codec
	opened   bool
	released bool
	failure  *proto.Error // why fail closed the connection; OnClose reports it

	closing atomic.Bool // Close was called or the connection failed
	out     outbox
	shutWR  bool // FIN sent; guarded by out.mu
	fdGone  bool // socket closed; guarded by out.mu
}

func (c *pollConn) Kind() Kind                    { return c.kind }
func (c *pollConn) RemoteAddr() net.Addr          { return c.raddr }
func (c *pollConn) QueuedBytes() int              { return c.out.queued() }
func (c *pollConn) SetContext(v any)              { c.ctx.Store(ctxBox{v}) }
func (c *pollConn) Context() any                  { b, _ := c.ctx.Load().(ctxBox); return b.v }
func (c *pollConn) Enqueue(f Frame) (bool, error) { return c.out.push(f) }

// ctxBox lets atomic.Value hold values of different types over time.
type ctxBox struct{ v any }

func (c *pollConn) Send(f Frame) error {
	start, err := c.out.push(f)
	if start {
		c.Flush()
	}
	return err
}

// Flush writes the queue with vectored writes until it is empty or the
// socket is full. Only the goroutine that owns the write side calls it.
func (c *pollConn) Flush() {
	var b *iovBatch // fetched only when more than one frame is pending
	defer func() {
		if b != nil {
			iovPool.Put(b)
		}
	}()
	o := &c.out
	o.mu.Lock()
	defer o.mu.Unlock()
	for {
		if o.closed {
			o.drop()
			o.flushing = false
			c.closeFDLocked()
			return
		}
		if len(o.frames) == 0 {
			o.flushing = false
			if o.closing && !c.shutWR && !c.fdGone {
				c.shutWR = true
				unix.Shutdown(c.fd, unix.SHUT_WR)
			}
			return
		}
		var written int
		var err error
		if len(o.frames) == 1 {
			// One frame pending, the common case on a quiet node: a plain
			// write(2), no iovec.
			w := o.frames[0].Wire(o.ws)[o.sent:]
			o.writing = len(w)
			o.mu.Unlock()
			written, err = unix.Write(c.fd, w)
			o.mu.Lock()
			o.writing = 0
		} else {
			if b == nil {
				b = iovPool.Get().(*iovBatch)
			}
			written, err = c.writeQueue(b)
		}
		if written > 0 {
			o.consume(written)
		}
		switch {
		case err == nil || err == unix.EINTR:
		case err == unix.EAGAIN:
			if !o.closed {
				o.blocked = true
				c.watchWrite(true)
				return // flushing stays on: the loop resumes on EPOLLOUT
			}
		default:
			// The peer is gone; the loop sees it and releases the connection.
			o.drop()
			o.closing = true
			c.closing.Store(true)
			if !c.fdGone {
				unix.Shutdown(c.fd, unix.SHUT_RDWR)
			}
		}
	}
}

// writeQueue writes up to maxIov queued frames with one writev, dropping
// out.mu around the syscall. Caller holds out.mu and owns the write side.
func (c *pollConn) writeQueue(b *iovBatch) (int, error) {
	o := &c.out
	n := 0
	for i, f := range o.frames {
		if n == maxIov {
			break
		}
		w := f.Wire(o.ws)
		if i == 0 {
			w = w[o.sent:]
		}
		if len(w) == 0 {
			continue
		}
		b.iov[n].Base = &w[0]
		b.iov[n].SetLen(len(w))
		o.writing += len(w)
		n++
	}
	o.mu.Unlock()
	written, err := writev(c.fd, b.iov[:n])
	o.mu.Lock()
	o.writing = 0
	clear(b.iov[:n])
	return written, err
}

func (c *pollConn) onWritable() {
	c.out.mu.Lock()
	resume := c.out.blocked
	c.out.blocked = false
	c.watchWrite(false)
	c.out.mu.Unlock()
	if resume {
		c.Flush()
	}
}

// watchWrite turns EPOLLOUT interest on or off. Caller holds out.mu.
func (c *pollConn) watchWrite(on bool) {
	if c.fdGone || c.released {
		return
	}
	ev := unix.EpollEvent{Events: readEvents, Fd: int32(c.fd)}
	if on {
		ev.Events = writeEvents
	}
	unix.EpollCtl(c.p.epfd, unix.EPOLL_CTL_MOD, c.fd, &ev)
}

// Close queues last, writes what is queued, sends FIN and lets the peer
// close; the janitor cuts the connection if the peer lingers. A connection
// whose socket is full (a slow consumer) is cut at once.
func (c *pollConn) Close(last Frame) {
	ok, start, cut := c.out.startClose(closingFrame(last, c.codec.ws))
	if !ok {
		return
	}
	c.closing.Store(true)
	if cut {
		c.cut()
		return
	}
	c.p.e.jan.add(c, time.Now().Add(c.p.e.cfg.Linger))
	if start {
		c.Flush()
	}
}

// cut shuts the socket down both ways; the loop then releases it.
func (c *pollConn) cut() {
	c.closing.Store(true)
	c.out.mu.Lock()
	if !c.fdGone {
		unix.Shutdown(c.fd, unix.SHUT_RDWR)
	}
	c.out.mu.Unlock()
}

// fail answers a protocol violation with a CLOSE frame and closes.
func (c *pollConn) fail(err error) {
	if err == errHandled {
		return
	}
	c.failure = closeReason(err)
	if c.kind.WebSocket() && !c.codec.ws.upgraded.Load() {
		c.cut()
		return
	}
	c.Close(closeFrame(err, c.kind.WebSocket()))
}

// closeFDLocked closes the socket once. Caller holds out.mu.
func (c *pollConn) closeFDLocked() {
	if c.fdGone {
		return
	}
	c.fdGone = true
	c.p.e.table[c.fd].Store(nil)
	unix.Close(c.fd)
}

// sink implementation for the codec.

func (c *pollConn) deliver(f proto.Frame) error {
	if c.closing.Load() {
		return nil
	}
	return c.h.OnFrame(c, f)
}

func (c *pollConn) reply(f Frame) { c.Send(f) }

func (c *pollConn) upgraded() {
	c.p.e.jan.remove(c)
	c.opened = true
	c.h.OnOpen(c)
}

func (c *pollConn) finish(last Frame) { c.Close(last) }

// janitor cut hook.
func (c *pollConn) expire() { c.cut() }

type iovBatch struct{ iov [maxIov]unix.Iovec }

var iovPool = sync.Pool{New: func() any { return new(iovBatch) }}

// writev writes iov without the allocation x/sys/unix.Writev makes.
func writev(fd int, iov []unix.Iovec) (int, error) {
	if len(iov) == 0 {
		return 0, nil
	}
	n, _, errno := unix.Syscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// pollListener accepts TCP connections on a loop.
type pollListener struct {
	e      *Engine
	fd     int
	kind   Kind
	h      Handler
	addr   net.Addr
	url    string
	path   string // WebSocket upgrade path
	loop   *poller
	closed atomic.Bool
	warned atomic.Int64 // unix seconds of the last accept warning
}

func (l *pollListener) Addr() net.Addr { return l.addr }
func (l *pollListener) Kind() Kind     { return l.kind }
func (l *pollListener) URL() string    { return l.url }

func (l *pollListener) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	p := l.loop
	unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, l.fd, nil)
	for {
		old := p.listeners.Load()
		next := make([]*pollListener, 0, len(*old))
		for _, x := range *old {
			if x != l {
				next = append(next, x)
			}
		}
		if p.listeners.CompareAndSwap(old, &next) {
			break
		}
	}
	return unix.Close(l.fd)
}

func (l *pollListener) accept(p *poller) {
	for i := 0; i < acceptBatch; i++ {
		fd, sa, err := unix.Accept4(l.fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			switch err {
			case unix.EAGAIN, unix.EINTR, unix.ECONNABORTED:
			case unix.EMFILE, unix.ENFILE:
				// Out of descriptors: stop watching the listener for a
				// moment rather than spin on a readable backlog.
				l.e.stats.AcceptErrors.Add(1)
				l.warn("accept: out of file descriptors; pausing accepts for 100ms", err)
				unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, l.fd, nil)
				time.AfterFunc(100*time.Millisecond, func() {
					if !l.closed.Load() {
						ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(l.fd)}
						unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, l.fd, &ev)
					}
				})
			default:
				l.e.stats.AcceptErrors.Add(1)
				l.warn("accept failed", err)
			}
			return
		}
		l.e.adopt(fd, sa, l)
	}
}

func (l *pollListener) warn(msg string, err error) {
	now := time.Now().Unix()
	if last := l.warned.Load(); now-last >= 10 && l.warned.CompareAndSwap(last, now) {
		slog.Warn(msg, "listener", l.url, "err", err)
	}
}

func sockaddrToTCP(sa unix.Sockaddr) net.Addr {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]).To16(), Port: a.Port}
	case *unix.SockaddrInet6:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
	}
	return &net.TCPAddr{}
}

var errTooManyFDs = errors.New("transport: descriptor beyond the fd table")
