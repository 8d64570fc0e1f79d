package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"imgate/cluster"
	"imgate/gateway"
	"imgate/route"
	"imgate/steer"
)

// options is every component's configuration, from one file, one
// environment and one flag set.
type options struct {
	Gateway  gateway.Config
	Cluster  cluster.Config
	Route    route.Config
	DNS      steer.Config
	LogLevel string
}

func defaultClusterConfig() cluster.Config { return cluster.DefaultConfig() }
func defaultRouteConfig() route.Config     { return route.DefaultConfig() }

// clusterFile is the [cluster] table.
type clusterFile struct {
	Region         *string   `toml:"region"`
	AdvertiseHost  *string   `toml:"advertise_host"`
	Capacity       *int      `toml:"capacity"`
	NATS           []string  `toml:"nats"`
	CredsFile      *string   `toml:"nats_creds"`
	NKeyFile       *string   `toml:"nats_nkey"`
	User           *string   `toml:"nats_user"`
	Password       *string   `toml:"nats_password"`
	Token          *string   `toml:"nats_token"`
	TLSCA          *string   `toml:"nats_tls_ca"`
	TLSCert        *string   `toml:"nats_tls_cert"`
	TLSKey         *string   `toml:"nats_tls_key"`
	Prefix         *string   `toml:"prefix"`
	Liveness       *duration `toml:"liveness"`
	RequestTimeout *duration `toml:"request_timeout"`
	Replicas       *int      `toml:"kv_replicas"`
	InboundQueue   *int      `toml:"inbound_queue"`
	Paths          *int      `toml:"paths"`
	HandoffHold    *duration `toml:"handoff_hold"`
	HandoffBytes   *int      `toml:"handoff_bytes"`
	HandoffTimeout *duration `toml:"handoff_timeout"`
	Embedded       struct {
		Listen        *string  `toml:"listen"`
		StoreDir      *string  `toml:"store_dir"`
		ClusterName   *string  `toml:"cluster_name"`
		ClusterListen *string  `toml:"cluster_listen"`
		Routes        []string `toml:"routes"`
	} `toml:"embedded"`
}

// routeFile is the [route] table with its [[route.svid]] bridges.
type routeFile struct {
	HTTPAddr  *string `toml:"http_addr"`
	HTTPToken *string `toml:"http_token"`
	Instance  *string `toml:"instance"`
	SVIDs     []struct {
		SVID            uint32    `toml:"svid"`
		URL             string    `toml:"url"`
		Timeout         *duration `toml:"timeout"`
		Retries         *int      `toml:"retries"`
		Backoff         *duration `toml:"backoff"`
		Concurrency     *int      `toml:"concurrency"`
		BreakerFailures *int      `toml:"breaker_failures"`
		BreakerCooldown *duration `toml:"breaker_cooldown"`
	} `toml:"svid"`
}

func loadClusterFile(path string, o *options) error {
	f, err := decodeFile(path)
	if err != nil {
		return err
	}
	cf, c := &f.Cluster, &o.Cluster
	set(&c.Region, cf.Region)
	set(&c.AdvertiseHost, cf.AdvertiseHost)
	set(&c.Capacity, cf.Capacity)
	if cf.NATS != nil {
		c.NATS = cf.NATS
	}
	set(&c.CredsFile, cf.CredsFile)
	set(&c.NKeyFile, cf.NKeyFile)
	set(&c.User, cf.User)
	set(&c.Password, cf.Password)
	set(&c.Token, cf.Token)
	set(&c.TLSCA, cf.TLSCA)
	set(&c.TLSCert, cf.TLSCert)
	set(&c.TLSKey, cf.TLSKey)
	set(&c.Prefix, cf.Prefix)
	setDur(&c.Liveness, cf.Liveness)
	setDur(&c.HandoffHold, cf.HandoffHold)
	set(&c.HandoffBytes, cf.HandoffBytes)
	setDur(&c.HandoffTimeout, cf.HandoffTimeout)
	setDur(&c.RequestTimeout, cf.RequestTimeout)
	set(&c.Replicas, cf.Replicas)
	set(&c.InboundQueue, cf.InboundQueue)
	set(&c.Paths, cf.Paths)
	e := &c.Embedded
	set(&e.Listen, cf.Embedded.Listen)
	set(&e.StoreDir, cf.Embedded.StoreDir)
	set(&e.ClusterName, cf.Embedded.ClusterName)
	set(&e.ClusterListen, cf.Embedded.ClusterListen)
	if cf.Embedded.Routes != nil {
		e.Routes = cf.Embedded.Routes
	}
	rf, r := &f.Route, &o.Route
	set(&r.HTTPAddr, rf.HTTPAddr)
	set(&r.HTTPToken, rf.HTTPToken)
	set(&r.Instance, rf.Instance)
	for _, s := range rf.SVIDs {
		b := route.Bridge{SVID: s.SVID, URL: s.URL}
		setDur(&b.Timeout, s.Timeout)
		set(&b.Retries, s.Retries)
		setDur(&b.Backoff, s.Backoff)
		set(&b.Concurrency, s.Concurrency)
		set(&b.BreakerFailures, s.BreakerFailures)
		setDur(&b.BreakerCooldown, s.BreakerCooldown)
		r.Bridges = append(r.Bridges, b)
	}
	f.DNS.apply(&o.DNS)
	return nil
}

