package gateway

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"imgate/broadcast"
	"imgate/proto"
	"imgate/transport"
)

// Server is one gateway node: listeners, sessions, rooms and the operator
// interfaces on top of them.
type Server struct {
	cfg     Config
	log     *slog.Logger
	auth    atomic.Pointer[Authenticator] // swapped by Reload
	engine  *transport.Engine
	hub     *broadcast.Hub
	reg     *Registry
	ids     connIDs
	metrics *metrics
	mux     *Mux // the Dispatcher: in-process SVID handlers, then its Fallback

	// Cluster seams (hooks.go); nil on a single node.
	observer   Observer
	relay      Relay
	extraAdmin map[string]adminCommand
	extraHTTP  []httpRoute

	mu        sync.Mutex
	listeners []transport.Listener
	closers   []func() error
	adminAddr string // bound addresses of the admin port and HTTP API, set by Start
	httpAddr  string
	stop      chan struct{}
	done      chan struct{}

	// Limits Reload may change while connections come and go.
	maxConnsPerUser atomic.Int64
	heartbeat       atomic.Int64 // interval announced in the next AUTH_OK, ns (reloadable)
	maxRoomsPerConn atomic.Int64

	drainOnce sync.Once
	draining  atomic.Bool
	drained   chan struct{} // closed when a drain has finished
}

// New builds a server; Start opens its listeners.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.Default()
	}
	auth, err := NewAuthenticator(cfg.Auth)
	if errors.Is(err, ErrNoKeys) {
		key, kerr := DefaultDevKey(cfg.DataDir)
		if kerr != nil {
			return nil, fmt.Errorf("auth: no keys configured and no dev key: %w", kerr)
		}
		log.Warn("no auth keys configured: using the generated development key; mint tokens with `imgate token`", "key", key.SecretFile)
		cfg.Auth.Keys = []KeyConfig{key}
		auth, err = NewAuthenticator(cfg.Auth)
	}
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	s := &Server{
		cfg:     cfg,
		log:     log.With("node", cfg.NodeID),
		reg:     newRegistry(),
		mux:     NewMux(),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		drained: make(chan struct{}),
	}
	s.auth.Store(auth)
	s.maxConnsPerUser.Store(int64(cfg.MaxConnsPerUser))
	s.heartbeat.Store(int64(cfg.HeartbeatInterval))
	s.maxRoomsPerConn.Store(int64(cfg.MaxRoomsPerConn))
	if cfg.EchoSVID != 0 {
		s.mux.Handle(cfg.EchoSVID, Echo)
	}
	s.hub = broadcast.NewHub(cfg.Broadcast)
	s.metrics = newMetrics(s)
	s.hub.OnFanout = func(d time.Duration, n int) {
		s.metrics.fanoutSeconds.Observe(d.Seconds())
	}
	return s, nil
}

