// Command imgate-idle measures what an idle connection costs the gateway:
// it starts bin/imgate as a separate process (so each side stays under the
// per-process descriptor limit), opens N authenticated connections that each
// join one room and exchange a few frames (so every lazily sized buffer has
// been touched), lets the process settle, and reads the gateway's RSS from
// /proc and the kernel's TCP memory from /proc/net/sockstat.
//
//	imgate-idle --sizes 1000,5000,10000,19000 --transports tcp,ws --out bench/out
//	imgate-idle --sizes 10000 --transports quic --profile bench/out   # plus heap and goroutine profiles
//
// With --profile the gateway's HTTP API is on, and after settling the tool
// saves its heap profile (heap_<tr>_<n>.pprof), its goroutine count and the
// runtime's memory classes (memstats_<tr>_<n>.txt) next to idle.json.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"imgate/bench/baseline"
	"imgate/bench/load"
	"imgate/gateway"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "kcpgo-server" {
		runKCPGoServer(os.Args[2])
		return
	}
	if len(os.Args) == 4 && os.Args[1] == "netpoll-server" {
		size, _ := strconv.Atoi(os.Args[3])
		runNetpollServer(os.Args[2], size)
		return
	}
	bin := flag.String("bin", "bin/imgate", "gateway binary")
	sizes := flag.String("sizes", "1000,5000,10000,19000", "connection counts to measure")
	transports := flag.String("transports", "tcp,ws,netpoll,netpoll1k", "what to measure: tcp, ws, kcp and quic (imgate), netpoll and netpoll1k (bare netpoll v0.7.2 servers with default and 1 KiB buffers, the baseline), kcpgo (kcp-go's Listener, the baseline for kcp), tls and wss")
	src := flag.String("src", "127.0.0.2-127.0.0.40", "source address range for client sockets")
	settle := flag.Duration("settle", 4*time.Second, "wait before reading memory")
	out := flag.String("out", "bench/out", "directory for idle.json")
	workers := flag.Int("workers", 64, "concurrent connection setups")
	profile := flag.Bool("profile", false, "save the gateway's heap profile and memory classes with N connections open (into --out)")
	flag.Parse()
	check(os.MkdirAll(*out, 0o755))

	srcs, err := load.ParseSources(*src)
	check(err)
	results := map[string]float64{}
	fmt.Printf("%-4s %7s %12s %12s %14s %14s\n", "tr", "conns", "rss_base_kb", "rss_kb", "bytes/conn", "kernel_b/conn")
	for _, tr := range strings.Split(*transports, ",") {
		for _, s := range strings.Split(*sizes, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			check(err)
			prof := ""
			if *profile {
				prof = filepath.Join(*out, fmt.Sprintf("%s_%d", tr, n))
			}
			r, err := measure(*bin, tr, n, srcs, *settle, *workers, prof)
			check(err)
			fmt.Printf("%-4s %7d %12d %12d %14.0f %14.0f\n", tr, n, r.baseKB, r.rssKB, r.perConn, r.kernelPerConn)
			results[fmt.Sprintf("idle_bytes_per_conn_%s_%d", tr, n)] = r.perConn
			results[fmt.Sprintf("kernel_bytes_per_conn_%s_%d", tr, n)] = r.kernelPerConn
		}
	}
	data, _ := json.MarshalIndent(results, "", "  ")
	check(os.WriteFile(filepath.Join(*out, "idle.json"), append(data, '\n'), 0o644))
	fmt.Println("wrote", filepath.Join(*out, "idle.json"))
}

type result struct {
	baseKB, rssKB          int
	perConn, kernelPerConn float64
}

