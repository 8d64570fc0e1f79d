package main

import (
	"errors"
	"io"
	"io/fs"
	"sync"
	"sync/atomic"
	"time"
)

// direction forwards the packets read from src to dst, one way, through a
// scheduler: a reader goroutine admits each packet into a delay queue and a
// writer goroutine sends each one out when it is due. Every buffer comes from
// the direction's pool, so forwarding allocates nothing per packet.
type direction struct {
	name      string
	src       io.Reader // one Read returns one packet (a TUN, a SOCK_SEQPACKET socket)
	dst       io.Writer // one Write sends one packet
	epoch     time.Time // due times are offsets from it, on the monotonic clock
	maxPacket int

	mu    sync.Mutex // guards sched, queue, pool and seq
	sched *scheduler
	queue *delayQueue
	pool  *bufferPool
	seq   uint64

	wake  chan struct{} // a new packet is due before every queued one
	stop  chan struct{} // closed by close
	once  sync.Once
	stats counters
}

// counters are a direction's statistics, updated as packets go by.
type counters struct {
	in, inBytes, out, outBytes         atomic.Int64
	lost, queueFull, oversize, held    atomic.Int64
	readErrors, writeErrors, maxQueued atomic.Int64
}

// Stats is a snapshot of one direction's counters.
type Stats struct {
	In          int64 `json:"in"`           // packets read
	InBytes     int64 `json:"in_bytes"`     // their bytes
	Out         int64 `json:"out"`          // packets written to the other side
	OutBytes    int64 `json:"out_bytes"`    // their bytes
	Lost        int64 `json:"lost"`         // dropped by --loss
	QueueFull   int64 `json:"queue_full"`   // dropped: the backlog was full
	Oversize    int64 `json:"oversize"`     // dropped: larger than --mtu
	Held        int64 `json:"held"`         // held back for reordering
	Queued      int64 `json:"queued"`       // waiting now
	MaxQueued   int64 `json:"max_queued"`   // most ever waiting at once
	ReadErrors  int64 `json:"read_errors"`  // failed reads (device down, ...)
	WriteErrors int64 `json:"write_errors"` // failed writes; the packet is gone
}

// newDirection prepares a direction; start runs it.
func newDirection(name string, src io.Reader, dst io.Writer, im Impairment, seed, stream uint64, maxPacket int, epoch time.Time) *direction {
	return &direction{
		name: name, src: src, dst: dst, epoch: epoch, maxPacket: maxPacket,
		sched: newScheduler(im, seed, stream),
		queue: newDelayQueue(im.Backlog),
		// backlog queued + one being read into + one being written out.
		// One byte more than the largest packet shows when a read was
		// truncated.
		pool: newBufferPool(im.Backlog+2, maxPacket+1),
		wake: make(chan struct{}, 1),
		stop: make(chan struct{}),
	}
}

// start runs the reader and writer; done is closed when both have returned
// (after close, or once src and dst are closed).
func (d *direction) start() (done <-chan struct{}) {
	ch := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); d.readLoop() }()
	go func() { defer wg.Done(); d.writeLoop() }()
	go func() { wg.Wait(); close(ch) }()
	return ch
}

// close stops the writer; the reader stops when its source is closed.
// Packets still queued are dropped.
func (d *direction) close() { d.once.Do(func() { close(d.stop) }) }

func (d *direction) stopped() bool {
	select {
	case <-d.stop:
		return true
	default:
		return false
	}
}

// closedErr reports an error that means the file was closed under us.
func closedErr(err error) bool {
	return errors.Is(err, fs.ErrClosed) || errors.Is(err, io.EOF)
}

func (d *direction) readLoop() {
	d.mu.Lock()
	buf, _ := d.pool.get()
	d.mu.Unlock()
	for {
		n, err := d.src.Read(buf)
		if err != nil {
			if closedErr(err) || d.stopped() {
				return
			}
			d.stats.readErrors.Add(1)
			// A device that is down fails every read: do not spin on it.
			select {
			case <-d.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		d.stats.in.Add(1)
		d.stats.inBytes.Add(int64(n))
		if n > d.maxPacket {
			d.stats.oversize.Add(1)
			continue
		}
		now := time.Since(d.epoch)
		d.mu.Lock()
		due, v := d.sched.admit(now, n, d.queue.len())
		earliest := false
		if v == forward || v == held {
			d.seq++
			d.queue.push(packet{due: due, seq: d.seq, buf: buf[:n]})
			earliest = d.queue.items[0].seq == d.seq
			// Never empty: the pool holds backlog+2 buffers and the
			// scheduler admits at most backlog into the queue.
			buf, _ = d.pool.get()
			if q := int64(d.queue.len()); q > d.stats.maxQueued.Load() {
				d.stats.maxQueued.Store(q) // only this goroutine stores it
			}
		}
		d.mu.Unlock()
		switch v {
		case held:
			d.stats.held.Add(1)
		case dropLoss:
			d.stats.lost.Add(1)
		case dropQueue:
			d.stats.queueFull.Add(1)
		}
		if earliest {
			select {
			case d.wake <- struct{}{}:
			default: // the writer has a wake-up pending already
			}
		}
	}
}

func (d *direction) writeLoop() {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		d.mu.Lock()
		p, ok := d.queue.peek()
		now := time.Since(d.epoch)
		if ok && p.due <= now {
			d.queue.pop()
			d.mu.Unlock()
			_, err := d.dst.Write(p.buf)
			switch {
			case err == nil:
				d.stats.out.Add(1)
				d.stats.outBytes.Add(int64(len(p.buf)))
			case closedErr(err):
				return
			default:
				d.stats.writeErrors.Add(1)
			}
			d.mu.Lock()
			d.pool.put(p.buf)
			d.mu.Unlock()
			continue
		}
		d.mu.Unlock()
		var due <-chan time.Time
		if ok {
			// Since Go 1.23 Reset needs no Stop and drain first: no stale
			// tick is delivered after it.
			timer.Reset(p.due - now)
			due = timer.C
		}
		select {
		case <-due:
		case <-d.wake:
		case <-d.stop:
			timer.Stop()
			return
		}
	}
}

// snapshot reads the counters.
func (d *direction) snapshot() Stats {
	d.mu.Lock()
	queued := int64(d.queue.len())
	d.mu.Unlock()
	c := &d.stats
	return Stats{
		In: c.in.Load(), InBytes: c.inBytes.Load(), Out: c.out.Load(), OutBytes: c.outBytes.Load(),
		Lost: c.lost.Load(), QueueFull: c.queueFull.Load(), Oversize: c.oversize.Load(), Held: c.held.Load(),
		Queued: queued, MaxQueued: c.maxQueued.Load(), ReadErrors: c.readErrors.Load(), WriteErrors: c.writeErrors.Load(),
	}
}