// Start opens the client listeners, the admin port and the HTTP API.
func (s *Server) Start() error {
	engine, err := transport.NewEngine(s.cfg.Transport)
	if err != nil {
		return err
	}
	s.engine = engine
	var tlsCfg *tls.Config
	switch {
	case s.cfg.TLSCert != "":
		cert, err := tls.LoadX509KeyPair(s.cfg.TLSCert, s.cfg.TLSKey)
		if err != nil {
			s.Close()
			return fmt.Errorf("tls certificate: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	case s.needsTLS():
		cert, path, err := devCertificate(s.cfg.DataDir)
		if err != nil {
			s.Close()
			return fmt.Errorf("development certificate: %w", err)
		}
		s.log.Warn("no TLS certificate configured: using a generated self-signed one (set tls_cert/tls_key in production)", "cert", path)
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	for _, u := range s.cfg.Listen {
		l, err := engine.Listen(u, s, tlsCfg)
		if err != nil {
			s.Close()
			return err
		}
		s.mu.Lock()
		s.listeners = append(s.listeners, l)
		s.mu.Unlock()
		s.log.Info("listening", "url", l.URL())
	}
	if s.cfg.AdminAddr != "" {
		closer, addr, err := s.serveAdmin(s.cfg.AdminAddr)
		if err != nil {
			s.Close()
			return fmt.Errorf("admin port: %w", err)
		}
		s.addCloser(closer)
		s.mu.Lock()
		s.adminAddr = addr
		s.mu.Unlock()
		s.log.Info("admin port (redis protocol)", "addr", addr)
	}
	if s.cfg.HTTPAddr != "" {
		closer, addr, err := s.serveHTTP(s.cfg.HTTPAddr)
		if err != nil {
			s.Close()
			return fmt.Errorf("http api: %w", err)
		}
		s.addCloser(closer)
		s.mu.Lock()
		s.httpAddr = addr
		s.mu.Unlock()
		s.log.Info("http api", "addr", addr)
	}
	go s.heartbeats()
	return nil
}

// needsTLS reports a listener that cannot run without a certificate.
func (s *Server) needsTLS() bool {
	for _, u := range s.cfg.Listen {
		for _, scheme := range []string{"tls://", "wss://", "quic://"} {
			if strings.HasPrefix(u, scheme) {
				return true
			}
		}
	}
	return false
}

func (s *Server) addCloser(fn func() error) {
	s.mu.Lock()
	s.closers = append(s.closers, fn)
	s.mu.Unlock()
}

// Close closes every connection (with CLOSE SHUTDOWN where possible) and
// stops everything Start started.
func (s *Server) Close() error {
	select {
	case <-s.stop:
		return nil
	default:
	}
	close(s.stop)
	s.mu.Lock()
	closers := s.closers
	s.closers = nil
	s.mu.Unlock()
	for _, fn := range closers {
		fn()
	}
	var kicked []*Session
	s.reg.Each(func(x *Session) bool { kicked = append(kicked, x); return true })
	for _, x := range kicked {
		x.Kick(proto.CodeShutdown, "node shutting down")
	}
	if s.engine != nil {
		s.engine.Close()
	}
	s.hub.Close()
	return nil
}

// Listeners returns the client listeners.
func (s *Server) Listeners() []transport.Listener {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]transport.Listener(nil), s.listeners...)
}

// Config returns the server's effective configuration.
func (s *Server) Config() Config { return s.cfg }

// Hub exposes the rooms.
func (s *Server) Hub() *broadcast.Hub { return s.hub }

// Registry exposes the session index.
func (s *Server) Registry() *Registry { return s.reg }

// Handle registers an in-process handler for an SVID.
func (s *Server) Handle(svid uint32, fn HandlerFunc) { s.mux.Handle(svid, fn) }

// SetFallback routes SVIDs without an in-process handler (and ACK, SYNC) to d.
func (s *Server) SetFallback(d Dispatcher) { s.mux.Fallback = d }

// OnOpen implements transport.Handler.
func (s *Server) OnOpen(c transport.Conn) {
	now := time.Now()
	x := &Session{srv: s, conn: c, id: s.ids.next(), opened: now}
	x.lastSeen.Store(now.UnixNano())
	c.SetContext(x)
	s.reg.addConn(x)
	s.metrics.connsOpened.WithLabelValues(c.Kind().String()).Inc()
	if s.draining.Load() {
		// Only KCP and QUIC get here: their listeners stay open while the
		// node drains (closing one would drop its live sessions too).
		x.Kick(proto.CodeShutdown, drainReason)
	}
}

// OnClose implements transport.Handler.
func (s *Server) OnClose(c transport.Conn, err error) {
	x, _ := c.Context().(*Session)
	if x == nil {
		return
	}
	x.gone.Store(true)
	s.reg.removeConn(x)
	if x.authed.Load() {
		s.reg.removeUser(x)
		s.hub.RemoveNode(x)
		x.leaveAll()
		if s.observer != nil {
			s.observer.SessionClosed(x)
		}
	}
	reason := "peer"
	switch code := proto.Code(x.closeCode.Load()); {
	case code != 0:
		reason = code.String()
	case err == nil:
		reason = "normal"
	default:
		var pe *proto.Error
		if errors.As(err, &pe) {
			reason = pe.Code.String()
			if transportBadInput(pe.Code) {
				s.metrics.badFrames.WithLabelValues(reason).Inc()
			}
		}
	}
	s.metrics.connsClosed.WithLabelValues(reason).Inc()
}

// OnFrame implements transport.Handler. It runs on the connection's read
// path, so everything here is quick; uplinks leave through the dispatcher.
func (s *Server) OnFrame(c transport.Conn, f proto.Frame) error {
	x, _ := c.Context().(*Session)
	if x == nil {
		return proto.Errorf(proto.CodeInternal, "no session")
	}
	x.lastSeen.Store(time.Now().UnixNano())
	s.metrics.framesInByOp[f.Op].Inc() // the transport only delivers known ops
	s.metrics.bytesIn.Add(float64(proto.HeaderSize + len(f.Body)))
	switch f.Op {
	case proto.OpAuthOK, proto.OpPong, proto.OpReply, proto.OpError, proto.OpPush:
		return s.badInput(proto.Errorf(proto.CodeClientDirection, "%v is a server-to-client op", f.Op))
	case proto.OpClose:
		x.closeCode.CompareAndSwap(0, uint32(proto.CodeNormal))
		c.Close(nil)
		return nil
	case proto.OpAuth:
		return s.authenticate(x, f)
	}
	if !x.authed.Load() {
		return s.badInput(proto.Errorf(proto.CodeNotAuthed, "%v before AUTH", f.Op))
	}
	switch f.Op {
	case proto.OpHeartbeat:
		x.send(broadcast.NewFrame(proto.Header{Op: proto.OpPong, Seq: f.Seq}, binary.BigEndian.AppendUint64(nil, uint64(time.Now().UnixMilli()))))
	case proto.OpJoin:
		h := f.Header
		x.joinAnswered(string(f.Body), func(err error) { s.answer(x, h, err) })
	case proto.OpLeave:
		s.answer(x, f.Header, x.leave(string(f.Body)))
	case proto.OpUplink:
		s.metrics.uplinks.Inc()
		// The one op whose effect must not happen twice: a backend acts on
		// it. Everything else a client may send is harmless when replayed,
		// because it only touches the (replayed, doomed) connection itself.
		if early(c) {
			s.answer(x, f.Header, proto.Errorf(proto.CodeTooEarly, "sent in 0-RTT data, which may be replayed: send it again after the handshake"))
			return nil
		}
		s.mux.Uplink(&Request{Session: x, SVID: f.SVID, Seq: f.Seq, Body: append([]byte(nil), f.Body...)})
	case proto.OpAck:
		a, err := proto.ParseAck(f.Body)
		if err != nil {
			s.answer(x, f.Header, proto.Errorf(proto.CodeBadRequest, "%v", err))
			return nil
		}
		s.mux.Ack(x, a)
	case proto.OpSync:
		q, err := proto.ParseSync(f.Body)
		if err != nil {
			s.answer(x, f.Header, proto.Errorf(proto.CodeBadRequest, "%v", err))
			return nil
		}
		s.mux.Sync(&Request{Session: x, SVID: f.SVID, Seq: f.Seq}, q)
	}
	return nil
}

// early reports a frame read before the client's handshake completed (QUIC
// 0-RTT): it may be a replay of another connection's first flight
// (PROTOCOL.md §11.3). Transports without early data do not implement
// EarlyConn.
func early(c transport.Conn) bool {
	ec, ok := c.(transport.EarlyConn)
	return ok && ec.Early()
}

// answer replies to a request-shaped frame with REPLY (err == nil) or ERROR.
func (s *Server) answer(x *Session, h proto.Header, err error) {
	r := &Request{Session: x, SVID: h.SVID, Seq: h.Seq}
	if err != nil {
		r.Fail(err)
		return
	}
	r.Reply(nil)
}

// transportBadInput reports the codes of bad input the transport catches by
// itself (framing, version, op, WebSocket rules): it closes the connection
// with CLOSE and reports the code to OnClose, which counts it. Bad input the
// gateway finds is counted by badInput.
func transportBadInput(code proto.Code) bool {
	switch code {
	case proto.CodeBadFrame, proto.CodeFrameTooLarge, proto.CodeBadVersion, proto.CodeUnknownOp, proto.CodeProtocolError:
		return true
	}
	return false
}

// badInput counts a fatal protocol error; the transport answers it with
// CLOSE and closes only this connection.
func (s *Server) badInput(err *proto.Error) error {
	s.metrics.badFrames.WithLabelValues(err.Code.String()).Inc()
	return err
}

func (s *Server) authenticate(x *Session, f proto.Frame) error {
	if x.authed.Load() {
		s.answer(x, f.Header, proto.Errorf(proto.CodeAlreadyAuthed, "connection is already authenticated"))
		return nil
	}
	claims, err := s.auth.Load().Verify(f.Body)
	if err != nil {
		var pe *proto.Error
		if !errors.As(err, &pe) {
			pe = proto.Errorf(proto.CodeAuthFailed, "%v", err)
		}
		s.metrics.authFailures.WithLabelValues(pe.Code.String()).Inc()
		return pe
	}
	x.uid, x.device, x.allowed, x.since = claims.UID, claims.Device, claims.Rooms, time.Now()
	x.moved = f.Flags&proto.FlagMoved != 0
	// An AUTH in 0-RTT data may be a replay: it is answered at once (that is
	// the point of 0-RTT), but it must not close the device's other session
	// unless the handshake completes, which a replay never does.
	ec, _ := x.conn.(transport.EarlyConn)
	deferReplace := ec != nil && ec.Early()
	// From addUser until AUTH_OK is queued, a user push that finds the
	// session waits on greetMu (pushes.go), so nothing overtakes AUTH_OK;
	// the observer (which may deliver held pushes at once) hears of the
	// session after.
	x.greetMu.Lock()
	replaced, err := s.reg.addUser(x, int(s.maxConnsPerUser.Load()), deferReplace)
	if err != nil {
		x.greetMu.Unlock()
		x.closeCode.Store(uint32(proto.CodeTooManyConns))
		s.metrics.authFailures.WithLabelValues(proto.CodeTooManyConns.String()).Inc()
		return err
	}
	x.beat = time.Duration(s.heartbeat.Load())
	x.authed.Store(true)
	body := proto.AppendAuthOK(nil, proto.AuthOK{
		ConnID:      x.id,
		HeartbeatMS: uint32(x.beat / time.Millisecond),
		MaxFrame:    uint32(s.engine.Config().MaxFrame),
		NodeID:      []byte(s.cfg.NodeID),
	})
	x.send(broadcast.NewFrame(proto.Header{Op: proto.OpAuthOK, Seq: f.Seq}, body))
	x.greeted.Store(true)
	x.greetMu.Unlock()
	switch {
	case replaced != nil && deferReplace:
		go s.replaceAfterHandshake(ec, x, replaced)
	case replaced != nil:
		s.metrics.replaced.Inc()
		replaced.Kick(proto.CodeReplaced, "the same device logged in again")
	}
	s.hub.AddNode(x)
	if s.observer != nil {
		s.observer.SessionAuthed(x)
	}
	return nil
}

// replaceAfterHandshake closes old, the session x replaces, once x's
// handshake completes. Until then both are listed for the user; if x never
// completes (a replayed 0-RTT flight), old stays as it was.
func (s *Server) replaceAfterHandshake(ec transport.EarlyConn, x, old *Session) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*s.engine.Config().HandshakeTimeout)
	defer cancel()
	if ec.AwaitHandshake(ctx) != nil || x.gone.Load() {
		return
	}
	s.reg.removeUser(old)
	s.metrics.replaced.Inc()
	old.Kick(proto.CodeReplaced, "the same device logged in again")
}

