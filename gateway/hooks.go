package gateway

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tidwall/redcon"

	"imgate/proto"
)

// Seams for a cluster layer. A gateway runs alone without any of them; the
// cluster package (or anything else) plugs in here without the gateway
// learning about the bus. Everything is set before Start.

// Observer hears about sessions and rooms as they change, so that a cluster
// layer can keep an online registry and hold the bus subscriptions the node
// needs. Calls come from connection read and close paths and must not block:
// record and return.
type Observer interface {
	// SessionAuthed: x passed AUTH; its UID, Device and ID are set.
	SessionAuthed(x *Session)
	// SessionClosed: an authenticated x closed and left the user index.
	SessionClosed(x *Session)
	// RoomJoined: a session of this node is in room; first when it is the
	// node's first member. ready, when not nil, answers the JOIN that caused
	// it and must be called exactly once (the observer may hold it until
	// the node receives the room's messages from elsewhere).
	RoomJoined(room string, first bool, ready func())
	// RoomLeft: a session left room; last when the node has no member left.
	RoomLeft(room string, last bool)
}

// DrainObserver is an Observer that also hears about a drain: when it
// begins, so that the cluster learns it before the first client is closed,
// and at each client it closes. DrainKick must call kick exactly once, at
// once; an observer that starts holding the user's pushes does so around
// it, so that no push falls between the last one queued for the connection
// and the first one held.
type DrainObserver interface {
	NodeDraining()
	DrainKick(x *Session, kick func())
}

// Relay carries pushes and kicks that this node's admin port or HTTP API
// accepted to the other nodes of a cluster. The local delivery has already
// happened when it is called; it must not block.
type Relay interface {
	RelayUsers(uids []string, p proto.Push)
	RelayRoom(room string, p proto.Push)
	RelayAll(p proto.Push)
	RelayKick(target, reason string)
}

// SetObserver installs o (before Start).
func (s *Server) SetObserver(o Observer) { s.observer = o }

// SetRelay installs r (before Start).
func (s *Server) SetRelay(r Relay) { s.relay = r }

// AdminFunc serves an extra admin command. Its result becomes the redis
// reply: int -> integer, string -> bulk string, []string -> array of bulk
// strings, []any -> array of those, nil -> nil bulk, error -> "-ERR ...".
type AdminFunc func(args []string) (any, error)

// HandleAdmin adds a command to the admin port (before Start). minArgs and
// maxArgs bound the arguments after the name (maxArgs -1: unbounded). A name
// the gateway already serves is refused.
func (s *Server) HandleAdmin(name string, minArgs, maxArgs int, fn AdminFunc) error {
	name = strings.ToLower(name)
	if _, ok := adminCommands[name]; ok {
		return fmt.Errorf("admin command %q is built in", name)
	}
	if s.extraAdmin == nil {
		s.extraAdmin = make(map[string]adminCommand)
	}
	s.extraAdmin[name] = adminCommand{min: minArgs, max: maxArgs, run: func(a *admin, c redcon.Conn, args [][]byte) {
		strs := make([]string, len(args))
		for i, b := range args {
			strs[i] = string(b)
		}
		v, err := fn(strs)
		if err != nil {
			c.WriteError("ERR " + err.Error())
			return
		}
		writeAdminValue(c, v)
	}}
	return nil
}

func writeAdminValue(c redcon.Conn, v any) {
	switch v := v.(type) {
	case nil:
		c.WriteNull()
	case int:
		c.WriteInt(v)
	case int64:
		c.WriteInt64(v)
	case string:
		c.WriteBulkString(v)
	case []string:
		c.WriteArray(len(v))
		for _, s := range v {
			c.WriteBulkString(s)
		}
	case []any:
		c.WriteArray(len(v))
		for _, x := range v {
			writeAdminValue(c, x)
		}
	default:
		c.WriteBulkString(fmt.Sprint(v))
	}
}

// HandleHTTP adds a route to the HTTP API (before Start), behind the API's
// bearer token like the built-in ones. pattern is a net/http pattern
// ("GET /cluster/nodes").
func (s *Server) HandleHTTP(pattern string, h http.HandlerFunc) {
	s.extraHTTP = append(s.extraHTTP, httpRoute{pattern, h, false})
}

// MetricsRegisterer is the registry behind /metrics, for the series of
// what plugs into the server (HTTPDNS counts its answers there).
func (s *Server) MetricsRegisterer() prometheus.Registerer { return s.metrics.reg }

// HandlePublicHTTP adds a route that answers without the bearer token,
// like /healthz: for what clients themselves call (HTTPDNS), which must not
// need the operator's token.
func (s *Server) HandlePublicHTTP(pattern string, h http.HandlerFunc) {
	s.extraHTTP = append(s.extraHTTP, httpRoute{pattern, h, true})
}

type httpRoute struct {
	pattern string
	handler http.HandlerFunc
	public  bool
}

// WriteJSON and HTTPError answer API requests the way the built-in routes do.
func WriteJSON(w http.ResponseWriter, status int, v any) { writeJSON(w, status, v) }
func HTTPError(w http.ResponseWriter, status int, msg string) {
	httpError(w, status, msg)
}

// EachSession calls fn for every authenticated session until it returns
// false (a cluster layer resynchronising its registry uses it).
func (s *Server) EachSession(fn func(*Session) bool) {
	var all []*Session
	s.reg.Each(func(x *Session) bool {
		if x.authed.Load() {
			all = append(all, x)
		}
		return true
	})
	for _, x := range all {
		if !fn(x) {
			return
		}
	}
}

// HasUser reports whether uid has a session on this node.
func (s *Server) HasUser(uid string) bool {
	sh := s.reg.userShard(uid)
	sh.mu.RLock()
	n := len(sh.m[uid])
	sh.mu.RUnlock()
	return n > 0
}

// UserConns is the number of the user's connections on this node.
func (s *Server) UserConns(uid string) int {
	sh := s.reg.userShard(uid)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return len(sh.m[uid])
}

// HasRoom reports whether room has a member on this node.
func (s *Server) HasRoom(room string) bool { return s.hub.Room(room) != nil }

// Transport names the session's transport (tcp, ws, quic, ...).
func (s *Session) Transport() string { return s.conn.Kind().String() }

// Since is when the session authenticated (zero before).
func (s *Session) Since() time.Time {
	if !s.authed.Load() {
		return time.Time{}
	}
	return s.since
}

// observeJoin reports a join to the observer; ready (may be nil) answers it.
func (s *Server) observeJoin(room string, created bool, ready func()) {
	if s.observer == nil {
		if ready != nil {
			ready()
		}
		return
	}
	s.observer.RoomJoined(room, created, ready)
}

func (s *Server) observeLeave(room string, deleted bool) {
	if s.observer != nil {
		s.observer.RoomLeft(room, deleted)
	}
}
