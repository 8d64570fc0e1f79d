package proto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// allOps lists every op of this version.
var allOps = []Op{
	OpAuth, OpAuthOK, OpHeartbeat, OpPong, OpJoin, OpLeave, OpUplink,
	OpReply, OpError, OpPush, OpAck, OpSync, OpClose,
}

// sampleBody returns a well-formed body for op.
func sampleBody(op Op) []byte {
	switch op {
	case OpAuth:
		return []byte("eyJhbGciOiJIUzI1NiJ9.e30.sig")
	case OpAuthOK:
		return AppendAuthOK(nil, AuthOK{ConnID: 1234, HeartbeatMS: 30000, MaxFrame: DefaultMaxFrame, NodeID: []byte("gw-1")})
	case OpHeartbeat:
		return nil
	case OpPong:
		return binary.BigEndian.AppendUint64(nil, 1767225600000)
	case OpJoin, OpLeave:
		return []byte("lobby")
	case OpUplink, OpReply:
		return []byte("hi")
	case OpError, OpClose:
		return AppendError(nil, CodeNoHandler, "no backend for svid 7")
	case OpPush:
		return AppendPush(nil, Push{ConvID: 42, Seq: 7, Topic: []byte("lobby"), Payload: []byte("hello")})
	case OpAck:
		return AppendAck(nil, Ack{ConvID: 42, Seq: 7})
	case OpSync:
		return AppendSync(nil, Sync{ConvID: 42, AfterSeq: 5, Limit: 100})
	}
	panic("no sample for " + op.String())
}

func TestFrameRoundTrip(t *testing.T) {
	for _, op := range allOps {
		for _, h := range []Header{
			{Op: op},
			{Op: op, Flags: FlagRoom | FlagResend, SVID: 7, Seq: 2},
			{Op: op, Flags: 0xffff, SVID: 0xffffffff, Seq: 0xffffffff},
		} {
			t.Run(fmt.Sprintf("%v/%04x/%d/%d", op, h.Flags, h.SVID, h.Seq), func(t *testing.T) {
				body := sampleBody(op)
				b := AppendFrame(nil, h, body)
				if len(b) != HeaderSize+len(body) {
					t.Fatalf("frame is %d bytes, want %d", len(b), HeaderSize+len(body))
				}
				if l := binary.BigEndian.Uint32(b); int(l) != 12+len(body) {
					t.Fatalf("length field %d, want %d", l, 12+len(body))
				}
				if b[4] != Version || b[5] != byte(op) {
					t.Fatalf("version/op bytes %02x %02x", b[4], b[5])
				}
				// Trailing bytes of the next frame must not be consumed.
				stream := append(append([]byte{}, b...), 0, 0, 0)
				f, n, err := Decode(stream, DefaultMaxFrame)
				if err != nil || n != len(b) {
					t.Fatalf("Decode: n=%d err=%v, want n=%d", n, err, len(b))
				}
				if f.Header != h || !bytes.Equal(f.Body, body) {
					t.Fatalf("Decode = %+v body %q, want %+v body %q", f.Header, f.Body, h, body)
				}
				if len(body) > 0 && &f.Body[0] != &stream[HeaderSize] {
					t.Fatal("Body does not alias the input")
				}
				g, err := DecodeExact(b, DefaultMaxFrame)
				if err != nil || g.Header != h || !bytes.Equal(g.Body, body) {
					t.Fatalf("DecodeExact = %+v, %v", g, err)
				}
				// AppendHeader + body bytes is the same as AppendFrame.
				hb := append(AppendHeader([]byte("xx"), h, len(body)), body...)
				if !bytes.Equal(hb[2:], b) || string(hb[:2]) != "xx" {
					t.Fatalf("AppendHeader+body = %x, want xx%x", hb, b)
				}
			})
		}
	}
}

func TestStreamOfFrames(t *testing.T) {
	var stream []byte
	for i, op := range allOps {
		stream = AppendFrame(stream, Header{Op: op, Seq: uint32(i)}, sampleBody(op))
	}
	for i, op := range allOps {
		f, n, err := Decode(stream, DefaultMaxFrame)
		if err != nil || n == 0 {
			t.Fatalf("frame %d: n=%d err=%v", i, n, err)
		}
		if f.Op != op || f.Seq != uint32(i) || !bytes.Equal(f.Body, sampleBody(op)) {
			t.Fatalf("frame %d = %+v", i, f)
		}
		stream = stream[n:]
	}
	if len(stream) != 0 {
		t.Fatalf("%d bytes left", len(stream))
	}
}

