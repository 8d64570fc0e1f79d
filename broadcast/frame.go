package broadcast

import (
	"math/bits"
	"sync"
	"sync/atomic"

	"imgate/proto"
	"imgate/transport"
)

// headroom is reserved in front of every frame for the largest WebSocket
// header, so the WebSocket form is the same buffer starting a few bytes
// earlier: one encode serves every transport.
const headroom = 10

// Frame is one encoded message shared by all its recipients. Its bytes are
// immutable once it is handed to anyone; it goes back to its pool when the
// last reference is released.
type Frame struct {
	refs atomic.Int32
	buf  []byte // headroom + frame
	wsAt int    // start of the WebSocket form within buf

	// Fan-out bookkeeping for the latency metric (see Hub.publish).
	start   int64
	fanout  int32
	pending atomic.Int32
}

var _ transport.Frame = (*Frame)(nil)

// Wire returns the frame as a stream transport writes it, or wrapped in its
// WebSocket binary message header.
func (f *Frame) Wire(ws bool) []byte {
	if ws {
		return f.buf[f.wsAt:]
	}
	return f.buf[headroom:]
}

// Bytes is the bare imgate frame.
func (f *Frame) Bytes() []byte { return f.buf[headroom:] }

// Retain adds n references, one per recipient about to receive the frame.
func (f *Frame) Retain(n int) { f.refs.Add(int32(n)) }

// Release drops one reference.
func (f *Frame) Release() {
	switch n := f.refs.Add(-1); {
	case n == 0:
		putFrame(f)
	case n < 0:
		panic("broadcast: Frame released more often than retained")
	}
}

// NewFrame encodes a frame once. The caller holds the only reference.
func NewFrame(h proto.Header, body []byte) *Frame {
	f := getFrame(proto.HeaderSize + len(body))
	f.buf = proto.AppendFrame(f.buf, h, body)
	f.seal()
	return f
}

// NewPush encodes a PUSH frame once.
func NewPush(flags uint16, p proto.Push) *Frame {
	bodyLen := proto.PushOverhead + len(p.Topic) + len(p.Payload)
	f := getFrame(proto.HeaderSize + bodyLen)
	f.buf = proto.AppendHeader(f.buf, proto.Header{Op: proto.OpPush, Flags: flags}, bodyLen)
	f.buf = proto.AppendPush(f.buf, p)
	f.seal()
	return f
}

// seal writes the WebSocket header in front of the frame.
func (f *Frame) seal() {
	n := len(f.buf) - headroom
	hl := transport.WSHeaderSize(n)
	f.wsAt = headroom - hl
	transport.PutWSHeader(f.buf[f.wsAt:headroom], n)
}

// Frames are pooled by power-of-two buffer size.
const (
	minFrameShift = 7  // 128 B
	maxFrameShift = 20 // 1 MiB; larger frames are not pooled
)

var framePools [maxFrameShift + 1]sync.Pool

func getFrame(size int) *Frame {
	need := size + headroom
	c := bits.Len(uint(need - 1))
	if c < minFrameShift {
		c = minFrameShift
	}
	var f *Frame
	if c <= maxFrameShift {
		f, _ = framePools[c].Get().(*Frame)
	}
	if f == nil {
		f = &Frame{buf: make([]byte, headroom, max(need, 1<<min(c, maxFrameShift)))}
	}
	f.buf = f.buf[:headroom]
	f.refs.Store(1)
	f.start = 0
	return f
}

func putFrame(f *Frame) {
	c := bits.Len(uint(cap(f.buf))) - 1
	if c < minFrameShift || c > maxFrameShift || cap(f.buf) != 1<<c {
		return
	}
	framePools[c].Put(f)
}
