package proto

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// fuzzMaxFrame is the frame limit FuzzDecode decodes under. It is small so
// that oversize lengths are easy to reach and cut-point checks stay cheap.
const fuzzMaxFrame = 1024

// FuzzDecode feeds arbitrary bytes to Decode as a stream. It must never
// panic; every frame it returns must re-encode to exactly the bytes it
// consumed, every shorter prefix of those bytes must ask for more, and the
// body parsers must not panic on the body.
func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for len(b) > 0 {
			fr, n, err := Decode(b, fuzzMaxFrame)
			if len(b) >= lengthSize {
				size, serr := FrameSize(b[:lengthSize], fuzzMaxFrame)
				if serr != nil && (err != serr || n != 0) {
					t.Fatalf("FrameSize error %v but Decode = n %d, %v", serr, n, err)
				}
				if serr == nil && n != 0 && n != size {
					t.Fatalf("FrameSize %d but Decode consumed %d", size, n)
				}
			}
			if n == 0 {
				if err == nil && len(b) >= lengthSize {
					size, _ := FrameSize(b[:lengthSize], fuzzMaxFrame)
					if len(b) >= size {
						t.Fatalf("need more with %d of %d bytes", len(b), size)
					}
				}
				checkExact(t, b, fr, n, err)
				return
			}
			if n < HeaderSize || n > fuzzMaxFrame || n > len(b) {
				t.Fatalf("Decode consumed %d of %d bytes", n, len(b))
			}
			checkExact(t, b, fr, n, err)
			if err != nil {
				// A frame with a bad version or op is fatal: the stream stops.
				if err != ErrVersion && err != ErrUnknownOp {
					t.Fatalf("Decode error %v with n %d", err, n)
				}
				return
			}
			if re := AppendFrame(nil, fr.Header, fr.Body); !bytes.Equal(re, b[:n]) {
				t.Fatalf("re-encoded %x, consumed %x", re, b[:n])
			}
			// Every cut point of a whole frame asks for more.
			for cut := 0; cut < n; cut++ {
				if g, m, err := Decode(b[:cut], fuzzMaxFrame); m != 0 || err != nil || g.Body != nil {
					t.Fatalf("cut %d of %d: n %d, %v", cut, n, m, err)
				}
			}
			parseBody(t, fr.Op, fr.Body)
			b = b[n:]
		}
	})
}

// checkExact checks that DecodeExact accepts b exactly when Decode consumed
// all of it without error.
func checkExact(t *testing.T, b []byte, fr Frame, n int, err error) {
	t.Helper()
	g, xerr := DecodeExact(b, fuzzMaxFrame)
	whole := err == nil && n == len(b) && n > 0
	if whole != (xerr == nil) {
		t.Fatalf("DecodeExact error %v, Decode n %d of %d, %v", xerr, n, len(b), err)
	}
	if whole && (g.Header != fr.Header || !bytes.Equal(g.Body, fr.Body)) {
		t.Fatalf("DecodeExact %+v, Decode %+v", g, fr)
	}
	if xerr != nil && CodeOf(xerr) == 0 {
		t.Fatalf("DecodeExact error %v maps to code 0", xerr)
	}
}

// parseBody runs the body parser for op and checks that what parses
// re-encodes to the same bytes.
func parseBody(t *testing.T, op Op, body []byte) {
	t.Helper()
	switch op {
	case OpAuthOK:
		if a, err := ParseAuthOK(body); err == nil {
			mustEqual(t, "AuthOK", AppendAuthOK(nil, a), body)
		}
	case OpJoin, OpLeave:
		_ = CheckName(body)
	case OpError, OpClose:
		if e, err := ParseError(body); err == nil {
			mustEqual(t, "Error", AppendError(nil, e.Code, string(e.Message)), body)
			_ = e.Code.String()
			_ = e.Code.Fatal()
		}
	case OpPush:
		if p, err := ParsePush(body); err == nil {
			mustEqual(t, "Push", AppendPush(nil, p), body)
		}
	case OpAck:
		if a, err := ParseAck(body); err == nil {
			mustEqual(t, "Ack", AppendAck(nil, a), body)
		}
	case OpSync:
		if s, err := ParseSync(body); err == nil {
			mustEqual(t, "Sync", AppendSync(nil, s), body)
		}
	case OpReply:
		if s, err := ParseSyncDone(body); err == nil {
			mustEqual(t, "SyncDone", AppendSyncDone(nil, s), body)
		}
	}
}