func TestBodyRoundTrip(t *testing.T) {
	long := bytes.Repeat([]byte("n"), MaxNameLen)
	t.Run("AuthOK", func(t *testing.T) {
		for _, a := range []AuthOK{
			{},
			{ConnID: 1234, HeartbeatMS: 30000, MaxFrame: DefaultMaxFrame, NodeID: []byte("gw-1")},
			{ConnID: ^uint64(0), HeartbeatMS: ^uint32(0), MaxFrame: MaxFrameLimit, NodeID: long},
		} {
			b := AppendAuthOK(nil, a)
			if len(b) != 17+len(a.NodeID) {
				t.Fatalf("AuthOK body %d bytes", len(b))
			}
			got, err := ParseAuthOK(b)
			if err != nil || got.ConnID != a.ConnID || got.HeartbeatMS != a.HeartbeatMS ||
				got.MaxFrame != a.MaxFrame || !bytes.Equal(got.NodeID, a.NodeID) {
				t.Fatalf("ParseAuthOK = %+v, %v; want %+v", got, err, a)
			}
		}
	})
	t.Run("Push", func(t *testing.T) {
		for _, p := range []Push{
			{},
			{ConvID: 42, Seq: 7, Topic: []byte("lobby"), Payload: []byte("hello")},
			{Payload: []byte("unicast, no topic")},
			{ConvID: ^uint64(0), Seq: ^uint64(0), Topic: long, Payload: bytes.Repeat([]byte{0}, 1000)},
		} {
			b := AppendPush(nil, p)
			if len(b) != PushOverhead+len(p.Topic)+len(p.Payload) {
				t.Fatalf("Push body %d bytes", len(b))
			}
			got, err := ParsePush(b)
			if err != nil || got.ConvID != p.ConvID || got.Seq != p.Seq ||
				!bytes.Equal(got.Topic, p.Topic) || !bytes.Equal(got.Payload, p.Payload) {
				t.Fatalf("ParsePush = %+v, %v; want %+v", got, err, p)
			}
		}
	})
	t.Run("Ack", func(t *testing.T) {
		for _, a := range []Ack{{}, {ConvID: 42, Seq: 7}, {ConvID: ^uint64(0), Seq: ^uint64(0)}} {
			got, err := ParseAck(AppendAck(nil, a))
			if err != nil || got != a {
				t.Fatalf("ParseAck = %+v, %v; want %+v", got, err, a)
			}
		}
	})
	t.Run("Sync", func(t *testing.T) {
		for _, s := range []Sync{{}, {ConvID: 42, AfterSeq: 5, Limit: 100}, {^uint64(0), ^uint64(0), ^uint32(0)}} {
			got, err := ParseSync(AppendSync(nil, s))
			if err != nil || got != s {
				t.Fatalf("ParseSync = %+v, %v; want %+v", got, err, s)
			}
		}
	})
	t.Run("SyncDone", func(t *testing.T) {
		for _, s := range []SyncDone{{}, {LastSeq: 7}, {LastSeq: ^uint64(0), More: true}} {
			b := AppendSyncDone(nil, s)
			got, err := ParseSyncDone(b)
			if err != nil || got != s {
				t.Fatalf("ParseSyncDone = %+v, %v; want %+v", got, err, s)
			}
		}
	})
	t.Run("ErrorBody", func(t *testing.T) {
		for _, c := range []struct {
			code Code
			msg  string
		}{{CodeNoHandler, "no backend"}, {CodeReplaced, ""}, {Code(0xffff), "x"}} {
			got, err := ParseError(AppendError(nil, c.code, c.msg))
			if err != nil || got.Code != c.code || string(got.Message) != c.msg {
				t.Fatalf("ParseError = %+v, %v; want %v %q", got, err, c.code, c.msg)
			}
		}
	})
}

func TestAppendNameTruncates(t *testing.T) {
	p, err := ParsePush(AppendPush(nil, Push{Topic: bytes.Repeat([]byte("t"), 300), Payload: []byte("p")}))
	if err != nil || len(p.Topic) != MaxNameLen || string(p.Payload) != "p" {
		t.Fatalf("ParsePush = topic %d bytes, payload %q, %v", len(p.Topic), p.Payload, err)
	}
}

