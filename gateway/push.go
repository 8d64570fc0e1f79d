package gateway

import (
	"fmt"
	"sort"

	"imgate/broadcast"
	"imgate/proto"
	"imgate/transport"
)

// Downlink pushes and presence, as the admin port, the HTTP API and (later)
// the cluster bus use them. Each push is encoded once, whatever the number
// of recipients. A push over max_frame reaches nobody (callers that want the
// reason call checkPush first).

// checkPush rejects a push whose frame would exceed max_frame: clients
// refuse such frames, so sending one would only get connections closed.
func (s *Server) checkPush(p proto.Push) error {
	limit := proto.DefaultMaxFrame
	if s.engine != nil {
		limit = s.engine.Config().MaxFrame
	}
	if len(p.Topic) > proto.MaxNameLen {
		return fmt.Errorf("topic is %d bytes; the limit is %d", len(p.Topic), proto.MaxNameLen)
	}
	if size := proto.HeaderSize + proto.PushOverhead + len(p.Topic) + len(p.Payload); size > limit {
		return fmt.Errorf("push frame would be %d bytes; max_frame is %d", size, limit)
	}
	return nil
}

// PushConn pushes to one connection by id; it reports whether it was online.
func (s *Server) PushConn(id uint64, p proto.Push) bool {
	s.metrics.pushes.WithLabelValues("conn").Inc()
	x := s.reg.Conn(id)
	if x == nil || !x.authed.Load() || s.checkPush(p) != nil {
		return false
	}
	x.awaitGreeting()
	f := broadcast.NewPush(0, p)
	s.countOut(f, 1)
	x.send(f)
	return true
}

// PushUser pushes to every connection of a user and returns how many.
func (s *Server) PushUser(uid string, p proto.Push) int {
	s.metrics.pushes.WithLabelValues("user").Inc()
	return s.pushUsers([]string{uid}, p)
}

// PushUsers pushes to every connection of each user and returns how many.
func (s *Server) PushUsers(uids []string, p proto.Push) int {
	s.metrics.pushes.WithLabelValues("users").Inc()
	return s.pushUsers(uids, p)
}

func (s *Server) pushUsers(uids []string, p proto.Push) int {
	if s.checkPush(p) != nil {
		return 0
	}
	var targets []*Session
	for _, uid := range uids {
		targets = s.reg.User(uid, targets)
	}
	// A session is in the user index a moment before its AUTH_OK is
	// queued; a push must not overtake it.
	for _, x := range targets {
		x.awaitGreeting()
	}
	if len(targets) == 0 {
		return 0
	}
	f := broadcast.NewPush(0, p)
	s.countOut(f, len(targets))
	f.Retain(len(targets))
	var flush []*Session
	for _, x := range targets {
		if ok, _ := x.Enqueue(f); ok {
			flush = append(flush, x)
		}
	}
	for _, x := range flush {
		x.Flush()
	}
	f.Release()
	return len(targets)
}

// PushRoom pushes to every member of a room and returns how many.
func (s *Server) PushRoom(room string, p proto.Push) int {
	s.metrics.pushes.WithLabelValues("room").Inc()
	if len(p.Topic) == 0 {
		p.Topic = []byte(room)
	}
	if s.checkPush(p) != nil {
		return 0
	}
	f := broadcast.NewPush(proto.FlagRoom, p)
	size := len(f.Bytes()) // Publish consumes f: it may be reused once it returns
	n := s.hub.Publish(room, f)
	s.countOutN(size, n)
	return n
}

// PushAll pushes to every authenticated connection of the node.
func (s *Server) PushAll(p proto.Push) int {
	s.metrics.pushes.WithLabelValues("all").Inc()
	if s.checkPush(p) != nil {
		return 0
	}
	f := broadcast.NewPush(proto.FlagBroadcast, p)
	size := len(f.Bytes())
	n := s.hub.PublishAll(f)
	s.countOutN(size, n)
	return n
}