// heartbeats closes connections that stayed silent for two intervals and
// connections that did not authenticate in time. It is a bucketed scan, not
// a timer per connection: every quarter interval it walks the registry one
// shard at a time, reading one atomic per connection. Each connection is
// held to the interval its AUTH_OK announced, so a reload that shortens it
// does not close clients that still beat at the old pace.
func (s *Server) heartbeats() {
	defer close(s.done)
	period := func() time.Duration {
		return max(min(time.Duration(s.heartbeat.Load())/4, s.cfg.AuthTimeout/4), 50*time.Millisecond)
	}
	tick := period()
	t := time.NewTicker(tick)
	defer t.Stop()
	var expired []*Session
	var codes []proto.Code
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			if p := period(); p != tick {
				tick = p
				t.Reset(tick)
			}
			nowNs := now.UnixNano()
			late := now.Add(-s.cfg.AuthTimeout)
			expired, codes = expired[:0], codes[:0]
			s.reg.Each(func(x *Session) bool {
				switch {
				case !x.authed.Load() && x.opened.Before(late):
					expired, codes = append(expired, x), append(codes, proto.CodeAuthTimeout)
				case x.authed.Load() && x.lastSeen.Load() < nowNs-2*int64(x.beat):
					expired, codes = append(expired, x), append(codes, proto.CodeHeartbeatTimeout)
				}
				return true
			})
			// A kicked session stays in the registry until its peer goes
			// (up to the transport's linger), so later scans find it again:
			// only the close a Kick starts is counted.
			for i, x := range expired {
				if codes[i] == proto.CodeAuthTimeout {
					if x.Kick(codes[i], fmt.Sprintf("no AUTH within %v", s.cfg.AuthTimeout)) {
						s.metrics.authTimeouts.Inc()
					}
				} else if x.Kick(codes[i], fmt.Sprintf("silent for two heartbeat intervals (%v)", 2*x.beat)) {
					s.metrics.heartbeatTimeouts.Inc()
				}
				expired[i] = nil
			}
		}
	}
}
