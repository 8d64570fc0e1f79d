package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"imgate/gateway"
)

// Node is the cluster side of one gateway node: it holds the node's bus
// subscriptions by interest, routes uplinks to backends, relays pushes from
// the node's operator interfaces, keeps the node's registry entries and
// heartbeats, and answers cluster queries on the admin port and HTTP API.
type Node struct {
	cfg  Config
	srv  *gateway.Server
	nc   *nats.Conn
	log  *slog.Logger
	boot string // this process's incarnation; registry keys carry it

	subj       Subjects
	subjPrefix string // "<p>."
	nodeRest   string // "node.<node>." after the prefix
	pusher     *Pusher

	inbound  chan *nats.Msg
	interest *interest
	router   *router
	registry *registry
	live     *liveness
	subs     []*nats.Subscription

	stats nodeStats
	stop  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
}

type nodeStats struct {
	busIn           atomic.Uint64
	relayed         atomic.Uint64
	relayErrors     atomic.Uint64
	requests        atomic.Uint64
	requestErrors   atomic.Uint64
	requestTimeouts atomic.Uint64
}

// Attach makes srv a cluster node on the bus connection nc. Call it before
// srv.Start (it registers admin commands and HTTP routes) and Start after.
// nc should have been opened with nats.NoEcho (see Connect): the node
// delivers its own pushes locally and must not get them back.
func Attach(srv *gateway.Server, nc *nats.Conn, cfg Config, log *slog.Logger) (*Node, error) {
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
		nc:         nc,
		log:        log.With("node", cfg.NodeID),
		boot:       hex.EncodeToString(b[:]),
		subj:       subj,
		subjPrefix: subj.Prefix() + ".",
		nodeRest:   "node." + Token(cfg.NodeID) + ".",
		pusher:     NewPusher(nc, cfg.Prefix),
		inbound:    make(chan *nats.Msg, cfg.InboundQueue),
		stop:       make(chan struct{}),
	}
	n.interest = newInterest(n)
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
	return n, nil
}

// Start subscribes the node-wide subjects and starts the background work.
func (n *Node) Start() error {
	for _, subject := range []string{n.subj.All(), n.subj.Node(n.cfg.NodeID) + ".conn.*"} {
		sub, err := n.nc.ChanSubscribe(subject, n.inbound)
		if err != nil {
			return err
		}
		n.subs = append(n.subs, sub)
	}
	q, err := n.nc.Subscribe(n.subj.RoomQuery(), n.answerRoomQuery)
	if err != nil {
		return err
	}
	n.subs = append(n.subs, q)
	if err := n.live.start(); err != nil {
		return err
	}
	n.wg.Add(3)
	go func() { defer n.wg.Done(); n.inboundLoop(n.stop) }()
	go func() { defer n.wg.Done(); n.interest.run(n.stop) }()
	go func() { defer n.wg.Done(); n.registry.run(n.stop) }()
	n.wg.Add(1)
	go func() { defer n.wg.Done(); n.live.run(n.stop) }()
	return nil
}

// Close takes the node out of the cluster: its registry entries are removed
// and its goodbye heartbeat tells the others at once. Close the gateway
// first (its closing sessions are then already out).
func (n *Node) Close() error {
	var err error
	n.once.Do(func() {
		n.live.goodbye()
		n.registry.purgeSelf()
		close(n.stop)
		n.wg.Wait()
		for _, s := range n.subs {
			_ = s.Unsubscribe()
		}
		n.interest.closeAll()
		n.router.close()
		err = n.nc.Flush()
		if errors.Is(err, nats.ErrConnectionClosed) {
			err = nil
		}
	})
	return err
}

// ID and Boot name this node and its incarnation.
func (n *Node) ID() string   { return n.cfg.NodeID }
func (n *Node) Boot() string { return n.boot }

// Observer: gateway events feed the interest and the registry.

func (n *Node) SessionAuthed(x *gateway.Session) {
	n.interest.userOnline(x.UID())
	n.registry.put(x)
}

func (n *Node) SessionClosed(x *gateway.Session) {
	if !n.srv.HasUser(x.UID()) {
		n.interest.maybeGone(false, x.UID())
	}
	n.registry.remove(x)
}

func (n *Node) RoomJoined(room string, first bool, ready func()) {
	n.interest.roomJoined(room, ready)
}

func (n *Node) RoomLeft(room string, last bool) {
	if last {
		n.interest.maybeGone(true, room)
	}
}
