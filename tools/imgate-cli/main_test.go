package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"imgate/client"
	"imgate/proto"
)

func TestParseLine(t *testing.T) {
	for _, tc := range []struct {
		line    string
		want    command
		wantErr bool
	}{
		{"", command{kind: cmdNone}, false},
		{"hello world", command{kind: cmdRequest, text: "hello world"}, false},
		{"/join lobby", command{kind: cmdJoin, room: "lobby"}, false},
		{"/leave lobby", command{kind: cmdLeave, room: "lobby"}, false},
		{"/join", command{}, true},
		{"/join a b", command{}, true},
		{"/req 42 some text", command{kind: cmdRequest, svid: 42, hasSVID: true, text: "some text"}, false},
		{"/req x text", command{}, true},
		{"/ack 7 99", command{kind: cmdAck, conv: 7, seq: 99}, false},
		{"/ack 7", command{}, true},
		{"/quit", command{kind: cmdQuit}, false},
		{"/nope", command{}, true},
	} {
		got, err := parseLine(tc.line)
		if (err != nil) != tc.wantErr || (err == nil && got != tc.want) {
			t.Errorf("parseLine(%q) = %+v, %v; want %+v, error %v", tc.line, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestFormatPush(t *testing.T) {
	for _, tc := range []struct {
		p    client.Push
		want string
	}{
		{client.Push{ConvID: 1, Seq: 2, Topic: "lobby", Payload: []byte("hi there"), Flags: proto.FlagRoom}, "[lobby] conv=1 seq=2 hi there"},
		{client.Push{Payload: []byte{0, 1}, Flags: proto.FlagBroadcast}, "[broadcast] conv=0 seq=0 hex:0001"},
		{client.Push{ConvID: 3, Seq: 4, Payload: []byte("x"), Flags: proto.FlagResend}, "[direct] conv=3 seq=4 resend x"},
	} {
		if got := formatPush(tc.p); got != tc.want {
			t.Errorf("formatPush(%+v) = %q, want %q", tc.p, got, tc.want)
		}
	}
}

// syncBuffer is a bytes.Buffer safe to read while run writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serveOne is a minimal gateway for one connection: AUTH_OK, REPLY to JOIN
// followed by a push to the room, echo for UPLINK.
func serveOne(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		br := bufio.NewReader(nc)
		send := func(h proto.Header, body []byte) { nc.Write(proto.AppendFrame(nil, h, body)) }
		for {
			var prefix [4]byte
			if _, err := io.ReadFull(br, prefix[:]); err != nil {
				return
			}
			size, err := proto.FrameSize(prefix[:], proto.DefaultMaxFrame)
			if err != nil {
				return
			}
			msg := append(prefix[:], make([]byte, size-4)...)
			if _, err := io.ReadFull(br, msg[4:]); err != nil {
				return
			}
			f, err := proto.DecodeExact(msg, proto.DefaultMaxFrame)
			if err != nil {
				return
			}
			switch f.Op {
			case proto.OpAuth:
				send(proto.Header{Op: proto.OpAuthOK}, proto.AppendAuthOK(nil, proto.AuthOK{ConnID: 42, HeartbeatMS: 30_000, NodeID: []byte("n1")}))
			case proto.OpJoin:
				send(proto.Header{Op: proto.OpReply, Seq: f.Seq}, nil)
				send(proto.Header{Op: proto.OpPush, Flags: proto.FlagRoom}, proto.AppendPush(nil, proto.Push{ConvID: 1, Seq: 1, Topic: f.Body, Payload: []byte("welcome")}))
			case proto.OpUplink:
				send(proto.Header{Op: proto.OpReply, SVID: f.SVID, Seq: f.Seq}, f.Body)
			}
		}
	}()
	return "tcp://" + ln.Addr().String()
}

func TestRunSession(t *testing.T) {
	url := serveOne(t)
	stdin, input := io.Pipe()
	var stdout, stderr syncBuffer
	code := make(chan int, 1)
	go func() {
		code <- run(context.Background(), []string{"--url", url, "--token", "t", "--join", "lobby", "--svid", "3"}, stdin, &stdout, &stderr)
	}()
	io.WriteString(input, "hello\n/req 5 hi\n/ack 1 1\n/bogus\n")
	want := []string{
		"* connected", "* conn=42 node=n1", "* joined lobby", "[lobby] conv=1 seq=1 welcome",
		"< svid=3 hello", "< svid=5 hi", "! unknown command /bogus",
	}
	deadline := time.Now().Add(10 * time.Second)
	for !containsAll(stdout.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("output so far:\n%s\nstderr: %s", stdout.String(), stderr.String())
		}
		time.Sleep(5 * time.Millisecond) // polling the output for a condition, with a deadline
	}
	input.Close() // end of stdin: a clean exit
	select {
	case c := <-code:
		if c != 0 {
			t.Errorf("exit status %d, stderr: %s", c, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return at end of stdin")
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
