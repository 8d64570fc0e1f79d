// Package harness runs an imgate cluster as real processes on loopback: a
// NATS cluster of nats-server processes (built from the module imgate
// depends on), imgate gateway processes joined to it, and sample backends.
// The cluster tests and the cluster benchmarks both use it. Every port is a
// free ephemeral one; everything lives under one directory.
package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"imgate/gateway"
)

// Binaries are the programs a cluster runs.
type Binaries struct {
	Imgate     string
	NATSServer string
	Echo       string
}

// Build compiles imgate, imgate-echo and nats-server into dir. It must run
// inside the imgate module.
func Build(dir string) (Binaries, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return Binaries{}, fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	b := Binaries{
		Imgate:     filepath.Join(dir, "imgate"),
		NATSServer: filepath.Join(dir, "nats-server"),
		Echo:       filepath.Join(dir, "imgate-echo"),
	}
	for _, job := range []struct{ out, pkg string }{
		{b.Imgate, "./cmd/imgate"},
		{b.Echo, "./tools/imgate-echo"},
		{b.NATSServer, "github.com/nats-io/nats-server/v2"},
	} {
		cmd := exec.Command("go", "build", "-o", job.out, job.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("go build %s: %w\n%s", job.pkg, err, out)
		}
	}
	return b, nil
}

// FreePort returns a loopback TCP port nobody listens on now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func freePorts(n int) ([]int, error) {
	var out []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// Proc is a child process with its log file.
