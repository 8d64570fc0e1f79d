package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"imgate/proto"
)

// connectEndpoint connects to ep. A token the server refused is never sent
// again (PROTOCOL.md §6: get a new token, do not retry the same one); after
// AUTH_FAILED with a TokenFunc it tries once more at once, if the TokenFunc
// gives a new token.
func (c *Client) connectEndpoint(ctx context.Context, ep endpoint) (*session, error) {
	s, token, err := c.connect(ctx, ep, c.refusedToken)
	c.noteRefusal(token, err)
	var pe *proto.Error
	if err != nil && c.cfg.TokenFunc != nil && errors.As(err, &pe) && pe.Code == proto.CodeAuthFailed {
		c.log.Warn("imgate auth failed, retrying with a fresh token", "endpoint", ep.raw)
		s, token, err2 := c.connect(ctx, ep, c.refusedToken)
		if errors.Is(err2, errSameToken) {
			return nil, err
		}
		c.noteRefusal(token, err2)
		return s, err2
	}
	return s, err
}

// noteRefusal remembers a token the server refused, and forgets it once a
// connect succeeds.
func (c *Client) noteRefusal(token string, err error) {
	var pe *proto.Error
	switch {
	case err == nil:
		c.refusedToken = ""
	case errors.As(err, &pe) && (pe.Code == proto.CodeAuthFailed || pe.Code == proto.CodeTokenExpired):
		c.refusedToken = token
	}
}

// errSameToken: the TokenFunc returned the token the server just refused.
var errSameToken = errors.New("client: token func returned the refused token again")

// connect dials ep, authenticates, starts the session's goroutines and
// re-joins the rooms. It returns the token it sent.
//
// On a connection resuming with 0-RTT the session does not wait for AUTH_OK:
// the rooms' JOINs and any requests waiting for a connection go out right
// behind AUTH, in the first flight (the server handles a connection's frames
// in order, and serves none of them if AUTH fails). Otherwise (a first
// connection, other transports) it sends AUTH and waits for AUTH_OK first.
func (c *Client) connect(ctx context.Context, ep endpoint, refused string) (*session, string, error) {
	dctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	conn, err := ep.dial(dctx, ep.url, &c.cfg)
	if err != nil {
		return nil, "", fmt.Errorf("dial %s: %w", ep.raw, err)
	}
	// The token is fetched only once a transport is up, so that endpoints
	// that are down do not use up fresh tokens.
	token := c.cfg.Token
	if c.cfg.TokenFunc != nil {
		if token, err = c.cfg.TokenFunc(dctx); err != nil {
			conn.Close()
			return nil, "", fmt.Errorf("token for %s: %w", ep.raw, err)
		}
		if refused != "" && token == refused {
			conn.Close()
			return nil, token, errSameToken
		}
	}
	s, err := c.start(ctx, dctx, ep.raw, conn, token)
	if ec, ok := conn.(earlyConn); ok && err != nil && ec.Rejected(err) {
		// The server refused the 0-RTT data (it restarted, or rotated its
		// ticket keys): nothing sent early was served, and the pipelined
		// requests go again. Carry on over the same connection, past its
		// handshake now, as a first connection would; it brings a new
		// ticket.
		c.log.Info("imgate 0-RTT refused by the server, continuing after the handshake", "endpoint", ep.raw)
		fresh, rerr := ec.Resume(dctx)
		if rerr != nil {
			conn.Close()
			return nil, token, fmt.Errorf("auth %s: %w", ep.raw, errors.Join(err, rerr))
		}
		s, err = c.start(ctx, dctx, ep.raw, fresh, token)
	}
	return s, token, err
}

// start authenticates a session on conn and re-joins the rooms; see connect.
func (c *Client) start(ctx, dctx context.Context, endpoint string, conn frameConn, token string) (*session, error) {
	s := newSession(c, conn, endpoint, c.cfg.MaxFrame, c.cfg.RequestTimeout)
	ec, _ := conn.(earlyConn)
	pipelined := ec != nil && ec.Early()
	rooms := c.joinedRooms()
	var joins []<-chan result
	var err error
	if pipelined {
		if err := s.writeAuth(token); err != nil {
			s.fail(err)
			return nil, fmt.Errorf("auth %s: %w", endpoint, err)
		}
		if joins, err = s.sendJoins(rooms); err != nil {
			s.fail(err)
			return nil, fmt.Errorf("rejoin on %s: %w", endpoint, err)
		}
		c.offerEarly(s)
		defer c.withdrawEarly(s)
	}
	ok, err := c.authenticate(dctx, s, token, !pipelined)
	if err != nil {
		s.fail(err)
		return nil, fmt.Errorf("auth %s: %w", endpoint, err)
	}
	s.setAuthOK(ok)
	go s.readLoop()
	go s.heartbeatLoop()

	rctx, rcancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer rcancel()
	if !pipelined {
		joins, err = s.sendJoins(rooms)
	}
	if err == nil {
		err = s.awaitJoins(rctx, rooms, joins)
	}
	if err != nil {
		s.fail(err)
		return nil, fmt.Errorf("rejoin on %s: %w", endpoint, err)
	}
	return s, nil
}

