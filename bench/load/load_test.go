package load

import (
	"net"
	"strings"
	"testing"
	"time"

	"imgate/gateway"
)

func payloadFor(seq uint64) []byte {
	p := make([]byte, 128)
	Stamp(p, seq)
	return p
}

func TestTrackerVerdicts(t *testing.T) {
	cases := []struct {
		name      string
		seqs      []uint64 // arrivals at receiver 0
		sent      int64
		lost, dup int64
		reordered int64
		ok        bool
	}{
		{"in order", []uint64{0, 1, 2, 3}, 4, 0, 0, 0, true},
		{"tail lost", []uint64{0, 1}, 4, 2, 0, 0, false},
		{"gap", []uint64{0, 2, 3}, 4, 1, 0, 0, false},
		{"duplicate", []uint64{0, 1, 1, 2, 3}, 4, 0, 1, 0, false},
		{"reordered", []uint64{0, 2, 1, 3}, 4, 0, 0, 1, false},
		{"reordered then duplicated", []uint64{0, 2, 1, 1, 3}, 4, 0, 1, 1, false},
		{"nothing", nil, 3, 3, 0, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := NewTracker(1)
			tr.Begin(0)
			for _, s := range tc.seqs {
				tr.Observe(0, payloadFor(s))
			}
			o := tr.Result(tc.sent)
			if o.Lost != tc.lost || o.Duplicated != tc.dup || o.Reordered != tc.reordered || o.OK() != tc.ok {
				t.Fatalf("got %+v ok=%v, want lost %d dup %d reordered %d ok %v", o, o.OK(), tc.lost, tc.dup, tc.reordered, tc.ok)
			}
		})
	}
}

func TestTrackerBeginResetsAndLatency(t *testing.T) {
	tr := NewTracker(3)
	tr.Begin(100)
	for i := 0; i < 3; i++ {
		tr.Observe(i, payloadFor(100))
	}
	if !tr.Wait(1, time.Second) || !tr.Result(1).OK() {
		t.Fatal("one message at each of three receivers")
	}
	if n := tr.Latency.Snapshot().Count(); n != 3 {
		t.Fatalf("latency samples %d", n)
	}
	tr.Begin(200)
	if tr.Received() != 0 || tr.Latency.Snapshot().Count() != 0 {
		t.Fatal("Begin must reset the step")
	}
	tr.Observe(0, payloadFor(201))
	if o := tr.ResultTotal(2); o.Lost != 1 {
		t.Fatalf("a gap at the start of a step is a loss: %+v", o)
	}
}

func TestPaceHoldsTheRate(t *testing.T) {
	start := time.Now()
	n := 0
	took := Pace(200, 50, func(int) { n++ })
	if n != 50 || took < 200*time.Millisecond || time.Since(start) > 2*time.Second {
		t.Fatalf("50 calls at 200/s took %v (%d calls)", took, n)
	}
}

// Members and the admin publisher against a real gateway: every member gets
// every room push, in order, over TCP and WebSocket.
func TestMembersReceiveRoomPushes(t *testing.T) {
	cfg := gateway.DefaultConfig()
	cfg.Listen = []string{"tcp://127.0.0.1:0", "ws://127.0.0.1:0/ws"}
	cfg.AdminAddr, cfg.HTTPAddr, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
	cfg.Auth.Keys = []gateway.KeyConfig{{ID: "k", Alg: "HS256", Secret: "load-test-secret-0123456789abcdef"}}
	s, err := gateway.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	target := Target{Admin: s.AdminAddr(), HTTP: s.HTTPAddr(), Key: cfg.Auth.Keys[0]}
	for _, l := range s.Listeners() {
		if l.Kind().WebSocket() {
			target.WS = l.URL()
		} else {
			target.TCP = l.Addr().String()
		}
	}
	for _, transport := range []string{"tcp", "ws"} {
		t.Run(transport, func(t *testing.T) {
			const n, msgs = 40, 30
			tr := NewTracker(n)
			m, err := Open(Dial{Target: target, Transport: transport, N: n,
				Srcs: []net.IP{net.IPv4(127, 0, 0, 2), net.IPv4(127, 0, 0, 3)},
				UID: func(i int) string {
					return transport + strings.Repeat("x", i%3) + string(rune('a'+i%26)) + string(rune('a'+i/26))
				},
				Rooms: func(int) []string { return []string{"room-" + transport} }}, tr)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if m.AuthTime.Count() != n {
				t.Fatalf("auth times %d", m.AuthTime.Count())
			}
			admin, err := DialAdmin(target.Admin, "")
			if err != nil {
				t.Fatal(err)
			}
			defer admin.Close()
			tr.Begin(0)
			payload := make([]byte, 128)
			Pace(1000, msgs, func(i int) {
				Stamp(payload, uint64(i))
				admin.RoomPush("room-"+transport, payload)
				admin.Flush()
			})
			if err := admin.Wait(5 * time.Second); err != nil || admin.Errors() != 0 {
				t.Fatalf("admin: %v, %d errors (%s)", err, admin.Errors(), admin.LastError())
			}
			tr.Wait(msgs, 10*time.Second)
			if o := tr.Result(msgs); !o.OK() || m.Dropped() != 0 {
				t.Fatalf("%+v, dropped %d", o, m.Dropped())
			}
		})
	}
}
