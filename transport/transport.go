package transport

import (
	"context"
	"errors"
	"net"
	"runtime"
	"time"

	"imgate/proto"
)

// Kind names the transport that carries a connection.
type Kind uint8

// Transport kinds.
const (
	KindTCP Kind = iota + 1
	KindTLS
	KindWS
	KindWSS
	KindKCP
	KindQUIC
)

var kindNames = [...]string{KindTCP: "tcp", KindTLS: "tls", KindWS: "ws", KindWSS: "wss", KindKCP: "kcp", KindQUIC: "quic"}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "unknown"
}

// WebSocket reports whether frames on this kind travel inside WebSocket messages.
func (k Kind) WebSocket() bool { return k == KindWS || k == KindWSS }

// Datagrams reports whether the kind runs over UDP, where anyone can send a
// listener datagrams that belong to no connection.
func (k Kind) Datagrams() bool { return k == KindKCP || k == KindQUIC }

// Kinds lists every kind, for metrics that report per transport.
var Kinds = []Kind{KindTCP, KindTLS, KindWS, KindWSS, KindKCP, KindQUIC}

// Frame is an encoded imgate frame that many connections may share. It is
// immutable while shared; every successful or failed Send consumes exactly
// one reference, released once its bytes are written or dropped.
type Frame interface {
	// Wire returns the bytes to put on the connection: the frame itself, or,
	// when ws is true, the frame inside a WebSocket binary message header.
	Wire(ws bool) []byte
	Release()
}

// Conn is one client connection, whatever carries it. All methods are safe
// for concurrent use.
type Conn interface {
	// Send queues f after everything queued before it and never blocks on the
	// network. It fails with ErrQueueFull when the connection's outbound
	// bytes would pass the limit, and with ErrClosed after Close.
	Send(f Frame) error
	// Enqueue is Send without the write: when it returns flush == true the
	// caller must call Flush, typically once after enqueuing a whole batch,
	// so that many frames leave in one vectored write.
	Enqueue(f Frame) (flush bool, err error)
	// Flush writes what is queued; see Enqueue.
	Flush()
	// Close queues last (may be nil) after everything already queued, writes
	// it, then closes. Frames sent after Close fail with ErrClosed.
	Close(last Frame)
	Kind() Kind
	RemoteAddr() net.Addr
	// QueuedBytes is the size of the outbound queue right now.
	QueuedBytes() int
	// SetContext attaches the upper layer's state; Context returns it.
	SetContext(v any)
	Context() any
}

// EarlyConn is implemented by connections whose first frames may arrive
// before the client's handshake has completed: QUIC 0-RTT data, which an
// attacker who recorded it can replay to the node on a connection of its
// own. Such a connection never completes its handshake, so a frame read
// while Early reports true may be a replay; one read after it reports false
// is not. The gateway asks only before acting on a frame whose effect must
// not happen twice. Transports without early data never report true.
type EarlyConn interface {
	Conn
	// Early reports whether the handshake is still incomplete.
	Early() bool
	// AwaitHandshake waits until the handshake has completed (nil), the
	// connection has ended without completing it, or ctx ends.
	AwaitHandshake(ctx context.Context) error
}

// Handler receives a connection's events. Calls for one connection never
// overlap. f.Body in OnFrame aliases a read buffer and is valid only during
// the call.
type Handler interface {
	OnOpen(c Conn)
	// OnFrame handles one inbound frame. A non-nil error closes c: a
	// *proto.Error is answered with a CLOSE frame carrying its code.
	OnFrame(c Conn, f proto.Frame) error
	// OnClose reports the end of c; err says why (nil: orderly). When the
	// connection was closed for a protocol error, answered with a CLOSE
	// frame (an OnFrame error or bad input the transport caught itself),
	// err is that *proto.Error.
	OnClose(c Conn, err error)
}

// Listener accepts connections of one kind on one address.
type Listener interface {
	Addr() net.Addr
	Kind() Kind
	// URL is the address in the form clients dial, e.g. ws://127.0.0.1:7101/ws.
	URL() string
	Close() error
}

// Errors that callers branch on.
var (
	ErrClosed    = errors.New("transport: connection closed")
	ErrQueueFull = errors.New("transport: outbound queue full")
	ErrPeerGone  = errors.New("transport: peer closed the connection")
)

