package transport

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"imgate/proto"
)

// recordSink collects what a codec delivers and replies.
type recordSink struct {
	frames   [][]byte
	replies  int
	finished bool
	opened   bool
}

func (r *recordSink) deliver(f proto.Frame) error {
	r.frames = append(r.frames, proto.AppendFrame(nil, f.Header, f.Body))
	return nil
}
func (r *recordSink) reply(Frame)    { r.replies++ }
func (r *recordSink) upgraded()      { r.opened = true }
func (r *recordSink) finish(f Frame) { r.finished = true }
func splitPoints(cut []byte, n int) []int {
	var pts []int
	for i, b := range cut {
		if p := (int(b) * (i + 1)) % (n + 1); p > 0 {
			pts = append(pts, p)
		}
	}
	return pts
}

// feedChunks feeds data to a fresh codec in chunks cut at the given points.
func feedChunks(data []byte, cuts []int, ws bool) (*recordSink, error) {
	sink := &recordSink{}
	d := &codec{sink: sink, maxFrame: 4096}
	if ws {
		d.ws = &wsState{path: "/ws"}
		d.ws.upgraded.Store(true) // frames only; the handshake has its own test
	}
	defer d.release()
	prev := 0
	for _, c := range append(cuts, len(data)) {
		if c < prev || c > len(data) {
			continue
		}
		// The loop's read buffer is reused between reads: feed a copy that
		// is scribbled over afterwards, so retained aliases would show.
		chunk := append([]byte(nil), data[prev:c]...)
		err := d.feed(chunk)
		for i := range chunk {
			chunk[i] = 0xEE
		}
		if err != nil {
			return sink, err
		}
		prev = c
	}
	return sink, nil
}

// FuzzStreamCodec: however a byte stream is split into reads, the codec
// delivers the same frames as decoding it in one piece, never panics, and
// never keeps a reference to a read buffer.
func FuzzStreamCodec(f *testing.F) {
	var stream []byte
	for i, op := range []proto.Op{proto.OpAuth, proto.OpHeartbeat, proto.OpJoin, proto.OpUplink, proto.OpAck} {
		stream = proto.AppendFrame(stream, proto.Header{Op: op, SVID: uint32(i), Seq: uint32(i + 1)}, bytes.Repeat([]byte{byte(i)}, i*7))
	}
	f.Add(stream, []byte{1, 2, 3})
	f.Add(stream, []byte{200, 17, 90, 5, 250})
	f.Add(binary.BigEndian.AppendUint32(nil, 1<<20), []byte{1})
	f.Add([]byte{0, 0, 0, 12, 1, 1}, []byte{2})
	f.Fuzz(func(t *testing.T, data, cut []byte) {
		whole, werr := feedChunks(data, nil, false)
		split, serr := feedChunks(data, splitPoints(cut, len(data)), false)
		if (werr == nil) != (serr == nil) {
			t.Fatalf("one piece: %v, split: %v", werr, serr)
		}
		if len(whole.frames) != len(split.frames) {
			t.Fatalf("one piece gave %d frames, split gave %d", len(whole.frames), len(split.frames))
		}
		for i := range whole.frames {
			if !bytes.Equal(whole.frames[i], split.frames[i]) {
				t.Fatalf("frame %d differs when split", i)
			}
		}
	})
}

// maskedFrame builds a client WebSocket frame.
func maskedFrame(op byte, fin bool, payload []byte, key [4]byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		out = append(out, 0x80|byte(n))
	case n <= 0xffff:
		out = append(out, 0x80|126)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
	default:
		out = append(out, 0x80|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	out = append(out, key[:]...)
	for i, c := range payload {
		out = append(out, c^key[i%4])
	}
	return out
}

// FuzzWebSocketCodec: the WebSocket frame parser never panics, gives the
// same result however the input is split, and never grows a buffer past
// the frame limit.
func FuzzWebSocketCodec(f *testing.F) {
	frame := proto.AppendFrame(nil, proto.Header{Op: proto.OpUplink, Seq: 1}, []byte("payload"))
	key := [4]byte{1, 2, 3, 4}
	f.Add(maskedFrame(wsOpBinary, true, frame, key), []byte{3})
	f.Add(append(maskedFrame(wsOpBinary, false, frame[:6], key), maskedFrame(wsOpCont, true, frame[6:], key)...), []byte{9, 1})
	f.Add(maskedFrame(wsOpPing, true, []byte("hi"), key), []byte{1})
	f.Add(maskedFrame(wsOpClose, true, []byte{3, 232}, key), []byte{})
	f.Add(maskedFrame(wsOpText, true, []byte("text"), key), []byte{2})
	f.Add([]byte{0x82, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, []byte{4})
	f.Add([]byte{0x82, 0x05, 'h', 'e', 'l', 'l', 'o'}, []byte{1})
	f.Fuzz(func(t *testing.T, data, cut []byte) {
		whole, werr := feedChunks(data, nil, true)
		split, serr := feedChunks(data, splitPoints(cut, len(data)), true)
		if (werr == nil) != (serr == nil) {
			t.Fatalf("one piece: %v, split: %v", werr, serr)
		}
		if werr == nil && !whole.finished && (len(whole.frames) != len(split.frames) || whole.replies != split.replies) {
			t.Fatalf("one piece: %d frames %d replies; split: %d frames %d replies",
				len(whole.frames), whole.replies, len(split.frames), split.replies)
		}
		for i := range min(len(whole.frames), len(split.frames)) {
			if !bytes.Equal(whole.frames[i], split.frames[i]) {
				t.Fatalf("frame %d differs when split", i)
			}
		}
	})
}

// FuzzKCPDatagram feeds arbitrary datagrams to a KCP listener's socket, as
// from a stranger: nothing may panic, and no input may open more sessions
// than datagrams or leave one past its window.
func FuzzKCPDatagram(f *testing.F) {
	env := func(typ byte, token uint64, body ...byte) []byte {
		b := make([]byte, kcpEnvelope, kcpEnvelope+len(body))
		b[0] = typ
		binary.BigEndian.PutUint64(b[1:], token)
		return append(b, body...)
	}
	push := make([]byte, 24+4) // conv 1, push sn 0 una 0, 4 bytes
	binary.LittleEndian.PutUint32(push, 1)
	push[4] = 81
	binary.LittleEndian.PutUint32(push[20:], 4)
	f.Add(env(kcpData, 7, push...))
	f.Add(env(kcpClose, 7, 0, 0, 0, 1, 0, 100))
	f.Add(env(kcpData, 0, push...))
	f.Add([]byte{0x11})
	e, err := NewEngine(Config{Loops: 1})
	if err != nil {
		f.Fatal(err)
	}
	defer e.Close()
	ln, err := e.Listen("kcp://127.0.0.1:0", &funcHandler{}, nil)
	if err != nil {
		f.Fatal(err)
	}
	l := ln.(*kcpListener)
	from := netip.MustParseAddrPort("127.0.0.1:9")
	f.Fuzz(func(t *testing.T, dgm []byte) {
		before := l.Sessions()
		l.sock.handle(bytes.Clone(dgm), from)
		if l.Sessions() > before+1 {
			t.Fatalf("one datagram opened %d sessions", l.Sessions()-before)
		}
		for _, p := range l.sock.peers() {
			p.(*kcpConn).end(ErrClosed)
		}
	})
}
