package cluster

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// interest holds the node's subscriptions to room and user subjects: one
// per room with a local member and one per user with a local connection, so
// a room or user message costs nothing on nodes without them (NATS routes by
// interest). Gateway events mark a name dirty; one goroutine reconciles the
// subscription with the gateway's state at that moment, so events that race
// (a room emptied and joined again) settle on the truth. Subscriptions are
// confirmed in batches (one flush for every subscription made in a pass);
// a JOIN answer waits for its room's confirmation, or for nothing while the
// bus is down.
type interest struct {
	n *Node

	mu    sync.Mutex
	subs  map[interestKey]*interestSub
	dirty map[interestKey]struct{}
	wake  chan struct{}
}

type interestKey struct {
	room bool
	name string
}

type interestSub struct {
	subs    []*nats.Subscription // one per path; nil until the reconciler subscribes
	ready   bool                 // confirmed by the server (or the bus was down)
	waiters []func()             // JOIN answers held until ready
}

func newInterest(n *Node) *interest {
	return &interest{
		n:     n,
		subs:  make(map[interestKey]*interestSub),
		dirty: make(map[interestKey]struct{}),
		wake:  make(chan struct{}, 1),
	}
}

// roomJoined is the gateway's RoomJoined.
func (i *interest) roomJoined(room string, ready func()) {
	i.want(interestKey{room: true, name: room}, ready)
}

// userOnline is called at auth; ready, when not nil, runs once the user's
// subscription is confirmed.
func (i *interest) userOnline(uid string, ready func()) {
	i.want(interestKey{name: uid}, ready)
}

// want makes sure k is subscribed and calls ready (when not nil) once it is.
func (i *interest) want(k interestKey, ready func()) {
	i.mu.Lock()
	s := i.subs[k]
	if s != nil && s.ready {
		i.mu.Unlock()
		if ready != nil {
			ready()
		}
		return
	}
	if s == nil {
		s = &interestSub{}
		i.subs[k] = s
		i.dirty[k] = struct{}{}
	}
	if ready != nil {
		s.waiters = append(s.waiters, ready)
	}
	i.mu.Unlock()
	i.kick()
}

// maybeGone marks a room or user whose last local member may have left.
func (i *interest) maybeGone(room bool, name string) {
	i.mu.Lock()
	i.dirty[interestKey{room: room, name: name}] = struct{}{}
	i.mu.Unlock()
	i.kick()
}

func (i *interest) kick() {
	select {
	case i.wake <- struct{}{}:
	default:
	}
}

func (i *interest) wanted(k interestKey) bool {
	if k.room {
		return i.n.srv.HasRoom(k.name)
	}
	return i.n.srv.HasUser(k.name) || i.n.handoff.hasHold(k.name)
}

// run reconciles dirty names until stop closes.
func (i *interest) run(stop <-chan struct{}) {
	var batch []interestKey
	var made []*interestSub
	for {
		select {
		case <-stop:
			return
		case <-i.wake:
		}
		i.mu.Lock()
		batch = batch[:0]
		for k := range i.dirty {
			batch = append(batch, k)
		}
		clear(i.dirty)
		i.mu.Unlock()

		made = made[:0]
		for _, k := range batch {
			if s := i.reconcile(k); s != nil {
				made = append(made, s)
			}
		}
		if len(made) == 0 {
			continue
		}
		// One round trip confirms every subscription of the pass. While
		// the bus is down nats.go keeps them and sends them on reconnect:
		// the JOINs waiting here must not wait for that.
		i.n.paths.Flush(2 * time.Second)
		var release []func()
		i.mu.Lock()
		for _, s := range made {
			s.ready = true
			release = append(release, s.waiters...)
			s.waiters = nil
		}
		i.mu.Unlock()
		for _, fn := range release {
			fn()
		}
	}
}

// reconcile makes k's subscription match the gateway; it returns the entry
// when it subscribed.
func (i *interest) reconcile(k interestKey) *interestSub {
	i.mu.Lock()
	s := i.subs[k]
	want := i.wanted(k)
	switch {
	case want && s == nil:
		// A member arrived after an earlier pass dropped the entry but
		// before its event: create it here.
		s = &interestSub{}
		i.subs[k] = s
	case !want && s != nil:
		// Checked and removed under mu: a join that lands after this sees
		// no entry and creates a new one.
		delete(i.subs, k)
		waiters := s.waiters
		i.mu.Unlock()
		unsubscribe(s.subs)
		i.n.dedup.forget(i.subject(k))
		for _, fn := range waiters {
			fn() // joined and left before the subscription: answer anyway
		}
		return nil
	}
	if s == nil || s.subs != nil {
		i.mu.Unlock()
		return nil
	}
	i.mu.Unlock()

	subject := i.subject(k)
	var subs []*nats.Subscription
	for p, nc := range i.n.paths.Conns() {
		sub, err := nc.ChanSubscribe(subject, i.n.inbound[p])
		if err != nil {
			i.n.log.Warn("cluster: subscribe", "subject", subject, "err", err)
			// Retry in a second; release the waiters now.
			unsubscribe(subs)
			subs = nil
			time.AfterFunc(time.Second, i.kick)
			break
		}
		subs = append(subs, sub)
	}
	i.mu.Lock()
	if cur := i.subs[k]; cur != s {
		// Removed (and perhaps re-created) while we subscribed.
		i.mu.Unlock()
		unsubscribe(subs)
		i.maybeGone(k.room, k.name)
		return nil
	}
	s.subs = subs
	if subs == nil {
		i.dirty[k] = struct{}{}
	}
	i.mu.Unlock()
	return s
}

func (i *interest) subject(k interestKey) string {
	if k.room {
		return i.n.subj.Room(k.name)
	}
	return i.n.subj.User(k.name)
}

func unsubscribe(subs []*nats.Subscription) {
	for _, s := range subs {
		_ = s.Unsubscribe()
	}
}

// counts returns the number of room and user subscriptions.
func (i *interest) counts() (rooms, users int) {
	i.mu.Lock()
	defer i.mu.Unlock()
	for k := range i.subs {
		if k.room {
			rooms++
		} else {
			users++
		}
	}
	return rooms, users
}

// closeAll drops every subscription and answers held JOINs.
func (i *interest) closeAll() {
	i.mu.Lock()
	subs := i.subs
	i.subs = make(map[interestKey]*interestSub)
	i.mu.Unlock()
	for _, s := range subs {
		unsubscribe(s.subs)
		for _, fn := range s.waiters {
			fn()
		}
	}
}