// writeAuth sends AUTH on a session that is not authenticated yet.
func (s *session) writeAuth(token string) error {
	if size := proto.HeaderSize + len(token); size > s.c.cfg.MaxFrame {
		return fmt.Errorf("%w: token of %d bytes", proto.ErrTooLarge, len(token))
	}
	h := proto.Header{Op: proto.OpAuth}
	if s.c.moved {
		h.Flags = proto.FlagMoved
	}
	return s.write(h, []byte(token))
}

// authenticate sends AUTH (unless it went out already, pipelined) and reads
// the answer; ctx's end closes the connection to unblock the read,
// whatever the transport. The session's reader is not running yet.
func (c *Client) authenticate(ctx context.Context, s *session, token string, send bool) (proto.AuthOK, error) {
	stop := context.AfterFunc(ctx, func() { s.conn.Close() })
	defer stop()
	if send {
		if err := s.writeAuth(token); err != nil {
			return proto.AuthOK{}, orContext(ctx, err)
		}
	}
	f, err := s.conn.ReadFrame()
	if err != nil {
		return proto.AuthOK{}, orContext(ctx, err)
	}
	switch f.Op {
	case proto.OpAuthOK:
		ok, err := proto.ParseAuthOK(f.Body)
		// The body aliases the read buffer, which the reader reuses next.
		ok.NodeID = slices.Clone(ok.NodeID)
		return ok, err
	case proto.OpClose, proto.OpError:
		return proto.AuthOK{}, serverError(f.Body)
	}
	return proto.AuthOK{}, fmt.Errorf("%w: %s before AUTH_OK", proto.ErrBadBody, f.Op)
}

// orContext prefers the context's error when its end is why I/O failed.
func orContext(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// serverError turns an ERROR or CLOSE body into a *proto.Error.
func serverError(body []byte) error {
	eb, err := proto.ParseError(body)
	if err != nil {
		return err
	}
	return &proto.Error{Code: eb.Code, Msg: string(eb.Message)}
}

// session is one transport connection: authenticating, then authenticated.
type session struct {
	c         *Client
	conn      frameConn
	endpoint  string
	connID    uint64 // set by setAuthOK, before the session's goroutines start
	nodeID    string
	heartbeat time.Duration
	authed    atomic.Bool // AUTH_OK arrived

	writeMu  sync.Mutex
	wbuf     []byte // reused for every frame written
	maxFrame int    // under writeMu: the client's until AUTH_OK, then the server's

	mu      sync.Mutex
	pending map[uint32]*call
	err     error // why the session ended; non-nil once it has
	done    chan struct{}

	heard   atomic.Bool       // a frame arrived since the heartbeat loop last looked
	stalled atomic.Bool       // the reader waits for OnPush, not for the server
	topics  map[string]string // reader only: interned push topics

	lastWarn   time.Time // reader only: see warn
	suppressed int
}

// call is a request waiting for its answer.
type call struct {
	result   chan result // buffered: the reader never waits on a caller
	joinRoom string
}

type result struct {
	body []byte
	err  error
}

// maxTopics bounds the reader's topic interning table.
const maxTopics = 1024

func newSession(c *Client, conn frameConn, endpoint string, maxFrame int, writeTimeout time.Duration) *session {
	conn.SetLimits(maxFrame, writeTimeout)
	return &session{
		c:        c,
		conn:     conn,
		endpoint: endpoint,
		maxFrame: maxFrame,
		pending:  make(map[uint32]*call),
		done:     make(chan struct{}),
		topics:   make(map[string]string),
	}
}

// setAuthOK records what AUTH_OK said. It runs before the reader starts;
// writers (requests pipelined behind AUTH) may be running, hence writeMu.
func (s *session) setAuthOK(ok proto.AuthOK) {
	s.connID, s.nodeID = ok.ConnID, string(ok.NodeID)
	s.heartbeat = time.Duration(ok.HeartbeatMS) * time.Millisecond
	s.writeMu.Lock()
	if ok.MaxFrame > 0 {
		s.maxFrame = min(int(ok.MaxFrame), proto.MaxFrameLimit)
	}
	s.conn.SetLimits(s.maxFrame, s.c.cfg.RequestTimeout)
	s.writeMu.Unlock()
	s.authed.Store(true)
}

// awaitHandshake waits until what this session writes can no longer be
// refused as early data (TOO_EARLY).
func (s *session) awaitHandshake(ctx context.Context) error {
	if ec, ok := s.conn.(earlyConn); ok {
		return ec.AwaitHandshake(ctx)
	}
	return nil
}

// write sends one frame. A failed write fails the session: a partial frame
// has corrupted the stream.
func (s *session) write(h proto.Header, body []byte) error {
	s.writeMu.Lock()
	if size := proto.HeaderSize + len(body); size > s.maxFrame {
		limit := s.maxFrame
		s.writeMu.Unlock()
		return fmt.Errorf("%w: %s frame of %d bytes, server allows %d", proto.ErrTooLarge, h.Op, size, limit)
	}
	s.wbuf = proto.AppendFrame(s.wbuf[:0], h, body)
	err := s.conn.WriteFrame(s.wbuf)
	if cap(s.wbuf) > 4*readBufSize {
		s.wbuf = nil // do not pin one large frame's buffer for the connection's life
	}
	s.writeMu.Unlock()
	if err != nil {
		s.fail(fmt.Errorf("write %s: %w", h.Op, err))
		return fmt.Errorf("%w: %w", ErrConnectionLost, s.cause())
	}
	return nil
}

// register records a request about to be sent with seq.
func (s *session) register(seq uint32, joinRoom string) (<-chan result, error) {
	cl := &call{result: make(chan result, 1), joinRoom: joinRoom}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConnectionLost, s.err)
	}
	s.pending[seq] = cl
	return cl.result, nil
}

