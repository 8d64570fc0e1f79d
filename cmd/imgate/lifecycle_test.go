package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"imgate/gateway"
	"imgate/proto"
)

// notifySocket listens where a test process will send sd_notify datagrams.
func notifySocket(t *testing.T) (string, chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ch := make(chan string, 64)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				close(ch)
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return path, ch
}

func expectNotify(t *testing.T, ch chan string, want string) string {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case m := <-ch:
			if strings.Contains(m, want) {
				return m
			}
		case <-deadline:
			t.Fatalf("no %q from the process over NOTIFY_SOCKET", want)
		}
	}
}

func TestSdNotify(t *testing.T) {
	path, ch := notifySocket(t)
	t.Setenv("NOTIFY_SOCKET", path)
	if err := sdNotify("READY=1\nSTATUS=ok"); err != nil {
		t.Fatal(err)
	}
	if m := <-ch; m != "READY=1\nSTATUS=ok" {
		t.Fatalf("got %q", m)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if err := sdNotify("READY=1"); err != nil {
		t.Fatalf("without NOTIFY_SOCKET: %v", err)
	}
	t.Setenv("WATCHDOG_USEC", "2000000")
	t.Setenv("WATCHDOG_PID", fmt.Sprint(os.Getpid()))
	if d := watchdogInterval(); d != time.Second {
		t.Fatalf("watchdog interval %v, want 1s", d)
	}
}

// rawAuth connects to addr and sends AUTH with a token signed by k; it
// returns the connection and the op of the answer.
func rawAuth(t *testing.T, addr string, k gateway.KeyConfig, uid string) (net.Conn, *bufio.Reader, proto.Op) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	tok, err := gateway.MintToken(k, gateway.Claims{UID: uid, Device: "d", Expiry: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	nc.Write(proto.AppendFrame(nil, proto.Header{Op: proto.OpAuth, Seq: 1}, []byte(tok)))
	r := bufio.NewReader(nc)
	f, err := readFrameBuffered(nc, r, 5*time.Second)
	if err != nil {
		return nc, r, 0
	}
	return nc, r, f.Op
}

func readFrameBuffered(nc net.Conn, r *bufio.Reader, timeout time.Duration) (proto.Frame, error) {
	nc.SetReadDeadline(time.Now().Add(timeout))
	var prefix [4]byte
	if _, err := io.ReadFull(r, prefix[:]); err != nil {
		return proto.Frame{}, err
	}
	size, err := proto.FrameSize(prefix[:], proto.MaxFrameLimit)
	if err != nil {
		return proto.Frame{}, err
	}
	buf := make([]byte, size)
	binary.BigEndian.PutUint32(buf, binary.BigEndian.Uint32(prefix[:]))
	if _, err := io.ReadFull(r, buf[4:]); err != nil {
		return proto.Frame{}, err
	}
	return proto.DecodeExact(buf, proto.MaxFrameLimit)
}

// TestProcessLifecycle runs the real binary the way systemd does: READY=1
// over NOTIFY_SOCKET once listening, SIGHUP re-reads the key files (a new
// key is accepted after it), SIGTERM drains (STOPPING=1, every client gets
// CLOSE SHUTDOWN) and the process exits 0 within the drain period.
func TestProcessLifecycle(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	k1 := gateway.KeyConfig{ID: "k1", Alg: gateway.AlgHS256, SecretFile: filepath.Join(dir, "k1.key")}
	k2 := gateway.KeyConfig{ID: "k2", Alg: gateway.AlgHS256, SecretFile: filepath.Join(dir, "k2.key")}
	os.WriteFile(k1.SecretFile, []byte(strings.Repeat("1", 40)+"\n"), 0o600)
	os.WriteFile(k2.SecretFile, []byte(strings.Repeat("2", 40)+"\n"), 0o600)
	tcp, admin, web := freePort(t), freePort(t), freePort(t)
	conf := filepath.Join(dir, "imgate.toml")
	write := func(keys ...gateway.KeyConfig) {
		var b strings.Builder
		fmt.Fprintf(&b, "listen = [\"tcp://127.0.0.1:%d\"]\nadmin_addr = \"127.0.0.1:%d\"\nhttp_addr = \"127.0.0.1:%d\"\ndrain_timeout = \"1s\"\nlog_format = \"json\"\nlog_level = \"warn\"\n", tcp, admin, web)
		for _, k := range keys {
			fmt.Fprintf(&b, "[[auth.keys]]\nid = %q\nalg = \"HS256\"\nsecret_file = %q\n", k.ID, k.SecretFile)
		}
		os.WriteFile(conf, []byte(b.String()), 0o600)
	}
	write(k1)
	if out, err := exec.Command(bin, "config", "check", conf).CombinedOutput(); err != nil {
		t.Fatalf("config check: %v\n%s", err, out)
	}
	cmd, notes, exited := startNotified(t, bin, "gateway", "--config", conf, "--data", dir)
	addr := fmt.Sprintf("127.0.0.1:%d", tcp)

	if _, _, op := rawAuth(t, addr, k2, "early"); op == proto.OpAuthOK {
		t.Fatal("k2 accepted before it was configured")
	}
	write(k1, k2)
	cmd.Process.Signal(syscall.SIGHUP)
	expectNotify(t, notes, "STATUS=serving")
	type client struct {
		nc net.Conn
		r  *bufio.Reader
	}
	var clients []client
	for i, k := range []gateway.KeyConfig{k1, k2, k2, k1} {
		nc, r, op := rawAuth(t, addr, k, fmt.Sprint("u", i))
		if op != proto.OpAuthOK {
			t.Fatalf("client %d with key %s after SIGHUP: %v, want AUTH_OK", i, k.ID, op)
		}
		clients = append(clients, client{nc, r})
	}

	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	expectNotify(t, notes, "STOPPING=1")
	for i, c := range clients {
		f, err := readFrameBuffered(c.nc, c.r, 5*time.Second)
		if err != nil || f.Op != proto.OpClose {
			t.Fatalf("client %d during drain: %v %v, want CLOSE", i, f.Op, err)
		}
		if e, _ := proto.ParseError(f.Body); e.Code != proto.CodeShutdown {
			t.Fatalf("client %d: CLOSE %v, want SHUTDOWN", i, e.Code)
		}
		c.nc.Close()
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Fatalf("exit after drain: %v", err)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("drain of 1s took %v", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("process still running 10s after SIGTERM with drain_timeout 1s")
	}
}

// startNotified starts bin with args under a NOTIFY_SOCKET and waits for
// READY=1; exited receives the process's end (put it back for the cleanup
// if you take it).
func startNotified(t *testing.T, bin string, args ...string) (*exec.Cmd, chan string, chan error) {
	t.Helper()
	sock, notes := notifySocket(t)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	expectNotify(t, notes, "READY=1")
	return cmd, notes, exited
}
