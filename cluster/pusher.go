package cluster

import (
	"errors"
	"strconv"

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
// bus: what backends, the route daemon and a node's own relay use. Publishing
// does not wait for delivery (NATS core is at-most-once; a reliable
// conversation uses conv_id and msg_seq and SYNC).
type Pusher struct {
	nc   *nats.Conn
	subj Subjects
}

// NewPusher publishes on nc under prefix ("" = "imgate").
func NewPusher(nc *nats.Conn, prefix string) *Pusher {
	return &Pusher{nc: nc, subj: NewSubjects(prefix)}
}

// ErrBadName is returned for an empty uid or an invalid room name.
var ErrBadName = errors.New("cluster: bad name")

// User pushes m to every connection of uid, on any node.
func (p *Pusher) User(uid string, m Message) error {
	if uid == "" {
		return ErrBadName
	}
	return p.nc.PublishMsg(p.msg(p.subj.User(uid), m))
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
	return p.nc.PublishMsg(p.msg(p.subj.Room(room), m))
}

// All pushes m to every connection of every node.
func (p *Pusher) All(m Message) error { return p.nc.PublishMsg(p.msg(p.subj.All(), m)) }

// Conn pushes m to one connection of one node (both from the registry).
func (p *Pusher) Conn(node string, conn uint64, m Message) error {
	return p.nc.PublishMsg(p.msg(p.subj.Conn(node, conn), m))
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
	return p.nc.PublishMsg(m)
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
	return p.nc.PublishMsg(m)
}

func (p *Pusher) msg(subject string, m Message) *nats.Msg {
	msg := &nats.Msg{Subject: subject, Data: m.Payload}
	if m.ConvID != 0 || m.Seq != 0 {
		msg.Header = nats.Header{}
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