type Proc struct {
	Name string
	Log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func start(name, logPath, bin string, args ...string) (*Proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// Kill sends SIGKILL and waits for the process to go.
func (p *Proc) Kill() {
	if p.Exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM and waits up to 10s, then kills.
func (p *Proc) Stop() {
	if p.Exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.Kill()
	}
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Tail returns the end of the process's log.
func (p *Proc) Tail(n int) string {
	b, _ := os.ReadFile(p.Log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// NATS is one nats-server of the cluster.
type NATS struct {
	*Proc
	Port, ClusterPort int
}

// URL is the server's client URL.
func (n *NATS) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.Port) }

// Gateway is one imgate gateway process.
type Gateway struct {
	*Proc
	ID, Region           string
	TCP, Admin, HTTP, WS int
	Data                 string
	rdb                  *redis.Client
}

// Addr is the gateway's TCP client address.
func (g *Gateway) Addr() string { return fmt.Sprintf("127.0.0.1:%d", g.TCP) }

// Cluster is a running cluster.
type Cluster struct {
	Bin      Binaries
	Dir      string
	Key      gateway.KeyConfig
	Liveness time.Duration
	NATS     []*NATS
	Gateways []*Gateway
	Backends []*Proc

	mu    sync.Mutex
	procs []*Proc
}

// New prepares a cluster under dir; nothing runs yet.
func New(bin Binaries, dir string) *Cluster {
	return &Cluster{
		Bin: bin, Dir: dir, Liveness: 1500 * time.Millisecond,
		Key: gateway.KeyConfig{ID: "k1", Alg: gateway.AlgHS256, Secret: "harness-secret-harness-secret-01"},
	}
}

func (c *Cluster) track(p *Proc) {
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
}

// Close stops everything (gateways first, NATS last).
func (c *Cluster) Close() {
	for _, g := range c.Gateways {
		if g.rdb != nil {
			g.rdb.Close()
		}
	}
	c.mu.Lock()
	procs := c.procs
	c.mu.Unlock()
	var wg sync.WaitGroup
	for i := len(procs) - 1; i >= 0; i-- {
		if strings.HasPrefix(procs[i].Name, "nats") {
			continue
		}
		wg.Add(1)
		go func(p *Proc) { defer wg.Done(); p.Stop() }(procs[i])
	}
	wg.Wait()
	for _, n := range c.NATS {
		n.Stop()
	}
}

// StartNATS starts an n-server NATS cluster with JetStream and waits until
// JetStream answers on every server.
func (c *Cluster) StartNATS(n int) error {
	ports, err := freePorts(2 * n)
	if err != nil {
		return err
	}
	for i := range n {
		name := fmt.Sprintf("nats%d", i+1)
		var routes []string
		for j := range n {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[2*j+1]))
			}
		}
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
max_payload: 8MB
jetstream { store_dir: %q }
`, name, ports[2*i], filepath.Join(c.Dir, name))
		if n > 1 { // JetStream refuses a cluster block without routes
			conf += fmt.Sprintf("cluster {\n  name: imgate-harness\n  listen: 127.0.0.1:%d\n  routes: [%s]\n}\n", ports[2*i+1], strings.Join(routes, ", "))
		}
		path := filepath.Join(c.Dir, name+".conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			return err
		}
		p, err := start(name, filepath.Join(c.Dir, name+".log"), c.Bin.NATSServer, "-c", path)
		if err != nil {
			return err
		}
		c.track(p)
		c.NATS = append(c.NATS, &NATS{Proc: p, Port: ports[2*i], ClusterPort: ports[2*i+1]})
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, s := range c.NATS {
		for {
			if err := jetStreamReady(s.URL()); err == nil {
				break
			} else if time.Now().After(deadline) {
				return fmt.Errorf("%s: JetStream not ready: %v\n%s", s.Name, err, s.Tail(20))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

func jetStreamReady(url string) error {
	nc, err := nats.Connect(url, nats.Timeout(time.Second))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err
}

// NATSURLs lists the servers' client URLs.
func (c *Cluster) NATSURLs() []string {
	var out []string
	for _, n := range c.NATS {
		out = append(out, n.URL())
	}
	return out
}

// StartGateway starts `imgate gateway` as node id in region, on the NATS
// cluster, and waits until its registry is ready. extra lines are added to
// its TOML configuration (top-level keys, before the tables).
func (c *Cluster) StartGateway(id, region string, extra ...string) (*Gateway, error) {
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	g := &Gateway{ID: id, Region: region, TCP: ports[0], Admin: ports[1], HTTP: ports[2], WS: ports[3], Data: filepath.Join(c.Dir, id)}
	var urls []string
	for _, u := range c.NATSURLs() {
		urls = append(urls, fmt.Sprintf("%q", u))
	}
	conf := fmt.Sprintf(`node_id = %q
data_dir = %q
listen = ["tcp://127.0.0.1:%d", "ws://127.0.0.1:%d/ws"]
admin_addr = "127.0.0.1:%d"
http_addr = "127.0.0.1:%d"
max_conns_per_user = 64
%s

[transport]
linger = "200ms"

[[auth.keys]]
id = %q
alg = %q
secret = %q

[cluster]
region = %q
nats = [%s]
liveness = %q
request_timeout = "2s"
`, id, g.Data, g.TCP, g.WS, g.Admin, g.HTTP, strings.Join(extra, "\n"), c.Key.ID, c.Key.Alg, c.Key.Secret, region, strings.Join(urls, ", "), c.Liveness)
	path := filepath.Join(c.Dir, id+".toml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	p, err := start(id, filepath.Join(c.Dir, id+".log"), c.Bin.Imgate, "gateway", "--config", path, "--log-level", "info")
	if err != nil {
		return nil, err
	}
	c.track(p)
	g.Proc = p
	g.rdb = redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", g.Admin), PoolSize: 4, DialTimeout: 2 * time.Second})
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := g.Info()
		if err == nil && info["registry_ready"] == true {
			break
		}
		if p.Exited() || time.Now().After(deadline) {
			return nil, fmt.Errorf("gateway %s not ready (%v)\n%s", id, err, p.Tail(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.Gateways = append(c.Gateways, g)
	return g, nil
}

// StartEcho starts an imgate-echo backend of svid over NATS, tagging its
// replies with name.
func (c *Cluster) StartEcho(name string, svid uint32) (*Proc, error) {
	p, err := start(name, filepath.Join(c.Dir, name+".log"), c.Bin.Echo,
		"--nats", strings.Join(c.NATSURLs(), ","), "--svid", fmt.Sprint(svid), "--name", name, "--tag")
	if err != nil {
		return nil, err
	}
	c.track(p)
	c.Backends = append(c.Backends, p)
	// Ready once it has announced itself (its subscription precedes that).
	nc, err := nats.Connect(c.NATS[0].URL())
	if err != nil {
		return p, err
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("imgate.backends")
	if err != nil {
		return p, err
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		m, err := sub.NextMsg(time.Second)
		if err == nil && strings.Contains(string(m.Data), `"instance":"`+name+`"`) {
			return p, nil
		}
		if p.Exited() {
			break
		}
	}
	return p, fmt.Errorf("echo %s did not announce itself\n%s", name, p.Tail(20))
}

// Token mints a client token for uid on device.
func (c *Cluster) Token(uid, device string) (string, error) {
	return gateway.MintToken(c.Key, gateway.Claims{UID: uid, Device: device, Expiry: time.Now().Add(time.Hour)})
}

// Do runs an admin command on the gateway.
func (g *Gateway) Do(ctx context.Context, args ...any) *redis.Cmd { return g.rdb.Do(ctx, args...) }

// Info is the gateway's /cluster/info.
func (g *Gateway) Info() (map[string]any, error) {
	var out map[string]any
	return out, g.GetJSON("/cluster/info", &out)
}

// GetJSON GETs a path of the gateway's HTTP API into v.
func (g *Gateway) GetJSON(path string, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://127.0.0.1:%d%s", g.HTTP, path), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// ErrTimeout is returned by Wait.
var ErrTimeout = errors.New("harness: timed out")

// Wait polls cond every 20ms until it holds or timeout passes.
func Wait(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return ErrTimeout
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// StartHTTPEcho starts imgate-echo's HTTP endpoint and returns its URL.
func (c *Cluster) StartHTTPEcho(name string) (*Proc, string, error) {
	port, err := FreePort()
	if err != nil {
		return nil, "", err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p, err := start(name, filepath.Join(c.Dir, name+".log"), c.Bin.Echo, "--http", addr, "--name", name)
	if err != nil {
		return nil, "", err
	}
	c.track(p)
	c.Backends = append(c.Backends, p)
	if err := Wait(10*time.Second, func() bool {
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			conn.Close()
		}
		return err == nil
	}); err != nil {
		return p, "", fmt.Errorf("%s did not listen\n%s", name, p.Tail(20))
	}
	return p, "http://" + addr + "/", nil
}

// Route is a route daemon process.
type Route struct {
	*Proc
	HTTP int
}

// StartRoute starts `imgate route` on the NATS cluster with bridges given
// as TOML [[route.svid]] tables, and waits for its /healthz.
func (c *Cluster) StartRoute(name string, bridges ...string) (*Route, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	var urls []string
	for _, u := range c.NATSURLs() {
		urls = append(urls, fmt.Sprintf("%q", u))
	}
	conf := fmt.Sprintf("[cluster]\nnats = [%s]\n\n[route]\nhttp_addr = \"127.0.0.1:%d\"\ninstance = %q\n\n%s\n",
		strings.Join(urls, ", "), port, name, strings.Join(bridges, "\n"))
	path := filepath.Join(c.Dir, name+".toml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	p, err := start(name, filepath.Join(c.Dir, name+".log"), c.Bin.Imgate, "route", "--config", path, "--data", filepath.Join(c.Dir, name), "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	c.track(p)
	r := &Route{Proc: p, HTTP: port}
	err = Wait(15*time.Second, func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", port))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if err != nil {
		return r, fmt.Errorf("route daemon %s not healthy\n%s", name, p.Tail(20))
	}
	return r, nil
}

// Pids are the process ids of the gateways and of the NATS servers that
// still run (for CPU accounting).
func (c *Cluster) Pids() (gateways, natsServers []int) {
	for _, g := range c.Gateways {
		if !g.Exited() {
			gateways = append(gateways, g.Pid())
		}
	}
	for _, n := range c.NATS {
		if !n.Exited() {
			natsServers = append(natsServers, n.Pid())
		}
	}
	return gateways, natsServers
}
