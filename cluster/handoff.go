package cluster

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"imgate/gateway"
	"imgate/proto"
)

// Handoff: a drained client loses no push. Between the CLOSE SHUTDOWN a
// draining node sends and the client's AUTH on another node, the user may
// be subscribed nowhere, and a push published then would be lost. So:
//
//   - The draining (old) node, at the moment it closes a client (under the
//     lock that user pushes take while it drains), starts a hold for that
//     user and device: it keeps the user's bus subscription and keeps every
//     user push from then on, and it answers claims on
//     <p>.handoff.<user>.<device>.
//   - The client reconnects with FlagMoved in its AUTH. The new node closes
//     a gate on the user (user pushes arriving for it wait in a stash),
//     subscribes the user, and once that subscription is confirmed claims
//     the hold. It then delivers the held pushes, then the stash, through
//     the same origin/sequence deduplication the two bus paths use: a push
//     that reached both nodes (published after the new subscription and
//     before the claim) is delivered once, and each publisher's pushes stay
//     in order.
//   - The answer also carries, per publisher, the last push the old node
//     had taken when it closed the connection; after the held pushes the
//     new node counts everything up to it as delivered: a NATS server can
//     still hand the new subscription a message it had queued before the
//     subscription arrived, one the old node had already delivered.
//   - The claim reaches the old node through the same inbound queue as its
//     user pushes, so the answer holds every push that arrived before it.
//     For lateWindow after answering, the old node forwards the user pushes
//     that still reach it (published on a NATS server that had not yet
//     heard of the new subscription) to the moved connection, with their
//     stamps, and the new node delivers those it has not seen.
//
// A claim that finds no hold (NATS answers "no responders") is asked again
// for claimRetry, then opens the gate. Holds are bounded in bytes and in time (Handoff*); what
// they drop is counted. Pushes from publishers that do not stamp origin and
// sequence can be delivered twice inside the overlap. Room and broadcast
// pushes are not held: a room's missed messages are the message store's
// sync, not the gateway's. If the user still has another connection on
// the new node, that node was already subscribed, so the held pushes are
// delivered to the moved connection alone, without the gate: those the new
// node had already taken when the connection authenticated (it gave them to
// the user's other connections only); the later ones it delivers to the
// moved connection itself. They may interleave with newer pushes there
// (imgate_cluster_handoff_shared_total counts these claims).
type handoff struct {
	n *Node

	draining atomic.Bool  // the old side is live: user pushes consult holds
	gating   atomic.Int32 // number of gates: the new side is live

	mu    sync.Mutex
	holds map[string]map[string]*hold // uid -> device -> hold
	gates map[string]*gate            // uid -> gate

	// heldUsers counts holds by user under its own lock: the interest
	// reconciler asks for it from paths that may run inside a close, where
	// mu may be held (begin closes the client under it).
	countMu   sync.Mutex
	heldUsers map[string]int

	held, claimed, unclaimed, expired, dropped, delivered, duplicates, forwarded, shared atomic.Uint64
}

// hold is what the old node keeps for one drained device.
type hold struct {
	uid, device string
	since       time.Time
	msgs        []heldPush
	marks       map[string]uint64 // origin -> last seq taken here at the close
	bytes       int
	subs        []*nats.Subscription // claim subscriptions, until claimed
	to          *claim               // set once claimed: late pushes go there
	until       time.Time            // end of the late window
}

// claim is a claim's body: the moved connection.
type claim struct {
	Node string `json:"node"`
	Conn uint64 `json:"conn"`
}

// lateWindow is how long a claimed hold forwards the pushes that still
// reach the old node.
const lateWindow = time.Second

// opLate marks a forwarded push on a connection subject.
const opLate = "late"

// answerBody is a claim's answer.
type answerBody struct {
	Marks map[string]uint64 `json:"marks,omitempty"`
	Msgs  []heldPush        `json:"msgs"`
}

// heldPush is one push in a claim's answer.
type heldPush struct {
	Origin string `json:"o,omitempty"`
	Seq    uint64 `json:"s,omitempty"`
	Conv   uint64 `json:"c,omitempty"`
	MsgSeq uint64 `json:"m,omitempty"`
	Data   []byte `json:"d"`
}

// gate holds one user's pushes on the new node while claims are out.
type gate struct {
	waiting int // claims in flight
	stash   []*nats.Msg
}

// claimRetry is how long a claim answered "no responders" is repeated.
const claimRetry = 100 * time.Millisecond

func newHandoff(n *Node) *handoff {
	return &handoff{n: n, holds: make(map[string]map[string]*hold), gates: make(map[string]*gate), heldUsers: make(map[string]int)}
}

