package gateway

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"imgate/broadcast"
	"imgate/proto"
	"imgate/transport"
)

// Session is one client connection as the gateway sees it: before AUTH only
// a connection id and a deadline, after it a user, a device and rooms.
type Session struct {
	srv    *Server
	conn   transport.Conn
	id     uint64
	opened time.Time

	// Set once at auth, before the session enters the user index; read-only
	// after that.
	uid     string
	device  string
	allowed []string // rooms the token allows; nil = any
	since   time.Time
	moved   bool          // AUTH carried FlagMoved
	beat    time.Duration // heartbeat interval its AUTH_OK announced
	authed  atomic.Bool
	greeted atomic.Bool // AUTH_OK is queued
	greetMu sync.Mutex  // held from the user index entry to AUTH_OK

	lastSeen  atomic.Int64 // unix nanoseconds of the last inbound frame
	closeCode atomic.Uint32
	gone      atomic.Bool // OnClose ran

	mu    sync.Mutex
	rooms []string
}

var _ broadcast.Member = (*Session)(nil)

// ID is the connection id.
func (s *Session) ID() uint64 { return s.id }

// UID and Device are empty before auth. The authed check is what makes them
// safe to call on a session found through the connection index while it is
// authenticating: the fields are written before authed is set.
func (s *Session) UID() string {
	if !s.authed.Load() {
		return ""
	}
	return s.uid
}

func (s *Session) Device() string {
	if !s.authed.Load() {
		return ""
	}
	return s.device
}

// Gone reports whether the connection has closed (OnClose ran).
func (s *Session) Gone() bool { return s.gone.Load() }

// Moved reports whether the client said, in its AUTH, that a draining node
// sent it here (proto.FlagMoved).
func (s *Session) Moved() bool { return s.authed.Load() && s.moved }

// awaitGreeting returns once AUTH_OK is queued (at once, but in the moment
// between the session's entry in the user index and its AUTH_OK).
func (s *Session) awaitGreeting() {
	if !s.greeted.Load() {
		s.greetMu.Lock()
		s.greetMu.Unlock() //nolint:staticcheck // a barrier: authenticate holds it until AUTH_OK is queued
	}
}

// Enqueue implements broadcast.Member: a full queue marks the session a slow
// consumer and closes it, without blocking the fan-out worker.
func (s *Session) Enqueue(f transport.Frame) (bool, error) {
	flush, err := s.conn.Enqueue(f)
	if err != nil {
		s.sendFailed(err)
	}
	return flush, err
}

// Flush implements broadcast.Member.
func (s *Session) Flush() { s.conn.Flush() }

// send queues one frame for this session and writes it now if no one else is.
func (s *Session) send(f *broadcast.Frame) {
	if err := s.conn.Send(f); err != nil {
		s.sendFailed(err)
	}
}

func (s *Session) sendFailed(err error) {
	// Several fan-out workers may find the queue full at once: only the
	// kick that closes the connection is counted.
	if errors.Is(err, transport.ErrQueueFull) && s.Kick(proto.CodeSlowConsumer, "outbound queue over its byte limit") {
		s.srv.metrics.slowConsumers.Inc()
	}
}

// Kick sends CLOSE with code and reason, then closes the connection. It
// reports false when the connection was already closing.
func (s *Session) Kick(code proto.Code, reason string) bool {
	if !s.closeCode.CompareAndSwap(0, uint32(code)) {
		return false
	}
	// On WebSocket the CLOSE frame is followed by a WebSocket close (§11.2).
	s.conn.Close(transport.CloseFrame(code, reason, s.conn.Kind().WebSocket()))
	return true
}

// Rooms returns a copy of the rooms the session is in.
func (s *Session) Rooms() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.rooms)
}

// join adds the session to a room, enforcing the token and the room limit.
func (s *Session) join(room string, checkToken bool) error {
	created, err := s.enter(room, checkToken)
	if err == nil {
		s.srv.observeJoin(room, created, nil)
	}
	return err
}

// joinAnswered serves a client's JOIN: answer runs once, when the node is
// ready to receive the room's messages (at once on a single node).
func (s *Session) joinAnswered(room string, answer func(error)) {
	created, err := s.enter(room, true)
	if err != nil {
		answer(err)
		return
	}
	s.srv.observeJoin(room, created, func() { answer(nil) })
}

// enter puts the session in the room; created reports the node's first
// member.
func (s *Session) enter(room string, checkToken bool) (created bool, err error) {
	if err := proto.CheckName([]byte(room)); err != nil {
		return false, proto.Errorf(proto.CodeBadRequest, "room name: %v", err)
	}
	if checkToken && s.allowed != nil && !slices.Contains(s.allowed, room) {
		return false, proto.Errorf(proto.CodeRoomForbidden, "token does not allow room %q", room)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone.Load() {
		return false, proto.Errorf(proto.CodeBadRequest, "connection closed")
	}
	if slices.Contains(s.rooms, room) {
		return false, nil
	}
	if limit := int(s.srv.maxRoomsPerConn.Load()); len(s.rooms) >= limit {
		return false, proto.Errorf(proto.CodeRoomLimit, "already in %d rooms (limit %d)", len(s.rooms), limit)
	}
	_, created = s.srv.hub.Join(room, s)
	s.rooms = append(s.rooms, room)
	return created, nil
}

func (s *Session) leave(room string) error {
	if err := proto.CheckName([]byte(room)); err != nil {
		return proto.Errorf(proto.CodeBadRequest, "room name: %v", err)
	}
	s.mu.Lock()
	i := slices.Index(s.rooms, room)
	if i < 0 {
		s.mu.Unlock()
		return proto.Errorf(proto.CodeNotInRoom, "not in room %q", room)
	}
	s.rooms = slices.Delete(s.rooms, i, i+1)
	_, deleted := s.srv.hub.Leave(room, s)
	s.mu.Unlock()
	s.srv.observeLeave(room, deleted)
	return nil
}

// leaveAll runs at close.
func (s *Session) leaveAll() {
	s.mu.Lock()
	rooms := s.rooms
	s.rooms = nil
	s.mu.Unlock()
	for _, r := range rooms {
		_, deleted := s.srv.hub.Leave(r, s)
		s.srv.observeLeave(r, deleted)
	}
}

// SessionInfo is a session as listings show it.
type SessionInfo struct {
	ConnID      string    `json:"conn_id"`
	UID         string    `json:"uid,omitempty"`
	Device      string    `json:"device,omitempty"`
	Node        string    `json:"node"`
	Transport   string    `json:"transport"`
	Remote      string    `json:"remote"`
	Since       time.Time `json:"since"`
	IdleSeconds float64   `json:"idle_s"`
	Rooms       []string  `json:"rooms"`
	QueuedBytes int       `json:"queued_bytes"`
	Authed      bool      `json:"authed"`
}

// Info describes the session.
func (s *Session) Info() SessionInfo {
	in := SessionInfo{
		ConnID:      FormatConnID(s.id),
		Node:        s.srv.cfg.NodeID,
		Transport:   s.conn.Kind().String(),
		Remote:      s.conn.RemoteAddr().String(),
		Since:       s.opened,
		IdleSeconds: time.Since(time.Unix(0, s.lastSeen.Load())).Seconds(),
		Rooms:       s.Rooms(),
		QueuedBytes: s.conn.QueuedBytes(),
		Authed:      s.authed.Load(),
	}
	if in.Authed {
		in.UID, in.Device, in.Since = s.uid, s.device, s.since
	}
	if in.Rooms == nil {
		in.Rooms = []string{}
	}
	return in
}
