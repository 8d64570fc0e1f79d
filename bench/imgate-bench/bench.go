package main

import (
	"bufio"
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
	"imgate/bench/report"
	"imgate/gateway"
)

type bench struct {
	o        options
	srcs     []net.IP
	results  *report.Results
	table    *report.Table
	progress *report.Progress
	charts   chartData
	failed   bool
}

// chartData collects series over the run for the charts written at the end.
type chartData struct {
	cdf    map[string][]report.Series // latency CDFs by scenario
	rate   []report.Series            // deliveries/s against publish rate
	memory []report.Series            // bytes per connection against N
}

func newBench(o options) (*bench, error) {
	srcs, err := load.ParseSources(o.src)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return nil, err
	}
	b := &bench{o: o, srcs: srcs, charts: chartData{cdf: map[string][]report.Series{}}, results: report.NewResults(), progress: report.NewProgress(os.Stderr),
		table: &report.Table{Title: "imgate-bench", Header: []string{"scenario", "metric", "imgate", "nats", "floor", "imgate/nats"}}}
	b.results.Merge(filepath.Join(o.out, "results.json"))
	return b, nil
}

func (b *bench) close() {}

func (b *bench) save() error {
	if err := b.results.Write(filepath.Join(b.o.out, "results.json")); err != nil {
		return err
	}
	write := func(name string, c report.Chart) error {
		if len(c.Series) == 0 {
			return nil
		}
		return c.WriteSVG(filepath.Join(b.o.out, name))
	}
	for scenario, series := range b.charts.cdf {
		c := report.Chart{Title: "Publish-to-receive latency (CDF): " + scenario, XLabel: "latency (ms)", YLabel: "fraction of deliveries", LogX: true, Series: series}
		if err := write("latency_cdf_"+scenario+".svg", c); err != nil {
			return err
		}
	}
	if err := write("fanout_rate.svg", report.Chart{Title: "Room fan-out: deliveries per second against publish rate", XLabel: "publish rate (msg/s)", YLabel: "deliveries/s", LogX: true, LogY: true, Series: b.charts.rate}); err != nil {
		return err
	}
	return write("idle_memory.svg", report.Chart{Title: "Memory per idle connection", XLabel: "connections", YLabel: "bytes per connection", Series: b.charts.memory})
}

// row adds a table row; nats and floor may be NaN-free zeros meaning "not measured".
func (b *bench) row(scenario, metric string, imgate, nats, floor float64) {
	f := func(v float64) string {
		if v == 0 {
			return "-"
		}
		return strconv.FormatFloat(v, 'g', 4, 64)
	}
	ratio := "-"
	if imgate != 0 && nats != 0 {
		ratio = strconv.FormatFloat(imgate/nats, 'f', 2, 64)
	}
	b.table.Rows = append(b.table.Rows, []string{scenario, metric, f(imgate), f(nats), f(floor), ratio})
}

// node is the system under test: a local process or a remote gateway.
type node struct {
	target load.Target
	pid    int       // local process, 0 when remote
	cmd    *exec.Cmd // local process
	admin  *load.Admin
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startGateway starts a fresh local gateway (or attaches to the remote one).
func (b *bench) startGateway() (*node, error) {
	if b.o.remote.TCP != "" {
		t := b.o.remote
		secret, err := os.ReadFile(b.o.keyFile)
		if err != nil {
			return nil, fmt.Errorf("remote mode needs --key-file: %w", err)
		}
		t.Key = gateway.KeyConfig{ID: "default", Alg: "HS256", Secret: strings.TrimSpace(string(secret))}
		n := &node{target: t}
		return n, n.dialAdmin()
	}
	dir, err := os.MkdirTemp("", "imgate-bench")
	if err != nil {
		return nil, err
	}
	tcp, ws, admin, web, quicPort, kcpPort := freePort(), freePort(), freePort(), freePort(), freePort(), freePort()
	cmd := exec.Command(b.o.gatewayBin, "gateway", "--data", dir, "--log-level", "warn",
		"--listen", fmt.Sprintf("tcp://127.0.0.1:%d,ws://127.0.0.1:%d/ws,quic://127.0.0.1:%d,kcp://127.0.0.1:%d", tcp, ws, quicPort, kcpPort),
		"--admin", fmt.Sprintf("127.0.0.1:%d", admin), "--http", fmt.Sprintf("127.0.0.1:%d", web),
		"--heartbeat", "10m", "--max-conns-per-user", "16")
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", b.o.gatewayBin, err)
	}
	n := &node{cmd: cmd, pid: cmd.Process.Pid, target: load.Target{
		TCP: fmt.Sprintf("127.0.0.1:%d", tcp), WS: fmt.Sprintf("ws://127.0.0.1:%d/ws", ws), QUIC: fmt.Sprintf("127.0.0.1:%d", quicPort), KCP: fmt.Sprintf("127.0.0.1:%d", kcpPort),
		Admin: fmt.Sprintf("127.0.0.1:%d", admin), HTTP: fmt.Sprintf("127.0.0.1:%d", web)}}
	if err := waitListen(n.target.TCP); err != nil {
		n.stop()
		return nil, err
	}
	key, err := gateway.DefaultDevKey(dir)
	if err != nil {
		n.stop()
		return nil, err
	}
	n.target.Key = key
	return n, n.dialAdmin()
}

