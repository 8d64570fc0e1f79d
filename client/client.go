package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"imgate/proto"
)

// Sentinel errors callers can branch on with errors.Is. Errors the server
// sent (ERROR or CLOSE frames) are *proto.Error values, found with errors.As.
var (
	// ErrClosed: the client was closed, by Close or by a final server CLOSE.
	ErrClosed = errors.New("client: closed")
	// ErrConnectionLost: the connection a request was sent on ended before
	// its answer came; the request may or may not have been served.
	ErrConnectionLost = errors.New("client: connection lost")
	// ErrNotConnected: a fire-and-forget frame (Ack) was sent while the
	// client was reconnecting.
	ErrNotConnected = errors.New("client: not connected")
	// ErrHeartbeatTimeout: nothing came from the server for two heartbeat
	// intervals, so the connection was declared dead.
	ErrHeartbeatTimeout = errors.New("client: no frame from server in two heartbeat intervals")
	// ErrUnsupportedScheme: an endpoint URL names a transport this client
	// cannot dial.
	ErrUnsupportedScheme = errors.New("client: unsupported endpoint scheme")
	// ErrProtocol: the server sent a frame this client must not accept (a
	// client-to-server op, a malformed body); the connection is dropped and,
	// with Reconnect, made again.
	ErrProtocol = errors.New("client: protocol violation by server")
)

// State is the connection state reported to Config.OnState.
type State int

// States, in the order a client usually goes through them.
const (
	StateConnecting   State = iota // dialing and authenticating
	StateConnected                 // authenticated and rooms re-joined
	StateDisconnected              // the connection ended; a reconnect follows
	StateClosed                    // the client stopped for good; Err says why
)

func (s State) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateDisconnected:
		return "disconnected"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Config configures a Client. Zero durations and sizes take the defaults
// below; Reconnect's zero value is false, so start from DefaultConfig.
type Config struct {
	// Endpoints are gateway URLs (tcp://host:port, tls://host:port,
	// ws://host:port/path, wss://..., quic://host:port; the WebSocket path
	// defaults to /ws), tried in order; after a failure the next one is
	// tried first.
	Endpoints []string
	// EndpointsFunc, when set, is called at the start of every connect
	// pass for a fresh list, best first (HTTPDNS in locate.go asks the
	// cluster for the nearest healthy gateways); on error the current list
	// is kept. Endpoints may then be empty: the first pass fetches it.
	EndpointsFunc func(ctx context.Context) ([]string, error)
	// Token is sent in AUTH when TokenFunc is nil.
	Token string
	// TokenFunc, when set, is called for a fresh token on every connect and
	// reconnect, once a transport is up. A token the server refused is never
	// sent again. After AUTH_FAILED it is asked once more and a different
	// token is tried at once; if that fails too, the client stops. After
	// TOKEN_EXPIRED the client keeps reconnecting with backoff.
	TokenFunc func(ctx context.Context) (string, error)
	// TLSConfig is used by tls://, wss:// and quic:// endpoints (nil:
	// system roots, server name from the URL). Its ClientSessionCache, when
	// set, replaces the one each quic:// endpoint keeps for 0-RTT.
	TLSConfig *tls.Config
	// DialTimeout bounds one connect: dial, transport handshake, token and
	// AUTH exchange. Default 5s.
	DialTimeout time.Duration
	// RequestTimeout bounds a request whose ctx has no deadline, and every
	// write. Default 10s.
	RequestTimeout time.Duration
	// Reconnect makes the client reconnect after a lost connection.
	// DefaultConfig sets it.
	Reconnect bool
	// BackoffMin and BackoffMax bound the jittered exponential wait between
	// reconnect passes. Defaults 200ms and 30s.
	BackoffMin, BackoffMax time.Duration
	// MaxFrame is the largest frame, header included, until AUTH_OK gives
	// the server's value. Default proto.DefaultMaxFrame.
	MaxFrame int
	// OnPush receives every push in arrival order, from one goroutine. It
	// must not block long: while it runs, further pushes queue and then the
	// connection's reader waits. Calling Ack from it is fine; start a
	// goroutine for calls that wait on the server (Request, Sync, Join).
	OnPush func(Push)
	// OnState reports state changes in order, from one goroutine at a time.
	// It must not block long; it may call Close.
	OnState func(State, error)
	// Logger receives connection-level events (never one per message).
	// Default: discard.
	Logger *slog.Logger
}