func (h *handoff) subject(uid, device string) string {
	return h.n.subj.Prefix() + ".handoff." + Token(uid) + "." + Token(device)
}

// Old side.

// begin is the node's DrainKick: it starts the hold and closes the client
// under h.mu, so each user push lands either in the connection's queue
// before the CLOSE or in the hold.
func (h *handoff) begin(x *gateway.Session, kick func()) {
	uid, device := x.UID(), x.Device()
	hd := &hold{uid: uid, device: device, since: time.Now()}
	// Subscribed before the client can hear the CLOSE, so its claim finds
	// the hold. One queue group over the paths: one answer per claim.
	for p, nc := range h.n.paths.Conns() {
		sub, err := nc.ChanQueueSubscribe(h.subject(uid, device), "handoff", h.n.inbound[p])
		if err == nil {
			hd.subs = append(hd.subs, sub)
		}
	}
	h.count(uid, 1)
	h.mu.Lock()
	devs := h.holds[uid]
	if devs == nil {
		devs = make(map[string]*hold)
		h.holds[uid] = devs
	}
	old := devs[device]
	devs[device] = hd
	// Every push taken so far (marked by the deduplication) went to the
	// connection, or is waiting for h.mu and will be held.
	hd.marks = h.n.dedup.marks(h.n.subj.User(uid))
	kick()
	h.mu.Unlock()
	if old != nil {
		unsubscribe(old.subs)
		h.count(uid, -1)
	}
	h.held.Add(1)
}

func (h *handoff) count(uid string, d int) {
	h.countMu.Lock()
	if h.heldUsers[uid] += d; h.heldUsers[uid] <= 0 {
		delete(h.heldUsers, uid)
	}
	h.countMu.Unlock()
}

// hasHold reports whether uid has a hold (its subscription must stay).
func (h *handoff) hasHold(uid string) bool {
	if !h.draining.Load() {
		return false
	}
	h.countMu.Lock()
	defer h.countMu.Unlock()
	return h.heldUsers[uid] > 0
}

