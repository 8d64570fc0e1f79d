package report

import (
	"os"
	"strings"
	"testing"
	"time"
)

// fakeClock is a time source a test moves by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestProgressPlain(t *testing.T) {
	var b strings.Builder
	p := NewProgress(&b)
	clock := &fakeClock{t: time.Unix(1000, 0)}
	p.now = clock.now

	p.Update("step %d", 1)
	clock.t = clock.t.Add(time.Second)
	p.Update("step %d", 2) // too soon: dropped
	clock.t = clock.t.Add(PlainInterval)
	p.Update("step %d\nwith newline", 3)
	p.Done("done: %s", "ok")
	p.Update("after done") // a new line, not rate-limited

	want := "step 1\nstep 3 with newline\ndone: ok\nafter done\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
	if strings.Contains(b.String(), "\r") {
		t.Error("plain output contains \\r")
	}
}

func TestProgressTerminal(t *testing.T) {
	var b strings.Builder
	p := NewProgress(&b)
	p.terminal, p.interval = true, TerminalInterval // as on a terminal
	clock := &fakeClock{t: time.Unix(1000, 0)}
	p.now = clock.now

	p.Update("rate 1000/s")
	clock.t = clock.t.Add(100 * time.Millisecond)
	p.Update("dropped")
	clock.t = clock.t.Add(TerminalInterval)
	p.Update("rate 20/s")
	p.Done("ok")

	// Shorter lines are padded over what the longer one left.
	want := "\rrate 1000/s" + "\rrate 20/s  " + "\rok       \n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}

func TestIsTerminal(t *testing.T) {
	var b strings.Builder
	if isTerminal(&b) {
		t.Error("a strings.Builder is not a terminal")
	}
	f, err := openTempFile(t)
	if err != nil {
		t.Fatal(err)
	}
	if isTerminal(f) {
		t.Error("a regular file is not a terminal")
	}
}

func openTempFile(t *testing.T) (*os.File, error) {
	f, err := os.CreateTemp(t.TempDir(), "progress")
	if err == nil {
		t.Cleanup(func() { f.Close() })
	}
	return f, err
}
