package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"imgate/gateway"
)

// Node is the cluster side of one gateway node: it holds the node's bus
// subscriptions by interest, routes uplinks to backends, relays pushes from
// the node's operator interfaces, keeps the node's registry entries and
// heartbeats, and answers cluster queries on the admin port and HTTP API.
type Node struct {
	cfg   Config
	srv   *gateway.Server
	paths *Paths
	nc    *nats.Conn // the primary path: registry, queries
	log   *slog.Logger
	boot  string // this process's incarnation; registry keys carry it

	subj       Subjects
	subjPrefix string // "<p>."
	nodeRest   string // "node.<node>." after the prefix
	pusher     *Pusher

	inbound  []chan *nats.Msg // one per path
	dedup    *dedup
	interest *interest
	router   *router
	registry *registry
	handoff  *handoff
	live     *liveness
	subs     []*nats.Subscription

	regMu sync.Mutex // orders a session's registry put (after its subscription) with its remove

	stats  nodeStats
	ctx    context.Context // ends at Close: bounds bus calls in flight
	cancel context.CancelFunc
	stop   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
}

type nodeStats struct {
	busIn           atomic.Uint64
	duplicates      atomic.Uint64
	relayed         atomic.Uint64
	relayErrors     atomic.Uint64
	requests        atomic.Uint64
	requestErrors   atomic.Uint64
	requestTimeouts atomic.Uint64
}

// Attach makes srv a cluster node on the bus paths. Call it before
// srv.Start (it registers admin commands and HTTP routes) and Start after.
// The paths should have been opened with nats.NoEcho (see ConnectPaths):
// the node delivers its own pushes locally; what comes back on another path
// is recognised by its stamp and dropped.
func Attach(srv *gateway.Server, paths *Paths, cfg Config, log *slog.Logger) (*Node, error) {
	cfg = cfg.withDefaults()
	if cfg.NodeID == "" {
		cfg.NodeID = srv.Config().NodeID
	}
	if log == nil {
		log = slog.Default()
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	subj := NewSubjects(cfg.Prefix)
	n := &Node{
		cfg:        cfg,
		srv:        srv,
		paths:      paths,
		nc:         paths.Primary(),
		log:        log.With("node", cfg.NodeID),
		boot:       hex.EncodeToString(b[:]),
		subj:       subj,
		subjPrefix: subj.Prefix() + ".",
		nodeRest:   "node." + Token(cfg.NodeID) + ".",
		pusher:     NewPathPusher(paths, cfg.Prefix),
		dedup:      newDedup(),
		stop:       make(chan struct{}),
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	for range paths.Conns() {
		n.inbound = append(n.inbound, make(chan *nats.Msg, cfg.InboundQueue))
	}
	n.interest = newInterest(n)
	n.handoff = newHandoff(n)
	n.registry = newRegistry(n)
	n.live = newLiveness(n)
	router, err := newRouter(n)
	if err != nil {
		return nil, err
	}
	n.router = router
	srv.SetObserver(n)
	srv.SetRelay(n)
	srv.SetFallback(router)
	if err := n.registerQueries(); err != nil {
		return nil, err
	}
	for _, c := range n.collectors() {
		if err := srv.MetricsRegisterer().Register(c); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// Start subscribes the node-wide subjects and starts the background work.
func (n *Node) Start() error {
	for i, nc := range n.paths.Conns() {
		for _, subject := range []string{n.subj.All(), n.subj.Node(n.cfg.NodeID) + ".conn.*"} {
			sub, err := nc.ChanSubscribe(subject, n.inbound[i])
			if err != nil {
				return err
			}
			n.subs = append(n.subs, sub)
		}
		// One answer per node, whichever path hears the query.
		q, err := nc.QueueSubscribe(n.subj.RoomQuery(), "node."+Token(n.cfg.NodeID), n.answerRoomQuery)
		if err != nil {
			return err
		}
		n.subs = append(n.subs, q)
	}
	n.live.endpoints = advertised(n.srv, n.cfg.AdvertiseHost)
	if err := n.live.start(); err != nil {
		return err
	}
	n.wg.Add(4)
	go func() { defer n.wg.Done(); n.inboundLoop(n.stop) }()
	go func() { defer n.wg.Done(); n.interest.run(n.stop) }()
	go func() { defer n.wg.Done(); n.registry.run(n.stop) }()
	go func() { defer n.wg.Done(); n.live.run(n.stop) }()
	return nil
}

// Close takes the node out of the cluster: its registry entries are removed
// and its goodbye heartbeat tells the others at once. Close the gateway
// first (its closing sessions are then already out).
func (n *Node) Close() error {
	var err error
	n.once.Do(func() {
		n.handoff.settle()
		n.handoff.close()
		n.live.goodbye()
		n.registry.purgeSelf()
		n.cancel()
		close(n.stop)
		n.wg.Wait()
		for _, s := range n.subs {
			_ = s.Unsubscribe()
		}
		n.interest.closeAll()
		n.router.close()
		n.paths.Flush(2 * time.Second)
	})
	return err
}

// ID and Boot name this node and its incarnation.
func (n *Node) ID() string   { return n.cfg.NodeID }
func (n *Node) Boot() string { return n.boot }

// Observer: gateway events feed the interest and the registry.

// The registry lists a session once its user's subscription is confirmed,
// so a backend that finds a user online in the registry and pushes to it
// reaches it.
func (n *Node) SessionAuthed(x *gateway.Session) {
	if x.Moved() {
		n.handoff.claim(x)
	} else {
		n.interest.userOnline(x.UID(), func() { n.listOnline(x) })
	}
}

// listOnline writes x's registry entry unless x has already closed (its
// removal is then queued, or about to be, and must not be overtaken).
func (n *Node) listOnline(x *gateway.Session) {
	n.regMu.Lock()
	defer n.regMu.Unlock()
	if !x.Gone() {
		n.registry.put(x)
	}
}

func (n *Node) SessionClosed(x *gateway.Session) {
	if !n.srv.HasUser(x.UID()) {
		n.interest.maybeGone(false, x.UID())
	}
	n.regMu.Lock()
	n.registry.remove(x)
	n.regMu.Unlock()
}

// NodeDraining: tell the cluster (and so DNS and HTTPDNS) at once, and
// hold the pushes of the users it closes (handoff.go).
func (n *Node) NodeDraining() {
	if n.handoff.draining.Swap(true) {
		return
	}
	n.live.beatNow()
	n.wg.Add(1)
	go func() { defer n.wg.Done(); n.handoff.run(n.stop) }()
}

// DrainKick closes x with its pushes held for its next node.
func (n *Node) DrainKick(x *gateway.Session, kick func()) { n.handoff.begin(x, kick) }

func (n *Node) RoomJoined(room string, first bool, ready func()) {
	n.interest.roomJoined(room, ready)
}

func (n *Node) RoomLeft(room string, last bool) {
	if last {
		n.interest.maybeGone(true, room)
	}
}
