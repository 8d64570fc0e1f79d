package proto_test

// The worked examples of docs/PROTOCOL.md. Each example builds its frames with
// the encoder, decodes them back with the decoder and prints them field by
// field, so the hex in the spec is exactly what this package puts on the
// wire. TestProtocolDoc checks that each block of the spec marked
// <!-- go:ExampleName --> is that example's output; after changing an output
// run go test ./proto -run TestProtocolDoc -update-doc to copy it into the spec.

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"

	"imgate/proto"
)

// field is one annotated run of bytes.
type field struct {
	n    int
	desc string
}

// hexCol is the width of the hex column: 8 bytes.
const hexCol = 8*3 - 1

// printFields prints b as rows of at most 8 bytes, each field starting a new
// row with its description; the last field takes what is left of b.
func printFields(b []byte, fields []field) {
	for i, fl := range fields {
		n := fl.n
		if i == len(fields)-1 || n > len(b) {
			n = len(b)
		}
		chunk := b[:n]
		b = b[n:]
		desc := fl.desc
		if len(chunk) == 0 {
			fmt.Printf("%-*s  %s\n", hexCol, "(none)", desc)
			continue
		}
		for len(chunk) > 0 {
			row := chunk[:min(8, len(chunk))]
			chunk = chunk[len(row):]
			line := fmt.Sprintf("% x", row)
			if desc != "" {
				line = fmt.Sprintf("%-*s  %s", hexCol, line, desc)
			}
			fmt.Println(line)
			desc = ""
		}
	}
}

// headerFields decodes b's header and describes it.
func headerFields(b []byte) (proto.Frame, []field) {
	f, n, err := proto.Decode(b, proto.DefaultMaxFrame)
	if err != nil || n != len(b) {
		panic(fmt.Sprintf("decode: n %d of %d, %v", n, len(b), err))
	}
	flags := fmt.Sprintf("flags = 0x%04x", f.Flags)
	var names []string
	for _, fl := range []struct {
		bit  uint16
		name string
	}{{proto.FlagRoom, "ROOM"}, {proto.FlagBroadcast, "BROADCAST"}, {proto.FlagResend, "RESEND"}} {
		if f.Flags&fl.bit != 0 {
			names = append(names, fl.name)
		}
	}
	if len(names) > 0 {
		flags += " (" + strings.Join(names, "|") + ")"
	}
	return f, []field{
		{4, fmt.Sprintf("length = %d (12 + %d body bytes)", binary.BigEndian.Uint32(b), len(f.Body))},
		{1, fmt.Sprintf("version = %d", b[4])},
		{1, fmt.Sprintf("op = 0x%02x %v", uint8(f.Op), f.Op)},
		{2, flags},
		{4, fmt.Sprintf("svid = %d", f.SVID)},
		{4, fmt.Sprintf("seq = %d", f.Seq)},
	}
}

// bodyFields decodes and describes a body. syncDone says a REPLY body is a
// SyncDone rather than an opaque payload.
func bodyFields(f proto.Frame, syncDone bool) []field {
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	if len(f.Body) == 0 {
		return []field{{0, "empty body"}}
	}
	switch f.Op {
	case proto.OpAuth:
		return []field{{len(f.Body), fmt.Sprintf("token %q", f.Body)}}
	case proto.OpAuthOK:
		a, err := proto.ParseAuthOK(f.Body)
		must(err)
		return []field{
			{8, fmt.Sprintf("conn_id = %d", a.ConnID)},
			{4, fmt.Sprintf("heartbeat_ms = %d", a.HeartbeatMS)},
			{4, fmt.Sprintf("max_frame = %d", a.MaxFrame)},
			{1, fmt.Sprintf("node_len = %d", len(a.NodeID))},
			{len(a.NodeID), fmt.Sprintf("node_id %q", a.NodeID)},
		}
	case proto.OpPong:
		return []field{{8, fmt.Sprintf("server time = %d unix ms", binary.BigEndian.Uint64(f.Body))}}
	case proto.OpJoin, proto.OpLeave:
		must(proto.CheckName(f.Body))
		return []field{{len(f.Body), fmt.Sprintf("room %q", f.Body)}}
	case proto.OpUplink, proto.OpReply:
		if syncDone {
			s, err := proto.ParseSyncDone(f.Body)
			must(err)
			return []field{
				{8, fmt.Sprintf("last_seq = %d", s.LastSeq)},
				{1, fmt.Sprintf("more = %v", s.More)},
			}
		}
		return []field{{len(f.Body), fmt.Sprintf("payload %q", f.Body)}}
	case proto.OpError, proto.OpClose:
		e, err := proto.ParseError(f.Body)
		must(err)
		return []field{
			{2, fmt.Sprintf("code = %d %v", e.Code, e.Code)},
			{len(e.Message), fmt.Sprintf("message %q", e.Message)},
		}
	case proto.OpPush:
		p, err := proto.ParsePush(f.Body)
		must(err)
		return []field{
			{8, fmt.Sprintf("conv_id = %d", p.ConvID)},
			{8, fmt.Sprintf("msg_seq = %d", p.Seq)},
			{1, fmt.Sprintf("topic_len = %d", len(p.Topic))},
			{len(p.Topic), fmt.Sprintf("topic %q", p.Topic)},
			{len(p.Payload), fmt.Sprintf("payload %q", p.Payload)},
		}
	case proto.OpAck:
		a, err := proto.ParseAck(f.Body)
		must(err)
		return []field{
			{8, fmt.Sprintf("conv_id = %d", a.ConvID)},
			{8, fmt.Sprintf("msg_seq = %d", a.Seq)},
		}
	case proto.OpSync:
		s, err := proto.ParseSync(f.Body)
		must(err)
		return []field{
			{8, fmt.Sprintf("conv_id = %d", s.ConvID)},
			{8, fmt.Sprintf("after_seq = %d", s.AfterSeq)},
			{4, fmt.Sprintf("limit = %d", s.Limit)},
		}
	}
	return []field{{len(f.Body), "body"}}
}

