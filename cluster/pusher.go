package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"imgate/proto"
)

// Message headers on push and control subjects (docs/CLUSTER.md). A push is
// the payload as the message data; headers are optional.
const (
	HeaderConvID = "Imgate-Conv-Id" // decimal conv_id of the PUSH
	HeaderMsgSeq = "Imgate-Msg-Seq" // decimal msg_seq of the PUSH
	HeaderOp     = "Imgate-Op"      // absent: push; "kick", "join", "leave": control
	HeaderRoom   = "Imgate-Room"    // the room of a join or leave
	HeaderReason = "Imgate-Reason"  // the reason of a kick
	HeaderTarget = "Imgate-Target"  // a kick's connection id, on <p>.all
)

// Control operations carried by HeaderOp.
const (
	OpKick  = "kick"
	OpJoin  = "join"
	OpLeave = "leave"
)

// Message is a push as it travels on the bus.
type Message struct {
	ConvID, Seq uint64
	Payload     []byte
}

// Pusher publishes pushes and control messages to gateway nodes over the
// bus: what backends, the route daemon and a node's own relay use. Every
// message is stamped (origin, sequence; see dedup.go). Publishing does not
// wait for delivery. With two paths, the Pusher keeps its last
// RepublishWindow of messages and, when its path fails, publishes them again
// on the other before going on there: receivers drop the copies they
// already have, and get the ones the dead server swallowed.
type Pusher struct {
	paths  *Paths
	subj   Subjects
	origin string

	mu   sync.Mutex // orders stamping, publishing and republishing
	seq  uint64
	path int // the path publishes went to last
	ring []sent
	head int
}

type sent struct {
	at  time.Time
	msg *nats.Msg
}

// RepublishWindow is how far back a Pusher republishes after a failover;
// ringSize bounds the messages it keeps for that.
const (
	RepublishWindow = 2 * time.Second
	ringSize        = 1 << 16
)

// NewPusher publishes on nc under prefix ("" = "imgate").
func NewPusher(nc *nats.Conn, prefix string) *Pusher {
	return NewPathPusher(NewPaths(nil, nc), prefix)
}

// NewPathPusher publishes on the active one of paths.
func NewPathPusher(paths *Paths, prefix string) *Pusher {
	var b [6]byte
	_, _ = rand.Read(b[:])
	p := &Pusher{paths: paths, subj: NewSubjects(prefix), origin: hex.EncodeToString(b[:])}
	if len(paths.Conns()) > 1 {
		p.ring = make([]sent, 0, 1024)
		paths.Watch(func(int, bool) { p.failover() })
	}
	return p
}

// Origin is the id stamped on this Pusher's messages.
func (p *Pusher) Origin() string { return p.origin }

// publish stamps and sends m.
func (p *Pusher) publish(m *nats.Msg) error {
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seq++
	m.Header[HeaderOrigin] = []string{p.origin}
	m.Header[HeaderOseq] = []string{strconv.FormatUint(p.seq, 10)}
	if p.ring != nil {
		m.Data = slices.Clone(m.Data) // kept for a republish: callers may reuse theirs
		p.remember(m)
		p.switchPath()
	}
	_, nc := p.paths.Active()
	return nc.PublishMsg(m)
}

// remember keeps m for a republish.
func (p *Pusher) remember(m *nats.Msg) {
	s := sent{at: time.Now(), msg: m}
	if len(p.ring) < ringSize {
		p.ring = append(p.ring, s)
		return
	}
	p.ring[p.head] = s
	p.head = (p.head + 1) % ringSize
}

// switchPath republishes the recent messages on the active path when it is
// not the one used last. Called with mu held.
func (p *Pusher) switchPath() {
	i, nc := p.paths.Active()
	if i == p.path {
		return
	}
	p.path = i
	since := time.Now().Add(-RepublishWindow)
	n := 0
	for k := range p.ring {
		s := p.ring[(p.head+k)%len(p.ring)]
		if s.at.Before(since) {
			continue
		}
		if nc.PublishMsg(s.msg) == nil {
			n++
		}
	}
	p.paths.log.Info("cluster: publishing on the other bus path; recent messages republished", "republished", n)
}

