package gateway

import (
	"hash/maphash"
	"sync"

	"imgate/proto"
)

// registryShards spreads the registry's locks: with a million entries, an
// auth or close touches one shard's lock out of 256.
const registryShards = 256

// Registry indexes the node's sessions: connection id -> session (every
// connection, authenticated or not) and user -> sessions (authenticated).
type Registry struct {
	seed  maphash.Seed
	conns [registryShards]connShard
	users [registryShards]userShard
}

type connShard struct {
	mu sync.RWMutex
	m  map[uint64]*Session
	_  [40]byte
}

type userShard struct {
	mu sync.RWMutex
	m  map[string][]*Session
	_  [40]byte
}

func newRegistry() *Registry {
	r := &Registry{seed: maphash.MakeSeed()}
	for i := range r.conns {
		r.conns[i].m = make(map[uint64]*Session)
		r.users[i].m = make(map[string][]*Session)
	}
	return r
}

func (r *Registry) connShard(id uint64) *connShard {
	// Ids share a prefix per process; mix the counter bits.
	return &r.conns[(id*0x9E3779B97F4A7C15)>>56]
}

func (r *Registry) userShard(uid string) *userShard {
	return &r.users[maphash.String(r.seed, uid)%registryShards]
}

func (r *Registry) addConn(s *Session) {
	sh := r.connShard(s.id)
	sh.mu.Lock()
	sh.m[s.id] = s
	sh.mu.Unlock()
}

func (r *Registry) removeConn(s *Session) {
	sh := r.connShard(s.id)
	sh.mu.Lock()
	if sh.m[s.id] == s {
		delete(sh.m, s.id)
	}
	sh.mu.Unlock()
}

// Conn returns the session with this connection id.
func (r *Registry) Conn(id uint64) *Session {
	sh := r.connShard(id)
	sh.mu.RLock()
	s := sh.m[id]
	sh.mu.RUnlock()
	return s
}

// addUser records an authenticated session under its user, applying the
// device policy and the per-user limit atomically for that user. It returns
// the session the same device had (to be closed with REPLACED), or an error
// when the user is at its limit.
//
// With keepReplaced the older session stays listed next to the new one
// until the caller calls removeUser on it: the new session may be a replay
// of 0-RTT data (see authenticate), and must not unlist a live session
// before its handshake proves it genuine.
func (r *Registry) addUser(s *Session, limit int, keepReplaced bool) (replaced *Session, err error) {
	sh := r.userShard(s.uid)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	list := sh.m[s.uid]
	for i, old := range list {
		if old.device == s.device {
			replaced = old
			if keepReplaced {
				sh.m[s.uid] = append(list, s)
			} else {
				list[i] = s
			}
			return replaced, nil
		}
	}
	if len(list) >= limit {
		return nil, proto.Errorf(proto.CodeTooManyConns, "user already has %d connections on this node (limit %d)", len(list), limit)
	}
	sh.m[s.uid] = append(list, s)
	return nil, nil
}

func (r *Registry) removeUser(s *Session) {
	sh := r.userShard(s.uid)
	sh.mu.Lock()
	list := sh.m[s.uid]
	for i, x := range list {
		if x == s {
			list[i] = list[len(list)-1]
			list[len(list)-1] = nil
			list = list[:len(list)-1]
			break
		}
	}
	if len(list) == 0 {
		delete(sh.m, s.uid)
	} else {
		sh.m[s.uid] = list
	}
	sh.mu.Unlock()
}

// User appends the user's sessions to dst.
func (r *Registry) User(uid string, dst []*Session) []*Session {
	sh := r.userShard(uid)
	sh.mu.RLock()
	dst = append(dst, sh.m[uid]...)
	sh.mu.RUnlock()
	return dst
}

// Each calls fn for every session (authenticated or not) until it returns
// false. It holds one shard's read lock at a time.
func (r *Registry) Each(fn func(*Session) bool) {
	for i := range r.conns {
		sh := &r.conns[i]
		sh.mu.RLock()
		for _, s := range sh.m {
			if !fn(s) {
				sh.mu.RUnlock()
				return
			}
		}
		sh.mu.RUnlock()
	}
}

// Counts returns the number of connections and of distinct online users.
func (r *Registry) Counts() (conns, users int) {
	for i := range r.conns {
		sh := &r.conns[i]
		sh.mu.RLock()
		conns += len(sh.m)
		sh.mu.RUnlock()
		us := &r.users[i]
		us.mu.RLock()
		users += len(us.m)
		us.mu.RUnlock()
	}
	return conns, users
}
