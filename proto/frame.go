package proto

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Version is the only wire version this package speaks.
const Version = 1

// HeaderSize is the fixed size of a frame header, length field included.
const HeaderSize = 16

// lengthSize is the size of the leading length field; the length counts the
// bytes that follow it.
const lengthSize = 4

// MaxFrameLimit is the hard ceiling on a frame's total size. Config limits
// (default DefaultMaxFrame) must lie below it.
const MaxFrameLimit = 16 << 20

// DefaultMaxFrame is the default maximum total frame size, header included.
const DefaultMaxFrame = 64 << 10

// Op is a frame's operation code.
type Op uint8

// Ops. C->S is client to server, S->C server to client.
const (
	OpAuth      Op = 0x01 // C->S body: token
	OpAuthOK    Op = 0x02 // S->C body: AuthOK
	OpHeartbeat Op = 0x03 // C->S body: empty
	OpPong      Op = 0x04 // S->C body: server time, unix ms (uint64)
	OpJoin      Op = 0x05 // C->S body: room name; answered by Reply or Error
	OpLeave     Op = 0x06 // C->S body: room name; answered by Reply or Error
	OpUplink    Op = 0x07 // C->S svid + seq, body: payload; answered by Reply or Error
	OpReply     Op = 0x08 // S->C same svid + seq as the request, body: payload
	OpError     Op = 0x09 // S->C seq of the failed request (0: none), body: ErrorBody
	OpPush      Op = 0x0A // S->C body: Push
	OpAck       Op = 0x0B // C->S body: Ack (highest seq held in a conversation)
	OpSync      Op = 0x0C // C->S body: Sync; missing pushes then a Reply
	OpClose     Op = 0x0D // both ways body: ErrorBody (code + reason); the sender closes after it
)

var opNames = [...]string{
	OpAuth: "AUTH", OpAuthOK: "AUTH_OK", OpHeartbeat: "HEARTBEAT", OpPong: "PONG",
	OpJoin: "JOIN", OpLeave: "LEAVE", OpUplink: "UPLINK", OpReply: "REPLY",
	OpError: "ERROR", OpPush: "PUSH", OpAck: "ACK", OpSync: "SYNC", OpClose: "CLOSE",
}

func (o Op) String() string {
	if int(o) < len(opNames) && opNames[o] != "" {
		return opNames[o]
	}
	return fmt.Sprintf("OP(0x%02x)", uint8(o))
}

// Known reports whether o is an op of this version.
func (o Op) Known() bool { return o >= OpAuth && o <= OpClose }

// Push flags: what kind of target a push was addressed to.
const (
	FlagRoom      uint16 = 1 << 0 // Push.Topic names the room the push was sent to
	FlagBroadcast uint16 = 1 << 1 // push went to every connection of the node or cluster
	FlagResend    uint16 = 1 << 2 // push is a resend (sync or unacked redelivery)
)

// AUTH flags.
const (
	// FlagMoved: the client was closed with SHUTDOWN by a draining node and
	// is reconnecting elsewhere. In a cluster the new node claims the user
	// pushes the old node held since that close, and delivers them before
	// any newer one (PROTOCOL.md §5.1, §7.6).
	FlagMoved uint16 = 1 << 0
)

// Decode errors. Callers branch on them to pick the wire error code.
var (
	ErrShortLength = errors.New("proto: frame length below header size")
	ErrTooLarge    = errors.New("proto: frame exceeds maximum size")
	ErrVersion     = errors.New("proto: unsupported version")
	ErrUnknownOp   = errors.New("proto: unknown op")
	ErrBadBody     = errors.New("proto: malformed body")
)

// Header is a decoded frame header.
type Header struct {
	Op    Op
	Flags uint16
	SVID  uint32
	Seq   uint32
}

// Frame is a decoded frame. Body aliases the decoded input.
type Frame struct {
	Header
	Body []byte
}

// Decode parses the first frame in b. It returns n == 0 and a nil error when
// b does not yet hold a whole frame (read more and call again). maxFrame
// bounds the total frame size; the length field alone is enough to reject an
// oversize frame, so no buffer is ever grown for one.
func Decode(b []byte, maxFrame int) (f Frame, n int, err error) {
	if len(b) < lengthSize {
		return f, 0, nil
	}
	size, err := FrameSize(b[:lengthSize], maxFrame)
	if err != nil {
		return f, 0, err
	}
	if len(b) < size {
		return f, 0, nil
	}
	f, err = parse(b[:size])
	return f, size, err
}

// FrameSize reads a frame's total size from its 4-byte length prefix and
// checks it against the bounds.
func FrameSize(prefix []byte, maxFrame int) (int, error) {
	l := binary.BigEndian.Uint32(prefix)
	if l < HeaderSize-lengthSize {
		return 0, ErrShortLength
	}
	if maxFrame <= 0 || maxFrame > MaxFrameLimit {
		maxFrame = MaxFrameLimit
	}
	if uint64(l)+lengthSize > uint64(maxFrame) {
		return 0, ErrTooLarge
	}
	return int(l) + lengthSize, nil
}

// DecodeExact parses b as exactly one frame (a WebSocket message, a QUIC
// datagram): the length field must match len(b).
func DecodeExact(b []byte, maxFrame int) (Frame, error) {
	f, n, err := Decode(b, maxFrame)
	if err != nil {
		return f, err
	}
	if n == 0 || n != len(b) {
		// n == 0: fewer bytes than the length field announces (or, for an
		// empty message, no frame at all). Either way the framing is broken,
		// which is BAD_FRAME (fatal), not a malformed body.
		want := n
		if len(b) >= lengthSize {
			want = int(binary.BigEndian.Uint32(b)) + lengthSize
		}
		return Frame{}, fmt.Errorf("%w: length field says %d bytes, message holds %d", errLengthMismatch, want, len(b))
	}
	return f, nil
}

// errLengthMismatch reports a message whose length field disagrees with its
// size; CodeOf maps it to CodeBadFrame.
var errLengthMismatch = errors.New("proto: length field does not match message size")

func parse(b []byte) (Frame, error) {
	var f Frame
	if b[4] != Version {
		return f, ErrVersion
	}
	f.Op = Op(b[5])
	f.Flags = binary.BigEndian.Uint16(b[6:8])
	f.SVID = binary.BigEndian.Uint32(b[8:12])
	f.Seq = binary.BigEndian.Uint32(b[12:16])
	f.Body = b[HeaderSize:]
	if !f.Op.Known() {
		return f, ErrUnknownOp
	}
	return f, nil
}

// AppendFrame appends a whole frame with the given header and body to dst.
func AppendFrame(dst []byte, h Header, body []byte) []byte {
	dst = AppendHeader(dst, h, len(body))
	return append(dst, body...)
}

// AppendHeader appends a frame header announcing bodyLen body bytes; the
// caller appends exactly that many bytes next.
func AppendHeader(dst []byte, h Header, bodyLen int) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(HeaderSize-lengthSize+bodyLen))
	dst = append(dst, Version, byte(h.Op))
	dst = binary.BigEndian.AppendUint16(dst, h.Flags)
	dst = binary.BigEndian.AppendUint32(dst, h.SVID)
	return binary.BigEndian.AppendUint32(dst, h.Seq)
}