// pushUser delivers a user push on the old side: to the user's local
// connections, and into each of the user's holds (or, once claimed, on to
// the moved connection).
func (h *handoff) pushUser(uid string, m *nats.Msg, origin string, seq uint64) {
	p := pushOf(m)
	if !h.draining.Load() {
		h.n.srv.PushUser(uid, p)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n.srv.PushUser(uid, p)
	limit := h.n.cfg.HandoffBytes
	for _, hd := range h.holds[uid] {
		if hd.to != nil {
			h.forward(hd, m)
			continue
		}
		hd.msgs = append(hd.msgs, heldPush{Origin: origin, Seq: seq, Conv: p.ConvID, MsgSeq: p.Seq, Data: m.Data})
		hd.bytes += len(m.Data) + 64
		for hd.bytes > limit && len(hd.msgs) > 0 {
			hd.bytes -= len(hd.msgs[0].Data) + 64
			hd.msgs = hd.msgs[1:]
			h.dropped.Add(1)
		}
	}
}

// answer serves a claim (on the inbound goroutine, after every push that
// arrived before it): the first takes the held pushes; a claim that finds
// the hold gone or taken gets no answer (a late duplicate of one already
// answered).
func (h *handoff) answer(rest string, m *nats.Msg) {
	uid, device, ok := parseHandoff(rest)
	if !ok {
		return
	}
	var to claim
	if json.Unmarshal(m.Data, &to) != nil || to.Node == "" {
		return
	}
	h.mu.Lock()
	hd := h.holds[uid][device]
	if hd == nil || hd.to != nil {
		h.mu.Unlock()
		return
	}
	msgs := hd.msgs
	hd.msgs, hd.bytes = nil, 0
	hd.to, hd.until = &to, time.Now().Add(lateWindow)
	subs := hd.subs
	hd.subs = nil
	h.mu.Unlock()
	unsubscribe(subs)
	h.claimed.Add(1)
	b, err := json.Marshal(answerBody{Marks: hd.marks, Msgs: msgs})
	if err == nil {
		err = m.Respond(b)
	}
	if err != nil {
		h.n.log.Warn("cluster: handoff answer", "uid", uid, "held", len(msgs), "err", err)
	}
}

// parseHandoff reads user and device from "handoff.<user>.<device>".
func parseHandoff(rest string) (uid, device string, ok bool) {
	rest, ok = strings.CutPrefix(rest, "handoff.")
	if !ok {
		return "", "", false
	}
	ut, dt, ok := strings.Cut(rest, ".")
	if !ok {
		return "", "", false
	}
	uid, ok1 := ParseToken(ut)
	device, ok2 := ParseToken(dt)
	return uid, device, ok1 && ok2
}

// forward sends a push that reached the old node after the claim on to the
// moved connection, with its stamp (h.mu held).
func (h *handoff) forward(hd *hold, m *nats.Msg) {
	out := nats.NewMsg(h.n.subj.Conn(hd.to.Node, hd.to.Conn))
	out.Data = m.Data
	for k, v := range m.Header {
		out.Header[k] = v
	}
	out.Header.Set(HeaderOp, opLate)
	_, nc := h.n.paths.Active()
	if nc.PublishMsg(out) == nil {
		h.forwarded.Add(1)
	}
}

// take removes hd if it is still current, and releases what it holds.
func (h *handoff) take(hd *hold) bool {
	h.mu.Lock()
	devs := h.holds[hd.uid]
	if devs[hd.device] != hd {
		h.mu.Unlock()
		return false
	}
	delete(devs, hd.device)
	if len(devs) == 0 {
		delete(h.holds, hd.uid)
	}
	subs := hd.subs
	hd.subs = nil
	h.mu.Unlock()
	unsubscribe(subs)
	h.count(hd.uid, -1)
	h.n.interest.maybeGone(false, hd.uid)
	return true
}

// expire ends claimed holds after their late window, and drops unclaimed
// ones older than the hold window.
func (h *handoff) expire(now time.Time) {
	var done, old []*hold
	h.mu.Lock()
	for _, devs := range h.holds {
		for _, hd := range devs {
			switch {
			case hd.to != nil && now.After(hd.until):
				done = append(done, hd)
			case hd.to == nil && now.Sub(hd.since) > h.n.cfg.HandoffHold:
				old = append(old, hd)
			}
		}
	}
	h.mu.Unlock()
	for _, hd := range done {
		h.take(hd)
	}
	for _, hd := range old {
		if h.take(hd) {
			h.expired.Add(1)
		}
	}
}

// run expires holds while the node drains.
func (h *handoff) run(stop <-chan struct{}) {
	t := time.NewTicker(max(h.n.cfg.HandoffHold/10, 50*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			h.expire(now)
		}
	}
}

// New side.

// claim runs at the AUTH of a moved connection: close the gate (unless the
// node already delivers this user), subscribe, then claim the hold.
func (h *handoff) claim(x *gateway.Session) {
	uid := x.UID()
	alone := h.n.srv.UserConns(uid) <= 1
	if !alone {
		h.shared.Add(1)
	}
	if alone {
		h.mu.Lock()
		g := h.gates[uid]
		if g == nil {
			g = &gate{}
			h.gates[uid] = g
			h.gating.Add(1)
		}
		g.waiting++
		h.mu.Unlock()
	}
	var seen map[string]uint64
	if !alone {
		seen = h.n.dedup.marks(h.n.subj.User(uid))
	}
	h.n.interest.userOnline(uid, func() {
		h.n.listOnline(x)
		go h.request(x, alone, seen)
	})
}

// stash keeps a user push while its user's gate is closed. It runs on the
// inbound goroutine before deduplication, so the claim's pushes are marked
// first and the stash's copies of them are dropped.
func (h *handoff) stash(rest string, m *nats.Msg) bool {
	if h.gating.Load() == 0 {
		return false
	}
	var uid string
	if _, u, late := h.lateTarget(rest, m); late {
		uid = u
	} else {
		tok, ok := strings.CutPrefix(rest, "user.")
		if !ok || (m.Header != nil && m.Header.Get(HeaderOp) != "") {
			return false
		}
		if uid, ok = ParseToken(tok); !ok {
			return false
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	g := h.gates[uid]
	if g == nil {
		return false
	}
	g.stash = append(g.stash, m)
	return true
}

// lateTarget reports whether m is a push the old node forwarded after its
// claim (on rest, the subject after the prefix; "" for a stashed m), and
// for which connection and user (uid "" when the connection is gone).
func (h *handoff) lateTarget(rest string, m *nats.Msg) (id uint64, uid string, late bool) {
	if m.Header == nil || m.Header.Get(HeaderOp) != opLate {
		return 0, "", false
	}
	if rest == "" {
		rest = strings.TrimPrefix(m.Subject, h.n.subjPrefix)
	}
	hex, ok := strings.CutPrefix(rest, h.n.nodeRest+"conn.")
	if !ok {
		return 0, "", false
	}
	if id, ok = gateway.ParseConnID(hex); !ok {
		return 0, "", false
	}
	if x := h.n.srv.Registry().Conn(id); x != nil {
		uid = x.UID()
	}
	return id, uid, true
}

// late delivers a forwarded push to its connection unless the node has
// delivered it (or a later push of its publisher) to the user already.
func (h *handoff) late(id uint64, uid string, m *nats.Msg) {
	if uid == "" {
		return
	}
	if origin, seq := stamp(m); origin != "" && !h.n.dedup.first(origin, h.n.subj.User(uid), seq, time.Now()) {
		h.duplicates.Add(1)
		return
	}
	if h.n.srv.PushConn(id, pushOf(m)) {
		h.delivered.Add(1)
	}
}

// request claims x's hold and delivers it. seen (for a user already
// connected here) is what this node had taken when x authenticated.
func (h *handoff) request(x *gateway.Session, alone bool, seen map[string]uint64) {
	uid := x.UID()
	var ans answerBody
	_, nc := h.n.paths.Active()
	// "No responders" right after the close may only mean that the old
	// node's subscription has not reached this NATS server yet (interest
	// travels between servers asynchronously): ask again for a moment.
	var reply *nats.Msg
	var err error
	body, _ := json.Marshal(claim{Node: h.n.cfg.NodeID, Conn: x.ID()})
	for give := time.Now().Add(claimRetry); ; {
		reply, err = nc.Request(h.subject(uid, x.Device()), body, h.n.cfg.HandoffTimeout)
		if !errors.Is(err, nats.ErrNoResponders) || time.Now().After(give) {
			break
		}
		time.Sleep(claimRetry / 5)
	}
	switch {
	case err == nil:
		if err := json.Unmarshal(reply.Data, &ans); err != nil {
			h.n.log.Warn("cluster: handoff: bad answer", "uid", uid, "err", err)
		}
	case errors.Is(err, nats.ErrNoResponders):
		// Nobody holds pushes for this device.
		h.unclaimed.Add(1)
		h.n.log.Info("cluster: handoff: no hold", "uid", uid)
	default:
		h.n.log.Warn("cluster: handoff claim", "uid", uid, "err", err)
	}
	held := ans.Msgs
	subject := h.n.subj.User(uid)
	now := time.Now()
	if !alone {
		for _, hp := range held {
			if hp.Origin != "" && hp.Seq > seen[hp.Origin] {
				continue // taken here after x authenticated: x has it from here
			}
			if h.n.srv.PushConn(x.ID(), hp.push()) {
				h.delivered.Add(1)
			}
		}
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, hp := range held {
		if hp.Origin != "" && !h.n.dedup.first(hp.Origin, subject, hp.Seq, now) {
			h.duplicates.Add(1)
			continue
		}
		h.n.srv.PushUser(uid, hp.push())
		h.delivered.Add(1)
	}
	// Everything the old node had taken when it closed the connection was
	// delivered there or is in held: it counts as delivered here, whichever
	// way a copy of it still arrives (a NATS server can hand the new
	// subscription a message it had queued before the subscription).
	for origin, seq := range ans.Marks {
		h.n.dedup.raise(origin, subject, seq, now)
	}
	g := h.gates[uid]
	if g == nil {
		return
	}
	for _, m := range g.stash {
		if id, _, late := h.lateTarget("", m); late {
			h.late(id, uid, m)
			continue
		}
		if origin, seq := stamp(m); origin != "" && !h.n.dedup.first(origin, subject, seq, now) {
			h.n.stats.duplicates.Add(1)
			continue
		}
		h.n.srv.PushUser(uid, pushOf(m))
	}
	g.stash = nil
	if g.waiting--; g.waiting == 0 {
		delete(h.gates, uid)
		h.gating.Add(-1)
	}
}

func (hp heldPush) push() proto.Push {
	return proto.Push{ConvID: hp.Conv, Seq: hp.MsgSeq, Payload: hp.Data}
}

// settle waits, before the node leaves, until every hold has been claimed
// or has expired: the last clients of a drain are closed just before its
// end, and their next node claims a moment later.
func (h *handoff) settle() {
	for {
		h.mu.Lock()
		var newest time.Time
		for _, devs := range h.holds {
			for _, hd := range devs {
				if hd.since.After(newest) {
					newest = hd.since
				}
			}
		}
		h.mu.Unlock()
		if newest.IsZero() || time.Since(newest) > h.n.cfg.HandoffHold {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// close drops every hold (the node is leaving).
func (h *handoff) close() {
	h.mu.Lock()
	holds := h.holds
	h.holds = make(map[string]map[string]*hold)
	h.mu.Unlock()
	for _, devs := range holds {
		for _, hd := range devs {
			unsubscribe(hd.subs)
			h.expired.Add(1)
		}
	}
}
