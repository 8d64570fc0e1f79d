package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"sync/atomic"

	"github.com/gobwas/ws"

	"imgate/proto"
)

// WebSocket (RFC 6455) on top of the shared codec. The upgrade request is
// parsed by gobwas/ws; frames are parsed here, straight from the loop's read
// buffer, because the event-driven reader hands over byte slices, not a
// blocking io.Reader, and so that a whole message needs no copy.

const maxHandshake = 8 << 10

// WebSocket opcodes.
const (
	wsOpCont   = 0x0
	wsOpText   = 0x1
	wsOpBinary = 0x2
	wsOpClose  = 0x8
	wsOpPing   = 0x9
	wsOpPong   = 0xA
)

// WebSocket close status codes used here.
const (
	wsCloseNormal      = 1000
	wsCloseProtocol    = 1002
	wsCloseUnsupported = 1003
	wsClosePolicy      = 1008
	wsCloseTooBig      = 1009
)

// wsState is a WebSocket connection's reading state.
type wsState struct {
	path        string
	origins     []string
	upgraded    atomic.Bool // read by Close from any goroutine
	fragmenting bool
	msg         []byte // pooled; fragments received so far
}

// wsError is a WebSocket-level violation: it carries both the imgate code and
// the WebSocket close status to answer with.
type wsError struct {
	pe     *proto.Error
	status uint16
}

func (e *wsError) Error() string { return "websocket: " + e.pe.Msg }
func (e *wsError) Unwrap() error { return e.pe }

func wsViolation(status uint16, format string, args ...any) error {
	return &wsError{pe: proto.Errorf(proto.CodeProtocolError, format, args...), status: status}
}

// errHandled means the codec already answered and closed; nothing to add.
var errHandled = errors.New("transport: handled")

// feedWS buffers data until whole units (the upgrade request, then frames)
// are present and processes them.
func (d *codec) feedWS(data []byte) error {
	buf := data
	if d.partial != nil {
		d.partial = growBuf(d.partial, len(d.partial)+len(data))
		d.partial = append(d.partial, data...)
		buf = d.partial
	}
	n, err := d.parseWS(buf)
	if err != nil {
		return err
	}
	rest := buf[n:]
	switch {
	case d.partial != nil && len(rest) == 0:
		putBuf(d.partial)
		d.partial = nil
	case d.partial != nil:
		d.partial = d.partial[:copy(d.partial, rest)]
	case len(rest) > 0:
		d.partial = append(getBuf(len(rest)), rest...)
	}
	return nil
}

func (d *codec) parseWS(buf []byte) (int, error) {
	off := 0
	if !d.ws.upgraded.Load() {
		i := bytes.Index(buf, []byte("\r\n\r\n"))
		if i < 0 {
			if len(buf) > maxHandshake {
				d.sink.finish(rawFrame("HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n"))
				return 0, errHandled
			}
			return 0, nil
		}
		if err := d.upgrade(buf[:i+4]); err != nil {
			return 0, err
		}
		off = i + 4
	}
	for off < len(buf) {
		h, hl, err := parseWSHeader(buf[off:], d.maxFrame)
		if err != nil {
			return off, err
		}
		if hl == 0 || len(buf)-off < hl+h.length {
			break
		}
		payload := buf[off+hl : off+hl+h.length]
		ws.Cipher(payload, h.mask, 0)
		off += hl + h.length
		if err := d.wsFrame(h, payload); err != nil {
			return off, err
		}
	}
	return off, nil
}

func (d *codec) upgrade(req []byte) error {
	st := d.ws
	u := ws.Upgrader{
		OnRequest: func(uri []byte) error {
			if i := bytes.IndexByte(uri, '?'); i >= 0 {
				uri = uri[:i]
			}
			if string(uri) != st.path {
				return ws.RejectConnectionError(ws.RejectionStatus(404), ws.RejectionReason("unknown path"))
			}
			return nil
		},
		OnHeader: func(key, value []byte) error {
			if len(st.origins) == 0 || !bytes.EqualFold(key, []byte("Origin")) {
				return nil
			}
			for _, o := range st.origins {
				if bytes.EqualFold(value, []byte(o)) {
					return nil
				}
			}
			return ws.RejectConnectionError(ws.RejectionStatus(403), ws.RejectionReason("origin not allowed"))
		},
	}
	var out bytes.Buffer
	rw := struct {
		io.Reader
		io.Writer
	}{bytes.NewReader(req), &out}
	if _, err := u.Upgrade(rw); err != nil {
		d.sink.finish(rawFrame(out.Bytes()))
		return errHandled
	}
	st.upgraded.Store(true)
	d.sink.reply(rawFrame(out.Bytes()))
	d.sink.upgraded()
	return nil
}

// wsHeader is a parsed frame header.
type wsHeader struct {
	fin    bool
	op     byte
	length int
	mask   [4]byte
}

