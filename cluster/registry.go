package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"imgate/gateway"
)

// The online registry: one JetStream KV entry per authenticated connection,
// under
//
//	u.<uid>.<region>.<node>.<boot>.<conn>
//
// so that one key filter answers each question: a user's connections
// (u.<uid>.>), a region's (u.*.<region>.>), a node incarnation's
// (u.*.*.<node>.<boot>.*, which is also what a reaper purges in one request).
// A second bucket holds one key per live node incarnation (<node>.<boot>), so
// that a node that dies unobserved is still found and reaped later.
//
// Writes never wait on the gateway's paths: auth and close queue an op; one
// goroutine publishes queued ops in batches (asynchronous JetStream
// publishes, one wait for the batch's acks), coalescing ops on the same key.
// When the bus is down, or the queue overflows, or a write fails, the queue
// is dropped and the node resynchronises: it writes every local session and
// removes its entries that no longer exist.

// Entry is one connection in the registry.
type Entry struct {
	UID       string    `json:"uid"`
	Device    string    `json:"device"`
	Conn      string    `json:"conn"`
	Node      string    `json:"node"`
	Region    string    `json:"region"`
	Transport string    `json:"transport"`
	Since     time.Time `json:"since"`
}

// registryQueue bounds the ops waiting to be written.
const registryQueue = 1 << 16

// registryBatch bounds the ops written before one wait for acks.
const registryBatch = 4096

// ackWait bounds the wait for a batch's acknowledgements.
const ackWait = 3 * time.Second

// purgeMarkerTTL is how long a removed entry's purge marker stays (it lets
// watchers see the removal; the TTL keeps markers from piling up).
const purgeMarkerTTL = time.Minute

type regOp struct {
	key  string
	data []byte // nil: remove
}

// buckets are the open KV buckets; set once by the writer goroutine, read by
// queries and the reaper.
type buckets struct {
	js      jetstream.JetStream
	online  jetstream.KeyValue
	nodes   jetstream.KeyValue
	subject string // "$KV.<bucket>."
	stream  string
}

type registry struct {
	n      *Node
	ops    chan regOp
	resync atomic.Bool
	ready  atomic.Bool

	b atomic.Pointer[buckets] // nil until the buckets are open

	failed  atomic.Uint64 // async publish errors in the current batch
	writes  atomic.Uint64 // acknowledged puts and removals
	resyncs atomic.Uint64
	dropped atomic.Uint64
}

func newRegistry(n *Node) *registry {
	r := &registry{n: n, ops: make(chan regOp, registryQueue)}
	r.resync.Store(true) // the first pass writes what authenticated before the bus was ready
	return r
}

func (r *registry) key(uid string, conn uint64) string {
	n := r.n
	return "u." + Token(uid) + "." + Token(n.cfg.Region) + "." + Token(n.cfg.NodeID) + "." + n.boot + "." + formatConn(conn)
}

func (r *registry) selfFilter() string {
	return "u.*.*." + Token(r.n.cfg.NodeID) + "." + r.n.boot + ".*"
}

func (r *registry) nodeKey() string { return Token(r.n.cfg.NodeID) + "." + r.n.boot }

func (r *registry) entry(x *gateway.Session) []byte {
	b, _ := json.Marshal(Entry{
		UID:       x.UID(),
		Device:    x.Device(),
		Conn:      gateway.FormatConnID(x.ID()),
		Node:      r.n.cfg.NodeID,
		Region:    r.n.cfg.Region,
		Transport: x.Transport(),
		Since:     x.Since(),
	})
	return b
}

func (r *registry) enqueue(op regOp) {
	if r.resync.Load() {
		return // the resync will write the truth
	}
	select {
	case r.ops <- op:
	default:
		r.dropped.Add(1)
		r.resync.Store(true)
	}
}

func (r *registry) put(x *gateway.Session) {
	r.enqueue(regOp{key: r.key(x.UID(), x.ID()), data: r.entry(x)})
}

func (r *registry) remove(x *gateway.Session) {
	r.enqueue(regOp{key: r.key(x.UID(), x.ID())})
}

// replicas picks the KV replication: configured, or 3 when the NATS
// cluster has at least three servers.
func (r *registry) replicas() int {
	if r.n.cfg.Replicas > 0 {
		return r.n.cfg.Replicas
	}
	if len(r.n.nc.Servers()) >= 3 {
		return 3
	}
	return 1
}