func TestBadBodies(t *testing.T) {
	authOK := sampleBody(OpAuthOK)
	push := sampleBody(OpPush)
	parsers := map[string]func([]byte) error{
		"AuthOK":   func(b []byte) error { _, err := ParseAuthOK(b); return err },
		"Push":     func(b []byte) error { _, err := ParsePush(b); return err },
		"Ack":      func(b []byte) error { _, err := ParseAck(b); return err },
		"Sync":     func(b []byte) error { _, err := ParseSync(b); return err },
		"SyncDone": func(b []byte) error { _, err := ParseSyncDone(b); return err },
		"Error":    func(b []byte) error { _, err := ParseError(b); return err },
	}
	for _, c := range []struct {
		parser string
		body   []byte
	}{
		{"AuthOK", nil},
		{"AuthOK", authOK[:16]},
		{"AuthOK", authOK[:len(authOK)-1]}, // node id truncated
		{"AuthOK", append(append([]byte{}, authOK...), 0)},
		{"Push", nil},
		{"Push", push[:16]},
		{"Push", push[:16+1+4]}, // topic truncated
		{"Ack", make([]byte, 15)},
		{"Ack", make([]byte, 17)},
		{"Sync", make([]byte, 19)},
		{"Sync", make([]byte, 21)},
		{"SyncDone", make([]byte, 8)},
		{"SyncDone", make([]byte, 10)},
		{"SyncDone", []byte{0, 0, 0, 0, 0, 0, 0, 0, 2}},
		{"Error", nil},
		{"Error", []byte{0}},
	} {
		err := parsers[c.parser](c.body)
		if !errors.Is(err, ErrBadBody) {
			t.Errorf("%s(%x) error %v, want ErrBadBody", c.parser, c.body, err)
		}
		if CodeOf(err) != CodeBadRequest {
			t.Errorf("%s(%x): CodeOf = %v, want BAD_REQUEST", c.parser, c.body, CodeOf(err))
		}
	}
}

func TestPartialInput(t *testing.T) {
	for _, op := range allOps {
		b := AppendFrame(nil, Header{Op: op, SVID: 3, Seq: 9}, sampleBody(op))
		for cut := 0; cut < len(b); cut++ {
			f, n, err := Decode(b[:cut], DefaultMaxFrame)
			if n != 0 || err != nil || f.Op != 0 || f.Body != nil {
				t.Fatalf("%v cut at %d/%d: n=%d err=%v f=%+v", op, cut, len(b), n, err, f)
			}
			if _, err := DecodeExact(b[:cut], DefaultMaxFrame); CodeOf(err) != CodeBadFrame {
				t.Fatalf("%v DecodeExact cut at %d/%d: err=%v code %v, want BAD_FRAME", op, cut, len(b), err, CodeOf(err))
			}
		}
		if _, n, err := Decode(b, DefaultMaxFrame); n != len(b) || err != nil {
			t.Fatalf("%v whole: n=%d err=%v", op, n, err)
		}
	}
}

