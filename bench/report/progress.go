package report

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Progress shows a run's status. On a terminal it is one line rewritten in
// place with '\r', at most TerminalInterval apart; elsewhere (a log file, a
// pipe, CI) each shown update is a plain line of its own, at most
// PlainInterval apart so a long run does not flood the log. Updates that
// come sooner are dropped (the caller updates periodically, so the next one
// carries the news). Done always writes. Safe for concurrent use.
type Progress struct {
	mu       sync.Mutex
	w        io.Writer
	terminal bool
	interval time.Duration
	now      func() time.Time // replaced in tests
	last     time.Time        // when the last update was written
	width    int              // runes on the terminal line now (0: none)
}

// Update intervals: four times a second feels live on a terminal; a plain
// log line every few seconds is enough to follow a run afterwards.
const (
	TerminalInterval = 250 * time.Millisecond
	PlainInterval    = 5 * time.Second
)

// NewProgress writes to w (normally os.Stderr). w counts as a terminal when
// it is an *os.File on a character device.
func NewProgress(w io.Writer) *Progress {
	p := &Progress{w: w, terminal: isTerminal(w), now: time.Now}
	p.interval = PlainInterval
	if p.terminal {
		p.interval = TerminalInterval
	}
	return p
}

// isTerminal uses the file mode rather than golang.org/x/term (not a
// dependency of this module). /dev/null is a character device too; writing
// '\r' lines there is harmless.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Update shows a new status, formatted as fmt.Sprintf, unless the last one
// was shown less than an interval ago.
func (p *Progress) Update(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if !p.last.IsZero() && now.Sub(p.last) < p.interval {
		return
	}
	p.last = now
	msg := oneLine(fmt.Sprintf(format, args...))
	if !p.terminal {
		io.WriteString(p.w, msg+"\n")
		return
	}
	p.rewrite(msg)
}

// Done shows a final status and ends the line. The next Update starts a new
// line and is not rate-limited.
func (p *Progress) Done(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	msg := oneLine(fmt.Sprintf(format, args...))
	if p.terminal {
		p.rewrite(msg)
		io.WriteString(p.w, "\n")
	} else {
		io.WriteString(p.w, msg+"\n")
	}
	p.width = 0
	p.last = time.Time{}
}

// rewrite replaces the terminal line with msg, padding with spaces over
// whatever the previous, longer line left behind.
func (p *Progress) rewrite(msg string) {
	n := utf8.RuneCountInString(msg)
	pad := ""
	if p.width > n {
		pad = strings.Repeat(" ", p.width-n)
	}
	io.WriteString(p.w, "\r"+msg+pad)
	p.width = n
}

// oneLine keeps a status on one line: a newline inside it would break the
// '\r' rewrite on a terminal.
func oneLine(s string) string {
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
}
