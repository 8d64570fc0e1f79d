package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"imgate/cluster"
	"imgate/gateway"
	"imgate/steer"
)

// The smart-DNS role: `imgate dns` runs the responder and HTTPDNS alone,
// following the gateways' heartbeats on the bus; `imgate all|gateway` run
// the responder too when [dns] enabled is set, and every gateway on the bus
// serves HTTPDNS on its own HTTP API.

func defaultDNSConfig() steer.Config { return steer.DefaultConfig() }

// dnsFile is the [dns] table with its [[dns.region]] and [[dns.nameserver]].
type dnsFile struct {
	Enabled        *bool     `toml:"enabled"`
	Listen         *string   `toml:"listen"`
	HTTPAddr       *string   `toml:"http_addr"`
	Zone           *string   `toml:"zone"`
	Hostnames      []string  `toml:"hostnames"`
	TTL            *duration `toml:"ttl"`
	MaxAnswers     *int      `toml:"max_answers"`
	Hostmaster     *string   `toml:"hostmaster"`
	TrustForwarded *bool     `toml:"trust_forwarded"`
	Nameservers    []struct {
		Name  string   `toml:"name"`
		Addrs []string `toml:"addrs"`
	} `toml:"nameserver"`
	Regions []struct {
		Name     string   `toml:"name"`
		CIDRs    []string `toml:"cidrs"`
		Fallback []string `toml:"fallback"`
	} `toml:"region"`
}

func (f *dnsFile) apply(c *steer.Config) {
	set(&c.Enabled, f.Enabled)
	set(&c.Listen, f.Listen)
	set(&c.HTTPAddr, f.HTTPAddr)
	set(&c.Zone, f.Zone)
	if f.Hostnames != nil {
		c.Hostnames = f.Hostnames
	}
	setDur(&c.TTL, f.TTL)
	set(&c.MaxAnswers, f.MaxAnswers)
	set(&c.Hostmaster, f.Hostmaster)
	set(&c.TrustForwarded, f.TrustForwarded)
	if f.Nameservers != nil {
		c.Nameservers = nil
		for _, ns := range f.Nameservers {
			c.Nameservers = append(c.Nameservers, steer.Nameserver{Name: ns.Name, Addrs: ns.Addrs})
		}
	}
	if f.Regions != nil {
		c.Regions = nil
		for _, r := range f.Regions {
			c.Regions = append(c.Regions, steer.Region{Name: r.Name, CIDRs: r.CIDRs, Fallback: r.Fallback})
		}
	}
}

// dnsRole says whether cmd runs the responder.
func dnsRole(cmd string, c steer.Config) bool {
	return cmd == "dns" || (cmd == "all" || cmd == "gateway") && c.Enabled
}

var dnsSettings = []clusterSetting{
	{"dns-listen", "smart-DNS responder address, UDP and TCP (imgate dns, or all/gateway with [dns] enabled)", ostr(func(o *options) *string { return &o.DNS.Listen })},
	{"dns-http", "smart-DNS role's HTTP address: HTTPDNS /v1/endpoints, /metrics, /healthz; empty disables", ostr(func(o *options) *string { return &o.DNS.HTTPAddr })},
	{"dns-zone", "zone the responder is authoritative for", ostr(func(o *options) *string { return &o.DNS.Zone })},
	{"dns-enabled", "run the smart-DNS responder in all or gateway too (true/false)", func(o *options, v string) error {
		b, err := strconv.ParseBool(v)
		o.DNS.Enabled = b
		return err
	}},
}

func runDNS(args []string) error { return runGateway("dns", args) }

// registerHTTPDNS serves /v1/endpoints on a cluster node's HTTP API, open
// without the API's token (clients call it); before the gateway starts.
func (sys *system) registerHTTPDNS(o options) error {
	if sys.srv == nil || sys.node == nil {
		return nil
	}
	h, err := steer.NewHTTPDNS(o.DNS, sys.node, steer.NewMetrics(sys.srv.MetricsRegisterer(), sys.node))
	if err != nil {
		return fmt.Errorf("[dns]: %w", err)
	}
	sys.httpdns = append(sys.httpdns, h)
	sys.srv.HandlePublicHTTP(steer.Pattern, h.ServeHTTP)
	return nil
}

