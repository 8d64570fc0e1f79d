package broadcast

import (
	"errors"
	"hash/maphash"
	"runtime"
	"sort"
	"sync"
	"time"
)

// Config holds the fan-out settings.
type Config struct {
	// Workers run room fan-out; default GOMAXPROCS.
	Workers int
	// Shards per room; default 2 x Workers.
	Shards int
	// SmallRoom is how many members a room keeps in one shard before it
	// spreads over all of them; default 256.
	SmallRoom int
	// QueueLen is each worker's task queue length; default 4096. A full
	// queue makes publishers wait: back-pressure instead of unbounded memory.
	QueueLen int
	// MaxBatch is how many queued tasks a worker takes before flushing the
	// connections it filled; default 64.
	MaxBatch int
	// MaxBatchBytes bounds the frame bytes of one batch, and so what a batch
	// can queue for one member before it is written; keep it well below the
	// per-connection queue limit so a burst never looks like a slow consumer.
	// Default 64 KiB (the gateway uses a quarter of its queue limit).
	MaxBatchBytes int
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	w := runtime.GOMAXPROCS(0)
	return Config{Workers: w, Shards: 2 * w, SmallRoom: 256, QueueLen: 4096, MaxBatch: 64, MaxBatchBytes: 64 << 10}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Workers <= 0 {
		c.Workers = d.Workers
	}
	if c.Shards <= 0 {
		c.Shards = 2 * c.Workers
	}
	if c.SmallRoom <= 0 {
		c.SmallRoom = d.SmallRoom
	}
	if c.QueueLen <= 0 {
		c.QueueLen = d.QueueLen
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = d.MaxBatch
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = d.MaxBatchBytes
	}
	return c
}

// ErrClosed is returned by a closed hub.
var ErrClosed = errors.New("broadcast: hub closed")

// Hub holds the node's rooms and its fan-out workers. Messages published to
// one room from one goroutine reach each member in publish order: a member
// stays in one shard, and a shard's tasks always run on the same worker.
type Hub struct {
	cfg     Config
	seed    maphash.Seed
	names   [64]nameShard
	all     *Room // every member of the node, for node-wide broadcast
	workers []*worker
	wg      sync.WaitGroup
	closed  chan struct{}

	// OnFanout, when set, is called once per published frame with the time
	// from publish until its last recipient's write was issued.
	OnFanout func(d time.Duration, recipients int)
}

type nameShard struct {
	mu    sync.Mutex
	rooms map[string]*Room
	_     [40]byte
}

// NewHub starts the fan-out workers.
func NewHub(cfg Config) *Hub {
	cfg = cfg.withDefaults()
	h := &Hub{cfg: cfg, seed: maphash.MakeSeed(), closed: make(chan struct{})}
	for i := range h.names {
		h.names[i].rooms = make(map[string]*Room)
	}
	h.all = newRoom("", cfg.Shards, 0)
	for i := 0; i < cfg.Workers; i++ {
		w := &worker{hub: h, tasks: make(chan task, cfg.QueueLen)}
		h.workers = append(h.workers, w)
		h.wg.Add(1)
		go w.run()
	}
	return h
}

// Config returns the hub's settings with defaults filled in.
func (h *Hub) Config() Config { return h.cfg }

// Close stops the workers after they finish what is queued.
func (h *Hub) Close() {
	select {
	case <-h.closed:
		return
	default:
	}
	close(h.closed)
	for _, w := range h.workers {
		close(w.tasks)
	}
	h.wg.Wait()
}

func (h *Hub) nameShard(name string) *nameShard {
	return &h.names[maphash.String(h.seed, name)%uint64(len(h.names))]
}

// Join adds m to the named room, creating the room on first join. created
// reports a new room (a cluster node subscribes to its subject then).
func (h *Hub) Join(name string, m Member) (added, created bool) {
	ns := h.nameShard(name)
	for {
		ns.mu.Lock()
		r := ns.rooms[name]
		if r == nil {
			r = newRoom(name, h.cfg.Shards, int(maphash.String(h.seed, name)%uint64(len(h.workers))))
			ns.rooms[name] = r
			created = true
		}
		ns.mu.Unlock()
		added, dead := r.add(m, h.cfg.SmallRoom)
		if !dead {
			return added, created
		}
	}
}

// Leave removes m from the named room and drops the room when it empties.
// removed reports membership; deleted reports that the room is gone.
func (h *Hub) Leave(name string, m Member) (removed, deleted bool) {
	ns := h.nameShard(name)
	ns.mu.Lock()
	r := ns.rooms[name]
	ns.mu.Unlock()
	if r == nil {
		return false, false
	}
	removed, empty := r.remove(m)
	if !empty {
		return removed, false
	}
	ns.mu.Lock()
	r.mu.Lock()
	if len(r.pos) == 0 && !r.dead && ns.rooms[name] == r {
		r.dead = true
		delete(ns.rooms, name)
		deleted = true
	}
	r.mu.Unlock()
	ns.mu.Unlock()
	return removed, deleted
}

