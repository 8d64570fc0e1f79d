package cluster

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"imgate/gateway"
	"imgate/proto"
)

// Request headers: who sent an uplink (docs/CLUSTER.md).
const (
	HeaderUID       = "Imgate-Uid"
	HeaderDevice    = "Imgate-Device"
	HeaderConn      = "Imgate-Conn" // 16 hex digits
	HeaderNode      = "Imgate-Node"
	HeaderRegion    = "Imgate-Region"
	HeaderTransport = "Imgate-Transport"
	HeaderSVID      = "Imgate-Svid"
	// HeaderStatus on a reply is an error: a decimal imgate error code
	// (below 100), the message data its text. Absent: success, the data
	// is the REPLY payload.
	HeaderStatus = "Imgate-Status"
)

// router is the gateway's Dispatcher fallback: an uplink to an SVID without
// an in-process handler becomes a NATS request on <p>.svc.<svid>, answered
// from a single reply subscription (no goroutine per request; the read path
// only publishes). Backends subscribe with queue groups, so NATS balances
// them and fails over between them.
type router struct {
	n        *Node
	prefixes []string // reply subjects per path: <inbox>.<id>
	subs     []*nats.Subscription
	next     atomic.Uint64
	timeout  time.Duration

	shards [64]pendingShard
	svids  sync.Map // uint32 -> subject string
}

type pendingShard struct {
	mu sync.Mutex
	m  map[uint64]*pendingRequest
}

type pendingRequest struct {
	req   *gateway.Request
	timer *time.Timer
}

func newRouter(n *Node) (*router, error) {
	r := &router{n: n, timeout: n.cfg.RequestTimeout}
	for i := range r.shards {
		r.shards[i].m = make(map[uint64]*pendingRequest)
	}
	for _, nc := range n.paths.Conns() {
		prefix := nc.NewInbox()
		sub, err := nc.Subscribe(prefix+".*", r.onReply)
		if err != nil {
			return nil, err
		}
		_ = sub.SetPendingLimits(-1, -1)
		r.prefixes = append(r.prefixes, prefix)
		r.subs = append(r.subs, sub)
	}
	return r, nil
}

func (r *router) subject(svid uint32) string {
	if s, ok := r.svids.Load(svid); ok {
		return s.(string)
	}
	s := r.n.subj.SVID(svid)
	r.svids.Store(svid, s)
	return s
}

func (r *router) shard(id uint64) *pendingShard { return &r.shards[id%uint64(len(r.shards))] }

// Uplink implements gateway.Dispatcher.
func (r *router) Uplink(req *gateway.Request) {
	r.n.stats.requests.Add(1)
	path, nc := r.n.paths.Active()
	if !nc.IsConnected() {
		r.n.stats.requestErrors.Add(1)
		req.Fail(proto.Errorf(proto.CodeNoHandler, "svid %d: cluster bus unreachable", req.SVID))
		return
	}
	id := r.next.Add(1)
	x := req.Session
	h := nats.Header{}
	h[HeaderUID] = []string{x.UID()}
	h[HeaderDevice] = []string{x.Device()}
	h[HeaderConn] = []string{gateway.FormatConnID(x.ID())}
	h[HeaderNode] = []string{r.n.cfg.NodeID}
	h[HeaderRegion] = []string{r.n.cfg.Region}
	h[HeaderTransport] = []string{x.Transport()}
	h[HeaderSVID] = []string{strconv.FormatUint(uint64(req.SVID), 10)}
	m := &nats.Msg{
		Subject: r.subject(req.SVID),
		Reply:   r.prefixes[path] + "." + strconv.FormatUint(id, 10),
		Header:  h,
		Data:    req.Body,
	}
	p := &pendingRequest{req: req}
	sh := r.shard(id)
	sh.mu.Lock()
	sh.m[id] = p
	p.timer = time.AfterFunc(r.timeout, func() { r.expire(id) })
	sh.mu.Unlock()
	if err := nc.PublishMsg(m); err != nil {
		if r.take(id) != nil {
			r.n.stats.requestErrors.Add(1)
			req.Fail(proto.Errorf(proto.CodeNoHandler, "svid %d: %v", req.SVID, err))
		}
	}
}

// take removes a pending request; nil when it was already answered.
func (r *router) take(id uint64) *pendingRequest {
	sh := r.shard(id)
	sh.mu.Lock()
	p := sh.m[id]
	delete(sh.m, id)
	sh.mu.Unlock()
	if p != nil {
		p.timer.Stop()
	}
	return p
}

func (r *router) expire(id uint64) {
	if p := r.take(id); p != nil {
		r.n.stats.requestTimeouts.Add(1)
		p.req.Fail(proto.Errorf(proto.CodeTimeout, "svid %d: no answer from a backend within %v", p.req.SVID, r.timeout))
	}
}

func (r *router) onReply(m *nats.Msg) {
	idx := strings.LastIndexByte(m.Subject, '.')
	id, err := strconv.ParseUint(m.Subject[idx+1:], 10, 64)
	if err != nil {
		return
	}
	p := r.take(id)
	if p == nil {
		return // answered already, or timed out
	}
	req := p.req
	if m.Header != nil {
		if m.Header.Get("Status") == "503" {
			r.n.stats.requestErrors.Add(1)
			req.Fail(proto.Errorf(proto.CodeNoHandler, "no backend serves svid %d", req.SVID))
			return
		}
		if st := m.Header.Get(HeaderStatus); st != "" {
			r.n.stats.requestErrors.Add(1)
			req.Fail(backendError(req.SVID, st, m.Data))
			return
		}
	}
	req.Reply(m.Data)
}

// backendError maps a reply's Imgate-Status to the ERROR the client gets:
// codes a backend may choose (below 100, not about framing or auth) pass
// through; anything else is BACKEND_ERROR.
func backendError(svid uint32, status string, msg []byte) *proto.Error {
	code := proto.CodeBackendError
	if n, err := strconv.Atoi(status); err == nil {
		switch c := proto.Code(n); c {
		case proto.CodeNoHandler, proto.CodeTimeout, proto.CodeBackendError, proto.CodeBadRequest,
			proto.CodeRateLimited, proto.CodeInternal, proto.CodeUnsupported:
			code = c
		}
	}
	text := string(msg)
	if text == "" {
		text = "backend error"
	}
	return proto.Errorf(code, "svid %d: %s", svid, text)
}

// Ack implements gateway.Dispatcher: there is no message store yet.
func (r *router) Ack(*gateway.Session, proto.Ack) {}

// Sync implements gateway.Dispatcher.
func (r *router) Sync(req *gateway.Request, _ proto.Sync) {
	req.Fail(proto.Errorf(proto.CodeUnsupported, "this cluster has no message store: sync is not served"))
}

// pending counts requests awaiting an answer.
func (r *router) pending() int {
	n := 0
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

func (r *router) close() {
	unsubscribe(r.subs)
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		m := sh.m
		sh.m = make(map[uint64]*pendingRequest)
		sh.mu.Unlock()
		for _, p := range m {
			p.timer.Stop()
			p.req.Fail(proto.Errorf(proto.CodeNoHandler, "svid %d: node shutting down", p.req.SVID))
		}
	}
}
