package baseline

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	natsModule = "github.com/nats-io/nats-server/v2"
	// natsMaxPayload is the server's max_payload: the 8 MiB ceiling nats-server
	// accepts without a warning, far above the 128-byte messages, so batching
	// publishers never hit it.
	natsMaxPayload = 8 << 20
	natsStartWait  = 15 * time.Second
	natsStopWait   = 15 * time.Second
)

// BuildNATSServer builds the nats-server binary of the version go.mod requires into
// dir and returns its path. A binary already in dir that is newer than go.sum is
// reused. It must run inside the imgate module (any directory below go.mod), with a
// Go toolchain on PATH.
func BuildNATSServer(dir string) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("build nats-server: go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("build nats-server: not inside a Go module (run from the imgate repository)")
	}
	moduleDir := filepath.Dir(gomod)

	dir, err = filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("build nats-server: %w", err)
	}
	bin := filepath.Join(dir, "nats-server")
	if fresh, err := newerThan(bin, filepath.Join(moduleDir, "go.sum")); err != nil {
		return "", fmt.Errorf("build nats-server: %w", err)
	} else if fresh {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("build nats-server: %w", err)
	}
	// Build beside the target and rename, so a concurrent run never executes a
	// half-written binary.
	tmp := fmt.Sprintf("%s.tmp%d", bin, os.Getpid())
	cmd := exec.Command("go", "build", "-o", tmp, natsModule)
	cmd.Dir = moduleDir
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("build nats-server in %s: %w\n%s", moduleDir, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("build nats-server: %w", err)
	}
	return bin, nil
}

// newerThan reports whether path exists and was modified after ref.
func newerThan(path, ref string) (bool, error) {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	refSt, err := os.Stat(ref)
	if err != nil {
		return false, err
	}
	return st.ModTime().After(refSt.ModTime()), nil
}

// NATSServer is a nats-server child process listening on loopback.
type NATSServer struct {
	PID int
	// URL is the client URL, nats://127.0.0.1:<port>.
	URL string
	// MonitorURL is the HTTP monitoring endpoint (/varz, /connz).
	MonitorURL string
	// LogPath is where the server's log and stderr go, beside the binary.
	LogPath string

	confPath string
	cmd      *exec.Cmd
	exited   chan struct{} // closed once the process has been reaped
	err      error         // cmd.Wait's result, valid after exited is closed
}

// StartNATS starts bin on 127.0.0.1:port with max_payload raised and debug/trace
// off, and returns once the server greets a client with INFO. Its config and log
// are new files next to bin, nats-<port>-*.conf (removed by Stop) and
// nats-<port>-*.log (kept for reading after the run).
func StartNATS(bin string, port int) (*NATSServer, error) {
	monitorPort, err := freeLoopbackPort()
	if err != nil {
		return nil, fmt.Errorf("start nats-server: monitor port: %w", err)
	}
	// A name unique to this start lets waitReady tell its own server's INFO from
	// that of a server already on the port.
	name := fmt.Sprintf("imgate-bench-%d-%d", port, time.Now().UnixNano())
	conf := fmt.Sprintf("server_name: %q\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\nmax_payload: %d\ndebug: false\ntrace: false\n",
		name, port, monitorPort, natsMaxPayload)
	dir := filepath.Dir(bin)
	confPath, err := writeTemp(dir, fmt.Sprintf("nats-%d-*.conf", port), conf)
	if err != nil {
		return nil, fmt.Errorf("start nats-server: %w", err)
	}
	logFile, err := os.CreateTemp(dir, fmt.Sprintf("nats-%d-*.log", port))
	if err != nil {
		os.Remove(confPath)
		return nil, fmt.Errorf("start nats-server: %w", err)
	}
	defer logFile.Close() // the child holds its own descriptor
	logPath := logFile.Name()

	s := &NATSServer{
		URL:        fmt.Sprintf("nats://127.0.0.1:%d", port),
		MonitorURL: fmt.Sprintf("http://127.0.0.1:%d", monitorPort),
		LogPath:    logPath,
		confPath:   confPath,
		exited:     make(chan struct{}),
	}
	s.cmd = exec.Command(bin, "-c", confPath)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	// Pdeathsig kills the server if the bench dies without calling Stop. The kernel
	// ties it to the thread that forked, so start and wait on one locked thread
	// that lives exactly as long as the child.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := s.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		s.err = s.cmd.Wait()
		close(s.exited)
	}()
	if err := <-started; err != nil {
		os.Remove(confPath)
		return nil, fmt.Errorf("start nats-server %s: %w", bin, err)
	}
	s.PID = s.cmd.Process.Pid

	if err := s.waitReady(port, name); err != nil {
		s.Stop()
		return nil, fmt.Errorf("start nats-server on port %d: %w (log %s: %s)", port, err, logPath, tail(logPath, 400))
	}
	return s, nil
}

