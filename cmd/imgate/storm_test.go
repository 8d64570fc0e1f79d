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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"imgate/gateway"
	"imgate/proto"
)

// These tests run the real binary as a separate process: a process may hold
// 20,000 descriptors here, so 10,000 connections need the gateway and the
// clients in different processes.

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "imgate")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type gatewayProc struct {
	cmd             *exec.Cmd
	data            string
	tcp, admin, web int
}

func startGateway(t *testing.T, bin string, extra ...string) *gatewayProc {
	t.Helper()
	g := &gatewayProc{data: t.TempDir(), tcp: freePort(t), admin: freePort(t), web: freePort(t)}
	args := append([]string{"gateway", "--data", g.data, "--log-level", "warn",
		"--listen", fmt.Sprintf("tcp://127.0.0.1:%d", g.tcp),
		"--admin", fmt.Sprintf("127.0.0.1:%d", g.admin),
		"--http", fmt.Sprintf("127.0.0.1:%d", g.web)}, extra...)
	g.cmd = exec.Command(bin, args...)
	g.cmd.Stderr = os.Stderr
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		g.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { g.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			g.cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", g.tcp))
		if err == nil {
			c.Close()
			return g
		}
		if time.Now().After(deadline) {
			t.Fatal("gateway did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (g *gatewayProc) token(t *testing.T, bin, uid string) string {
	t.Helper()
	out, err := exec.Command(bin, "token", "--uid", uid, "--data", g.data, "--ttl", "1h").Output()
	if err != nil {
		t.Fatalf("imgate token: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// adminInt sends one inline command to the admin port and parses an integer reply.
func (g *gatewayProc) adminInt(t *testing.T, cmd string) int {
	t.Helper()
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", g.admin))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "%s\r\n", cmd)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, ":") {
		t.Fatalf("%s: %q %v", cmd, line, err)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(line[1:]))
	return n
}

func readFrame(r io.Reader) (proto.Frame, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return proto.Frame{}, err
	}
	buf := make([]byte, 4+binary.BigEndian.Uint32(hdr[:]))
	copy(buf, hdr[:])
	if _, err := io.ReadFull(r, buf[4:]); err != nil {
		return proto.Frame{}, err
	}
	return proto.DecodeExact(buf, proto.MaxFrameLimit)
}

func authenticate(addr string, src net.IP, token string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 20 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := c.Write(proto.AppendFrame(nil, proto.Header{Op: proto.OpAuth, Seq: 1}, []byte(token))); err != nil {
		c.Close()
		return nil, err
	}
	f, err := readFrame(c)
	if err != nil || f.Op != proto.OpAuthOK {
		c.Close()
		return nil, fmt.Errorf("auth: op %v err %v", f.Op, err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// mintDevToken signs with the key the gateway generated in its data dir, as
// `imgate token` does (without starting a process per token).
func mintDevToken(t *testing.T, dataDir, uid string) string {
	key, err := gateway.DefaultDevKey(dataDir)
	if err != nil {
		t.Error(err)
		return ""
	}
	tok, err := gateway.MintToken(key, gateway.Claims{UID: uid, Expiry: time.Now().Add(time.Hour)})
	if err != nil {
		t.Error(err)
	}
	return tok
}

func TestBinaryVersionAndToken(t *testing.T) {
	bin := buildBinary(t)
	out, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "imgate ") {
		t.Fatalf("version: %q %v", out, err)
	}
	g := startGateway(t, bin)
	c, err := authenticate(fmt.Sprintf("127.0.0.1:%d", g.tcp), net.IPv4(127, 0, 0, 1), g.token(t, bin, "alice"))
	if err != nil {
		t.Fatalf("a token from `imgate token` must authenticate: %v", err)
	}
	c.Close()
}

// 10,000 clients connect and authenticate at once; every one gets AUTH_OK,
// and a bystander's heartbeats keep being answered throughout.
func TestConnectStorm10k(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 connections")
	}
	const n = 10000
	bin := buildBinary(t)
	g := startGateway(t, bin, "--auth-timeout", "60s")
	addr := fmt.Sprintf("127.0.0.1:%d", g.tcp)
	// Tokens are minted up front with the node's dev key (same as `imgate token`).
	tokens := make([]string, n)
	var mintWG sync.WaitGroup
	for w := 0; w < 4; w++ {
		mintWG.Add(1)
		go func(w int) {
			defer mintWG.Done()
			for i := w; i < n; i += 4 {
				tokens[i] = mintDevToken(t, g.data, "u"+strconv.Itoa(i))
			}
		}(w)
	}
	mintWG.Wait()

	bystander, err := authenticate(addr, net.IPv4(127, 0, 0, 1), mintDevToken(t, g.data, "bystander"))
	if err != nil {
		t.Fatal(err)
	}
	defer bystander.Close()
	stop := make(chan struct{})
	var pongs atomic.Int64
	var byWG sync.WaitGroup
	byWG.Add(1)
	go func() {
		defer byWG.Done()
		for seq := uint32(1); ; seq++ {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			bystander.SetDeadline(time.Now().Add(20 * time.Second))
			bystander.Write(proto.AppendFrame(nil, proto.Header{Op: proto.OpHeartbeat, Seq: seq}, nil))
			if f, err := readFrame(bystander); err != nil || f.Op != proto.OpPong {
				return
			}
			pongs.Add(1)
		}
	}()

	conns := make([]net.Conn, n)
	var next, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < 500; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				src := net.IPv4(127, 0, 0, byte(2+i%40))
				c, err := authenticate(addr, src, tokens[i])
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stop)
	byWG.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	if failed.Load() > 0 {
		t.Fatalf("%d of %d connections failed; first: %v", failed.Load(), n, firstErr.Load())
	}
	t.Logf("%d connections authenticated in %v (%.0f/s), bystander answered %d heartbeats meanwhile",
		n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), pongs.Load())
	if pongs.Load() == 0 {
		t.Fatal("bystander got no PONG during the storm")
	}
	if got := g.adminInt(t, "CLIENT COUNT"); got != n+1 {
		t.Fatalf("CLIENT COUNT %d, want %d", got, n+1)
	}
}