func show(title string, frame []byte) { showAs(title, frame, false) }

// showAs prints a frame: a title, the whole frame as one hex string, then
// its fields one per row.
func showAs(title string, frame []byte, syncDone bool) {
	f, fields := headerFields(frame)
	fmt.Printf("%s (%d bytes)\n%x\n", title, len(frame), frame)
	printFields(frame, append(fields, bodyFields(f, syncDone)...))
}

// Session setup: AUTH, then AUTH_OK.
func Example_auth() {
	auth := proto.AppendFrame(nil, proto.Header{Op: proto.OpAuth}, []byte("abc.def.ghi"))
	show("AUTH", auth)
	fmt.Println()

	body := proto.AppendAuthOK(nil, proto.AuthOK{
		ConnID:      1234,
		HeartbeatMS: 30000,
		MaxFrame:    proto.DefaultMaxFrame,
		NodeID:      []byte("gw-1"),
	})
	show("AUTH_OK", proto.AppendFrame(nil, proto.Header{Op: proto.OpAuthOK}, body))
	// Output:
	// AUTH (27 bytes)
	// 000000170101000000000000000000006162632e6465662e676869
	// 00 00 00 17              length = 23 (12 + 11 body bytes)
	// 01                       version = 1
	// 01                       op = 0x01 AUTH
	// 00 00                    flags = 0x0000
	// 00 00 00 00              svid = 0
	// 00 00 00 00              seq = 0
	// 61 62 63 2e 64 65 66 2e  token "abc.def.ghi"
	// 67 68 69
	//
	// AUTH_OK (37 bytes)
	// 0000002101020000000000000000000000000000000004d200007530000100000467772d31
	// 00 00 00 21              length = 33 (12 + 21 body bytes)
	// 01                       version = 1
	// 02                       op = 0x02 AUTH_OK
	// 00 00                    flags = 0x0000
	// 00 00 00 00              svid = 0
	// 00 00 00 00              seq = 0
	// 00 00 00 00 00 00 04 d2  conn_id = 1234
	// 00 00 75 30              heartbeat_ms = 30000
	// 00 01 00 00              max_frame = 65536
	// 04                       node_len = 4
	// 67 77 2d 31              node_id "gw-1"
}

// Liveness: HEARTBEAT, then PONG with the server's clock.
func Example_heartbeat() {
	show("HEARTBEAT", proto.AppendFrame(nil, proto.Header{Op: proto.OpHeartbeat}, nil))
	fmt.Println()

	// 2026-01-01T00:00:00Z in unix milliseconds.
	now := binary.BigEndian.AppendUint64(nil, 1767225600000)
	show("PONG", proto.AppendFrame(nil, proto.Header{Op: proto.OpPong}, now))
	// Output:
	// HEARTBEAT (16 bytes)
	// 0000000c010300000000000000000000
	// 00 00 00 0c              length = 12 (12 + 0 body bytes)
	// 01                       version = 1
	// 03                       op = 0x03 HEARTBEAT
	// 00 00                    flags = 0x0000
	// 00 00 00 00              svid = 0
	// 00 00 00 00              seq = 0
	// (none)                   empty body
	//
	// PONG (24 bytes)
	// 000000140104000000000000000000000000019b76daa800
	// 00 00 00 14              length = 20 (12 + 8 body bytes)
	// 01                       version = 1
	// 04                       op = 0x04 PONG
	// 00 00                    flags = 0x0000
	// 00 00 00 00              svid = 0
	// 00 00 00 00              seq = 0
	// 00 00 01 9b 76 da a8 00  server time = 1767225600000 unix ms
}