// failover runs on a path change: a quiet Pusher republishes at once
// rather than at its next message.
func (p *Pusher) failover() {
	p.mu.Lock()
	p.switchPath()
	p.mu.Unlock()
}

// ErrBadName is returned for an empty uid or an invalid room name.
var ErrBadName = errors.New("cluster: bad name")

// User pushes m to every connection of uid, on any node.
func (p *Pusher) User(uid string, m Message) error {
	if uid == "" {
		return ErrBadName
	}
	return p.publish(p.msg(p.subj.User(uid), m))
}

// Users pushes m to each user.
func (p *Pusher) Users(uids []string, m Message) error {
	for _, uid := range uids {
		if err := p.User(uid, m); err != nil {
			return err
		}
	}
	return nil
}

// Room pushes m to every member of room, on every node that has members.
func (p *Pusher) Room(room string, m Message) error {
	if proto.CheckName([]byte(room)) != nil {
		return ErrBadName
	}
	return p.publish(p.msg(p.subj.Room(room), m))
}

// All pushes m to every connection of every node.
func (p *Pusher) All(m Message) error { return p.publish(p.msg(p.subj.All(), m)) }

// Conn pushes m to one connection of one node (both from the registry).
func (p *Pusher) Conn(node string, conn uint64, m Message) error {
	return p.publish(p.msg(p.subj.Conn(node, conn), m))
}

// Kick closes a user's connections (target is a uid) or one connection
// (target is a 16-hex-digit connection id) on whatever node holds them.
func (p *Pusher) Kick(target, reason string) error {
	if target == "" {
		return ErrBadName
	}
	m := &nats.Msg{Header: nats.Header{}}
	m.Header.Set(HeaderOp, OpKick)
	if reason != "" {
		m.Header.Set(HeaderReason, reason)
	}
	if isConnID(target) {
		m.Subject = p.subj.All()
		m.Header.Set(HeaderTarget, target)
	} else {
		m.Subject = p.subj.User(target)
	}
	return p.publish(m)
}

// Join puts every connection of uid into room, on every node (server-side
// join: the token's room list does not apply).
func (p *Pusher) Join(uid, room string) error { return p.membership(OpJoin, uid, room) }

// Leave takes every connection of uid out of room.
func (p *Pusher) Leave(uid, room string) error { return p.membership(OpLeave, uid, room) }

func (p *Pusher) membership(op, uid, room string) error {
	if uid == "" || proto.CheckName([]byte(room)) != nil {
		return ErrBadName
	}
	m := &nats.Msg{Subject: p.subj.User(uid), Header: nats.Header{}}
	m.Header.Set(HeaderOp, op)
	m.Header.Set(HeaderRoom, room)
	return p.publish(m)
}

func (p *Pusher) msg(subject string, m Message) *nats.Msg {
	msg := &nats.Msg{Subject: subject, Data: m.Payload, Header: nats.Header{}}
	if m.ConvID != 0 || m.Seq != 0 {
		msg.Header.Set(HeaderConvID, strconv.FormatUint(m.ConvID, 10))
		msg.Header.Set(HeaderMsgSeq, strconv.FormatUint(m.Seq, 10))
	}
	return msg
}

// pushOf reads a bus message as a push; its payload aliases m.Data.
func pushOf(m *nats.Msg) proto.Push {
	p := proto.Push{Payload: m.Data}
	if m.Header != nil {
		p.ConvID, _ = strconv.ParseUint(m.Header.Get(HeaderConvID), 10, 64)
		p.Seq, _ = strconv.ParseUint(m.Header.Get(HeaderMsgSeq), 10, 64)
	}
	return p
}

func isConnID(s string) bool {
	if len(s) != 16 {
		return false
	}
	_, err := strconv.ParseUint(s, 16, 64)
	return err == nil
}
