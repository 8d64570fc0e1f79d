package proto

import (
	"encoding/binary"
	"fmt"
)

// MaxNameLen bounds room names, topics and node ids on the wire (one length byte).
const MaxNameLen = 255

// AuthOK is the body of OpAuthOK.
//
//	conn_id u64 | heartbeat_ms u32 | max_frame u32 | node_len u8 | node_id
type AuthOK struct {
	ConnID      uint64
	HeartbeatMS uint32
	MaxFrame    uint32
	NodeID      []byte
}

// AppendAuthOK appends the body of an OpAuthOK frame.
func AppendAuthOK(dst []byte, a AuthOK) []byte {
	dst = binary.BigEndian.AppendUint64(dst, a.ConnID)
	dst = binary.BigEndian.AppendUint32(dst, a.HeartbeatMS)
	dst = binary.BigEndian.AppendUint32(dst, a.MaxFrame)
	return appendName(dst, a.NodeID)
}

// ParseAuthOK parses an OpAuthOK body.
func ParseAuthOK(b []byte) (a AuthOK, err error) {
	if len(b) < 17 {
		return a, fmt.Errorf("%w: AUTH_OK body %d bytes", ErrBadBody, len(b))
	}
	a.ConnID = binary.BigEndian.Uint64(b)
	a.HeartbeatMS = binary.BigEndian.Uint32(b[8:])
	a.MaxFrame = binary.BigEndian.Uint32(b[12:])
	a.NodeID, b, err = parseName(b[16:])
	if err == nil && len(b) != 0 {
		err = fmt.Errorf("%w: AUTH_OK has %d trailing bytes", ErrBadBody, len(b))
	}
	return a, err
}

// Push is the body of OpPush.
//
//	conv_id u64 | msg_seq u64 | topic_len u8 | topic | payload
//
// ConvID and Seq are 0 for pushes outside any conversation (no reliable
// delivery); Topic is the room for room pushes and empty otherwise.
type Push struct {
	ConvID  uint64
	Seq     uint64
	Topic   []byte
	Payload []byte
}

// PushOverhead is the body size of a push with an empty topic and payload.
const PushOverhead = 17

// AppendPush appends an OpPush body.
func AppendPush(dst []byte, p Push) []byte {
	dst = binary.BigEndian.AppendUint64(dst, p.ConvID)
	dst = binary.BigEndian.AppendUint64(dst, p.Seq)
	dst = appendName(dst, p.Topic)
	return append(dst, p.Payload...)
}

// ParsePush parses an OpPush body; slices alias b.
func ParsePush(b []byte) (p Push, err error) {
	if len(b) < PushOverhead {
		return p, fmt.Errorf("%w: PUSH body %d bytes", ErrBadBody, len(b))
	}
	p.ConvID = binary.BigEndian.Uint64(b)
	p.Seq = binary.BigEndian.Uint64(b[8:])
	p.Topic, p.Payload, err = parseName(b[16:])
	return p, err
}

// Ack is the body of OpAck: the highest Seq the client holds in ConvID.
//
//	conv_id u64 | msg_seq u64
type Ack struct {
	ConvID uint64
	Seq    uint64
}

// AppendAck appends an OpAck body.
func AppendAck(dst []byte, a Ack) []byte {
	dst = binary.BigEndian.AppendUint64(dst, a.ConvID)
	return binary.BigEndian.AppendUint64(dst, a.Seq)
}

// ParseAck parses an OpAck body.
func ParseAck(b []byte) (a Ack, err error) {
	if len(b) != 16 {
		return a, fmt.Errorf("%w: ACK body %d bytes, want 16", ErrBadBody, len(b))
	}
	return Ack{ConvID: binary.BigEndian.Uint64(b), Seq: binary.BigEndian.Uint64(b[8:])}, nil
}

// Sync is the body of OpSync: send me what follows AfterSeq in ConvID, at
// most Limit messages (0: server default).
//
//	conv_id u64 | after_seq u64 | limit u32
type Sync struct {
	ConvID   uint64
	AfterSeq uint64
	Limit    uint32
}

// AppendSync appends an OpSync body.
func AppendSync(dst []byte, s Sync) []byte {
	dst = binary.BigEndian.AppendUint64(dst, s.ConvID)
	dst = binary.BigEndian.AppendUint64(dst, s.AfterSeq)
	return binary.BigEndian.AppendUint32(dst, s.Limit)
}

// ParseSync parses an OpSync body.
func ParseSync(b []byte) (s Sync, err error) {
	if len(b) != 20 {
		return s, fmt.Errorf("%w: SYNC body %d bytes, want 20", ErrBadBody, len(b))
	}
	return Sync{
		ConvID:   binary.BigEndian.Uint64(b),
		AfterSeq: binary.BigEndian.Uint64(b[8:]),
		Limit:    binary.BigEndian.Uint32(b[16:]),
	}, nil
}

// SyncDone is the body of the OpReply that ends a sync: the highest seq sent
// in this batch and whether more remain.
//
//	last_seq u64 | more u8
type SyncDone struct {
	LastSeq uint64
	More    bool
}

// AppendSyncDone appends the body of a sync's closing OpReply.
func AppendSyncDone(dst []byte, s SyncDone) []byte {
	dst = binary.BigEndian.AppendUint64(dst, s.LastSeq)
	if s.More {
		return append(dst, 1)
	}
	return append(dst, 0)
}

// ParseSyncDone parses a sync's closing OpReply body.
func ParseSyncDone(b []byte) (s SyncDone, err error) {
	if len(b) != 9 {
		return s, fmt.Errorf("%w: sync reply body %d bytes, want 9", ErrBadBody, len(b))
	}
	if b[8] > 1 {
		return s, fmt.Errorf("%w: sync reply more flag %d, want 0 or 1", ErrBadBody, b[8])
	}
	return SyncDone{LastSeq: binary.BigEndian.Uint64(b), More: b[8] == 1}, nil
}

// ErrorBody is the body of OpError and OpClose.
//
//	code u16 | message (UTF-8, rest of body)
type ErrorBody struct {
	Code    Code
	Message []byte
}

// AppendError appends an OpError or OpClose body.
func AppendError(dst []byte, code Code, msg string) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(code))
	return append(dst, msg...)
}

// ParseError parses an OpError or OpClose body.
func ParseError(b []byte) (e ErrorBody, err error) {
	if len(b) < 2 {
		return e, fmt.Errorf("%w: error body %d bytes", ErrBadBody, len(b))
	}
	return ErrorBody{Code: Code(binary.BigEndian.Uint16(b)), Message: b[2:]}, nil
}

// CheckName validates a room name or topic: 1..255 bytes, no control bytes.
func CheckName(name []byte) error {
	if len(name) == 0 || len(name) > MaxNameLen {
		return fmt.Errorf("%w: name length %d, want 1..%d", ErrBadBody, len(name), MaxNameLen)
	}
	for _, c := range name {
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("%w: control byte 0x%02x in name", ErrBadBody, c)
		}
	}
	return nil
}

func appendName(dst, name []byte) []byte {
	if len(name) > MaxNameLen {
		name = name[:MaxNameLen]
	}
	dst = append(dst, byte(len(name)))
	return append(dst, name...)
}

func parseName(b []byte) (name, rest []byte, err error) {
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return nil, nil, fmt.Errorf("%w: truncated name", ErrBadBody)
	}
	n := int(b[0])
	return b[1 : 1+n], b[1+n:], nil
}