// Rooms: JOIN "lobby" with seq 1 and its REPLY.
func Example_join() {
	show("JOIN", proto.AppendFrame(nil, proto.Header{Op: proto.OpJoin, Seq: 1}, []byte("lobby")))
	fmt.Println()
	show("REPLY", proto.AppendFrame(nil, proto.Header{Op: proto.OpReply, Seq: 1}, nil))
	// Output:
	// JOIN (21 bytes)
	// 000000110105000000000000000000016c6f626279
	// 00 00 00 11              length = 17 (12 + 5 body bytes)
	// 01                       version = 1
	// 05                       op = 0x05 JOIN
	// 00 00                    flags = 0x0000
	// 00 00 00 00              svid = 0
	// 00 00 00 01              seq = 1
	// 6c 6f 62 62 79           room "lobby"
	//
	// REPLY (16 bytes)
	// 0000000c010800000000000000000001
	// 00 00 00 0c              length = 12 (12 + 0 body bytes)
	// 01                       version = 1
	// 08                       op = 0x08 REPLY
	// 00 00                    flags = 0x0000
	// 00 00 00 00              svid = 0
	// 00 00 00 01              seq = 1
	// (none)                   empty body
}

// Uplink: UPLINK to service 7 with seq 2, answered by ERROR NO_HANDLER.
func Example_uplink() {
	show("UPLINK", proto.AppendFrame(nil, proto.Header{Op: proto.OpUplink, SVID: 7, Seq: 2}, []byte("hi")))
	fmt.Println()
	body := proto.AppendError(nil, proto.CodeNoHandler, "no backend")
	show("ERROR", proto.AppendFrame(nil, proto.Header{Op: proto.OpError, SVID: 7, Seq: 2}, body))
	// Output:
	// UPLINK (18 bytes)
	// 0000000e0107000000000007000000026869
	// 00 00 00 0e              length = 14 (12 + 2 body bytes)
	// 01                       version = 1
	// 07                       op = 0x07 UPLINK
	// 00 00                    flags = 0x0000
	// 00 00 00 07              svid = 7
	// 00 00 00 02              seq = 2
	// 68 69                    payload "hi"
	//
	// ERROR (28 bytes)
	// 00000018010900000000000700000002000a6e6f206261636b656e64
	// 00 00 00 18              length = 24 (12 + 12 body bytes)
	// 01                       version = 1
	// 09                       op = 0x09 ERROR
	// 00 00                    flags = 0x0000
	// 00 00 00 07              svid = 7
	// 00 00 00 02              seq = 2
	// 00 0a                    code = 10 NO_HANDLER
	// 6e 6f 20 62 61 63 6b 65  message "no backend"
	// 6e 64
}

// Delivery: a PUSH to room "lobby" in conversation 42 with message seq 7.
func Example_push() {
	body := proto.AppendPush(nil, proto.Push{ConvID: 42, Seq: 7, Topic: []byte("lobby"), Payload: []byte("hello")})
	show("PUSH", proto.AppendFrame(nil, proto.Header{Op: proto.OpPush, Flags: proto.FlagRoom}, body))
	// Output:
	// PUSH (43 bytes)
	// 00000027010a00010000000000000000000000000000002a0000000000000007056c6f62627968656c6c6f
	// 00 00 00 27              length = 39 (12 + 27 body bytes)
	// 01                       version = 1
	// 0a                       op = 0x0a PUSH
	// 00 01                    flags = 0x0001 (ROOM)
	// 00 00 00 00              svid = 0
	// 00 00 00 00              seq = 0
	// 00 00 00 00 00 00 00 2a  conv_id = 42
	// 00 00 00 00 00 00 00 07  msg_seq = 7
	// 05                       topic_len = 5
	// 6c 6f 62 62 79           topic "lobby"
	// 68 65 6c 6c 6f           payload "hello"
}

