package cluster

import (
	"encoding/base64"
	"strconv"
	"strings"
)

// Subject layout (docs/CLUSTER.md). Every subject starts with a prefix
// (default "imgate") so that several imgate systems can share one NATS
// account.
//
//	<p>.svc.<svid>              uplink requests for an SVID (queue groups)
//	<p>.user.<uid>              pushes and control for a user (nodes with the user subscribe)
//	<p>.room.<room>             room pushes (nodes with members subscribe)
//	<p>.all                     pushes and control for every node
//	<p>.node.<node>.conn.<id>   a push to one connection of a node
//	<p>.hb.<node>               node heartbeats
//	<p>.q.room                  scatter-gather: a room's members on every node
//	<p>.backends                backend announcements
//
// Names that are not plain NATS tokens are encoded (see Token).

// Subjects builds subjects under one prefix.
type Subjects struct{ p string }

// NewSubjects returns the layout under prefix ("" means "imgate").
func NewSubjects(prefix string) Subjects {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return Subjects{p: prefix}
}

// DefaultPrefix starts every subject.
const DefaultPrefix = "imgate"

func (s Subjects) Prefix() string { return s.p }
func (s Subjects) SVID(svid uint32) string {
	return s.p + ".svc." + strconv.FormatUint(uint64(svid), 10)
}
func (s Subjects) SVIDs() string             { return s.p + ".svc.*" }
func (s Subjects) User(uid string) string    { return s.p + ".user." + Token(uid) }
func (s Subjects) Room(room string) string   { return s.p + ".room." + Token(room) }
func (s Subjects) All() string               { return s.p + ".all" }
func (s Subjects) Node(node string) string   { return s.p + ".node." + Token(node) }
func (s Subjects) Heartbeat(n string) string { return s.p + ".hb." + Token(n) }
func (s Subjects) Heartbeats() string        { return s.p + ".hb.*" }
func (s Subjects) RoomQuery() string         { return s.p + ".q.room" }
func (s Subjects) Backends() string          { return s.p + ".backends" }

// Conn is the subject of one connection's pushes on a node.
func (s Subjects) Conn(node string, conn uint64) string {
	return s.Node(node) + ".conn." + formatConn(conn)
}

// BucketOnline and BucketNodes name the KV buckets.
func (s Subjects) BucketOnline() string { return bucketName(s.p) + "_online" }
func (s Subjects) BucketNodes() string  { return bucketName(s.p) + "_nodes" }

func bucketName(p string) string { return strings.ReplaceAll(p, ".", "_") }

func formatConn(id uint64) string {
	const hex = "0123456789abcdef"
	var b [16]byte
	for i := 15; i >= 0; i-- {
		b[i] = hex[id&15]
		id >>= 4
	}
	return string(b[:])
}

// Token renders a name (uid, room, node, region) as one NATS subject token
// that is also a valid KV key token: names made only of [A-Za-z0-9_-] stay
// as they are; anything else becomes "=" followed by its unpadded base64url
// form. "=" never occurs in a plain token, so the two forms cannot collide.
func Token(name string) string {
	if plainToken(name) {
		return name
	}
	return "=" + base64.RawURLEncoding.EncodeToString([]byte(name))
}

// ParseToken reverses Token.
func ParseToken(tok string) (string, bool) {
	if !strings.HasPrefix(tok, "=") {
		return tok, plainToken(tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(tok[1:])
	if err != nil {
		return "", false
	}
	return string(b), true
}

func plainToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
