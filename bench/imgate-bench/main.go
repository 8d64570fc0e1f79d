// Command imgate-bench proves imgate's numbers: idle cost per connection,
// room fan-out, group-chat rooms, unicast pushes and connection storms, each
// next to a raw-writer floor and a real nats-server measured in the same run.
//
//	imgate-bench [all|idle|fanout|rooms|unicast|storm|baddata|udpscale|weaknet|cluster|drain] [flags]
//
// cluster runs three gateway processes on a three-server NATS cluster on this
// machine (cluster/harness): cross-node fan-out against one node, SVID
// requests over NATS and over the route daemon's HTTP bridge, and the
// registry's writes during a login storm.
//
// By default it starts bin/imgate and bin/nats-server itself (local mode) and
// reads their CPU and memory from /proc. With --target-tcp and friends it
// drives a remote gateway and reads CPU and memory from the admin port's INFO.
// weaknet (not in all; root only) measures push latency and delivery per
// transport through the imgate-netem shim in network namespaces, and also
// writes bench/out/weaknet.md.
// Results: a table on the terminal, bench/out/results.json (metric -> number)
// and SVG charts in bench/out/.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"imgate/bench/baseline"
	"imgate/bench/load"
	"imgate/bench/weaknet"
)

type options struct {
	gatewayBin     string
	natsBin        string
	remote         load.Target // set when --target-tcp is given
	keyFile        string
	src            string
	out            string
	members        int
	small          int
	sizes          []int
	idleKinds      []string
	stepTime       time.Duration
	perGenerator   int
	maxRate        float64
	nats           bool
	floor          bool
	udpMembers     int
	udpMessages    int
	udpQUICEvery   time.Duration
	kcpPreset      string
	weaknet        weaknetOptions
	badTargets     []string // UDP listener URLs for baddata (quic://, kcp://)
	badN           int
	badRate        float64
	quicMembers    int           // fanout over QUIC: members (0: skip)
	drainClients   int           // drain: clients on the node that drains
	drainPeriod    time.Duration // drain: its period
	echoBin        string
	clusterMembers int
	clusterRate    float64
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "floor-server" {
		runFloorServer(os.Args[2:])
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "gen" {
		runGenerator()
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "weaknet-probe" {
		// The client side of the weaknet scenario, started by it inside the
		// client namespace.
		os.Exit(weaknet.RunProbe(os.Args[2:], os.Stdin, os.Stdout, os.Stderr))
	}
	cmd := "all"
	args := os.Args[1:]
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var o options
	fs := flag.NewFlagSet("imgate-bench "+cmd, flag.ExitOnError)
	fs.StringVar(&o.gatewayBin, "gateway-bin", "bin/imgate", "gateway binary started in local mode")
	fs.StringVar(&o.natsBin, "nats-bin", "bin/nats-server", "nats-server binary (built from the module when missing)")
	fs.StringVar(&o.remote.TCP, "target-tcp", "", "remote mode: the gateway's tcp listener host:port")
	fs.StringVar(&o.remote.WS, "target-ws", "", "remote mode: the gateway's WebSocket URL")
	fs.StringVar(&o.remote.QUIC, "target-quic", "", "remote mode: the gateway's QUIC listener host:port")
	fs.StringVar(&o.remote.KCP, "target-kcp", "", "remote mode: the gateway's KCP listener host:port")
	fs.StringVar(&o.remote.Admin, "target-admin", "", "remote mode: the admin port host:port")
	fs.StringVar(&o.remote.AdminPassword, "admin-password", "", "remote mode: admin password")
	fs.StringVar(&o.remote.HTTP, "target-http", "", "remote mode: the HTTP API host:port")
	fs.StringVar(&o.keyFile, "key-file", "", "remote mode: HS256 secret file that signs the gateway's tokens")
	fs.StringVar(&o.src, "src", "127.0.0.2-127.0.0.60", "source addresses for client sockets")
	fs.StringVar(&o.out, "out", "bench/out", "output directory for results.json and charts")
	fs.IntVar(&o.members, "members", 19000, "connections for fanout, rooms, unicast and storm")
	fs.IntVar(&o.small, "members-small", 10000, "room size for the 100 msg/s fan-out")
	sizes := fs.String("idle-sizes", "1000,5000,10000,19000", "connection counts for idle")
	idleKinds := fs.String("idle-transports", "tcp,ws", "transports for idle (tcp, ws, kcp, quic)")
	fs.IntVar(&o.udpMembers, "udp-members", 50000, "udpscale: KCP sessions, and as many QUIC connections, held at once")
	fs.IntVar(&o.udpMessages, "udp-messages", 5, "udpscale: messages (1/s) into each transport's room")
	fs.DurationVar(&o.udpQUICEvery, "udp-quic-every", 10*time.Second, "udpscale: time between pushes into the QUIC room and the room of all")
	fs.StringVar(&o.kcpPreset, "kcp-preset", "fast", "KCP preset of the load side (the gateway's is its own setting)")
	fs.DurationVar(&o.stepTime, "step", 3*time.Second, "publishing time per rate step")
	fs.Float64Var(&o.maxRate, "max-rate", 4000, "highest publish rate a ramp tries")
	fs.IntVar(&o.perGenerator, "per-generator", 18000, "connections one load process holds; more are spread over child generator processes")
	fs.BoolVar(&o.nats, "nats", true, "measure the nats-server baseline")
	fs.StringVar(&o.echoBin, "echo-bin", "bin/imgate-echo", "sample backend for the cluster scenario")
	fs.IntVar(&o.clusterMembers, "cluster-members", 6000, "room members spread over the 3 nodes of the cluster fan-out")
	fs.Float64Var(&o.clusterRate, "cluster-rate", 20, "publish rate of the cluster fan-out (msg/s)")
	fs.BoolVar(&o.floor, "floor", true, "measure the raw-writer floor")
	fs.StringVar(&o.weaknet.netemBin, "netem-bin", "bin/imgate-netem", "weaknet: the impairment shim binary")
	fs.StringVar(&o.weaknet.transports, "weaknet-transports", "tcp,ws,quic,kcp-normal,kcp-fast,kcp-weak,kcp-weak-fec", "weaknet: transports, by name or name=URL with {gw} for the gateway address")
	fs.StringVar(&o.weaknet.conditions, "weaknet-conditions", "5%/100ms,20%/200ms", "weaknet: loss/RTT[/jitter] per condition, each way")
	fs.Float64Var(&o.weaknet.rate, "weaknet-rate", weaknet.DefaultRate, "weaknet: messages per second pushed to the client")
	fs.DurationVar(&o.weaknet.duration, "weaknet-duration", weaknet.DefaultDuration, "weaknet: publishing time per transport and condition")
	fs.DurationVar(&o.weaknet.drain, "weaknet-drain", weaknet.DefaultDrain, "weaknet: how long to wait for messages still in flight")
	badTargets := fs.String("baddata-targets", "", "baddata: UDP listener URLs, comma-separated (quic://host:port, kcp://host:port); default the started gateway's quic:// listener")
	fs.IntVar(&o.badN, "baddata-n", 200000, "baddata: garbage datagrams per listener")
	fs.Float64Var(&o.badRate, "baddata-rate", 50000, "baddata: datagrams per second (all source addresses together)")
	fs.IntVar(&o.quicMembers, "fanout-quic", 3000, "fanout: members of a second run over QUIC (0: TCP only)")
	fs.IntVar(&o.drainClients, "drain-clients", 4000, "drain: clients (Go client library) on the node that drains")
	fs.DurationVar(&o.drainPeriod, "drain-period", 10*time.Second, "drain: the drain period")
	fs.Parse(args)
	for _, t := range strings.Split(*badTargets, ",") {
		if t = strings.TrimSpace(t); t != "" {
			o.badTargets = append(o.badTargets, t)
		}
	}
	o.idleKinds = strings.Split(*idleKinds, ",")
	for _, s := range strings.Split(*sizes, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil && n > 0 {
			o.sizes = append(o.sizes, n)
		}
	}
	b, err := newBench(o)
	check(err)
	defer b.close()
	scenarios := map[string]func() error{
		"idle": b.idle, "fanout": b.fanout, "rooms": b.rooms, "unicast": b.unicast, "storm": b.storm, "baddata": b.baddata,
		"cluster":  b.cluster,
		"drain":    b.drain,
		"udpscale": b.udpScale, // not in all: its own make target (bench-udp-scale)
		"weaknet":  b.weaknet,  // not in all: root and network namespaces (bench-weaknet)
	}
	order := []string{"idle", "storm", "fanout", "rooms", "unicast", "baddata", "cluster", "drain"}
	if cmd != "all" {
		if _, ok := scenarios[cmd]; !ok {
			fmt.Fprintf(os.Stderr, "imgate-bench: unknown scenario %q (all, idle, fanout, rooms, unicast, storm, baddata, udpscale, weaknet, cluster, drain)\n", cmd)
			os.Exit(2)
		}
		order = []string{cmd}
	}
	start := time.Now()
	for _, name := range order {
		fmt.Fprintf(os.Stderr, "== %s\n", name)
		if err := scenarios[name](); err != nil {
			fmt.Fprintf(os.Stderr, "imgate-bench %s: %v\n", name, err)
			b.failed = true
		}
		check(b.save())
		// The load side shares the cores with the system under test: give
		// back what a scenario's clients left (19,000 nats.go connections
		// hold ~850 MB) before the next one measures anything.
		runtime.GC()
		debug.FreeOSMemory()
	}
	if len(b.table.Rows) > 0 {
		b.table.Render(os.Stdout)
	}
	fmt.Printf("\nwrote %s and charts in %s (%.0fs)\n", filepath.Join(o.out, "results.json"), o.out, time.Since(start).Seconds())
	if b.failed {
		os.Exit(1)
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "imgate-bench:", err)
		os.Exit(1)
	}
}

// runFloorServer is the child process of the floor measurement.
func runFloorServer(args []string) {
	fs := flag.NewFlagSet("floor-server", flag.ExitOnError)
	data := fs.String("data", "127.0.0.1:0", "data listener")
	ctl := fs.String("control", "127.0.0.1:0", "control listener")
	threads := fs.Int("threads", 2, "writer threads")
	fs.Parse(args)
	check(baseline.RunFloorServer(*data, *ctl, *threads))
}