// forget drops a request whose caller stopped waiting.
func (s *session) forget(seq uint32) {
	s.mu.Lock()
	delete(s.pending, seq)
	s.mu.Unlock()
}

// complete hands a REPLY (err nil, body aliasing the read buffer) or an
// ERROR to the request waiting on seq; answers nobody waits for are dropped.
func (s *session) complete(seq uint32, body []byte, err error) {
	s.mu.Lock()
	cl := s.pending[seq]
	delete(s.pending, seq)
	if cl != nil && err == nil && cl.joinRoom != "" {
		// Recorded here, before the reader can see the connection end, so
		// that a reconnect racing this reply still re-joins the room.
		s.c.addRoom(cl.joinRoom)
	}
	s.mu.Unlock()
	if cl == nil {
		return
	}
	var copied []byte
	if err == nil && len(body) > 0 {
		copied = slices.Clone(body)
	}
	cl.result <- result{body: copied, err: err}
}

// fail ends the session once: it closes the transport and fails every
// pending request.
func (s *session) fail(err error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	s.err = err
	pending := s.pending
	s.pending = nil
	s.mu.Unlock()
	// A connection whose 0-RTT data the server refused stays open for
	// connect to carry on with (see connect); it closes it otherwise.
	if ec, ok := s.conn.(earlyConn); !ok || s.authed.Load() || !ec.Rejected(err) {
		s.conn.Close()
	}
	lost := fmt.Errorf("%w: %w", ErrConnectionLost, err)
	for _, cl := range pending {
		cl.result <- result{err: lost}
	}
	close(s.done)
}

// ended reports whether the session has failed (without taking s.mu).
func (s *session) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func (s *session) cause() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// goodbye sends CLOSE NORMAL, waiting at most closeGrace, then ends the
// session.
func (s *session) goodbye() {
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		var body [2]byte
		_ = s.write(proto.Header{Op: proto.OpClose}, proto.AppendError(body[:0], proto.CodeNormal, ""))
	}()
	t := time.NewTimer(closeGrace)
	select {
	case <-sent:
	case <-t.C:
	}
	t.Stop()
	s.fail(ErrClosed)
}

// readLoop is the session's only reader.
func (s *session) readLoop() {
	for {
		f, err := s.conn.ReadFrame()
		if err != nil {
			s.fail(err)
			return
		}
		// A load first: the common case (already set) then costs no write to
		// the shared cache line.
		if !s.heard.Load() {
			s.heard.Store(true)
		}
		if err := s.handle(f); err != nil {
			s.fail(err)
			return
		}
	}
}