// clusterSetting is one cluster or route flag, also readable from
// IMGATE_<NAME>.
type clusterSetting struct {
	name, usage string
	apply       func(o *options, v string) error
}

func ostr(dst func(*options) *string) func(*options, string) error {
	return func(o *options, v string) error { *dst(o) = v; return nil }
}

var clusterSettings = []clusterSetting{
	{"nats", "external NATS servers, comma-separated (nats://a:4222,nats://b:4222); empty: `all` embeds one, `gateway` runs alone", func(o *options, v string) error {
		o.Cluster.NATS = nil
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				o.Cluster.NATS = append(o.Cluster.NATS, s)
			}
		}
		return nil
	}},
	{"nats-creds", "NATS credentials file (.creds)", ostr(func(o *options) *string { return &o.Cluster.CredsFile })},
	{"nats-nkey", "NATS nkey seed file", ostr(func(o *options) *string { return &o.Cluster.NKeyFile })},
	{"nats-user", "NATS user", ostr(func(o *options) *string { return &o.Cluster.User })},
	{"nats-password", "NATS password", ostr(func(o *options) *string { return &o.Cluster.Password })},
	{"nats-token", "NATS token", ostr(func(o *options) *string { return &o.Cluster.Token })},
	{"nats-tls-ca", "CA bundle that signs the NATS servers' certificates", ostr(func(o *options) *string { return &o.Cluster.TLSCA })},
	{"nats-tls-cert", "client certificate for NATS (mutual TLS)", ostr(func(o *options) *string { return &o.Cluster.TLSCert })},
	{"nats-tls-key", "client key for NATS (mutual TLS)", ostr(func(o *options) *string { return &o.Cluster.TLSKey })},
	{"nats-listen", "client address of the embedded NATS server (`all`)", ostr(func(o *options) *string { return &o.Cluster.Embedded.Listen })},
	{"nats-prefix", "subject prefix and KV bucket prefix", ostr(func(o *options) *string { return &o.Cluster.Prefix })},
	{"region", "this node's edge-room (region) label", ostr(func(o *options) *string { return &o.Cluster.Region })},
	{"advertise-host", "address clients reach this node at (smart DNS answers with it)", ostr(func(o *options) *string { return &o.Cluster.AdvertiseHost })},
	{"capacity", "connections this node is sized for (load = conns / capacity)", func(o *options, v string) error {
		n, err := strconv.Atoi(v)
		o.Cluster.Capacity = n
		return err
	}},
	{"liveness", "a node silent this long is dead and its registry entries removed", func(o *options, v string) error {
		d, err := time.ParseDuration(v)
		o.Cluster.Liveness = d
		return err
	}},
	{"request-timeout", "how long an uplink waits for its backend", func(o *options, v string) error {
		d, err := time.ParseDuration(v)
		o.Cluster.RequestTimeout = d
		return err
	}},
	{"kv-replicas", "replicas of the registry's KV buckets (0: 3 on a 3+ server cluster, else 1)", func(o *options, v string) error {
		n, err := strconv.Atoi(v)
		o.Cluster.Replicas = n
		return err
	}},
	{"nats-paths", "bus connections per node to an external cluster: 2 (default with 2+ servers) survives a NATS server's loss, 1 halves subscriptions", func(o *options, v string) error {
		n, err := strconv.Atoi(v)
		o.Cluster.Paths = n
		return err
	}},
	{"route-http", "route daemon's push API address; empty disables", ostr(func(o *options) *string { return &o.Route.HTTPAddr })},
	{"route-token", "bearer token the route daemon's API requires", ostr(func(o *options) *string { return &o.Route.HTTPToken })},
}

func registerClusterFlags(fs *flag.FlagSet, settings []clusterSetting) map[string]*string {
	values := make(map[string]*string, len(settings))
	for _, s := range settings {
		values[s.name] = fs.String(s.name, "", s.usage+" (env "+envName(s.name)+")")
	}
	return values
}