// parseWSHeader parses a client frame header. hl == 0 means more bytes are
// needed. Every rule a server must enforce is checked here, before any
// payload is buffered.
func parseWSHeader(b []byte, maxFrame int) (h wsHeader, hl int, err error) {
	if len(b) < 2 {
		return h, 0, nil
	}
	if b[0]&0x70 != 0 {
		return h, 0, wsViolation(wsCloseProtocol, "reserved bits set (no extension negotiated)")
	}
	h.fin = b[0]&0x80 != 0
	h.op = b[0] & 0x0f
	if b[1]&0x80 == 0 {
		return h, 0, wsViolation(wsCloseProtocol, "client frame not masked")
	}
	l := uint64(b[1] & 0x7f)
	hl = 2
	switch l {
	case 126:
		if len(b) < 4 {
			return h, 0, nil
		}
		l, hl = uint64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return h, 0, nil
		}
		l, hl = binary.BigEndian.Uint64(b[2:]), 10
	}
	if h.op >= wsOpClose {
		if !h.fin || l > 125 {
			return h, 0, wsViolation(wsCloseProtocol, "control frame fragmented or over 125 bytes")
		}
	}
	if l > uint64(maxFrame) {
		return h, 0, &wsError{pe: proto.Errorf(proto.CodeFrameTooLarge, "message of %d bytes over max frame %d", l, maxFrame), status: wsCloseTooBig}
	}
	if len(b) < hl+4 {
		return h, 0, nil
	}
	copy(h.mask[:], b[hl:hl+4])
	h.length = int(l)
	return h, hl + 4, nil
}

func (d *codec) wsFrame(h wsHeader, payload []byte) error {
	st := d.ws
	switch h.op {
	case wsOpPing:
		d.sink.reply(rawFrame(append(appendWSHeader(nil, wsOpPong, len(payload)), payload...)))
	case wsOpPong:
	case wsOpClose:
		status := uint16(wsCloseNormal)
		if len(payload) >= 2 {
			status = binary.BigEndian.Uint16(payload)
		}
		d.sink.finish(rawFrame(appendWSClose(nil, status, "")))
		return errHandled
	case wsOpText:
		return wsViolation(wsCloseUnsupported, "text messages are not supported: send binary frames")
	case wsOpBinary:
		if st.fragmenting {
			return wsViolation(wsCloseProtocol, "new message inside a fragmented one")
		}
		if h.fin {
			return d.deliverMessage(payload)
		}
		st.fragmenting = true
		st.msg = append(getBuf(len(payload)), payload...)
	case wsOpCont:
		if !st.fragmenting {
			return wsViolation(wsCloseProtocol, "continuation without a message")
		}
		if len(st.msg)+len(payload) > d.maxFrame {
			return &wsError{pe: proto.Errorf(proto.CodeFrameTooLarge, "fragmented message over max frame %d", d.maxFrame), status: wsCloseTooBig}
		}
		st.msg = growBuf(st.msg, len(st.msg)+len(payload))
		st.msg = append(st.msg, payload...)
		if h.fin {
			err := d.deliverMessage(st.msg)
			putBuf(st.msg)
			st.msg, st.fragmenting = nil, false
			return err
		}
	default:
		return wsViolation(wsCloseProtocol, "unknown opcode 0x%x", h.op)
	}
	return nil
}

func (d *codec) deliverMessage(msg []byte) error {
	f, err := proto.DecodeExact(msg, d.maxFrame)
	if err != nil {
		return err
	}
	return d.sink.deliver(f)
}

// appendWSHeader appends an unmasked server frame header (FIN set).
func appendWSHeader(dst []byte, op byte, n int) []byte {
	dst = append(dst, 0x80|op)
	switch {
	case n < 126:
		return append(dst, byte(n))
	case n <= 0xffff:
		dst = append(dst, 126)
		return binary.BigEndian.AppendUint16(dst, uint16(n))
	default:
		dst = append(dst, 127)
		return binary.BigEndian.AppendUint64(dst, uint64(n))
	}
}

// WSHeaderSize is the size of the server frame header for an n-byte payload.
func WSHeaderSize(n int) int {
	switch {
	case n < 126:
		return 2
	case n <= 0xffff:
		return 4
	}
	return 10
}

// PutWSHeader writes the binary-message header for an n-byte payload at the
// end of dst (len(dst) must be WSHeaderSize(n)); frame encoders use it to
// build the WebSocket form of a frame in place, in front of the frame.
func PutWSHeader(dst []byte, n int) {
	appendWSHeader(dst[:0], wsOpBinary, n)
}

// closingFrame is what an orderly close sends last: the caller's frame, or
// on an upgraded WebSocket with none given, a normal close frame.
func closingFrame(last Frame, ws *wsState) Frame {
	if last == nil && ws != nil && ws.upgraded.Load() {
		return rawFrame(appendWSClose(nil, wsCloseNormal, ""))
	}
	return last
}

func appendWSClose(dst []byte, status uint16, reason string) []byte {
	dst = appendWSHeader(dst, wsOpClose, 2+len(reason))
	dst = binary.BigEndian.AppendUint16(dst, status)
	return append(dst, reason...)
}

// wsCloseCodeFor maps an imgate close code to a WebSocket close status.
func wsCloseCodeFor(err error, code proto.Code) uint16 {
	var we *wsError
	if errors.As(err, &we) {
		return we.status
	}
	switch code {
	case proto.CodeFrameTooLarge:
		return wsCloseTooBig
	case proto.CodeBadFrame, proto.CodeUnknownOp, proto.CodeBadVersion, proto.CodeProtocolError, proto.CodeClientDirection:
		return wsCloseProtocol
	case proto.CodeAuthFailed, proto.CodeTokenExpired, proto.CodeNotAuthed, proto.CodeAuthTimeout, proto.CodeSlowConsumer:
		return wsClosePolicy
	}
	return wsCloseNormal
}