// Defaults applied by DefaultConfig and by Dial to zero fields.
const (
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 10 * time.Second
	DefaultBackoffMin     = 200 * time.Millisecond
	DefaultBackoffMax     = 30 * time.Second
)

// DefaultConfig returns a Config with every default set and Reconnect on.
func DefaultConfig() Config {
	return Config{
		DialTimeout:    DefaultDialTimeout,
		RequestTimeout: DefaultRequestTimeout,
		Reconnect:      true,
		BackoffMin:     DefaultBackoffMin,
		BackoffMax:     DefaultBackoffMax,
		MaxFrame:       proto.DefaultMaxFrame,
	}
}

func (cfg Config) withDefaults() Config {
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = DefaultBackoffMin
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = DefaultBackoffMax
	}
	if cfg.MaxFrame <= 0 || cfg.MaxFrame > proto.MaxFrameLimit {
		cfg.MaxFrame = proto.DefaultMaxFrame
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}

// Push is a message the server pushed. It owns its bytes.
type Push struct {
	ConvID, Seq uint64 // 0, 0 outside any conversation
	Topic       string // the room, for room pushes
	Payload     []byte
	Flags       uint16 // proto.FlagRoom, FlagBroadcast, FlagResend
}

// pushQueue is how many pushes may wait for OnPush before the reader waits.
const pushQueue = 1024

// Client is a connection to an imgate gateway that survives reconnects. Its
// methods are safe for concurrent use.
type Client struct {
	cfg       Config
	log       *slog.Logger
	endpoints []endpoint
	ctx       context.Context // ends at Close or final stop; bounds reconnects
	cancel    context.CancelFunc
	seq       atomic.Uint32
	pushes    chan Push     // nil when OnPush is nil
	closed    chan struct{} // closed once the client has stopped for good

	mu      sync.Mutex
	sess    *session      // the live session; nil while (re)connecting
	early   *session      // while reconnecting with 0-RTT: the session authenticating, which takes requests pipelined behind AUTH
	ready   chan struct{} // closed when a session next becomes live (or early)
	rooms   map[string]struct{}
	closing bool
	err     error // why the client stopped; set before closed is closed
	connID  uint64
	nodeID  string
	beat    time.Duration

	// Owned by Dial, then by the supervisor goroutine.
	nextEndpoint int
	backoff      backoff
	refusedToken string // last token the server refused; not sent again
	moved        bool   // the last session ended with SHUTDOWN: AUTH carries FlagMoved until one succeeds
}

// Dial connects and authenticates, trying each endpoint once in order, and
// returns once the first connection is up. ctx bounds only this first
// connect; the client lives until Close or a final server CLOSE. An
// authentication refusal comes back as a *proto.Error.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	if len(cfg.Endpoints) == 0 && cfg.EndpointsFunc == nil {
		return nil, errors.New("client: no endpoints")
	}
	c := &Client{
		cfg:     cfg,
		log:     cfg.Logger,
		closed:  make(chan struct{}),
		ready:   make(chan struct{}),
		rooms:   make(map[string]struct{}),
		backoff: backoff{min: cfg.BackoffMin, max: cfg.BackoffMax},
	}
	for _, raw := range cfg.Endpoints {
		ep, err := parseEndpoint(raw)
		if err != nil {
			return nil, err
		}
		c.endpoints = append(c.endpoints, ep)
	}
	if cfg.OnPush != nil {
		c.pushes = make(chan Push, pushQueue)
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())

	c.state(StateConnecting, nil)
	s, err := c.connectPass(ctx)
	if err != nil {
		c.cancel()
		return nil, err
	}
	if c.pushes != nil {
		go c.deliver()
	}
	if err := c.install(s); err != nil {
		// Unreachable: nobody can Close a client Dial has not returned.
		c.cancel()
		return nil, err
	}
	go c.supervise(s)
	return c, nil
}

// Join joins room; after a reconnect the client joins it again by itself.
func (c *Client) Join(ctx context.Context, room string) error {
	if err := proto.CheckName([]byte(room)); err != nil {
		return fmt.Errorf("join %q: %w", room, err)
	}
	if _, err := c.roundTrip(ctx, proto.Header{Op: proto.OpJoin}, []byte(room), room); err != nil {
		return fmt.Errorf("join %s: %w", room, err)
	}
	return nil
}