func TestLengthBounds(t *testing.T) {
	prefix := func(l uint32) []byte { return binary.BigEndian.AppendUint32(nil, l) }
	for _, c := range []struct {
		name     string
		length   uint32
		maxFrame int
		want     error
		size     int
	}{
		{"zero", 0, DefaultMaxFrame, ErrShortLength, 0},
		{"eleven", 11, DefaultMaxFrame, ErrShortLength, 0},
		{"header only", 12, DefaultMaxFrame, nil, 16},
		{"exactly max", DefaultMaxFrame - 4, DefaultMaxFrame, nil, DefaultMaxFrame},
		{"max plus one", DefaultMaxFrame - 3, DefaultMaxFrame, ErrTooLarge, 0},
		{"huge", 0xffffffff, DefaultMaxFrame, ErrTooLarge, 0},
		{"huge, no max", 0xffffffff, 0, ErrTooLarge, 0},
		{"ceiling, no max", MaxFrameLimit - 4, 0, nil, MaxFrameLimit},
		{"over ceiling, no max", MaxFrameLimit - 3, 0, ErrTooLarge, 0},
		{"over ceiling, negative max", MaxFrameLimit - 3, -1, ErrTooLarge, 0},
		{"max above ceiling is clamped", MaxFrameLimit - 3, 2 * MaxFrameLimit, ErrTooLarge, 0},
		{"tiny max", 12, 15, ErrTooLarge, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			size, err := FrameSize(prefix(c.length), c.maxFrame)
			if err != c.want || size != c.size {
				t.Fatalf("FrameSize = %d, %v; want %d, %v", size, err, c.size, c.want)
			}
			// Decode decides from the 4-byte prefix alone: nothing else is
			// needed to reject a frame, and nothing is buffered.
			f, n, err := Decode(prefix(c.length), c.maxFrame)
			switch {
			case c.want != nil && (err != c.want || n != 0 || f.Body != nil):
				t.Fatalf("Decode(prefix) = n %d, %v; want 0, %v", n, err, c.want)
			case c.want == nil && (err != nil || n != 0):
				t.Fatalf("Decode(prefix) = n %d, %v; want 0, nil (need more)", n, err)
			}
		})
	}
	if got := CodeOf(ErrTooLarge); got != CodeFrameTooLarge {
		t.Errorf("CodeOf(ErrTooLarge) = %v", got)
	}
	if got := CodeOf(ErrShortLength); got != CodeBadFrame {
		t.Errorf("CodeOf(ErrShortLength) = %v", got)
	}
}

func TestHeaderErrors(t *testing.T) {
	good := AppendFrame(nil, Header{Op: OpHeartbeat, Seq: 1}, nil)
	mod := func(i int, v byte) []byte {
		b := append([]byte{}, good...)
		b[i] = v
		return b
	}
	for _, c := range []struct {
		name string
		b    []byte
		want error
		code Code
	}{
		{"version 0", mod(4, 0), ErrVersion, CodeBadVersion},
		{"version 2", mod(4, 2), ErrVersion, CodeBadVersion},
		{"version 0xff", mod(4, 0xff), ErrVersion, CodeBadVersion},
		{"op 0", mod(5, 0), ErrUnknownOp, CodeUnknownOp},
		{"op 0x0e", mod(5, 0x0e), ErrUnknownOp, CodeUnknownOp},
		{"op 0xff", mod(5, 0xff), ErrUnknownOp, CodeUnknownOp},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, n, err := Decode(c.b, DefaultMaxFrame)
			if err != c.want || n != len(c.b) {
				t.Fatalf("Decode = n %d, %v; want %d, %v", n, err, len(c.b), c.want)
			}
			if _, err := DecodeExact(c.b, DefaultMaxFrame); err != c.want {
				t.Fatalf("DecodeExact = %v, want %v", err, c.want)
			}
			if got := CodeOf(err); got != c.code || !got.Fatal() {
				t.Fatalf("CodeOf = %v (fatal %v), want fatal %v", got, got.Fatal(), c.code)
			}
		})
	}
	// The version is checked before the op.
	b := mod(4, 9)
	b[5] = 0xff
	if _, _, err := Decode(b, DefaultMaxFrame); err != ErrVersion {
		t.Fatalf("bad version and op: %v, want ErrVersion", err)
	}
}

func TestDecodeExactMismatch(t *testing.T) {
	frame := AppendFrame(nil, Header{Op: OpJoin, Seq: 1}, []byte("lobby"))
	for _, c := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"length prefix only", frame[:4]},
		{"short by one", frame[:len(frame)-1]},
		{"one trailing byte", append(append([]byte{}, frame...), 0)},
		{"two frames", append(append([]byte{}, frame...), frame...)},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, err := DecodeExact(c.b, DefaultMaxFrame)
			if err == nil {
				t.Fatalf("DecodeExact(%x) = %+v, nil error", c.b, f)
			}
			if errors.Is(err, ErrBadBody) {
				t.Fatalf("mismatch wraps ErrBadBody (non-fatal BAD_REQUEST): %v", err)
			}
			if code := CodeOf(err); code != CodeBadFrame || !code.Fatal() {
				t.Fatalf("CodeOf(%v) = %v, want BAD_FRAME", err, code)
			}
			if f.Op != 0 || f.Body != nil {
				t.Fatalf("frame returned with error: %+v", f)
			}
		})
	}
	// Length bounds are still checked before the size comparison.
	big := binary.BigEndian.AppendUint32(nil, 1<<20)
	if _, err := DecodeExact(big, DefaultMaxFrame); err != ErrTooLarge {
		t.Fatalf("oversize message: %v, want ErrTooLarge", err)
	}
	short := binary.BigEndian.AppendUint32(nil, 4)
	if _, err := DecodeExact(short, DefaultMaxFrame); err != ErrShortLength {
		t.Fatalf("short length message: %v, want ErrShortLength", err)
	}
}