func (n *node) dialAdmin() error {
	a, err := load.DialAdmin(n.target.Admin, n.target.AdminPassword)
	n.admin = a
	return err
}

func (n *node) stop() {
	if n.admin != nil {
		n.admin.Close()
	}
	if n.cmd != nil {
		n.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { n.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			n.cmd.Process.Kill()
			<-done
		}
	}
}

// cpu is the gateway's user+system CPU so far.
func (n *node) cpu() time.Duration {
	if n.pid != 0 {
		d, _ := baseline.CPUTime(n.pid)
		return d
	}
	info := n.info()
	return time.Duration((info["used_cpu_user"] + info["used_cpu_sys"]) * float64(time.Second))
}

// rss is the gateway's resident memory in bytes.
func (n *node) rss() int64 {
	if n.pid != 0 {
		v, _ := baseline.RSS(n.pid)
		return v
	}
	return int64(n.info()["used_memory_rss"])
}

// info reads the numeric fields of the admin port's INFO.
func (n *node) info() map[string]float64 {
	out := map[string]float64{}
	c, err := net.DialTimeout("tcp", n.target.Admin, 5*time.Second)
	if err != nil {
		return out
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if n.target.AdminPassword != "" {
		fmt.Fprintf(c, "AUTH %s\r\n", n.target.AdminPassword)
	}
	fmt.Fprintf(c, "INFO\r\n")
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return out
		}
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if f, err := strconv.ParseFloat(v, 64); ok && err == nil {
			out[k] = f
		}
		if k == "used_cpu_user" {
			return out
		}
	}
}

func waitListen(addr string) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("nothing listens on %s", addr)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// get reads a result, 0 when absent.
func (b *bench) get(key string) float64 {
	v, _ := b.results.Get(key)
	return v
}

// profile captures a CPU profile of the gateway for d into path (local or
// remote: it uses the HTTP API's /debug/pprof) and writes the top functions
// next to it as text. It returns at once; wait on the channel.
func (n *node) profile(d time.Duration, path string) <-chan error {
	done := make(chan error, 1)
	go func() {
		url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", n.target.HTTP, int(d.Seconds()))
		resp, err := http.Get(url)
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(path)
		if err != nil {
			done <- err
			return
		}
		_, err = io.Copy(f, resp.Body)
		f.Close()
		if err == nil {
			out, terr := exec.Command("go", "tool", "pprof", "-top", "-nodecount=30", path).CombinedOutput()
			if terr == nil {
				err = os.WriteFile(strings.TrimSuffix(path, ".pprof")+".top.txt", out, 0o644)
			}
		}
		done <- err
	}()
	return done
}

// addCDF files latency series under their scenario, by name
// ("imgate rooms ..." goes to rooms; fan-out otherwise).
func (b *bench) addCDF(series ...report.Series) {
	for _, s := range series {
		scenario := "fanout"
		switch {
		case strings.Contains(s.Name, "rooms"):
			scenario = "rooms"
		case strings.Contains(s.Name, "unicast"):
			scenario = "unicast"
		case strings.Contains(s.Name, "svid"):
			scenario = "svid"
		case strings.Contains(s.Name, "node"):
			scenario = "cluster"
		}
		b.charts.cdf[scenario] = append(b.charts.cdf[scenario], s)
	}
}