// waitReady polls until the server answers a TCP client with an INFO bearing
// name, the process exits, or natsStartWait passes.
func (s *NATSServer) waitReady(port int, name string) error {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(natsStartWait)
	for {
		select {
		case <-s.exited:
			return fmt.Errorf("exited early: %v", s.err)
		default:
		}
		// A server already on the port answers too, until ours exits with
		// "address already in use" (reported above): only an INFO with our name
		// proves ours is up.
		if got, err := infoServerName(addr); err == nil && got == name {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no INFO within %v", natsStartWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// infoServerName connects to addr and returns the server_name of its INFO greeting.
func infoServerName(addr string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", err
	}
	info, ok := strings.CutPrefix(strings.TrimSpace(line), "INFO ")
	if !ok {
		return "", fmt.Errorf("not a NATS greeting: %q", line)
	}
	var greeting struct {
		ServerName string `json:"server_name"`
	}
	if err := json.Unmarshal([]byte(info), &greeting); err != nil {
		return "", fmt.Errorf("INFO: %w", err)
	}
	return greeting.ServerName, nil
}

// Stop sends SIGTERM, waits up to natsStopWait, then kills. It returns nil when the
// server exited because of the signal.
func (s *NATSServer) Stop() error {
	defer os.Remove(s.confPath)
	select {
	case <-s.exited:
		return s.exitErr()
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop nats-server %d: %w", s.PID, err)
	}
	select {
	case <-s.exited:
		return s.exitErr()
	case <-time.After(natsStopWait):
	}
	s.cmd.Process.Kill()
	<-s.exited
	return fmt.Errorf("stop nats-server %d: killed after %v without exiting on SIGTERM", s.PID, natsStopWait)
}

func (s *NATSServer) exitErr() error {
	var exit *exec.ExitError
	if errors.As(s.err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM {
			return nil
		}
	}
	if s.err != nil {
		return fmt.Errorf("nats-server %d: %w", s.PID, s.err)
	}
	return nil
}

// SlowConsumers returns the server's count of clients it cut off as slow consumers
// (from /varz). A server-side slow consumer closes the connection, which the
// subscriber only sees as a disconnect, so compare this with Subscribers.Disconnects.
func (s *NATSServer) SlowConsumers() (int64, error) {
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(s.MonitorURL + "/varz")
	if err != nil {
		return 0, fmt.Errorf("nats-server varz: %w", err)
	}
	defer resp.Body.Close()
	var varz struct {
		SlowConsumers int64 `json:"slow_consumers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&varz); err != nil {
		return 0, fmt.Errorf("nats-server varz: %w", err)
	}
	return varz.SlowConsumers, nil
}

// writeTemp writes content to a new file in dir named after pattern (see
// os.CreateTemp) and returns its path.
func writeTemp(dir, pattern, content string) (string, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return "", err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// freeLoopbackPort asks the kernel for a free port on 127.0.0.1. Another process
// could take it before nats-server binds it; StartNATS then fails visibly.
func freeLoopbackPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// tail returns the last n bytes of the file at path, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}