// open creates or binds the buckets.
func (r *registry) open(ctx context.Context) error {
	js, err := jetstream.New(r.n.nc,
		jetstream.WithPublishAsyncMaxPending(registryBatch),
		jetstream.WithPublishAsyncTimeout(ackWait),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { r.failed.Add(1) }))
	if err != nil {
		return err
	}
	replicas := r.replicas()
	online, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         r.n.subj.BucketOnline(),
		Description:    "imgate online registry: u.<uid>.<region>.<node>.<boot>.<conn>",
		History:        1,
		Replicas:       replicas,
		Storage:        jetstream.FileStorage,
		LimitMarkerTTL: purgeMarkerTTL,
	})
	if err != nil {
		return fmt.Errorf("kv %s: %w", r.n.subj.BucketOnline(), err)
	}
	nodes, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      r.n.subj.BucketNodes(),
		Description: "imgate node incarnations with registry entries: <node>.<boot>",
		History:     1,
		Replicas:    replicas,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return fmt.Errorf("kv %s: %w", r.n.subj.BucketNodes(), err)
	}
	r.b.Store(&buckets{js: js, online: online, nodes: nodes,
		subject: "$KV." + r.n.subj.BucketOnline() + ".", stream: "KV_" + r.n.subj.BucketOnline()})
	return nil
}

// run writes queued ops until stop closes.
func (r *registry) run(stop <-chan struct{}) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	batch := make(map[string][]byte, registryBatch)
	order := make([]string, 0, registryBatch)
	for {
		if r.b.Load() == nil && r.n.nc.IsConnected() {
			ctx, cancel := context.WithTimeout(r.n.ctx, 10*time.Second)
			err := r.open(ctx)
			if err == nil {
				err = r.purgePrevious(ctx)
			}
			cancel()
			if err != nil {
				r.b.Store(nil)
				r.n.log.Warn("cluster: registry not ready", "err", err)
			}
		}
		if r.b.Load() != nil && r.resync.Load() && r.n.nc.IsConnected() {
			if err := r.resynchronise(); err != nil {
				r.n.log.Warn("cluster: registry resync", "err", err)
			} else {
				r.ready.Store(true)
			}
		}
		select {
		case <-stop:
			return
		case <-tick.C:
			continue
		case op := <-r.ops:
			clear(batch)
			order = order[:0]
			add := func(op regOp) {
				if _, ok := batch[op.key]; !ok {
					order = append(order, op.key)
				}
				batch[op.key] = op.data
			}
			add(op)
		more:
			for len(order) < registryBatch {
				select {
				case op := <-r.ops:
					add(op)
				default:
					break more
				}
			}
			if r.b.Load() == nil || !r.n.nc.IsConnected() || r.resync.Load() {
				r.resync.Store(true)
				r.drain()
				continue
			}
			r.write(order, batch)
		}
	}
}

// drain drops every queued op (a resync follows).
func (r *registry) drain() {
	for {
		select {
		case <-r.ops:
		default:
			return
		}
	}
}

// write publishes ops asynchronously and waits once for all their acks.
func (r *registry) write(keys []string, values map[string][]byte) {
	r.failed.Store(0)
	sent := 0
	for _, k := range keys {
		if _, err := r.b.Load().js.PublishMsgAsync(r.op(k, values[k])); err != nil {
			r.failed.Add(1)
			break
		}
		sent++
	}
	// No ack at all means the stream has no leader (a NATS server died and
	// JetStream is electing another, which takes seconds): give up soon and
	// resynchronise once it answers again.
	select {
	case <-r.b.Load().js.PublishAsyncComplete():
	case <-time.After(ackWait + time.Second):
		r.failed.Add(1)
		r.b.Load().js.CleanupPublisher() // drop what will never be acknowledged
	}
	failed := r.failed.Load()
	r.writes.Add(uint64(sent) - min(failed, uint64(sent)))
	if failed > 0 {
		r.resync.Store(true)
	}
}

// op is the KV message for a put (data) or a removal (nil): a purge marker
// that rolls up the key's history and expires after purgeMarkerTTL.
func (r *registry) op(key string, data []byte) *nats.Msg {
	m := &nats.Msg{Subject: r.b.Load().subject + key, Data: data}
	if data == nil {
		m.Header = nats.Header{}
		m.Header.Set("KV-Operation", "PURGE")
		m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
		m.Header.Set(jetstream.MsgTTLHeader, purgeMarkerTTL.String())
	}
	return m
}

// purgePrevious removes what earlier incarnations of this node left (a
// crash, or a stop that could not reach NATS), then records this one.
func (r *registry) purgePrevious(ctx context.Context) error {
	if err := r.purge(ctx, "u.*.*."+Token(r.n.cfg.NodeID)+".>"); err != nil {
		return err
	}
	keys, err := r.b.Load().nodes.ListKeysFiltered(ctx, Token(r.n.cfg.NodeID)+".*")
	if err != nil {
		return err
	}
	for k := range keys.Keys() {
		_ = r.b.Load().nodes.Purge(ctx, k)
	}
	return r.putNode(ctx)
}

func (r *registry) putNode(ctx context.Context) error {
	st := r.n.live.status()
	b, _ := json.Marshal(st)
	_, err := r.b.Load().nodes.Put(ctx, r.nodeKey(), b)
	return err
}

// purge removes every entry matching a key filter in one request.
func (r *registry) purge(ctx context.Context, filter string) error {
	b := r.b.Load()
	if b == nil {
		return errors.New("registry not ready")
	}
	s, err := b.js.Stream(ctx, b.stream)
	if err != nil {
		return err
	}
	return s.Purge(ctx, jetstream.WithPurgeSubject(b.subject+filter))
}