// Reliable delivery: ACK, SYNC, a resent PUSH and the REPLY that ends the sync.
func Example_sync() {
	show("ACK", proto.AppendFrame(nil, proto.Header{Op: proto.OpAck}, proto.AppendAck(nil, proto.Ack{ConvID: 42, Seq: 7})))
	fmt.Println()
	sync := proto.AppendSync(nil, proto.Sync{ConvID: 42, AfterSeq: 5, Limit: 1})
	show("SYNC", proto.AppendFrame(nil, proto.Header{Op: proto.OpSync, Seq: 3}, sync))
	fmt.Println()
	push := proto.AppendPush(nil, proto.Push{ConvID: 42, Seq: 6, Payload: []byte("hey")})
	show("PUSH (resend)", proto.AppendFrame(nil, proto.Header{Op: proto.OpPush, Flags: proto.FlagResend}, push))
	fmt.Println()
	done := proto.AppendSyncDone(nil, proto.SyncDone{LastSeq: 6, More: true})
	showAs("REPLY (sync done)", proto.AppendFrame(nil, proto.Header{Op: proto.OpReply, Seq: 3}, done), true)
	fmt.Println()
	unsupported := proto.AppendError(nil, proto.CodeUnsupported, "no storage")
	show("ERROR", proto.AppendFrame(nil, proto.Header{Op: proto.OpError, Seq: 3}, unsupported))
	// Output:
	// ACK (32 bytes)
	// 0000001c010b00000000000000000000000000000000002a0000000000000007
	// 00 00 00 1c              length = 28 (12 + 16 body bytes)
	// 01                       version = 1
	// 0b                       op = 0x0b ACK
	// 00 00                    flags = 0x0000
	// 00 00 00 00              svid = 0
	// 00 00 00 00              seq = 0
	// 00 00 00 00 00 00 00 2a  conv_id = 42
	// 00 00 00 00 00 00 00 07  msg_seq = 7
	//
	// SYNC (36 bytes)
	// 00000020010c00000000000000000003000000000000002a000000000000000500000001
	// 00 00 00 20              length = 32 (12 + 20 body bytes)
	// 01                       version = 1
	// 0c                       op = 0x0c SYNC
	// 00 00                    flags = 0x0000
	// 00 00 00 00              svid = 0
	// 00 00 00 03              seq = 3
	// 00 00 00 00 00 00 00 2a  conv_id = 42
	// 00 00 00 00 00 00 00 05  after_seq = 5
	// 00 00 00 01              limit = 1
	//
	// PUSH (resend) (36 bytes)
	// 00000020010a00040000000000000000000000000000002a000000000000000600686579
	// 00 00 00 20              length = 32 (12 + 20 body bytes)
	// 01                       version = 1
	// 0a                       op = 0x0a PUSH
	// 00 04                    flags = 0x0004 (RESEND)
	// 00 00 00 00              svid = 0
	// 00 00 00 00              seq = 0
	// 00 00 00 00 00 00 00 2a  conv_id = 42
	// 00 00 00 00 00 00 00 06  msg_seq = 6
	// 00                       topic_len = 0
	// (none)                   topic ""
	// 68 65 79                 payload "hey"
	//
	// REPLY (sync done) (25 bytes)
	// 00000015010800000000000000000003000000000000000601
	// 00 00 00 15              length = 21 (12 + 9 body bytes)
	// 01                       version = 1
	// 08                       op = 0x08 REPLY
	// 00 00                    flags = 0x0000
	// 00 00 00 00              svid = 0
	// 00 00 00 03              seq = 3
	// 00 00 00 00 00 00 00 06  last_seq = 6
	// 01                       more = true
	//
	// ERROR (28 bytes)
	// 0000001801090000000000000000000300126e6f2073746f72616765
	// 00 00 00 18              length = 24 (12 + 12 body bytes)
	// 01                       version = 1
	// 09                       op = 0x09 ERROR
	// 00 00                    flags = 0x0000
	// 00 00 00 00              svid = 0
	// 00 00 00 03              seq = 3
	// 00 12                    code = 18 UNSUPPORTED
	// 6e 6f 20 73 74 6f 72 61  message "no storage"
	// 67 65
}