// handle acts on one server frame. An error ends the session: the server
// broke the protocol (PROTOCOL.md §13 asks clients to be strict), closed the
// connection, or the session ended while a push waited for the queue.
func (s *session) handle(f proto.Frame) error {
	switch f.Op {
	case proto.OpPong:
		if len(f.Body) != 8 {
			return fmt.Errorf("%w: PONG body of %d bytes, want 8", ErrProtocol, len(f.Body))
		}
	case proto.OpReply:
		s.complete(f.Seq, f.Body, nil)
	case proto.OpError:
		eb, err := proto.ParseError(f.Body)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		pe := &proto.Error{Code: eb.Code, Msg: string(eb.Message)}
		if f.Seq == 0 {
			s.warn("imgate server error", "err", pe)
			return nil
		}
		s.complete(f.Seq, nil, pe)
	case proto.OpPush:
		return s.push(f)
	case proto.OpClose:
		eb, err := proto.ParseError(f.Body)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		return &proto.Error{Code: eb.Code, Msg: string(eb.Message)}
	default:
		return fmt.Errorf("%w: server sent %s", ErrProtocol, f.Op)
	}
	return nil
}

// warn logs a reader-side warning at most once a second per connection, so
// that a misbehaving server cannot flood the log; the count of warnings
// held back rides on the next one.
func (s *session) warn(msg string, args ...any) {
	now := time.Now()
	if now.Sub(s.lastWarn) < time.Second {
		s.suppressed++
		return
	}
	s.lastWarn = now
	args = append(args, "conn", s.connID)
	if s.suppressed > 0 {
		args = append(args, "suppressed", s.suppressed)
		s.suppressed = 0
	}
	s.c.log.Warn(msg, args...)
}

// push queues one push for OnPush.
func (s *session) push(f proto.Frame) error {
	p, err := proto.ParsePush(f.Body)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if s.c.pushes == nil {
		return nil
	}
	out := Push{
		ConvID:  p.ConvID,
		Seq:     p.Seq,
		Topic:   s.topic(p.Topic),
		Payload: slices.Clone(p.Payload),
		Flags:   f.Flags,
	}
	select {
	case s.c.pushes <- out:
		return nil
	default:
	}
	// The queue is full: OnPush is behind. The reader stops reading, which
	// the heartbeat loop must not mistake for a silent server.
	s.stalled.Store(true)
	defer s.stalled.Store(false)
	select {
	case s.c.pushes <- out:
		return nil
	case <-s.done:
		return s.cause()
	}
}

// topic interns push topics: a room's pushes share one string instead of
// allocating one each (the map lookup with string(b) does not allocate).
func (s *session) topic(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if t, ok := s.topics[string(b)]; ok {
		return t
	}
	if len(s.topics) >= maxTopics {
		clear(s.topics)
	}
	t := string(b)
	s.topics[t] = t
	return t
}

// heartbeatLoop sends HEARTBEAT every interval and declares the connection
// dead when nothing at all came from the server for two whole intervals.
func (s *session) heartbeatLoop() {
	if s.heartbeat <= 0 {
		return
	}
	t := time.NewTicker(s.heartbeat)
	defer t.Stop()
	silent := 0
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		if s.heard.Swap(false) || s.stalled.Load() {
			silent = 0
		} else if silent++; silent >= 2 {
			s.fail(ErrHeartbeatTimeout)
			return
		}
		if s.write(proto.Header{Op: proto.OpHeartbeat}, nil) != nil {
			return
		}
	}
}

// sendJoins sends a JOIN for each room, all at once, and returns where
// their answers will arrive.
func (s *session) sendJoins(rooms []string) ([]<-chan result, error) {
	waits := make([]<-chan result, len(rooms))
	for i, room := range rooms {
		seq := s.c.nextSeq()
		wait, err := s.register(seq, "")
		if err != nil {
			return nil, err
		}
		if err := s.write(proto.Header{Op: proto.OpJoin, Seq: seq}, []byte(room)); err != nil {
			return nil, err
		}
		waits[i] = wait
	}
	return waits, nil
}

// awaitJoins waits for the answers to sendJoins. A room the server now
// refuses is dropped and logged; a lost connection fails the attempt.
func (s *session) awaitJoins(ctx context.Context, rooms []string, waits []<-chan result) error {
	for i, wait := range waits {
		select {
		case r := <-wait:
			var pe *proto.Error
			switch {
			case errors.As(r.err, &pe) && !errors.Is(r.err, ErrConnectionLost):
				s.c.log.Warn("imgate rejoin refused, room dropped", "room", rooms[i], "conn", s.connID, "err", pe)
				s.c.mu.Lock()
				delete(s.c.rooms, rooms[i])
				s.c.mu.Unlock()
			case r.err != nil:
				return r.err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
