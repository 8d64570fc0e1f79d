package weaknet

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// process is a child the lab started. Its stderr goes to a log file in the
// lab's directory, its stdout (when asked for) is read as lines, and it dies
// with the harness (Pdeathsig, see spawn).
type process struct {
	name  string
	cmd   *exec.Cmd
	log   string         // path of its stderr
	lines chan []byte    // stdout lines, closed at EOF; nil unless asked for
	stdin io.WriteCloser // nil unless asked for
	done  chan struct{}  // closed once it has exited and err is set
	err   error
}

// maxLine bounds one stdout line (a probe's summary carries a histogram).
const maxLine = 16 << 20

// startProcess starts argv with stderr appended to logPath. withStdout makes
// stdout readable as lines; withStdin gives a pipe to its stdin.
func startProcess(name, logPath string, argv, env []string, withStdout, withStdin bool) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child holds its own copy
	p := &process{name: name, log: logPath, done: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr = logFile
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var childEnds []*os.File // our copies of the ends the child uses, closed after Start
	defer func() {
		for _, f := range childEnds {
			f.Close()
		}
	}()
	if withStdout {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		p.cmd.Stdout, childEnds = w, append(childEnds, w)
		p.lines = make(chan []byte, 64)
		// Ends at EOF: once the child exits, or at once if it never starts
		// (our copy of the write end is closed below either way).
		go readLines(r, p.lines)
	}
	if withStdin {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		p.cmd.Stdin, p.stdin, childEnds = r, w, append(childEnds, r)
	}
	if err := spawn(p.cmd); err != nil {
		if p.stdin != nil {
			p.stdin.Close()
		}
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// spawner is the one goroutine that starts children, locked to its thread
// for the life of the process. Pdeathsig is sent when the *thread* that
// forked a child ends, and the runtime ends a thread when a goroutine locked
// to it exits, as namespace.dial's goroutines do; the scheduler may well
// have run such a goroutine on a thread that had just forked a child, which
// would kill the child. Forking only from this thread, which never ends
// before the process, keeps Pdeathsig meaning "the harness is gone".
var spawner struct {
	once sync.Once
	reqs chan spawnRequest
}

type spawnRequest struct {
	cmd *exec.Cmd
	err chan error
}

// spawn starts cmd from the spawner's thread.
func spawn(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.reqs = make(chan spawnRequest)
		go func() {
			runtime.LockOSThread() // never unlocked: this thread outlives every child
			for r := range spawner.reqs {
				r.err <- r.cmd.Start()
			}
		}()
	})
	errc := make(chan error, 1)
	spawner.reqs <- spawnRequest{cmd, errc}
	return <-errc
}

// readLines sends each line of r to out, then closes out and r.
func readLines(r io.ReadCloser, out chan<- []byte) {
	defer close(out)
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	for sc.Scan() {
		out <- bytes.Clone(sc.Bytes())
	}
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop asks the process to end (SIGTERM), kills it after grace, and waits
// for it, at most grace + 5 s in all.
func (p *process) stop(grace time.Duration) {
	if p == nil {
		return
	}
	if p.stdin != nil {
		p.stdin.Close()
	}
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
}

// logTail is the end of the process's log, for error messages.
func (p *process) logTail() string { return tailOf(p.log, 1500) }

// tailOf returns up to n bytes from the end of the file at path, trimmed.
func tailOf(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		f.Seek(st.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return strings.TrimSpace(string(b))
}
