package transport

import "sync"

// outbox is a connection's outbound queue: frames not yet written, in order.
// Exactly one goroutine at a time owns the write side (flushing == true):
// whoever turned flushing on must write until the queue is empty or the
// socket is full, so frames that arrive meanwhile leave in the same write.
type outbox struct {
	mu       sync.Mutex
	frames   []Frame  // nil while empty; inline, or an array from queuePool
	held     *[]Frame // pool handle for frames' backing array
	inline   [1]Frame // the common case, one frame pending, needs no array at all
	sent     int      // bytes of frames[0] already written
	bytes    int      // unwritten bytes in the queue
	writing  int      // of those, bytes handed to a write syscall in progress
	flushing bool     // a goroutine owns the write side
	blocked  bool     // the socket is full; the loop resumes the write (reactor only)
	closing  bool     // Close was called: no new frames, close once drained
	closed   bool     // the connection is gone: drop everything
	ws       bool     // frames go out WebSocket-wrapped
	limit    int
}

// push appends f. start reports that the caller now owns the write side.
// A frame larger than the limit is still accepted into an empty queue, so
// that one big frame cannot wedge a connection forever.
func (o *outbox) push(f Frame) (start bool, err error) {
	n := len(f.Wire(o.ws))
	o.mu.Lock()
	if o.closed || o.closing {
		o.mu.Unlock()
		f.Release()
		return false, ErrClosed
	}
	// Bytes a write syscall is taking right now are the kernel's, as in
	// the goroutine transport (which consumes a chunk before writing it):
	// counting them would let a reader that keeps up trip the limit while
	// the writer waits to be scheduled between its syscall and consume.
	if queued := o.bytes - o.writing; queued > 0 && queued+n > o.limit {
		o.mu.Unlock()
		f.Release()
		return false, ErrQueueFull
	}
	o.add(f, n)
	if !o.flushing {
		o.flushing, start = true, true
	}
	o.mu.Unlock()
	return start, nil
}

// startClose marks the queue closing and queues last behind what is already
// there. It reports ok == false when the queue was already closing (last is
// released), start when the caller now owns the write side and must flush,
// and cut when the socket is full: nothing more will be written, so the
// connection should be cut at once.
func (o *outbox) startClose(last Frame) (ok, start, cut bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closing || o.closed || o.blocked {
		if last != nil {
			last.Release()
		}
		if o.closing || o.closed {
			return false, false, false
		}
		o.closing = true
		return true, false, true
	}
	o.closing = true
	if last != nil {
		o.add(last, len(last.Wire(o.ws)))
	}
	start = !o.flushing
	o.flushing = true
	return true, start, false
}

// add appends f (n wire bytes) to the queue. Caller holds mu.
func (o *outbox) add(f Frame, n int) {
	switch {
	case o.held == nil && len(o.frames) == 0:
		o.frames = o.inline[:0]
	case o.held == nil && len(o.frames) == cap(o.frames):
		// Outgrowing the inline slot: move to a pooled array.
		o.held = queuePool.Get().(*[]Frame)
		o.frames = append((*o.held)[:0], o.frames...)
		clear(o.inline[:])
	}
	o.frames = append(o.frames, f)
	o.bytes += n
}

// consume drops n written bytes from the front. Caller holds mu.
func (o *outbox) consume(n int) {
	o.bytes -= n
	i := 0
	for n > 0 && i < len(o.frames) {
		left := len(o.frames[i].Wire(o.ws)) - o.sent
		if n < left {
			o.sent += n
			break
		}
		n -= left
		o.frames[i].Release()
		o.frames[i] = nil
		o.sent = 0
		i++
	}
	if i > 0 {
		k := copy(o.frames, o.frames[i:])
		clear(o.frames[k:])
		o.frames = o.frames[:k]
	}
	if len(o.frames) == 0 {
		o.recycle()
	}
}

// queuePool holds queue backing arrays: an idle connection keeps none, and a
// busy one gets back an array that an earlier burst already grew, so a
// steady backlog allocates nothing.
var queuePool = sync.Pool{New: func() any { q := make([]Frame, 0, 8); return &q }}

// recycle hands the empty queue's backing array back. Caller holds mu.
func (o *outbox) recycle() {
	if o.held != nil {
		*o.held = o.frames[:0]
		queuePool.Put(o.held)
	}
	o.frames, o.held = nil, nil
	clear(o.inline[:])
}

// drop releases every queued frame. Caller holds mu and owns the write side
// (or knows nobody does).
func (o *outbox) drop() {
	for i, f := range o.frames {
		f.Release()
		o.frames[i] = nil
	}
	o.frames = o.frames[:0]
	o.recycle()
	o.bytes, o.sent = 0, 0
}

func (o *outbox) queued() int {
	o.mu.Lock()
	n := o.bytes
	o.mu.Unlock()
	return n
}
