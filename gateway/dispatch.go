package gateway

import (
	"sync"
	"sync/atomic"

	"imgate/broadcast"
	"imgate/proto"
)

// Dispatcher is the seam between client requests and whatever serves them:
// today handlers registered in-process, later SVID routing over the cluster
// bus and the reliable-delivery store. Methods are called on a connection's
// read path and must not block: slow work goes to another goroutine, and the
// request is answered from there.
type Dispatcher interface {
	// Uplink serves an UPLINK; it must answer r exactly once.
	Uplink(r *Request)
	// Ack records that the client holds every message of a conversation up
	// to a seq.
	Ack(s *Session, a proto.Ack)
	// Sync asks for what follows a seq; it must answer r exactly once.
	Sync(r *Request, q proto.Sync)
}

// Request is one client request awaiting its answer. Body is a copy, valid
// for as long as the request is referenced.
type Request struct {
	Session *Session
	SVID    uint32
	Seq     uint32
	Body    []byte
	done    atomic.Bool
}

// Reply answers with a REPLY frame.
func (r *Request) Reply(body []byte) {
	if r.done.Swap(true) {
		return
	}
	r.Session.send(broadcast.NewFrame(proto.Header{Op: proto.OpReply, SVID: r.SVID, Seq: r.Seq}, body))
}

// Fail answers with an ERROR frame; a non-*proto.Error becomes INTERNAL.
func (r *Request) Fail(err error) {
	if r.done.Swap(true) {
		return
	}
	code, msg := proto.CodeInternal, err.Error()
	if pe, ok := err.(*proto.Error); ok {
		code, msg = pe.Code, pe.Msg
	}
	r.Session.srv.metrics.uplinkErrors.WithLabelValues(code.String()).Inc()
	r.Session.send(broadcast.NewFrame(proto.Header{Op: proto.OpError, SVID: r.SVID, Seq: r.Seq}, proto.AppendError(nil, code, msg)))
}

// HandlerFunc serves one SVID in-process.
type HandlerFunc func(r *Request)

// Mux is the default Dispatcher: a table of in-process SVID handlers, with a
// fallback (the cluster issue plugs the bus in there). Without either, an
// uplink gets NO_HANDLER and a SYNC gets UNSUPPORTED.
type Mux struct {
	mu       sync.RWMutex
	handlers map[uint32]HandlerFunc
	Fallback Dispatcher
}

// NewMux returns an empty Mux.
func NewMux() *Mux { return &Mux{handlers: make(map[uint32]HandlerFunc)} }

// Handle registers fn for svid (nil removes it).
func (m *Mux) Handle(svid uint32, fn HandlerFunc) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if fn == nil {
		delete(m.handlers, svid)
		return
	}
	m.handlers[svid] = fn
}

// Uplink implements Dispatcher.
func (m *Mux) Uplink(r *Request) {
	m.mu.RLock()
	fn := m.handlers[r.SVID]
	m.mu.RUnlock()
	switch {
	case fn != nil:
		fn(r)
	case m.Fallback != nil:
		m.Fallback.Uplink(r)
	default:
		r.Fail(proto.Errorf(proto.CodeNoHandler, "no backend serves svid %d", r.SVID))
	}
}

// Ack implements Dispatcher.
func (m *Mux) Ack(s *Session, a proto.Ack) {
	if m.Fallback != nil {
		m.Fallback.Ack(s, a)
	}
}

// Sync implements Dispatcher.
func (m *Mux) Sync(r *Request, q proto.Sync) {
	if m.Fallback != nil {
		m.Fallback.Sync(r, q)
		return
	}
	r.Fail(proto.Errorf(proto.CodeUnsupported, "this node has no message store: sync is not served"))
}

// Echo is a handler that answers with the request's own body.
func Echo(r *Request) { r.Reply(r.Body) }