func (s *Server) countOut(f *broadcast.Frame, n int) { s.countOutN(len(f.Bytes()), n) }

func (s *Server) countOutN(size, n int) {
	s.metrics.framesOut.Add(float64(n))
	s.metrics.bytesOut.Add(float64(size * n))
}

// Kick closes a user's connections (target is a uid) or one connection
// (target is a 16-hex-digit connection id) with KICKED; it returns how many
// it closed (connections already closing are not counted again).
func (s *Server) Kick(target, reason string) int {
	if reason == "" {
		reason = "kicked by operator"
	}
	var victims []*Session
	if id, ok := ParseConnID(target); ok {
		if x := s.reg.Conn(id); x != nil {
			victims = append(victims, x)
		}
	}
	if len(victims) == 0 {
		victims = s.reg.User(target, nil)
	}
	n := 0
	for _, x := range victims {
		if x.Kick(proto.CodeKicked, reason) {
			s.metrics.kicks.Inc()
			n++
		}
	}
	return n
}

// JoinUser puts every connection of a user into a room (server-side join;
// the token's room list does not apply) and returns how many joined.
func (s *Server) JoinUser(uid, room string) (int, error) {
	n := 0
	for _, x := range s.reg.User(uid, nil) {
		if err := x.join(room, false); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// LeaveUser takes every connection of a user out of a room.
func (s *Server) LeaveUser(uid, room string) int {
	n := 0
	for _, x := range s.reg.User(uid, nil) {
		if x.leave(room) == nil {
			n++
		}
	}
	return n
}

// UserSessions describes a user's connections on this node.
func (s *Server) UserSessions(uid string) []SessionInfo {
	var out []SessionInfo
	for _, x := range s.reg.User(uid, nil) {
		out = append(out, x.Info())
	}
	return out
}

// Session returns one connection's description.
func (s *Server) Session(id uint64) (SessionInfo, bool) {
	x := s.reg.Conn(id)
	if x == nil {
		return SessionInfo{}, false
	}
	return x.Info(), true
}

// Sessions lists up to limit connections (0: all), oldest first.
func (s *Server) Sessions(limit int) []SessionInfo {
	// Collect under the registry's shard locks, describe after: describing
	// takes session locks, and connects and closes wait on these shards.
	var all []*Session
	s.reg.Each(func(x *Session) bool {
		all = append(all, x)
		return true
	})
	out := make([]SessionInfo, 0, len(all))
	for _, x := range all {
		out = append(out, x.Info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Since.Before(out[j].Since) })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

// RoomMembers lists up to limit members of a room, after skipping offset.
// Members are collected under the room's shard locks and described after:
// Info takes the session's lock, which a join holds while it waits for a
// shard's write lock, so describing under the shard lock could deadlock.
func (s *Server) RoomMembers(room string, offset, limit int) (total int, members []SessionInfo) {
	r := s.hub.Room(room)
	if r == nil {
		return 0, nil
	}
	total = r.Len()
	var picked []*Session
	i := 0
	r.Members(func(m broadcast.Member) bool {
		if i >= offset {
			if x, ok := m.(*Session); ok {
				picked = append(picked, x)
			}
		}
		i++
		return limit <= 0 || len(picked) < limit
	})
	for _, x := range picked {
		members = append(members, x.Info())
	}
	return total, members
}

// ConnsByTransport counts open connections per transport name.
func (s *Server) ConnsByTransport() map[string]int {
	out := make(map[string]int)
	s.reg.Each(func(x *Session) bool {
		out[x.conn.Kind().String()]++
		return true
	})
	return out
}

// Counts returns open connections, authenticated users and rooms.
func (s *Server) Counts() (conns, users, rooms int) {
	conns, users = s.reg.Counts()
	return conns, users, s.hub.RoomCount()
}

// Stats returns the transport engine's counters.
func (s *Server) EngineStats() *transport.Stats {
	if s.engine == nil {
		return &transport.Stats{}
	}
	return s.engine.Stats()
}