// reloadSteering re-reads the [dns] section on SIGHUP: regions, TTL,
// hostnames, nameservers, max answers, trust_forwarded. A bad file
// changes nothing.
func (sys *system) reloadSteering(cmd string, args []string, log *slog.Logger) {
	if sys.dns == nil && len(sys.httpdns) == 0 {
		return
	}
	o, err := loadOptions(cmd, args, options{Gateway: gateway.DefaultConfig(), Cluster: defaultClusterConfig(), Route: defaultRouteConfig(), DNS: defaultDNSConfig()})
	if err == nil && sys.dns != nil {
		err = sys.dns.Reload(o.DNS)
	}
	for _, h := range sys.httpdns {
		if err == nil {
			err = h.Reload(o.DNS)
		}
	}
	if err != nil {
		log.Error("SIGHUP: [dns] reload failed; keeping the running configuration", "err", err)
		sdNotify("STATUS=reload failed: " + err.Error())
		return
	}
	log.Info("SIGHUP: [dns] reloaded", "regions", len(o.DNS.Regions))
}

// startSteering starts the responder, with its HTTP port, where cmd runs
// the DNS role.
func (sys *system) startSteering(cmd string, o options, cc cluster.Config, log *slog.Logger) error {
	if !dnsRole(cmd, o.DNS) {
		return nil
	}
	var src steer.Source
	var busUp func() bool
	switch {
	case sys.node != nil:
		src, busUp = sys.node, func() bool { return true }
	case cmd == "dns":
		paths, err := cluster.ConnectPaths(cc, "imgate-dns "+o.Gateway.NodeID, nil, log)
		if err != nil {
			return err
		}
		sys.conns = append(sys.conns, paths)
		w, err := cluster.Watch(paths.Conns(), cc.Prefix, cc.Liveness)
		if err != nil {
			return err
		}
		sys.watcher = w
		src, busUp = w, paths.AnyUp
	default:
		return errors.New("[dns] enabled needs the cluster bus: the responder answers from the nodes' heartbeats (give --nats)")
	}
	reg := prometheus.NewRegistry()
	if cmd == "dns" {
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	metrics := steer.NewMetrics(reg, src)
	r, err := steer.NewResponder(o.DNS, src, metrics, log)
	if err != nil {
		return fmt.Errorf("[dns]: %w", err)
	}
	if err := r.Start(); err != nil {
		return err
	}
	sys.dns = r
	if o.DNS.HTTPAddr == "" {
		return nil
	}
	h, err := steer.NewHTTPDNS(o.DNS, src, metrics)
	if err != nil {
		return fmt.Errorf("[dns]: %w", err)
	}
	sys.httpdns = append(sys.httpdns, h)
	mux := http.NewServeMux()
	mux.Handle(steer.Pattern, h)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !busUp() {
			http.Error(w, "cluster bus unreachable", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	// Ready while a healthy node is known: what the responder would hand out.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if healthyNodes(src) == 0 {
			http.Error(w, "no healthy gateway node known", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	ln, err := net.Listen("tcp", o.DNS.HTTPAddr)
	if err != nil {
		return fmt.Errorf("dns http listen %s: %w", o.DNS.HTTPAddr, err)
	}
	sys.dnsHTTP = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	sys.dnsHTTPAddr = ln.Addr().String()
	go func() {
		if err := sys.dnsHTTP.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("dns http", "err", err)
		}
	}()
	return nil
}

func healthyNodes(src steer.Source) int { return len(steer.Rank(src.Nodes(), "", nil, time.Now())) }

func (sys *system) stopSteering() {
	if sys.dnsHTTP != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		sys.dnsHTTP.Shutdown(ctx)
		cancel()
	}
	if sys.dns != nil {
		sys.dns.Close()
	}
	if sys.watcher != nil {
		sys.watcher.Close()
	}
}

// printDNSBanner says where the responder listens.
func printDNSBanner(sys *system) {
	if sys.dns == nil {
		return
	}
	fmt.Printf("  dns      %s udp+tcp  (dig @%s -p %s %s)\n", sys.dns.Addr(), hostOf(sys.dns.Addr()), portOf(sys.dns.Addr()), sys.dns.Zone())
	if sys.dnsHTTPAddr != "" {
		fmt.Printf("  httpdns  http://%s/v1/endpoints?transport=quic  (/metrics /healthz /readyz)\n", sys.dnsHTTPAddr)
	}
}