func mustEqual(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s re-encoded %x, parsed from %x", what, got, want)
	}
}

// FuzzParseBodies runs every body parser on arbitrary bytes: none may panic,
// and whatever parses must re-encode to the same bytes.
func FuzzParseBodies(f *testing.F) {
	for _, op := range allOps {
		f.Add(sampleBody(op))
	}
	f.Add(AppendSyncDone(nil, SyncDone{LastSeq: 7, More: true}))
	f.Add(AppendPush(nil, Push{Topic: bytes.Repeat([]byte("t"), MaxNameLen)}))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, op := range allOps {
			parseBody(t, op, body)
		}
	})
}

// A seed is one file of the FuzzDecode seed corpus.
type seed struct {
	name string
	data []byte
}

// fuzzSeeds builds the FuzzDecode seed corpus: one well-formed frame per op
// and the edge cases of the decoder.
func fuzzSeeds() []seed {
	var seeds []seed
	add := func(name string, b []byte) { seeds = append(seeds, seed{name, b}) }
	for _, op := range allOps {
		h := Header{Op: op, Seq: 1}
		switch op {
		case OpUplink, OpReply:
			h.SVID = 7
		case OpPush:
			h.Flags = FlagRoom
		}
		add(fmt.Sprintf("op-%02x-%s", uint8(op), op), AppendFrame(nil, h, sampleBody(op)))
	}
	push := AppendFrame(nil, Header{Op: OpPush, Flags: FlagRoom | FlagResend}, sampleBody(OpPush))
	join := AppendFrame(nil, Header{Op: OpJoin, Seq: 1}, []byte("lobby"))
	hb := AppendFrame(nil, Header{Op: OpHeartbeat}, nil)
	syncDone := AppendFrame(nil, Header{Op: OpReply, Seq: 3}, AppendSyncDone(nil, SyncDone{LastSeq: 7}))
	add("reply-syncdone", syncDone)
	add("stream-three-frames", append(append(append([]byte{}, hb...), join...), push...))
	add("truncated-header", join[:9])
	add("truncated-body", join[:len(join)-2])
	add("truncated-second-frame", append(append([]byte{}, hb...), join[:len(join)-1]...))
	add("length-prefix-only", join[:4])
	add("oversize-length", binary.BigEndian.AppendUint32(nil, fuzzMaxFrame))
	add("oversize-length-max-u32", append([]byte{0xff, 0xff, 0xff, 0xff}, hb[4:]...))
	add("short-length-11", append(binary.BigEndian.AppendUint32(nil, 11), hb[4:]...))
	add("short-length-0", []byte{0, 0, 0, 0})
	badVersion := append([]byte{}, join...)
	badVersion[4] = 2
	add("bad-version", badVersion)
	unknownOp := append([]byte{}, hb...)
	unknownOp[5] = 0x0e
	add("unknown-op", unknownOp)
	opZero := append([]byte{}, hb...)
	opZero[5] = 0
	add("op-zero", opZero)
	add("bad-push-body", AppendFrame(nil, Header{Op: OpPush}, []byte{0, 0, 0, 0, 0, 0, 0, 42, 0, 0, 0, 0, 0, 0, 0, 7, 9, 'l'}))
	add("bad-authok-trailing", AppendFrame(nil, Header{Op: OpAuthOK}, append(sampleBody(OpAuthOK), 0)))
	add("max-size-frame", AppendFrame(nil, Header{Op: OpUplink, SVID: 7, Seq: 2}, make([]byte, fuzzMaxFrame-HeaderSize)))
	return seeds
}

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/FuzzDecode from fuzzSeeds")

// TestFuzzCorpus checks that the committed FuzzDecode seed corpus holds every
// seed of fuzzSeeds; with -update-corpus it writes the files.
func TestFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	for _, s := range fuzzSeeds() {
		want := []byte("go test fuzz v1\n[]byte(" + strconv.Quote(string(s.data)) + ")\n")
		path := filepath.Join(dir, s.name)
		if *updateCorpus {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("seed %s: %v (run go test ./proto -run TestFuzzCorpus -update-corpus)", s.name, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("seed %s differs from fuzzSeeds (run go test ./proto -run TestFuzzCorpus -update-corpus)", s.name)
		}
	}
}