func TestCheckName(t *testing.T) {
	for _, c := range []struct {
		name string
		ok   bool
	}{
		{"", false},
		{"a", true},
		{"lobby", true},
		{"room:42/général", true},
		{"with space", true},
		{"~", true},
		{strings.Repeat("x", MaxNameLen), true},
		{strings.Repeat("x", MaxNameLen+1), false},
		{"nul\x00", false},
		{"\x1f", false},
		{"tab\t", false},
		{"new\nline", false},
		{"del\x7f", false},
		{"\x80\xff", true}, // bytes >= 0x80 are not control bytes here
	} {
		err := CheckName([]byte(c.name))
		if (err == nil) != c.ok {
			t.Errorf("CheckName(%q) = %v, want ok=%v", c.name, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrBadBody) {
			t.Errorf("CheckName(%q) error %v does not wrap ErrBadBody", c.name, err)
		}
	}
}

func TestCodeOf(t *testing.T) {
	wrapped := fmt.Errorf("read: %w", Errorf(CodeRoomLimit, "max %d rooms", 64))
	for _, c := range []struct {
		name string
		err  error
		want Code
	}{
		{"nil", nil, 0},
		{"too large", ErrTooLarge, CodeFrameTooLarge},
		{"wrapped too large", fmt.Errorf("x: %w", ErrTooLarge), CodeFrameTooLarge},
		{"short length", ErrShortLength, CodeBadFrame},
		{"version", ErrVersion, CodeBadVersion},
		{"unknown op", ErrUnknownOp, CodeUnknownOp},
		{"bad body", ErrBadBody, CodeBadRequest},
		{"wrapped bad body", fmt.Errorf("%w: x", ErrBadBody), CodeBadRequest},
		{"*Error", Errorf(CodeNoHandler, "svid %d", 7), CodeNoHandler},
		{"wrapped *Error", wrapped, CodeRoomLimit},
		{"other", errors.New("boom"), CodeBadFrame},
	} {
		if got := CodeOf(c.err); got != c.want {
			t.Errorf("%s: CodeOf(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}

func TestCodes(t *testing.T) {
	fatal := map[Code]bool{
		CodeBadFrame: true, CodeFrameTooLarge: true, CodeUnknownOp: true, CodeBadVersion: true,
		CodeNotAuthed: true, CodeAuthFailed: true, CodeTokenExpired: true, CodeAuthTimeout: true,
		CodeAlreadyAuthed: false, CodeNoHandler: false, CodeTimeout: false, CodeBackendError: false,
		CodeRoomLimit: false, CodeRoomForbidden: false, CodeBadRequest: false, CodeRateLimited: false,
		CodeInternal: false, CodeUnsupported: false, CodeNotInRoom: false, CodeClientDirection: true, CodeTooEarly: false,
		CodeNormal: true, CodeKicked: true, CodeReplaced: true, CodeHeartbeatTimeout: true,
		CodeSlowConsumer: true, CodeTooManyConns: true, CodeShutdown: true, CodeProtocolError: true,
	}
	if len(fatal) != len(codeNames) {
		t.Fatalf("test knows %d codes, codeNames has %d", len(fatal), len(codeNames))
	}
	for c, want := range fatal {
		if c.Fatal() != want {
			t.Errorf("%v.Fatal() = %v, want %v", c, c.Fatal(), want)
		}
		if strings.HasPrefix(c.String(), "CODE(") {
			t.Errorf("code %d has no name", uint16(c))
		}
	}
	if s := Code(999).String(); s != "CODE(999)" {
		t.Errorf("Code(999) = %q", s)
	}
	if e := Errorf(CodeTimeout, "svid %d", 7); e.Error() != "TIMEOUT: svid 7" {
		t.Errorf("Error() = %q", e.Error())
	}
}

func TestOpString(t *testing.T) {
	want := []string{"AUTH", "AUTH_OK", "HEARTBEAT", "PONG", "JOIN", "LEAVE", "UPLINK",
		"REPLY", "ERROR", "PUSH", "ACK", "SYNC", "CLOSE"}
	for i, op := range allOps {
		if op.String() != want[i] || !op.Known() || op != Op(i+1) {
			t.Errorf("op %d: %q known=%v", uint8(op), op.String(), op.Known())
		}
	}
	for _, op := range []Op{0, 0x0e, 0x7f, 0xff} {
		if op.Known() || op.String() != fmt.Sprintf("OP(0x%02x)", uint8(op)) {
			t.Errorf("op %d: %q known=%v", uint8(op), op.String(), op.Known())
		}
	}
}

func TestZeroAllocs(t *testing.T) {
	push := Push{ConvID: 42, Seq: 7, Topic: []byte("lobby"), Payload: bytes.Repeat([]byte("x"), 512)}
	frame := AppendHeader(nil, Header{Op: OpPush, Flags: FlagRoom}, PushOverhead+len(push.Topic)+len(push.Payload))
	frame = AppendPush(frame, push)
	stream := append(append([]byte{}, frame...), frame[:7]...) // a whole frame and part of the next
	buf := make([]byte, 0, 2*len(frame))
	var sink int

	for _, c := range []struct {
		name string
		fn   func()
	}{
		{"Decode", func() {
			f, n, err := Decode(stream, DefaultMaxFrame)
			if err != nil || n != len(frame) {
				panic("decode failed")
			}
			_, n2, _ := Decode(stream[n:], DefaultMaxFrame) // partial: need more
			sink += len(f.Body) + n2
		}},
		{"DecodeExact", func() {
			f, err := DecodeExact(frame, DefaultMaxFrame)
			if err != nil {
				panic("decode failed")
			}
			sink += len(f.Body)
		}},
		{"ParsePush", func() {
			p, err := ParsePush(frame[HeaderSize:])
			if err != nil {
				panic("parse failed")
			}
			sink += len(p.Payload)
		}},
		{"AppendFrame", func() {
			buf = AppendFrame(buf[:0], Header{Op: OpReply, SVID: 7, Seq: 2}, push.Payload)
		}},
		{"AppendHeader+AppendPush", func() {
			b := AppendHeader(buf[:0], Header{Op: OpPush, Flags: FlagRoom}, PushOverhead+len(push.Topic)+len(push.Payload))
			buf = AppendPush(b, push)
		}},
		{"AppendError", func() {
			buf = AppendFrame(buf[:0], Header{Op: OpError, Seq: 2}, nil)
			buf = AppendError(buf, CodeNoHandler, "no backend")
		}},
	} {
		if allocs := testing.AllocsPerRun(100, c.fn); allocs != 0 {
			t.Errorf("%s allocates %v times per run, want 0", c.name, allocs)
		}
	}
	if !bytes.Equal(AppendPush(AppendHeader(nil, Header{Op: OpPush, Flags: FlagRoom}, PushOverhead+len(push.Topic)+len(push.Payload)), push), frame) {
		t.Fatal("frames differ")
	}
	_ = sink
}

func BenchmarkDecode(b *testing.B) {
	frame := AppendFrame(nil, Header{Op: OpPush, Flags: FlagRoom},
		AppendPush(nil, Push{ConvID: 42, Seq: 7, Topic: []byte("lobby"), Payload: bytes.Repeat([]byte("x"), 256)}))
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		f, n, err := Decode(frame, DefaultMaxFrame)
		if err != nil || n != len(frame) || f.Op != OpPush {
			b.Fatal("decode failed")
		}
	}
}

func BenchmarkAppendPush(b *testing.B) {
	p := Push{ConvID: 42, Seq: 7, Topic: []byte("lobby"), Payload: bytes.Repeat([]byte("x"), 256)}
	bodyLen := PushOverhead + len(p.Topic) + len(p.Payload)
	buf := make([]byte, 0, HeaderSize+bodyLen)
	b.SetBytes(int64(HeaderSize + bodyLen))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendHeader(buf[:0], Header{Op: OpPush, Flags: FlagRoom}, bodyLen)
		buf = AppendPush(buf, p)
	}
	if len(buf) != HeaderSize+bodyLen {
		b.Fatal("wrong size")
	}
}
