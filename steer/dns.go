package steer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// The responder is authoritative for one zone and answers only from memory:
// a query costs one ranking of the nodes the source knows (tens) and a
// packing of at most MaxAnswers records; nothing is looked up elsewhere and
// nothing recurses. Answers:
//
//	hostname  A/AAAA   ranked gateways' addresses; SERVFAIL when no node is
//	                   healthy (an empty answer would be cached as "no
//	                   such address" by resolvers; SERVFAIL makes them try
//	                   another server or retry soon)
//	apex      SOA, NS  the zone's records
//	ns name   A/AAAA   its configured addresses
//	in zone, other     NODATA (the name exists) or NXDOMAIN, SOA in authority
//	outside the zone   REFUSED
//
// With an EDNS Client Subnet option the client's region comes from its
// subnet, and the option is echoed with the table's scope; without one,
// from the resolver's address.

const (
	// ednsSize is the UDP payload size announced in answers: the DNS flag
	// day 2020 value, below common path MTUs, so answers are not fragmented.
	ednsSize = 1232
	// soaTTL bounds negative caching of names and types that do not exist.
	soaTTL = 60
	nsTTL  = 3600
)

// Responder is the smart-DNS server.
type Responder struct {
	listen  string
	src     Source
	metrics *Metrics
	log     *slog.Logger
	zone    atomic.Pointer[zoneData] // swapped whole by Reload

	mu      sync.Mutex
	servers []*dns.Server
	udpAddr string
}

// zoneData is everything an answer reads from the configuration. A reload
// builds a new one and swaps it in, so each query sees one configuration
// whole, without locks.
type zoneData struct {
	cfg   Config
	table *Table
	hosts map[string]bool         // canonical hostnames answered with gateways
	ns    map[string][]netip.Addr // canonical in-zone nameserver names
	names []string                // every name that exists, for NODATA vs NXDOMAIN
	soa   *dns.SOA
}

// NewResponder checks cfg and builds the responder; Start listens.
func NewResponder(cfg Config, src Source, m *Metrics, log *slog.Logger) (*Responder, error) {
	z, err := newZoneData(cfg, 0)
	if err != nil {
		return nil, err
	}
	if m == nil {
		m = NewMetrics(nil, src)
	}
	if log == nil {
		log = slog.Default()
	}
	r := &Responder{listen: z.cfg.Listen, src: src, metrics: m, log: log}
	r.zone.Store(z)
	return r, nil
}

// Reload applies a new configuration to the answers (zone, hostnames,
// nameservers, TTL, max answers, regions); the listen address stays. An
// invalid configuration changes nothing.
func (r *Responder) Reload(cfg Config) error {
	z, err := newZoneData(cfg, r.zone.Load().soa.Serial)
	if err != nil {
		return err
	}
	if z.cfg.Listen != r.listen {
		r.log.Warn("dns: a new listen address needs a restart", "listen", r.listen, "configured", z.cfg.Listen)
	}
	r.zone.Store(z)
	return nil
}

// newZoneData builds the answers' view of cfg; the SOA serial moves past
// the previous one, so secondaries (if any) see the change.
func newZoneData(cfg Config, prevSerial uint32) (*zoneData, error) {
	cfg = cfg.withDefaults()
	if errs := cfg.Validate(true); len(errs) > 0 {
		return nil, errs[0]
	}
	table, err := NewTable(cfg.Regions)
	if err != nil {
		return nil, err
	}
	z := &zoneData{cfg: cfg, table: table, hosts: make(map[string]bool), ns: make(map[string][]netip.Addr)}
	for _, h := range cfg.Hostnames {
		h = dns.CanonicalName(h)
		z.hosts[h] = true
		z.names = append(z.names, h)
	}
	for _, ns := range cfg.Nameservers {
		name := dns.CanonicalName(ns.Name)
		if !dns.IsSubDomain(cfg.Zone, name) {
			continue
		}
		for _, a := range ns.Addrs {
			addr, _ := netip.ParseAddr(a) // validated
			z.ns[name] = append(z.ns[name], addr.Unmap())
		}
		z.names = append(z.names, name)
	}
	z.soa = &dns.SOA{
		Hdr:     dns.RR_Header{Name: cfg.Zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: soaTTL},
		Ns:      dns.CanonicalName(cfg.Nameservers[0].Name),
		Mbox:    dns.CanonicalName(cfg.Hostmaster),
		Serial:  max(uint32(time.Now().Unix()), prevSerial+1),
		Refresh: 3600, Retry: 600, Expire: 86400, Minttl: soaTTL,
	}
	return z, nil
}