// Leave leaves room. The room is forgotten for reconnects even if the
// server's answer is lost.
func (c *Client) Leave(ctx context.Context, room string) error {
	if err := proto.CheckName([]byte(room)); err != nil {
		return fmt.Errorf("leave %q: %w", room, err)
	}
	c.mu.Lock()
	delete(c.rooms, room)
	c.mu.Unlock()
	if _, err := c.roundTrip(ctx, proto.Header{Op: proto.OpLeave}, []byte(room), ""); err != nil {
		return fmt.Errorf("leave %s: %w", room, err)
	}
	return nil
}

// Request sends payload to the backend service svid and returns its reply.
func (c *Client) Request(ctx context.Context, svid uint32, payload []byte) ([]byte, error) {
	reply, err := c.roundTrip(ctx, proto.Header{Op: proto.OpUplink, SVID: svid}, payload, "")
	if err != nil {
		return nil, fmt.Errorf("request svid %d: %w", svid, err)
	}
	return reply, nil
}

// Ack tells the server the client holds every message of convID up to seq.
// The server does not answer; while reconnecting it fails with
// ErrNotConnected (a later Ack covers this one).
func (c *Client) Ack(convID, seq uint64) error {
	s := c.current()
	if s == nil {
		return c.unavailable(ErrNotConnected)
	}
	var body [16]byte
	return s.write(proto.Header{Op: proto.OpAck}, proto.AppendAck(body[:0], proto.Ack{ConvID: convID, Seq: seq}))
}

// Sync asks for the messages of convID after afterSeq (at most limit, 0:
// server default). They arrive through OnPush flagged proto.FlagResend,
// before Sync returns what the server reported about the batch. A server
// without storage answers with a *proto.Error of code CodeUnsupported.
func (c *Client) Sync(ctx context.Context, convID, afterSeq uint64, limit uint32) (proto.SyncDone, error) {
	var body [20]byte
	req := proto.AppendSync(body[:0], proto.Sync{ConvID: convID, AfterSeq: afterSeq, Limit: limit})
	reply, err := c.roundTrip(ctx, proto.Header{Op: proto.OpSync}, req, "")
	if err != nil {
		return proto.SyncDone{}, fmt.Errorf("sync conv %d: %w", convID, err)
	}
	done, err := proto.ParseSyncDone(reply)
	if err != nil {
		return proto.SyncDone{}, fmt.Errorf("sync conv %d: %w", convID, err)
	}
	return done, nil
}

// ConnID is the server's id for the current (or last) connection.
func (c *Client) ConnID() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connID
}

// NodeID names the gateway node of the current (or last) connection.
func (c *Client) NodeID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodeID
}

// HeartbeatInterval is the interval the server asked for in AUTH_OK
// (0: the server wants no heartbeats).
func (c *Client) HeartbeatInterval() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.beat
}

// Closed is closed once the client has stopped for good.
func (c *Client) Closed() <-chan struct{} { return c.closed }

// Err says why the client stopped: ErrClosed after Close, the server's
// *proto.Error after a final CLOSE (REPLACED, KICKED, ...), or the last
// connection error when reconnecting is off. It is nil while running.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// closeGrace bounds how long Close waits to say goodbye on a stuck network.
const closeGrace = 250 * time.Millisecond

// Close sends CLOSE NORMAL on the live connection, closes it and stops
// reconnecting. It does not wait for callbacks in progress; Closed fires when
// the client has stopped.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return nil
	}
	c.closing = true
	s := c.sess
	c.mu.Unlock()
	c.cancel()
	if s != nil {
		s.goodbye()
	}
	return nil
}

