package main

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"github.com/cloudwego/netpoll"

	"imgate/proto"
)

// The netpoll baseline: the smallest server that answers the same handshake
// (AUTH -> AUTH_OK, JOIN -> REPLY, HEARTBEAT -> PONG) on cloudwego/netpoll,
// so the idle cost of netpoll's per-connection link buffers is measured in
// the same run and the same way as imgate's transport. It keeps no session
// state at all, so it flatters netpoll: the difference is buffers only.

// runNetpollServer is the child process: imgate-idle netpoll-server PORT BUFSIZE.
func runNetpollServer(port string, bufSize int) {
	if bufSize > 0 {
		netpoll.LinkBufferCap = bufSize
		check(netpoll.Configure(netpoll.Config{BufferSize: bufSize}))
	}
	ln, err := netpoll.CreateListener("tcp", "127.0.0.1:"+port)
	check(err)
	answer := map[proto.Op]proto.Op{proto.OpAuth: proto.OpAuthOK, proto.OpJoin: proto.OpReply, proto.OpHeartbeat: proto.OpPong}
	loop, err := netpoll.NewEventLoop(func(ctx context.Context, c netpoll.Connection) error {
		r := c.Reader()
		for r.Len() >= proto.HeaderSize {
			head, _ := r.Peek(4)
			size, err := proto.FrameSize(head, proto.DefaultMaxFrame)
			if err != nil {
				return c.Close()
			}
			if r.Len() < size {
				return nil
			}
			frame, _ := r.Next(size)
			f, err := proto.DecodeExact(frame, proto.DefaultMaxFrame)
			if err != nil {
				return c.Close()
			}
			out := proto.AppendFrame(nil, proto.Header{Op: answer[f.Op], Seq: f.Seq}, nil)
			w := c.Writer()
			w.WriteBinary(out)
			w.Flush()
		}
		return r.Release()
	})
	check(err)
	check(loop.Serve(ln))
}

// startNetpollServer launches this binary as the baseline server.
func startNetpollServer(port, bufSize int) (*os.Process, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	p, err := os.StartProcess(self, []string{self, "netpoll-server", strconv.Itoa(port), strconv.Itoa(bufSize)},
		&os.ProcAttr{Files: []*os.File{nil, nil, os.Stderr}})
	if err != nil {
		return nil, err
	}
	return p, waitListen(fmt.Sprintf("127.0.0.1:%d", port))
}
