package cluster

import (
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"imgate/proto"
)

func TestToken(t *testing.T) {
	for _, c := range []struct{ name, tok string }{
		{"alice", "alice"},
		{"user_42-x", "user_42-x"},
		{"a.b c", "=YS5iIGM"},
		{"*", "=Kg"},
		{">", "=Pg"},
		{"=x", "=PXg"},
		{"", "="},
		{"日本", "=5pel5pys"},
	} {
		if got := Token(c.name); got != c.tok {
			t.Errorf("Token(%q) = %q, want %q", c.name, got, c.tok)
		}
		back, ok := ParseToken(c.tok)
		if c.name != "" && (!ok || back != c.name) {
			t.Errorf("ParseToken(%q) = %q, %v", c.tok, back, ok)
		}
	}
	if _, ok := ParseToken("a.b"); ok {
		t.Error("a.b is not a token")
	}
}

// Tokens of any name are one NATS token and a valid KV key token, and
// decode to the name.
func FuzzToken(f *testing.F) {
	for _, s := range []string{"alice", "a.b", "*", ">", "=", "", "\x00\xff", "room with spaces"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		tok := Token(name)
		for i := 0; i < len(tok); i++ {
			c := tok[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '=') {
				t.Fatalf("Token(%q) = %q has %q", name, tok, c)
			}
		}
		if back, ok := ParseToken(tok); name != "" && (!ok || back != name) {
			t.Fatalf("ParseToken(Token(%q)) = %q, %v", name, back, ok)
		}
	})
}

func TestBackendError(t *testing.T) {
	for _, c := range []struct {
		status string
		want   proto.Code
	}{
		{"16", proto.CodeRateLimited},
		{"15", proto.CodeBadRequest},
		{"6", proto.CodeBackendError}, // AUTH_FAILED is not a backend's to send
		{"102", proto.CodeBackendError},
		{"x", proto.CodeBackendError},
	} {
		if got := backendError(3, c.status, []byte("m")).Code; got != c.want {
			t.Errorf("status %q: %v, want %v", c.status, got, c.want)
		}
	}
}

func TestDedup(t *testing.T) {
	d := newDedup()
	now := time.Now()
	steps := []struct {
		origin, subject string
		seq             uint64
		want            bool
	}{
		{"o1", "s", 1, true}, {"o1", "s", 1, false}, {"o1", "s", 3, true}, {"o1", "s", 2, false},
		{"o1", "t", 2, true}, {"o2", "s", 1, true},
	}
	for _, s := range steps {
		if got := d.first(s.origin, s.subject, s.seq, now); got != s.want {
			t.Fatalf("%+v: %v", s, got)
		}
	}
	d.forget("s")
	if !d.first("o1", "s", 1, now) {
		t.Fatal("forgotten subject still marked")
	}
	m := &nats.Msg{Header: nats.Header{HeaderOrigin: {"o"}, HeaderOseq: {"9"}}}
	if o, n := stamp(m); o != "o" || n != 9 {
		t.Fatalf("stamp: %q %d", o, n)
	}
}

// The per-message cost a node adds to a bus push before the gateway's
// fan-out: reading the stamp and checking it against the marks.
func BenchmarkStampDedup(b *testing.B) {
	d := newDedup()
	m := &nats.Msg{Subject: "imgate.room.lobby", Header: nats.Header{HeaderOrigin: {"a1b2c3d4e5f6"}, HeaderOseq: {"0"}}}
	now := time.Now()
	b.ReportAllocs()
	for i := range b.N {
		m.Header[HeaderOseq][0] = strconv.Itoa(i + 1)
		origin, seq := stamp(m)
		if !d.first(origin, m.Subject, seq, now) {
			b.Fatal("dropped")
		}
	}
}