// Closing: the server closes a connection replaced by a newer login.
func Example_close() {
	body := proto.AppendError(nil, proto.CodeReplaced, "replaced")
	show("CLOSE", proto.AppendFrame(nil, proto.Header{Op: proto.OpClose}, body))
	// Output:
	// CLOSE (26 bytes)
	// 00000016010d0000000000000000000000667265706c61636564
	// 00 00 00 16              length = 22 (12 + 10 body bytes)
	// 01                       version = 1
	// 0d                       op = 0x0d CLOSE
	// 00 00                    flags = 0x0000
	// 00 00 00 00              svid = 0
	// 00 00 00 00              seq = 0
	// 00 66                    code = 102 REPLACED
	// 72 65 70 6c 61 63 65 64  message "replaced"
}

// WebSocket: one binary message per frame. Server messages are unmasked;
// client messages are masked (RFC 6455 section 5.3).
func Example_webSocket() {
	push := proto.AppendFrame(nil, proto.Header{Op: proto.OpPush, Flags: proto.FlagRoom},
		proto.AppendPush(nil, proto.Push{ConvID: 42, Seq: 7, Topic: []byte("lobby"), Payload: []byte("hello")}))
	msg := append([]byte{0x82, byte(len(push))}, push...)
	fmt.Printf("server to client: WebSocket message carrying PUSH (%d bytes)\n%x\n", len(msg), msg)
	f, fields := headerFields(push)
	printFields(msg, append([]field{
		{1, "FIN = 1, opcode = 0x2 (binary)"},
		{1, fmt.Sprintf("MASK = 0, payload length = %d", len(push))},
	}, append(fields, bodyFields(f, false)...)...))
	fmt.Println()

	hb := proto.AppendFrame(nil, proto.Header{Op: proto.OpHeartbeat}, nil)
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	cmsg := append([]byte{0x82, 0x80 | byte(len(hb))}, key[:]...)
	for i, c := range hb {
		cmsg = append(cmsg, c^key[i%4])
	}
	fmt.Printf("client to server: WebSocket message carrying HEARTBEAT (%d bytes)\n%x\n", len(cmsg), cmsg)
	printFields(cmsg, []field{
		{1, "FIN = 1, opcode = 0x2 (binary)"},
		{1, fmt.Sprintf("MASK = 1, payload length = %d", len(hb))},
		{4, fmt.Sprintf("masking key %x", key)},
		{len(hb), fmt.Sprintf("masked frame; XOR with the key gives %x", hb)},
	})
	// Output:
	// server to client: WebSocket message carrying PUSH (45 bytes)
	// 822b00000027010a00010000000000000000000000000000002a0000000000000007056c6f62627968656c6c6f
	// 82                       FIN = 1, opcode = 0x2 (binary)
	// 2b                       MASK = 0, payload length = 43
	// 00 00 00 27              length = 39 (12 + 27 body bytes)
	// 01                       version = 1
	// 0a                       op = 0x0a PUSH
	// 00 01                    flags = 0x0001 (ROOM)
	// 00 00 00 00              svid = 0
	// 00 00 00 00              seq = 0
	// 00 00 00 00 00 00 00 2a  conv_id = 42
	// 00 00 00 00 00 00 00 07  msg_seq = 7
	// 05                       topic_len = 5
	// 6c 6f 62 62 79           topic "lobby"
	// 68 65 6c 6c 6f           payload "hello"
	//
	// client to server: WebSocket message carrying HEARTBEAT (22 bytes)
	// 829037fa213d37fa213136f9213d37fa213d37fa213d
	// 82                       FIN = 1, opcode = 0x2 (binary)
	// 90                       MASK = 1, payload length = 16
	// 37 fa 21 3d              masking key 37fa213d
	// 37 fa 21 31 36 f9 21 3d  masked frame; XOR with the key gives 0000000c010300000000000000000000
	// 37 fa 21 3d 37 fa 21 3d
}

// A JWT for AUTH: HS256 with the key "example-secret" under kid "k1".
func Example_jwt() {
	enc := base64.RawURLEncoding
	header := `{"alg":"HS256","kid":"k1","typ":"JWT"}`
	claims := `{"uid":"alice","device":"phone","exp":1893456000,"rooms":["lobby"]}`
	signing := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(claims))
	mac := hmac.New(sha256.New, []byte("example-secret"))
	mac.Write([]byte(signing))
	token := signing + "." + enc.EncodeToString(mac.Sum(nil))
	fmt.Println(token)
	// Output:
	// eyJhbGciOiJIUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJ1aWQiOiJhbGljZSIsImRldmljZSI6InBob25lIiwiZXhwIjoxODkzNDU2MDAwLCJyb29tcyI6WyJsb2JieSJdfQ.EVMxwN020uhR0LU_xTiPlDwL7BaJwz1bI3L0lXaFKM4
}
