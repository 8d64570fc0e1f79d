package main

import (
	"bufio"
	"io"
	"net"
	"os"
	"time"

	kcp "github.com/xtaci/kcp-go/v5"

	"imgate/proto"
)

// The kcp-go baseline: kcp-go's own Listener and UDPSession (stream mode,
// the fast settings imgate's fast preset uses) answering the same handshake
// as the netpoll baseline, one goroutine per session as kcp-go's net.Conn
// API requires. It keeps no session state, so what it measures is what the
// library costs per session: the reason imgate's KCP runs its own engine.

// runKCPGoServer is the child process: imgate-idle kcpgo-server PORT.
func runKCPGoServer(port string) {
	ln, err := kcp.ListenWithOptions("127.0.0.1:"+port, nil, 0, 0)
	check(err)
	answer := map[proto.Op]proto.Op{proto.OpAuth: proto.OpAuthOK, proto.OpJoin: proto.OpReply, proto.OpHeartbeat: proto.OpPong}
	for {
		s, err := ln.AcceptKCP()
		check(err)
		s.SetStreamMode(true)
		s.SetNoDelay(1, 20, 2, 1)
		s.SetWindowSize(128, 128)
		go func() {
			defer s.Close()
			r := bufio.NewReaderSize(s, 4096)
			var head [4]byte
			for {
				if _, err := io.ReadFull(r, head[:]); err != nil {
					return
				}
				size, err := proto.FrameSize(head[:], proto.DefaultMaxFrame)
				if err != nil {
					return
				}
				frame := make([]byte, size)
				copy(frame, head[:])
				if _, err := io.ReadFull(r, frame[4:]); err != nil {
					return
				}
				f, err := proto.DecodeExact(frame, proto.DefaultMaxFrame)
				if err != nil {
					return
				}
				s.Write(proto.AppendFrame(nil, proto.Header{Op: answer[f.Op], Seq: f.Seq}, nil))
			}
		}()
	}
}

// startKCPGoServer launches this binary as the kcp-go baseline server.
func startKCPGoServer(port string) (*os.Process, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	p, err := os.StartProcess(self, []string{self, "kcpgo-server", port}, &os.ProcAttr{Files: []*os.File{nil, nil, os.Stderr}})
	if err != nil {
		return nil, err
	}
	time.Sleep(300 * time.Millisecond) // UDP: nothing to connect to; give it a moment
	return p, nil
}

var _ net.Conn = (*kcp.UDPSession)(nil)
