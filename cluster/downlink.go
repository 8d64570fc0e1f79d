package cluster

import (
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"imgate/gateway"
	"imgate/proto"
)

// deliver runs one bus message addressed to this node's connections: a push
// (encoded once into a frame by the gateway, whatever the number of local
// recipients) or a control operation. Messages come from one goroutine, so
// one publisher's messages reach each connection in publish order.
func (n *Node) deliver(m *nats.Msg, path int) {
	n.stats.busIn.Add(1)
	rest, ok := strings.CutPrefix(m.Subject, n.subjPrefix)
	if !ok {
		return
	}
	if strings.HasPrefix(rest, "handoff.") {
		// A claim (one path's queue member gets it): answered here, after
		// the pushes that arrived before it.
		n.handoff.answer(rest, m)
		return
	}
	now := time.Now()
	if !n.paths.Trusted(path, now) {
		return // the other path carries everything while this one recovers
	}
	origin, seq := stamp(m)
	switch {
	case origin == n.pusher.Origin() && origin != "":
		n.stats.duplicates.Add(1)
		return
	case origin == "":
		if active, _ := n.paths.Active(); path != active {
			return // unstamped: only the active path can deliver it, once
		}
	}
	if n.handoff.stash(rest, m) {
		return // a moved user's pushes wait for its handoff (handoff.go)
	}
	if strings.HasPrefix(rest, n.nodeRest) {
		if id, uid, late := n.handoff.lateTarget(rest, m); late {
			n.handoff.late(id, uid, m)
			return
		}
	}
	if origin != "" && !n.dedup.first(origin, m.Subject, seq, now) {
		n.stats.duplicates.Add(1)
		return
	}
	op := ""
	if m.Header != nil {
		op = m.Header.Get(HeaderOp)
	}
	switch {
	case strings.HasPrefix(rest, "room."):
		room, ok := ParseToken(rest[len("room."):])
		if !ok || op != "" {
			return
		}
		p := pushOf(m)
		p.Topic = []byte(room)
		n.srv.PushRoom(room, p)
	case strings.HasPrefix(rest, "user."):
		uid, ok := ParseToken(rest[len("user."):])
		if !ok {
			return
		}
		switch op {
		case "":
			n.handoff.pushUser(uid, m, origin, seq)
		case OpKick:
			n.srv.Kick(uid, m.Header.Get(HeaderReason))
		case OpJoin:
			if _, err := n.srv.JoinUser(uid, m.Header.Get(HeaderRoom)); err != nil {
				n.log.Debug("cluster: join from the bus", "uid", uid, "err", err)
			}
		case OpLeave:
			n.srv.LeaveUser(uid, m.Header.Get(HeaderRoom))
		}
	case rest == "all":
		switch op {
		case "":
			n.srv.PushAll(pushOf(m))
		case OpKick:
			if target := m.Header.Get(HeaderTarget); target != "" {
				n.srv.Kick(target, m.Header.Get(HeaderReason))
			}
		}
	case strings.HasPrefix(rest, n.nodeRest):
		hex, ok := strings.CutPrefix(rest[len(n.nodeRest):], "conn.")
		if !ok {
			return
		}
		if id, ok := gateway.ParseConnID(hex); ok {
			n.srv.PushConn(id, pushOf(m))
		}
	}
}

// inboundLoop delivers bus messages from every path until stop closes.
func (n *Node) inboundLoop(stop <-chan struct{}) {
	if len(n.inbound) == 1 {
		for {
			select {
			case <-stop:
				return
			case m := <-n.inbound[0]:
				n.deliver(m, 0)
			}
		}
	}
	for {
		select {
		case <-stop:
			return
		case m := <-n.inbound[0]:
			n.deliver(m, 0)
		case m := <-n.inbound[1]:
			n.deliver(m, 1)
		}
	}
}

// The node is also the gateway's Relay: pushes its admin port and HTTP API
// accepted (and already delivered locally) go out on the bus for the other
// nodes. no_echo keeps them from coming back here.

func (n *Node) RelayUsers(uids []string, p proto.Push) {
	n.count(n.pusher.Users(uids, Message{ConvID: p.ConvID, Seq: p.Seq, Payload: p.Payload}))
}

func (n *Node) RelayRoom(room string, p proto.Push) {
	n.count(n.pusher.Room(room, Message{ConvID: p.ConvID, Seq: p.Seq, Payload: p.Payload}))
}

func (n *Node) RelayAll(p proto.Push) {
	n.count(n.pusher.All(Message{ConvID: p.ConvID, Seq: p.Seq, Payload: p.Payload}))
}

func (n *Node) RelayKick(target, reason string) { n.count(n.pusher.Kick(target, reason)) }

func (n *Node) count(err error) {
	if err != nil {
		n.stats.relayErrors.Add(1)
		n.log.Debug("cluster: relay", "err", err)
		return
	}
	n.stats.relayed.Add(1)
}