// Config holds the transport settings shared by all listeners of an Engine.
type Config struct {
	// Loops is the number of epoll loops (default: GOMAXPROCS).
	Loops int
	// MaxFrame bounds a frame's total size, header included.
	MaxFrame int
	// QueueBytes bounds each connection's outbound queue.
	QueueBytes int
	// ReadBuffer is the size of each loop's shared read buffer; a connection
	// holds a buffer of its own only while a frame is half-received.
	ReadBuffer int
	// StreamReadBuffer is the read buffer a goroutine-transport connection
	// (TLS, QUIC) borrows from a pool while data keeps arriving; a waiting
	// connection holds only a 512-byte one of its own.
	StreamReadBuffer int
	// SendBuffer, when positive, fixes each TCP socket's kernel send buffer
	// (SO_SNDBUF) in bytes. The kernel otherwise grows it up to tcp_wmem's
	// maximum (4 MiB on many hosts), which is what a peer that stops reading
	// can hold in kernel memory before QueueBytes applies.
	SendBuffer int
	// WSPath is the WebSocket upgrade path.
	WSPath string
	// WSOrigins lists the allowed Origin header values; empty allows any.
	WSOrigins []string
	// HandshakeTimeout bounds the WebSocket upgrade and TLS handshake.
	HandshakeTimeout time.Duration
	// WriteTimeout bounds one blocking write on goroutine transports.
	WriteTimeout time.Duration
	// QUICIdleTimeout closes a QUIC connection after this long without a
	// packet; keep it above two heartbeat intervals so imgate's heartbeat
	// decides liveness.
	QUICIdleTimeout time.Duration
	// KCP is the default for kcp:// listeners; a listener URL's query
	// (preset, interval, sndwnd, crypt, key, ...) overrides it.
	KCP KCPOptions
	// QUICReceiveWindow is the most a client may have in flight towards the
	// node on its stream (flow control); the connection's window is 1.5
	// times that. Windows start at the frame limit and grow up to it. It
	// bounds what one client can make the node buffer (quic-go's own
	// defaults are 6 and 15 MiB).
	QUICReceiveWindow int
	// QUICDisable0RTT refuses 0-RTT: resuming clients then wait one round
	// trip before their first frame, as first-time clients do.
	QUICDisable0RTT bool
	// Linger is how long a closing connection waits for the peer to read its
	// last frame before it is cut.
	Linger time.Duration
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		Loops:             runtime.GOMAXPROCS(0),
		MaxFrame:          proto.DefaultMaxFrame,
		QueueBytes:        256 << 10,
		ReadBuffer:        64 << 10,
		StreamReadBuffer:  4 << 10,
		WSPath:            "/ws",
		HandshakeTimeout:  10 * time.Second,
		WriteTimeout:      10 * time.Second,
		Linger:            2 * time.Second,
		QUICIdleTimeout:   90 * time.Second,
		QUICReceiveWindow: 256 << 10,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Loops <= 0 {
		c.Loops = d.Loops
	}
	if c.MaxFrame <= 0 {
		c.MaxFrame = d.MaxFrame
	}
	if c.MaxFrame > proto.MaxFrameLimit {
		c.MaxFrame = proto.MaxFrameLimit
	}
	if c.QueueBytes <= 0 {
		c.QueueBytes = d.QueueBytes
	}
	if c.ReadBuffer < 4096 {
		c.ReadBuffer = d.ReadBuffer
	}
	if c.StreamReadBuffer < 512 {
		c.StreamReadBuffer = d.StreamReadBuffer
	}
	if c.WSPath == "" {
		c.WSPath = d.WSPath
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = d.HandshakeTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = d.WriteTimeout
	}
	if c.Linger <= 0 {
		c.Linger = d.Linger
	}
	if c.QUICIdleTimeout <= 0 {
		c.QUICIdleTimeout = d.QUICIdleTimeout
	}
	if c.QUICReceiveWindow <= 0 {
		c.QUICReceiveWindow = d.QUICReceiveWindow
	}
	// A frame must fit: the window never shrinks below the frame limit.
	c.QUICReceiveWindow = max(c.QUICReceiveWindow, c.MaxFrame)
	return c
}

// rawFrame is an unshared, already wire-formatted frame: handshake replies,
// WebSocket control frames and close frames built by the transport itself.
type rawFrame []byte

func (r rawFrame) Wire(bool) []byte { return r }
func (r rawFrame) Release()         {}

// CloseFrame is what ends a connection for code: an imgate CLOSE frame with
// code and reason and, when ws is set, the WebSocket close frame whose status
// docs/PROTOCOL.md §11.2 pairs with code. Pass it to Conn.Close.
func CloseFrame(code proto.Code, reason string, ws bool) Frame {
	return closeFrame(&proto.Error{Code: code, Msg: reason}, ws)
}

// codedFrame is a CLOSE frame that remembers its code, for transports that
// can also carry it outside the stream (QUIC's connection close).
type codedFrame struct {
	rawFrame
	code   proto.Code
	reason string
}

// closeCoder is a net.Conn that can carry a close code of its own.
type closeCoder interface {
	setCloseCode(code proto.Code, reason string)
}

// closeReason is the protocol error a CLOSE frame for err carries; a
// connection that fail closed reports it to OnClose.
func closeReason(err error) *proto.Error {
	var pe *proto.Error
	if errors.As(err, &pe) {
		return pe
	}
	return &proto.Error{Code: proto.CodeOf(err), Msg: err.Error()}
}

// closeFrame builds an imgate CLOSE frame for err, wrapped for WebSocket when
// ws is set and followed by the WebSocket close frame.
func closeFrame(err error, ws bool) Frame {
	code := proto.CodeOf(err)
	msg := err.Error()
	var pe *proto.Error
	if errors.As(err, &pe) {
		msg = pe.Msg
	}
	if len(msg) > 120 {
		msg = msg[:120]
	}
	body := proto.AppendError(nil, code, msg)
	frame := proto.AppendFrame(nil, proto.Header{Op: proto.OpClose}, body)
	if !ws {
		return codedFrame{rawFrame(frame), code, msg}
	}
	out := appendWSHeader(nil, wsOpBinary, len(frame))
	out = append(out, frame...)
	return codedFrame{rawFrame(appendWSClose(out, wsCloseCodeFor(err, code), "")), code, msg}
}