func applyClusterFlags(settings []clusterSetting, values map[string]*string, given map[string]bool, o *options) error {
	for _, s := range settings {
		v, ok := *values[s.name], given[s.name]
		if !ok {
			v, ok = os.LookupEnv(envName(s.name))
		}
		if !ok {
			continue
		}
		if err := s.apply(o, v); err != nil {
			return fmt.Errorf("--%s %q: %w", s.name, v, err)
		}
	}
	return nil
}

// system is what one `imgate all|gateway|route` process runs, in start
// order; stop runs in reverse.
type system struct {
	embedded *cluster.Embedded
	srv      *gateway.Server
	node     *cluster.Node
	daemon   *route.Daemon
	echo     *cluster.Backend
	conns    []interface{ Close() }
	natsURL  string

	// The DNS role (dns.go).
	dns         *steer.Responder
	dnsHTTP     *http.Server
	dnsHTTPAddr string
	httpdns     []*steer.HTTPDNS // the gateway API's and the role's own
	watcher     *cluster.Watcher
}

// startSystem starts the roles of cmd: `all` a gateway node, an embedded
// NATS (unless --nats), the route daemon and the echo backend of SVID 1;
// `gateway` a gateway node, on the bus when --nats is given; `route` the
// route daemon alone; `dns` the smart-DNS responder alone (dns.go), which
// `all` and `gateway` also run with [dns] enabled.
func startSystem(cmd string, o options, log *slog.Logger) (sys *system, err error) {
	sys = &system{}
	defer func() {
		if err != nil {
			sys.stop(log)
		}
	}()
	cc := o.Cluster
	cc.NodeID = o.Gateway.NodeID
	onBus := cmd == "all" || cmd == "route" || cmd == "dns" || len(cc.NATS) > 0
	if cmd == "all" && len(cc.NATS) == 0 {
		sys.embedded, err = cluster.StartEmbedded(cc.Embedded, o.Gateway.NodeID, o.Gateway.DataDir, log)
		if err != nil {
			return sys, err
		}
		sys.natsURL = sys.embedded.ClientURL()
	}
	if (cmd == "route" || cmd == "dns") && len(cc.NATS) == 0 {
		cc.NATS = []string{"nats://127.0.0.1:4222"}
	}
	if len(cc.NATS) > 0 {
		sys.natsURL = strings.Join(cc.NATS, ",")
	}
	if cmd != "route" && cmd != "dns" {
		sys.srv, err = gateway.New(o.Gateway, log)
		if err != nil {
			return sys, err
		}
		if onBus {
			paths, err := cluster.ConnectPaths(cc, "imgate-gateway "+o.Gateway.NodeID, sys.embedded, log, nats.NoEcho())
			if err != nil {
				return sys, err
			}
			sys.conns = append(sys.conns, paths)
			if sys.node, err = cluster.Attach(sys.srv, paths, cc, log); err != nil {
				return sys, err
			}
			if err := sys.registerHTTPDNS(o); err != nil {
				return sys, err
			}
		}
		if err := sys.srv.Start(); err != nil {
			return sys, err
		}
		if sys.node != nil {
			if err := sys.node.Start(); err != nil {
				return sys, err
			}
		}
	}
	if err := sys.startSteering(cmd, o, cc, log); err != nil {
		return sys, err
	}
	if cmd == "all" || cmd == "route" {
		paths, err := cluster.ConnectPaths(cc, "imgate-route "+o.Gateway.NodeID, sys.embedded, log)
		if err != nil {
			return sys, err
		}
		sys.conns = append(sys.conns, paths)
		nc := paths.Primary()
		sys.daemon, err = route.New(o.Route, paths, cc.Prefix, log)
		if err != nil {
			return sys, err
		}
		if err := sys.daemon.Start(); err != nil {
			return sys, err
		}
		if cmd == "all" {
			// The single-node system answers SVID 1 itself, over the bus
			// like any backend, so a new user sees a round trip at once.
			sys.echo, err = cluster.ServeSVID(nc, cc.Prefix, 1, "echo@"+o.Gateway.NodeID, func(r cluster.Request) ([]byte, error) {
				return r.Payload, nil
			})
			if err != nil {
				return sys, err
			}
		}
	}
	return sys, nil
}

func (sys *system) stop(log *slog.Logger) {
	sys.stopSteering()
	if sys.srv != nil {
		sys.srv.Close()
	}
	if sys.node != nil {
		if err := sys.node.Close(); err != nil {
			log.Warn("cluster node close", "err", err)
		}
	}
	if sys.echo != nil {
		sys.echo.Close()
	}
	if sys.daemon != nil {
		sys.daemon.Close()
	}
	for i := len(sys.conns) - 1; i >= 0; i-- {
		sys.conns[i].Close()
	}
	if sys.embedded != nil {
		sys.embedded.Close()
	}
}