// roundTrip sends one request frame and waits for its REPLY or ERROR.
// joinRoom, when set, is recorded as joined as soon as the REPLY is read.
//
// Two answers make it send the request again, because the server did not
// act on it: TOO_EARLY (it went out in 0-RTT data; sent again, once, after
// the handshake), and the loss of a session that never authenticated (the
// request was pipelined behind an AUTH the server refused, and the server
// serves nothing after that; sent again on the next session).
func (c *Client) roundTrip(ctx context.Context, h proto.Header, body []byte, joinRoom string) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.RequestTimeout)
		defer cancel()
	}
	tooEarly := false
	for {
		s, err := c.live(ctx)
		if err != nil {
			return nil, err
		}
		h.Seq = c.nextSeq()
		wait, err := s.register(h.Seq, joinRoom)
		if err == nil {
			if err = s.write(h, body); err != nil {
				s.forget(h.Seq)
			}
		}
		var r result
		if err == nil {
			select {
			case r = <-wait:
			case <-ctx.Done():
				s.forget(h.Seq)
				return nil, ctx.Err()
			}
		} else {
			r.err = err
		}
		var pe *proto.Error
		switch {
		case errors.Is(r.err, ErrConnectionLost) && !s.authed.Load() && ctx.Err() == nil:
			continue
		case errors.As(r.err, &pe) && pe.Code == proto.CodeTooEarly && !tooEarly:
			tooEarly = true
			if err := s.awaitHandshake(ctx); err != nil {
				return nil, fmt.Errorf("%w: %w", r.err, err)
			}
			continue
		}
		return r.body, r.err
	}
}

// offerEarly lets requests waiting for a connection go out on s, which is
// still authenticating: pipelined behind AUTH in 0-RTT data.
func (c *Client) offerEarly(s *session) {
	c.mu.Lock()
	c.early = s
	close(c.ready)
	c.ready = make(chan struct{})
	c.mu.Unlock()
}

// withdrawEarly ends offerEarly, once s is live or has failed.
func (c *Client) withdrawEarly(s *session) {
	c.mu.Lock()
	if c.early == s {
		c.early = nil
	}
	c.mu.Unlock()
}

// nextSeq returns a request seq; 0 is skipped because ERROR uses it for
// "no request".
func (c *Client) nextSeq() uint32 {
	for {
		if seq := c.seq.Add(1); seq != 0 {
			return seq
		}
	}
}

// current returns the live session or nil.
func (c *Client) current() *session {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess
}

// live returns the live session, waiting for a reconnect if need be.
func (c *Client) live(ctx context.Context) (*session, error) {
	for {
		c.mu.Lock()
		s, ready, closing := c.sess, c.ready, c.closing
		if s == nil && !closing && c.early != nil && !c.early.ended() {
			s = c.early
		}
		c.mu.Unlock()
		if s != nil {
			return s, nil
		}
		if closing {
			return nil, c.unavailable(ErrClosed)
		}
		select {
		case <-ready:
		case <-c.closed:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for connection: %w", ctx.Err())
		}
	}
}

// unavailable is the error for a call made while no session is live.
func (c *Client) unavailable(err error) error {
	c.mu.Lock()
	final, closing := c.err, c.closing
	c.mu.Unlock()
	switch {
	case final != nil && !errors.Is(final, ErrClosed):
		return fmt.Errorf("%w: %w", ErrClosed, final)
	case closing:
		return ErrClosed
	}
	return err
}

// install makes s the live session.
func (c *Client) install(s *session) error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		s.goodbye()
		return ErrClosed
	}
	c.sess = s
	c.connID, c.nodeID, c.beat = s.connID, s.nodeID, s.heartbeat
	close(c.ready)
	c.mu.Unlock()
	c.log.Info("imgate connected", "endpoint", s.endpoint, "conn", s.connID, "node", s.nodeID)
	c.state(StateConnected, nil)
	return nil
}

// supervise waits for each session to end and reconnects until told to stop.
func (c *Client) supervise(s *session) {
	for {
		<-s.done
		cause := s.cause()
		c.mu.Lock()
		if c.sess == s {
			c.sess = nil
			c.ready = make(chan struct{})
		}
		closing := c.closing
		c.mu.Unlock()
		switch {
		case closing:
			c.finish(ErrClosed)
			return
		case c.final(cause, false) || !c.cfg.Reconnect:
			c.finish(cause)
			return
		}
		c.log.Warn("imgate connection lost", "endpoint", s.endpoint, "conn", s.connID, "err", cause)
		c.state(StateDisconnected, cause)
		// The endpoint that just failed goes to the back of the line.
		c.nextEndpoint = (c.nextEndpoint + 1) % len(c.endpoints)
		c.moved = draining(cause)
		next, err := c.reconnect(c.moved)
		if err != nil {
			c.finish(err)
			return
		}
		s = next
	}
}