// measure opens n connections of kind tr to a fresh gateway. When prof is
// set it also saves prof+".heap.pprof" and prof+".memstats.txt".
func measure(bin, tr string, n int, srcs []net.IP, settle time.Duration, workers int, prof string) (result, error) {
	var r result
	dir, err := os.MkdirTemp("", "imgate-idle")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	tcpPort, wsPort, quicPort, httpPort, kcpPort := freePort(), freePort(), freePort(), freePort(), freePort()
	var proc *os.Process
	dialTr := tr
	if tr == "kcpgo" {
		if proc, err = startKCPGoServer(strconv.Itoa(kcpPort)); err != nil {
			return r, err
		}
	} else if size, ok := map[string]int{"netpoll": 0, "netpoll1k": 1024}[tr]; ok {
		dialTr = "tcp"
		if proc, err = startNetpollServer(tcpPort, size); err != nil {
			return r, err
		}
	} else {
		httpAddr := ""
		if prof != "" {
			httpAddr = fmt.Sprintf("127.0.0.1:%d", httpPort)
		}
		listen := fmt.Sprintf("tcp://127.0.0.1:%d,ws://127.0.0.1:%d/ws", tcpPort, wsPort)
		switch tr {
		case "quic":
			listen += fmt.Sprintf(",quic://127.0.0.1:%d", quicPort)
		case "kcp":
			listen += fmt.Sprintf(",kcp://127.0.0.1:%d?preset=fast", kcpPort)
		}
		args := []string{"gateway", "--data", dir, "--admin", "", "--http", httpAddr,
			"--listen", listen, "--heartbeat", "10m", "--log-level", "warn"}
		if tr == "tls" || tr == "wss" {
			cert, key, err := writeSelfSigned(dir)
			if err != nil {
				return r, err
			}
			args = append(args, "--tls-cert", cert, "--tls-key", key,
				"--listen", fmt.Sprintf("tls://127.0.0.1:%d,wss://127.0.0.1:%d/ws", tcpPort, wsPort))
		}
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
		if err := cmd.Start(); err != nil {
			return r, err
		}
		proc = cmd.Process
		if err := waitListen(fmt.Sprintf("127.0.0.1:%d", tcpPort)); err != nil {
			return r, err
		}
	}
	defer func() { proc.Signal(syscall.SIGTERM); proc.Wait() }()
	key, err := gateway.DefaultDevKey(dir)
	if err != nil {
		return r, err
	}
	time.Sleep(settle)
	r.baseKB = rssKB(proc.Pid)
	kernelBase := baseline.TCPMemPages()

	// One user per connection, each in one of 1,000 rooms, like a real
	// node: the registry and room cost per user is part of the idle cost.
	scheme := "ws"
	if tr == "wss" {
		scheme = "wss"
	}
	start := time.Now()
	m, err := load.Open(load.Dial{
		Target: load.Target{TCP: fmt.Sprintf("127.0.0.1:%d", tcpPort), WS: fmt.Sprintf("%s://127.0.0.1:%d/ws", scheme, wsPort),
			QUIC: fmt.Sprintf("127.0.0.1:%d", quicPort), KCP: fmt.Sprintf("127.0.0.1:%d", kcpPort), Key: key},
		Transport:   dialTr,
		KCPPreset:   "fast",
		N:           n,
		Srcs:        srcs,
		Concurrency: workers,
		Rooms:       func(i int) []string { return []string{"room" + strconv.Itoa(i%1000)} },
		Progress: func(k int) {
			fmt.Fprintf(os.Stderr, "\r  %s: %d/%d connected (%.1fs)", tr, k, n, time.Since(start).Seconds())
		},
	}, load.NewTracker(n))
	if err != nil {
		return r, err
	}
	defer m.Close()
	fmt.Fprintf(os.Stderr, "\r  %s: %d/%d connected (%.1fs)\n", tr, n, n, time.Since(start).Seconds())
	time.Sleep(settle)
	r.rssKB = rssKB(proc.Pid)
	r.perConn = float64(r.rssKB-r.baseKB) * 1024 / float64(n)
	r.kernelPerConn = float64(baseline.TCPMemPages()-kernelBase) * float64(os.Getpagesize()) / float64(2*n) // both ends are on this host
	if prof != "" {
		if err := saveProfiles(fmt.Sprintf("127.0.0.1:%d", httpPort), prof, n); err != nil {
			return r, fmt.Errorf("profile: %w", err)
		}
	}
	return r, nil
}

// saveProfiles fetches the gateway's heap profile and its runtime memory
// classes (the debug=1 heap page ends with runtime.MemStats), and writes
// them with the goroutine count, per connection where that helps.
func saveProfiles(httpAddr, prefix string, n int) error {
	get := func(path string) ([]byte, error) {
		resp, err := http.Get("http://" + httpAddr + path)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		return io.ReadAll(resp.Body)
	}
	heap, err := get("/debug/pprof/heap?gc=1")
	if err != nil {
		return err
	}
	if err := os.WriteFile(prefix+".heap.pprof", heap, 0o644); err != nil {
		return err
	}
	page, err := get("/debug/pprof/heap?debug=1")
	if err != nil {
		return err
	}
	gr, err := get("/debug/pprof/goroutine?debug=1")
	if err != nil {
		return err
	}
	var b strings.Builder
	// The first line of the goroutine page is "goroutine profile: total N".
	first, _, _ := strings.Cut(string(gr), "\n")
	fmt.Fprintf(&b, "%s (%d connections)\n", first, n)
	for _, line := range strings.Split(string(page), "\n") {
		// "# HeapInuse = 123456" and friends; "# Stack = 123 / 456".
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "# "), " = ")
		if !ok || !strings.HasPrefix(line, "# ") {
			continue
		}
		v, _, _ = strings.Cut(v, " ") // "Stack = inuse / sys": the first
		if x, err := strconv.ParseFloat(v, 64); err == nil && x >= float64(n) {
			fmt.Fprintf(&b, "%-14s %14.0f  %9.0f per connection\n", k, x, x/float64(n))
		}
	}
	return os.WriteFile(prefix+".memstats.txt", []byte(b.String()), 0o644)
}

func rssKB(pid int) int {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitListen(addr string) error {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("gateway did not listen on %s", addr)
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "imgate-idle:", err)
		os.Exit(1)
	}
}
