package broadcast

import (
	"sync"
	"sync/atomic"

	"imgate/transport"
)

// Member is what a room holds: a connection able to take shared frames. The
// gateway's session implements it; broadcast never learns the transport.
type Member interface {
	// ID is stable for the member's life; it spreads members over shards.
	ID() uint64
	// Enqueue queues f (taking over one reference); see transport.Conn.
	Enqueue(f transport.Frame) (flush bool, err error)
	// Flush writes what Enqueue queued.
	Flush()
}

// Room is a named set of members. Members sit in shards so that a large
// room's fan-out runs on every worker at once and a join never waits for a
// fan-out of another shard. Small rooms keep everyone in shard 0: one task
// per message instead of one per shard.
type Room struct {
	name string
	home int // worker of shard 0; shard i runs on worker (home+i) % workers

	mu    sync.Mutex // serialises joins and leaves
	pos   map[Member]slot
	dead  bool // removed from the hub; a join must retry
	count atomic.Int64

	shards []shard
}

type slot struct {
	shard int32
	idx   int32
}

type shard struct {
	mu      sync.RWMutex
	members []Member
	n       atomic.Int32
	_       [32]byte // keep shards' locks on separate cache lines
}

func newRoom(name string, shards, home int) *Room {
	return &Room{name: name, home: home, pos: make(map[Member]slot), shards: make([]shard, shards)}
}

// Name is the room's name.
func (r *Room) Name() string { return r.name }

// Len is the number of members.
func (r *Room) Len() int { return int(r.count.Load()) }

// Has reports membership.
func (r *Room) Has(m Member) bool {
	r.mu.Lock()
	_, ok := r.pos[m]
	r.mu.Unlock()
	return ok
}

// add inserts m; small reports how many members fit in shard 0 before the
// room spreads out. It returns false if m was already in or the room is dead.
func (r *Room) add(m Member, small int) (added, dead bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dead {
		return false, true
	}
	if _, ok := r.pos[m]; ok {
		return false, false
	}
	s := 0
	if len(r.pos) >= small {
		s = int(m.ID() % uint64(len(r.shards)))
	}
	sh := &r.shards[s]
	sh.mu.Lock()
	sh.members = append(sh.members, m)
	r.pos[m] = slot{shard: int32(s), idx: int32(len(sh.members) - 1)}
	sh.n.Store(int32(len(sh.members)))
	sh.mu.Unlock()
	r.count.Add(1)
	return true, false
}

// remove deletes m; empty reports that the room has no members left.
func (r *Room) remove(m Member) (removed, empty bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.pos[m]
	if !ok {
		return false, len(r.pos) == 0
	}
	delete(r.pos, m)
	sh := &r.shards[p.shard]
	sh.mu.Lock()
	last := len(sh.members) - 1
	if int(p.idx) != last {
		moved := sh.members[last]
		sh.members[p.idx] = moved
		r.pos[moved] = slot{shard: p.shard, idx: p.idx}
	}
	sh.members[last] = nil
	sh.members = sh.members[:last]
	if last == 0 {
		sh.members = nil // an emptied shard keeps no backing array
	}
	sh.n.Store(int32(len(sh.members)))
	sh.mu.Unlock()
	r.count.Add(-1)
	return true, len(r.pos) == 0
}

// Members calls fn for each member until it returns false. It holds one
// shard's read lock at a time; fn must not join or leave rooms.
func (r *Room) Members(fn func(Member) bool) {
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.RLock()
		for _, m := range sh.members {
			if !fn(m) {
				sh.mu.RUnlock()
				return
			}
		}
		sh.mu.RUnlock()
	}
}