// draining reports a close with SHUTDOWN: the node is draining or going
// away and has spread its closes over time itself, so the client goes to
// the next endpoint at once (after a jitter of up to maxMoveJitter, or a
// quarter of BackoffMin if less) instead of waiting out a backoff, and says in its AUTH that
// it moved, so that its new node claims the pushes the old one held.
// maxMoveJitter bounds the wait before reconnecting after SHUTDOWN.
const maxMoveJitter = 100 * time.Millisecond

func draining(cause error) bool {
	var pe *proto.Error
	return errors.As(cause, &pe) && pe.Code == proto.CodeShutdown
}

// reconnect runs connect passes separated by backoff until one succeeds, the
// client is closed, or the server refuses for good. With now, the first
// pass starts without waiting.
func (c *Client) reconnect(now bool) (*session, error) {
	var last error
	for {
		wait := c.backoff.next()
		if now {
			wait, now = rand.N(min(c.cfg.BackoffMin/4, maxMoveJitter)+1), false
		}
		t := time.NewTimer(wait)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return nil, ErrClosed
		case <-t.C:
		}
		c.state(StateConnecting, last)
		s, err := c.connectPass(c.ctx)
		if err == nil {
			if err := c.install(s); err != nil {
				return nil, err
			}
			c.backoff.reset()
			c.moved = false
			return s, nil
		}
		if c.ctx.Err() != nil {
			return nil, ErrClosed
		}
		if c.final(err, true) {
			return nil, err
		}
		c.log.Warn("imgate reconnect failed", "err", err)
		last = err
	}
}

// connectPass tries every endpoint once, starting with nextEndpoint, after
// refreshing the list when an EndpointsFunc is set.
func (c *Client) connectPass(ctx context.Context) (*session, error) {
	var errs []error
	if err := c.refreshEndpoints(ctx); err != nil && len(c.endpoints) == 0 {
		return nil, err
	}
	for i := range c.endpoints {
		idx := (c.nextEndpoint + i) % len(c.endpoints)
		s, err := c.connectEndpoint(ctx, c.endpoints[idx])
		if err == nil {
			c.nextEndpoint = idx
			return s, nil
		}
		if ctx.Err() != nil || c.final(err, true) {
			return nil, err
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("client: no endpoint reachable: %w", errors.Join(errs...))
}

// final reports whether err forbids reconnecting. connecting says whether it
// came from a connect attempt, where AUTH_FAILED is final even with a
// TokenFunc (connectEndpoint has already retried with a fresh token).
func (c *Client) final(err error, connecting bool) bool {
	var pe *proto.Error
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.Code {
	case proto.CodeReplaced, proto.CodeKicked:
		return true
	case proto.CodeAuthFailed:
		return connecting || c.cfg.TokenFunc == nil
	case proto.CodeTokenExpired:
		return c.cfg.TokenFunc == nil
	}
	return false
}

// finish stops the client for good.
func (c *Client) finish(err error) {
	c.mu.Lock()
	c.err = err
	c.closing = true
	c.sess = nil
	c.mu.Unlock()
	c.cancel()
	if errors.Is(err, ErrClosed) {
		c.log.Info("imgate client closed")
	} else {
		c.log.Warn("imgate client stopped", "err", err)
	}
	c.state(StateClosed, err)
	close(c.closed)
}

func (c *Client) state(st State, err error) {
	if c.cfg.OnState != nil {
		c.cfg.OnState(st, err)
	}
}

// deliver runs OnPush for every queued push, in order, until the client has
// stopped and the queue is empty.
func (c *Client) deliver() {
	for {
		select {
		case p := <-c.pushes:
			c.cfg.OnPush(p)
		case <-c.closed:
			for {
				select {
				case p := <-c.pushes:
					c.cfg.OnPush(p)
				default:
					return
				}
			}
		}
	}
}

func (c *Client) addRoom(room string) {
	c.mu.Lock()
	c.rooms[room] = struct{}{}
	c.mu.Unlock()
}

func (c *Client) joinedRooms() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	rooms := make([]string, 0, len(c.rooms))
	for r := range c.rooms {
		rooms = append(rooms, r)
	}
	slices.Sort(rooms)
	return rooms
}