// AddNode / RemoveNode maintain the node-wide set used by PublishAll.
func (h *Hub) AddNode(m Member)    { h.all.add(m, h.cfg.SmallRoom) }
func (h *Hub) RemoveNode(m Member) { h.all.remove(m) }

// Room returns the named room or nil.
func (h *Hub) Room(name string) *Room {
	ns := h.nameShard(name)
	ns.mu.Lock()
	r := ns.rooms[name]
	ns.mu.Unlock()
	return r
}

// RoomInfo is a room's name and size.
type RoomInfo struct {
	Name    string
	Members int
}

// Rooms lists the rooms, largest first, at most limit (0: all).
func (h *Hub) Rooms(limit int) []RoomInfo {
	var out []RoomInfo
	for i := range h.names {
		ns := &h.names[i]
		ns.mu.Lock()
		for name, r := range ns.rooms {
			out = append(out, RoomInfo{Name: name, Members: r.Len()})
		}
		ns.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Members != out[j].Members {
			return out[i].Members > out[j].Members
		}
		return out[i].Name < out[j].Name
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

// RoomCount is the number of rooms.
func (h *Hub) RoomCount() int {
	n := 0
	for i := range h.names {
		ns := &h.names[i]
		ns.mu.Lock()
		n += len(ns.rooms)
		ns.mu.Unlock()
	}
	return n
}

// Publish fans f out to the named room and returns how many members it was
// queued for. It consumes the caller's reference to f.
func (h *Hub) Publish(name string, f *Frame) int {
	r := h.Room(name)
	if r == nil {
		f.Release()
		return 0
	}
	return h.publish(r, f)
}

// PublishAll fans f out to every member of the node.
func (h *Hub) PublishAll(f *Frame) int { return h.publish(h.all, f) }

func (h *Hub) publish(r *Room, f *Frame) int {
	select {
	case <-h.closed:
		f.Release()
		return 0
	default:
	}
	n := r.Len()
	if n == 0 {
		f.Release()
		return 0
	}
	f.start = time.Now().UnixNano()
	f.fanout = int32(n)
	busy := 0
	for i := range r.shards {
		if r.shards[i].n.Load() > 0 {
			busy++
		}
	}
	f.pending.Store(int32(busy))
	f.Retain(busy)
	for i := range r.shards {
		if busy == 0 {
			break
		}
		if r.shards[i].n.Load() == 0 {
			continue
		}
		busy--
		w := h.workers[(r.home+i)%len(h.workers)]
		w.tasks <- task{sh: &r.shards[i], f: f}
	}
	// Shards that emptied between the count and the loop still hold a task
	// reference each; give those back.
	for ; busy > 0; busy-- {
		h.done(f)
	}
	f.Release()
	return n
}

// done marks one shard task of f finished.
func (h *Hub) done(f *Frame) {
	if f.pending.Add(-1) == 0 && h.OnFanout != nil {
		h.OnFanout(time.Duration(time.Now().UnixNano()-f.start), int(f.fanout))
	}
	f.Release()
}

type task struct {
	sh *shard
	f  *Frame
}

type worker struct {
	hub     *Hub
	tasks   chan task
	batch   []task
	pending []Member // members whose write side this worker owns
}

func (w *worker) run() {
	defer w.hub.wg.Done()
	cfg := &w.hub.cfg
	for t := range w.tasks {
		w.batch = append(w.batch[:0], t)
		size := len(t.f.buf)
	drain:
		for len(w.batch) < cfg.MaxBatch && size < cfg.MaxBatchBytes {
			select {
			case t, ok := <-w.tasks:
				if !ok {
					break drain
				}
				w.batch = append(w.batch, t)
				size += len(t.f.buf)
			default:
				break drain
			}
		}
		for _, t := range w.batch {
			w.enqueue(t)
		}
		// Every frame of the batch is queued; now one write per connection.
		for i, m := range w.pending {
			m.Flush()
			w.pending[i] = nil
		}
		w.pending = w.pending[:0]
		for i, t := range w.batch {
			w.hub.done(t.f)
			w.batch[i] = task{}
		}
	}
}

func (w *worker) enqueue(t task) {
	t.sh.mu.RLock()
	t.f.Retain(len(t.sh.members))
	for _, m := range t.sh.members {
		if flush, _ := m.Enqueue(t.f); flush {
			w.pending = append(w.pending, m)
		}
	}
	t.sh.mu.RUnlock()
}