// Start listens on cfg.Listen over UDP and TCP.
func (r *Responder) Start() error {
	pc, err := net.ListenPacket("udp", r.listen)
	if err != nil {
		return fmt.Errorf("dns listen udp %s: %w", r.listen, err)
	}
	// Port 0 picks one: TCP takes the port UDP got.
	tcpAddr := r.listen
	if host, port, _ := net.SplitHostPort(r.listen); port == "0" {
		tcpAddr = net.JoinHostPort(host, fmt.Sprint(pc.LocalAddr().(*net.UDPAddr).Port))
	}
	ln, err := net.Listen("tcp", tcpAddr)
	if err != nil {
		pc.Close()
		return fmt.Errorf("dns listen tcp %s: %w", tcpAddr, err)
	}
	accept := func(dh dns.Header) dns.MsgAcceptAction {
		a := dns.DefaultMsgAcceptFunc(dh)
		switch a {
		case dns.MsgReject:
			r.metrics.queries.WithLabelValues("other", "formerr").Inc()
		case dns.MsgRejectNotImplemented:
			r.metrics.queries.WithLabelValues("other", "notimp").Inc()
		}
		return a
	}
	// Start returns once both serve, so that Close never meets a server
	// that has not started (miekg/dns would refuse to shut it down).
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	udp := &dns.Server{PacketConn: pc, Handler: r, MsgAcceptFunc: accept, MsgInvalidFunc: func([]byte, error) {}, NotifyStartedFunc: notify}
	tcp := &dns.Server{Listener: ln, Handler: r, MsgAcceptFunc: accept, MsgInvalidFunc: func([]byte, error) {}, NotifyStartedFunc: notify,
		ReadTimeout: 2 * time.Second, IdleTimeout: func() time.Duration { return 8 * time.Second }, MaxTCPQueries: 128}
	r.mu.Lock()
	r.servers = []*dns.Server{udp, tcp}
	r.udpAddr = pc.LocalAddr().String()
	r.mu.Unlock()
	failed := make(chan error, 2)
	for _, s := range []*dns.Server{udp, tcp} {
		go func(s *dns.Server) {
			if err := s.ActivateAndServe(); err != nil && !errors.Is(err, net.ErrClosed) {
				r.log.Error("dns server stopped", "err", err)
				failed <- err
			}
		}(s)
	}
	for range 2 {
		select {
		case <-started:
		case err := <-failed:
			r.Close()
			pc.Close()
			ln.Close()
			return fmt.Errorf("dns serve: %w", err)
		}
	}
	return nil
}

// Zone is the zone the responder serves, canonical.
func (r *Responder) Zone() string { return r.zone.Load().cfg.Zone }

// Addr is the bound UDP address (TCP has the same port).
func (r *Responder) Addr() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.udpAddr
}

// Close stops both listeners.
func (r *Responder) Close() {
	r.mu.Lock()
	servers := r.servers
	r.servers = nil
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, s := range servers {
		_ = s.ShutdownContext(ctx)
	}
}

// ServeDNS answers one query.
func (r *Responder) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	var src netip.Addr
	tcp := false
	switch a := w.RemoteAddr().(type) {
	case *net.UDPAddr:
		src, _ = netip.AddrFromSlice(a.IP)
	case *net.TCPAddr:
		src, _ = netip.AddrFromSlice(a.IP)
		tcp = true
	}
	if resp := r.respond(req, src.Unmap(), tcp); resp != nil {
		_ = w.WriteMsg(resp)
	}
}

