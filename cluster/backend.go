package cluster

import (
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"imgate/proto"
)

// Request is an uplink as a backend sees it.
type Request struct {
	SVID      uint32
	UID       string
	Device    string
	Conn      string // 16 hex digits
	Node      string
	Region    string
	Transport string
	Payload   []byte
}

// RequestOf reads the headers of an uplink message.
func RequestOf(m *nats.Msg) Request {
	r := Request{Payload: m.Data}
	if m.Header != nil {
		svid, _ := strconv.ParseUint(m.Header.Get(HeaderSVID), 10, 32)
		r.SVID = uint32(svid)
		r.UID = m.Header.Get(HeaderUID)
		r.Device = m.Header.Get(HeaderDevice)
		r.Conn = m.Header.Get(HeaderConn)
		r.Node = m.Header.Get(HeaderNode)
		r.Region = m.Header.Get(HeaderRegion)
		r.Transport = m.Header.Get(HeaderTransport)
	}
	return r
}

// Handler serves one uplink: the reply payload, or an error (a
// *proto.Error picks the client's error code; anything else is
// BACKEND_ERROR).
type Handler func(Request) ([]byte, error)

// Respond answers an uplink message with a reply or an error.
func Respond(m *nats.Msg, reply []byte, err error) error {
	if err == nil {
		return m.Respond(reply)
	}
	code := proto.CodeBackendError
	text := err.Error()
	var pe *proto.Error
	if errors.As(err, &pe) {
		code, text = pe.Code, pe.Msg
	}
	out := &nats.Msg{Subject: m.Reply, Header: nats.Header{}, Data: []byte(text)}
	out.Header.Set(HeaderStatus, strconv.Itoa(int(code)))
	return m.RespondMsg(out)
}

// QueueGroup is the queue group backends of an SVID join by default.
const QueueGroup = "imgate"

// Announcement is what a backend publishes on <p>.backends every few
// seconds, so that operators (and the route daemon's /svids) see which
// SVIDs have live backends.
type Announcement struct {
	SVID     uint32 `json:"svid"`
	Instance string `json:"instance"`
	Kind     string `json:"kind"` // "nats" or "http"
	Healthy  bool   `json:"healthy"`
	Interval int64  `json:"interval_ms"`
}

// AnnounceInterval is how often backends announce themselves.
const AnnounceInterval = 2 * time.Second

// Backend serves one SVID over the bus.
type Backend struct {
	nc       *nats.Conn
	sub      *nats.Subscription
	subj     Subjects
	announce Announcement
	health   func() bool
	stop     chan struct{}
	done     sync.WaitGroup
}

// ServeSVID subscribes fn to svid in the queue group QueueGroup: requests
// are balanced over every backend of the SVID and move to the others when
// one goes. Each request runs in its own goroutine. instance names this
// backend in announcements.
func ServeSVID(nc *nats.Conn, prefix string, svid uint32, instance string, fn Handler) (*Backend, error) {
	return serve(nc, prefix, svid, instance, "nats", func(m *nats.Msg) {
		go func() {
			reply, err := fn(RequestOf(m))
			_ = Respond(m, reply, err)
		}()
	}, nil)
}

// ServeSVIDMsg is ServeSVID for handlers that manage their own concurrency:
// fn runs on the subscription's goroutine and must answer with Respond.
// health, when set, is reported in announcements.
func ServeSVIDMsg(nc *nats.Conn, prefix string, svid uint32, instance, kind string, fn nats.MsgHandler, health func() bool) (*Backend, error) {
	return serve(nc, prefix, svid, instance, kind, fn, health)
}

func serve(nc *nats.Conn, prefix string, svid uint32, instance, kind string, fn nats.MsgHandler, health func() bool) (*Backend, error) {
	subj := NewSubjects(prefix)
	sub, err := nc.QueueSubscribe(subj.SVID(svid), QueueGroup, fn)
	if err != nil {
		return nil, err
	}
	_ = sub.SetPendingLimits(-1, -1)
	b := &Backend{
		nc: nc, sub: sub, subj: subj, health: health, stop: make(chan struct{}),
		announce: Announcement{SVID: svid, Instance: instance, Kind: kind, Healthy: true, Interval: AnnounceInterval.Milliseconds()},
	}
	b.done.Add(1)
	go b.announceLoop()
	return b, nil
}

func (b *Backend) announceLoop() {
	defer b.done.Done()
	t := time.NewTicker(AnnounceInterval)
	defer t.Stop()
	for {
		a := b.announce
		if b.health != nil {
			a.Healthy = b.health()
		}
		if data, err := json.Marshal(a); err == nil {
			_ = b.nc.Publish(b.subj.Backends(), data)
		}
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
	}
}

// Close stops serving; requests in flight still get their answers.
func (b *Backend) Close() error {
	close(b.stop)
	b.done.Wait()
	return b.sub.Drain()
}
