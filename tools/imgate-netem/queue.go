package main

import "time"

// packet is one IP packet waiting in a direction until it is due.
type packet struct {
	due time.Duration // offset from the link's start
	seq uint64        // arrival order: breaks ties so equal due times stay FIFO
	buf []byte        // the packet; its backing array belongs to the pool
}

// delayQueue is a min-heap of packets by (due, seq), written out rather than
// built on container/heap, whose interface would box every packet pushed (an
// allocation per packet). Its array is sized once for the backlog.
type delayQueue struct {
	items []packet
}

func newDelayQueue(capacity int) *delayQueue {
	return &delayQueue{items: make([]packet, 0, capacity)}
}

func (q *delayQueue) len() int { return len(q.items) }

func (q *delayQueue) less(i, j int) bool {
	a, b := &q.items[i], &q.items[j]
	return a.due < b.due || a.due == b.due && a.seq < b.seq
}

func (q *delayQueue) push(p packet) {
	q.items = append(q.items, p)
	for i := len(q.items) - 1; i > 0; {
		parent := (i - 1) / 2
		if !q.less(i, parent) {
			break
		}
		q.items[i], q.items[parent] = q.items[parent], q.items[i]
		i = parent
	}
}

// peek returns the packet due first; ok is false when the queue is empty.
func (q *delayQueue) peek() (p packet, ok bool) {
	if len(q.items) == 0 {
		return packet{}, false
	}
	return q.items[0], true
}

// pop removes and returns the packet due first. The queue must not be empty.
func (q *delayQueue) pop() packet {
	top := q.items[0]
	last := len(q.items) - 1
	q.items[0] = q.items[last]
	q.items[last] = packet{}
	q.items = q.items[:last]
	for i := 0; ; {
		smallest, l, r := i, 2*i+1, 2*i+2
		if l < last && q.less(l, smallest) {
			smallest = l
		}
		if r < last && q.less(r, smallest) {
			smallest = r
		}
		if smallest == i {
			break
		}
		q.items[i], q.items[smallest] = q.items[smallest], q.items[i]
		i = smallest
	}
	return top
}

// bufferPool hands out fixed-size packet buffers carved from one slab, so
// forwarding allocates nothing per packet. A direction needs backlog+2
// buffers: backlog queued, one being read into, one being written out.
type bufferPool struct {
	free [][]byte
}

func newBufferPool(count, size int) *bufferPool {
	slab := make([]byte, count*size)
	p := &bufferPool{free: make([][]byte, 0, count)}
	for i := range count {
		p.free = append(p.free, slab[i*size:(i+1)*size:(i+1)*size])
	}
	return p
}

// get returns a buffer of full size; ok is false when none is free.
func (p *bufferPool) get() (buf []byte, ok bool) {
	n := len(p.free)
	if n == 0 {
		return nil, false
	}
	buf = p.free[n-1]
	p.free = p.free[:n-1]
	return buf[:cap(buf)], true
}

func (p *bufferPool) put(buf []byte) { p.free = append(p.free, buf[:cap(buf)]) }