// respond builds the answer to req from a client at src; nil: send
// nothing. It is the whole request path after parsing, and what the fuzz
// test drives.
func (r *Responder) respond(req *dns.Msg, src netip.Addr, tcp bool) *dns.Msg {
	if req.Response {
		return nil // never answer an answer: no loops, no reflection
	}
	z := r.zone.Load()
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = false
	m.Compress = true
	qtype := "other"
	result := "formerr"
	defer func() { r.metrics.queries.WithLabelValues(qtype, result).Inc() }()

	if req.Opcode != dns.OpcodeQuery {
		m.Rcode, result = dns.RcodeNotImplemented, "notimp"
		m.Authoritative = false
		return m
	}
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		m.Authoritative = false
		return m
	}
	q := req.Question[0]
	qtype = typeLabel(q.Qtype)

	size := dns.MinMsgSize
	opt := req.IsEdns0()
	var ecs *dns.EDNS0_SUBNET
	if opt != nil {
		if int(opt.UDPSize()) > size {
			size = min(int(opt.UDPSize()), ednsSize)
		}
		resOpt := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
		resOpt.SetUDPSize(ednsSize)
		m.Extra = append(m.Extra, resOpt)
		if opt.Version() != 0 {
			m.Rcode, result = dns.RcodeBadVers, "badvers"
			m.Authoritative = false
			return m
		}
		for _, o := range opt.Option {
			if s, ok := o.(*dns.EDNS0_SUBNET); ok {
				if ecs != nil || !validECS(s) {
					m.Rcode = dns.RcodeFormatError // RFC 7871 §7.1.1
					m.Authoritative = false
					return m
				}
				ecs = s
			}
		}
	}
	if tcp {
		size = dns.MaxMsgSize
	}

	name := dns.CanonicalName(q.Name)
	if q.Qclass != dns.ClassINET || !dns.IsSubDomain(z.cfg.Zone, name) {
		m.Rcode, result = dns.RcodeRefused, "refused"
		m.Authoritative = false
		return m
	}

	client := src
	if ecs != nil && ecs.SourceNetmask > 0 {
		client = ecsAddr(ecs)
	}
	region := z.table.Lookup(client)
	if ecs != nil {
		scope := uint8(0)
		if ecs.SourceNetmask > 0 {
			scope = uint8(z.table.Scope(client))
		}
		resOpt := m.Extra[len(m.Extra)-1].(*dns.OPT)
		resOpt.Option = append(resOpt.Option, &dns.EDNS0_SUBNET{
			Code: dns.EDNS0SUBNET, Family: ecs.Family, SourceNetmask: ecs.SourceNetmask,
			SourceScope: scope, Address: ecs.Address,
		})
	}

	switch {
	case z.hosts[name] && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeAAAA):
		ranked := Rank(r.src.Nodes(), region, z.table.Fallback(region), time.Now())
		if len(ranked) == 0 {
			m.Rcode, result = dns.RcodeServerFailure, "servfail"
			return m
		}
		addrs := hostAddrs(ranked, q.Qtype == dns.TypeAAAA, z.cfg.MaxAnswers)
		for _, a := range addrs {
			m.Answer = append(m.Answer, addrRR(q.Name, a, z.ttl()))
		}
		if len(addrs) > 0 {
			r.metrics.answers.WithLabelValues(regionLabel(region)).Inc()
		}
	case name == z.cfg.Zone && q.Qtype == dns.TypeSOA:
		m.Answer = append(m.Answer, dns.Copy(z.soa))
	case name == z.cfg.Zone && q.Qtype == dns.TypeNS:
		for _, ns := range z.cfg.Nameservers {
			m.Answer = append(m.Answer, &dns.NS{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: nsTTL},
				Ns:  dns.CanonicalName(ns.Name),
			})
			for _, a := range z.ns[dns.CanonicalName(ns.Name)] {
				m.Extra = append(m.Extra, addrRR(dns.CanonicalName(ns.Name), a, nsTTL))
			}
		}
	case z.ns[name] != nil && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeAAAA):
		for _, a := range z.ns[name] {
			if a.Is6() == (q.Qtype == dns.TypeAAAA) {
				m.Answer = append(m.Answer, addrRR(q.Name, a, nsTTL))
			}
		}
	case !z.exists(name):
		m.Rcode, result = dns.RcodeNameError, "nxdomain"
	}
	if m.Rcode == dns.RcodeSuccess && len(m.Answer) == 0 {
		result = "nodata"
	} else if m.Rcode == dns.RcodeSuccess {
		result = "answer"
	}
	if len(m.Answer) == 0 {
		m.Ns = append(m.Ns, dns.Copy(z.soa))
	}
	m.Truncate(size)
	return m
}

// exists reports whether name is a name of the zone or an ancestor of one
// (an empty non-terminal: NODATA, not NXDOMAIN, per RFC 8020).
func (z *zoneData) exists(name string) bool {
	if name == z.cfg.Zone {
		return true
	}
	for _, n := range z.names {
		if dns.IsSubDomain(name, n) {
			return true
		}
	}
	return false
}

func (z *zoneData) ttl() uint32 { return uint32(z.cfg.TTL / time.Second) }

func addrRR(name string, a netip.Addr, ttl uint32) dns.RR {
	if a.Is4() {
		return &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: a.AsSlice()}
	}
	return &dns.AAAA{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: ttl}, AAAA: a.AsSlice()}
}

// validECS checks a query's client subnet as RFC 7871 §7.1.1 asks: a
// known family, a prefix that fits it, scope 0, no address bits past the
// prefix.
func validECS(s *dns.EDNS0_SUBNET) bool {
	bits := 0
	switch s.Family {
	case 1:
		bits = 32
	case 2:
		bits = 128
	default:
		return false
	}
	if int(s.SourceNetmask) > bits || s.SourceScope != 0 {
		return false
	}
	a := ecsAddr(s)
	if !a.IsValid() {
		return s.SourceNetmask == 0
	}
	p, err := a.Prefix(int(s.SourceNetmask))
	return err == nil && p.Addr() == a
}

func ecsAddr(s *dns.EDNS0_SUBNET) netip.Addr {
	a, ok := netip.AddrFromSlice(s.Address)
	if !ok {
		return netip.Addr{}
	}
	if s.Family == 1 {
		return a.Unmap()
	}
	return a
}

func typeLabel(t uint16) string {
	switch t {
	case dns.TypeA, dns.TypeAAAA, dns.TypeSOA, dns.TypeNS, dns.TypeANY:
		return dns.TypeToString[t]
	}
	return "other"
}

func regionLabel(region string) string {
	if region == "" {
		return "none"
	}
	return region
}