// resynchronise makes this incarnation's entries equal the node's sessions.
func (r *registry) resynchronise() error {
	r.resyncs.Add(1)
	r.resync.Store(false)
	r.drain()
	want := make(map[string][]byte)
	r.n.srv.EachSession(func(x *gateway.Session) bool {
		want[r.key(x.UID(), x.ID())] = r.entry(x)
		return true
	})
	// Short: while JetStream elects a new leader for the bucket, calls can
	// hang; the next tick tries again.
	ctx, cancel := context.WithTimeout(r.n.ctx, 5*time.Second)
	defer cancel()
	fail := func(err error) error { r.resync.Store(true); return err }
	if err := r.putNode(ctx); err != nil {
		return fail(err)
	}
	lister, err := r.b.Load().online.ListKeysFiltered(ctx, r.selfFilter())
	if err != nil {
		return fail(err)
	}
	have := make(map[string]bool)
	for k := range lister.Keys() {
		have[k] = true
	}
	var keys []string
	values := make(map[string][]byte)
	for k, v := range want {
		keys = append(keys, k) // rewrite all: entries may have been reaped
		values[k] = v
	}
	for k := range have {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
			values[k] = nil
		}
	}
	for len(keys) > 0 {
		n := min(len(keys), registryBatch)
		r.write(keys[:n], values)
		keys = keys[n:]
	}
	if r.resync.Load() {
		return errors.New("writes failed")
	}
	r.n.log.Info("cluster: registry synchronised", "entries", len(want), "removed", len(values)-len(want))
	return nil
}

// checkSelf resynchronises when this incarnation's node key is gone: a
// reaper took the node for dead (it was cut off, or stalled, for longer than
// the liveness interval) and purged its entries.
func (r *registry) checkSelf(ctx context.Context) {
	b := r.b.Load()
	if b == nil || !r.ready.Load() || r.resync.Load() {
		return
	}
	if _, err := b.nodes.Get(ctx, r.nodeKey()); errors.Is(err, jetstream.ErrKeyNotFound) {
		r.n.log.Warn("cluster: this node was reaped while alive; resynchronising its registry entries")
		r.resync.Store(true)
	}
}

// purgeSelf removes this incarnation at a clean stop.
func (r *registry) purgeSelf() {
	b := r.b.Load()
	if b == nil || !r.n.nc.IsConnected() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = r.purge(ctx, r.selfFilter())
	_ = b.nodes.Purge(ctx, r.nodeKey())
}

// reap removes a dead incarnation's entries and its node key.
func (r *registry) reap(ctx context.Context, node, boot string) error {
	b := r.b.Load()
	if b == nil {
		return errors.New("registry not ready")
	}
	if err := r.purge(ctx, "u.*.*."+Token(node)+"."+boot+".*"); err != nil {
		return err
	}
	return b.nodes.Purge(ctx, Token(node)+"."+boot)
}

// incarnations lists the node keys (<node>.<boot>) in the nodes bucket.
func (r *registry) incarnations(ctx context.Context) ([]string, error) {
	b := r.b.Load()
	if b == nil {
		return nil, errors.New("registry not ready")
	}
	l, err := b.nodes.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for k := range l.Keys() {
		out = append(out, k)
	}
	return out, nil
}

// list returns the entries whose keys match filter, skipping offset and
// keeping at most limit (0: all); total counts every match.
func (r *registry) list(ctx context.Context, filter string, offset, limit int) (total int, out []Entry, err error) {
	b := r.b.Load()
	if b == nil {
		return 0, nil, errors.New("registry not ready: the bus is unreachable")
	}
	w, err := b.online.WatchFiltered(ctx, []string{filter}, jetstream.IgnoreDeletes())
	if err != nil {
		return 0, nil, err
	}
	defer w.Stop()
	// The watcher marks the end of the initial values with nil once it has
	// seen as many as the stream held when it started; entries purged in
	// the meantime (a reaper at work) never come, so a pause also ends it.
	idle := time.NewTimer(time.Second)
	defer idle.Stop()
	for {
		select {
		case <-ctx.Done():
			return total, out, ctx.Err()
		case <-idle.C:
			return total, out, nil
		case e, ok := <-w.Updates():
			idle.Reset(500 * time.Millisecond)
			if !ok || e == nil {
				return total, out, nil
			}
			if total >= offset && (limit <= 0 || len(out) < limit) {
				var en Entry
				if json.Unmarshal(e.Value(), &en) == nil {
					out = append(out, en)
				}
			}
			total++
		}
	}
}

// userFilter, regionFilter and nodeFilter are the registry's key filters.
func userFilter(uid string) string      { return "u." + Token(uid) + ".>" }
func regionFilter(region string) string { return "u.*." + Token(region) + ".>" }
func nodeFilter(node string) string     { return "u.*.*." + Token(node) + ".>" }
