package client

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"testing/iotest"

	"github.com/gobwas/ws"

	"imgate/proto"
)

// rwc is a read-only stream for framing tests.
type rwc struct{ io.Reader }

func (rwc) Write(p []byte) (int, error) { return len(p), nil }
func (rwc) Close() error                { return nil }

func TestStreamConnFraming(t *testing.T) {
	sizes := []int{0, 1, 100, readBufSize, 3 * readBufSize, 7, proto.DefaultMaxFrame - proto.HeaderSize}
	var stream []byte
	for i, n := range sizes {
		stream = proto.AppendFrame(stream, proto.Header{Op: proto.OpReply, Seq: uint32(i + 1)}, bytes.Repeat([]byte{byte(i)}, n))
	}
	for _, tc := range []struct {
		name string
		r    io.Reader
	}{
		{"whole", bytes.NewReader(stream)},
		{"one byte at a time", iotest.OneByteReader(bytes.NewReader(stream))},
		{"half reads", iotest.HalfReader(bytes.NewReader(stream))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newStreamConn(rwc{tc.r})
			for i, n := range sizes {
				f, err := c.ReadFrame()
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if f.Seq != uint32(i+1) || len(f.Body) != n || (n > 0 && f.Body[n-1] != byte(i)) {
					t.Fatalf("frame %d: seq %d, %d body bytes; want seq %d, %d bytes", i, f.Seq, len(f.Body), i+1, n)
				}
			}
			if _, err := c.ReadFrame(); err != io.EOF {
				t.Fatalf("after last frame: %v, want io.EOF", err)
			}
		})
	}
}

func TestStreamConnErrors(t *testing.T) {
	frame := proto.AppendFrame(nil, proto.Header{Op: proto.OpPush}, make([]byte, 100))
	c := newStreamConn(rwc{bytes.NewReader(frame[:50])})
	if _, err := c.ReadFrame(); err != io.ErrUnexpectedEOF {
		t.Errorf("truncated frame: %v, want io.ErrUnexpectedEOF", err)
	}
	c = newStreamConn(rwc{bytes.NewReader(frame)})
	c.SetLimits(64, 0)
	if _, err := c.ReadFrame(); !errors.Is(err, proto.ErrTooLarge) {
		t.Errorf("oversize frame: %v, want proto.ErrTooLarge", err)
	}
}

func TestAppendWSHeaderMatchesGobwas(t *testing.T) {
	for _, n := range []int64{0, 125, 126, 65535, 65536, 1 << 20} {
		h := ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: [4]byte{1, 2, 3, 4}, Length: n}
		var want bytes.Buffer
		if err := ws.WriteHeader(&want, h); err != nil {
			t.Fatal(err)
		}
		if got := appendWSHeader(nil, h); !bytes.Equal(got, want.Bytes()) {
			t.Errorf("length %d: header %x, want %x", n, got, want.Bytes())
		}
	}
}

// repeatReader serves the same bytes forever.
type repeatReader struct {
	b   []byte
	off int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.b[r.off:])
		n += c
		r.off = (r.off + c) % len(r.b)
	}
	return n, nil
}

func pushStream() []byte {
	var b []byte
	for i := range 64 {
		body := proto.AppendPush(nil, proto.Push{ConvID: 1, Seq: uint64(i), Topic: []byte("lobby"), Payload: make([]byte, 40+i)})
		b = proto.AppendFrame(b, proto.Header{Op: proto.OpPush, Flags: proto.FlagRoom}, body)
	}
	return b
}

// Reading frames off a stream is the client's hot path: it must not allocate.
func TestStreamReadFrameDoesNotAllocate(t *testing.T) {
	c := newStreamConn(rwc{&repeatReader{b: pushStream()}})
	allocs := testing.AllocsPerRun(1000, func() {
		f, err := c.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := proto.ParsePush(f.Body); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("ReadFrame+ParsePush: %v allocations per frame, want 0", allocs)
	}
}

func BenchmarkStreamReadPush(b *testing.B) {
	c := newStreamConn(rwc{&repeatReader{b: pushStream()}})
	b.ReportAllocs()
	for b.Loop() {
		f, err := c.ReadFrame()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := proto.ParsePush(f.Body); err != nil {
			b.Fatal(err)
		}
	}
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestWSConnFragmentsAndPings(t *testing.T) {
	cc, sc := tcpPair(t)
	frame := proto.AppendFrame(nil, proto.Header{Op: proto.OpPush, Seq: 9}, bytes.Repeat([]byte("x"), 3000))
	// A ping before the message and another between its two fragments.
	for _, f := range []ws.Frame{
		ws.NewPingFrame([]byte("p1")),
		{Header: ws.Header{OpCode: ws.OpBinary, Length: 1000}, Payload: frame[:1000]},
		ws.NewPingFrame([]byte("p2")),
		{Header: ws.Header{Fin: true, OpCode: ws.OpContinuation, Length: int64(len(frame) - 1000)}, Payload: frame[1000:]},
	} {
		if err := ws.WriteFrame(sc, f); err != nil {
			t.Fatal(err)
		}
	}
	c := newMessageConn(newWSConn(cc, nil))
	f, err := c.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	if f.Seq != 9 || len(f.Body) != 3000 {
		t.Fatalf("frame seq %d with %d body bytes, want seq 9 and 3000", f.Seq, len(f.Body))
	}
	// Both pings were answered with masked pongs carrying their payloads.
	for _, want := range []string{"p1", "p2"} {
		h, err := ws.ReadHeader(sc)
		if err != nil {
			t.Fatal(err)
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(sc, payload); err != nil {
			t.Fatal(err)
		}
		ws.Cipher(payload, h.Mask, 0)
		if h.OpCode != ws.OpPong || !h.Masked || string(payload) != want {
			t.Errorf("reply %v %q, want a masked pong %q", h.OpCode, payload, want)
		}
	}
	// And the client's own frames are single masked binary messages.
	if err := c.WriteFrame(frame[:100]); err != nil {
		t.Fatal(err)
	}
	h, err := ws.ReadHeader(sc)
	if err != nil {
		t.Fatal(err)
	}
	if !h.Fin || h.OpCode != ws.OpBinary || !h.Masked || h.Length != 100 {
		t.Errorf("client frame header %+v, want one masked binary message of 100 bytes", h)
	}
}
