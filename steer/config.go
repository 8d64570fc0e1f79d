package steer

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/miekg/dns"
)

// Config is the smart-DNS responder's and HTTPDNS's configuration: the
// [dns] section. DefaultConfig documents every default.
type Config struct {
	// Enabled makes `imgate all` and `imgate gateway` run the responder
	// too (`imgate dns` always does). Default false, so `make run` binds
	// no DNS port.
	Enabled bool
	// Listen is the responder's address, UDP and TCP. Default 0.0.0.0:53.
	Listen string
	// HTTPAddr serves HTTPDNS (/v1/endpoints), /metrics and /healthz for
	// `imgate dns`; "" disables. Default 0.0.0.0:7190. (A gateway serves
	// /v1/endpoints on its own HTTP API.)
	HTTPAddr string
	// Zone is the zone this responder is authoritative for
	// ("gw.example.com."); queries outside it are REFUSED.
	Zone string
	// Hostnames are the names answered with gateway addresses, inside the
	// zone. Default: the zone's apex.
	Hostnames []string
	// TTL of the answers: short, so that a drain or a failure moves new
	// clients within seconds. Default 5s.
	TTL time.Duration
	// MaxAnswers caps the addresses in one answer. Default 4.
	MaxAnswers int
	// Nameservers are the zone's NS records: the names the parent zone
	// delegates to (this responder's hosts). Those inside the zone are
	// answered with their Addrs. Default: one, "ns.<zone>", without
	// addresses.
	Nameservers []Nameserver
	// Hostmaster is the SOA's responsible mailbox. Default hostmaster.<zone>.
	Hostmaster string
	// Regions map client networks to regions (longest prefix wins).
	Regions []Region
	// TrustForwarded makes HTTPDNS take the client's address from the last
	// X-Forwarded-For entry (the one your proxy appends) instead of the
	// connection's peer. Only behind a proxy that sets it.
	TrustForwarded bool
}

// Nameserver is one NS record, with its addresses when it is in the zone.
type Nameserver struct {
	Name  string
	Addrs []string
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		Listen:     "0.0.0.0:53",
		HTTPAddr:   "0.0.0.0:7190",
		TTL:        5 * time.Second,
		MaxAnswers: 4,
	}
}

// Limits on settings, so that one answer always fits a TCP message and a
// TTL stays meaningful.
const (
	maxAnswersLimit = 64
	maxTTL          = time.Hour
)

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Listen == "" {
		c.Listen = d.Listen
	}
	if c.TTL <= 0 {
		c.TTL = d.TTL
	}
	if c.MaxAnswers <= 0 {
		c.MaxAnswers = d.MaxAnswers
	}
	if c.Zone != "" {
		c.Zone = dns.CanonicalName(c.Zone)
		if len(c.Hostnames) == 0 {
			c.Hostnames = []string{c.Zone}
		}
		if len(c.Nameservers) == 0 {
			c.Nameservers = []Nameserver{{Name: "ns." + c.Zone}}
		}
		if c.Hostmaster == "" {
			c.Hostmaster = "hostmaster." + c.Zone
		}
	}
	return c
}

// FieldError is one invalid setting, named as in the config file.
type FieldError struct {
	Field, Msg string
}

func (e FieldError) Error() string { return e.Field + ": " + e.Msg }

// Validate returns every problem of the configuration. dnsRole says
// whether the responder runs (it needs a zone); HTTPDNS alone needs only
// the regions.
func (c Config) Validate(dnsRole bool) []FieldError {
	var out []FieldError
	bad := func(field, format string, a ...any) {
		out = append(out, FieldError{field, fmt.Sprintf(format, a...)})
	}
	if c.TTL < 0 || c.TTL > 0 && c.TTL < time.Second {
		bad("dns.ttl", "%s: at least 1s (DNS TTLs are whole seconds)", c.TTL)
	}
	if c.MaxAnswers < 0 {
		bad("dns.max_answers", "%d: must be positive", c.MaxAnswers)
	}
	c = c.withDefaults()
	if dnsRole {
		if c.Zone == "" {
			bad("dns.zone", "required: the zone this responder is authoritative for")
		} else if _, ok := dns.IsDomainName(c.Zone); !ok {
			bad("dns.zone", "%q is not a domain name", c.Zone)
		}
		for i, h := range c.Hostnames {
			h = dns.CanonicalName(h)
			if _, ok := dns.IsDomainName(h); !ok || (c.Zone != "" && !dns.IsSubDomain(c.Zone, h)) {
				bad(fmt.Sprintf("dns.hostnames[%d]", i), "%q is not a name inside zone %q", h, c.Zone)
			}
		}
		for i, ns := range c.Nameservers {
			if _, ok := dns.IsDomainName(ns.Name); !ok || ns.Name == "" {
				bad(fmt.Sprintf("dns.nameserver[%d]", i), "name %q is not a domain name", ns.Name)
			}
			for _, a := range ns.Addrs {
				if _, err := netip.ParseAddr(a); err != nil {
					bad(fmt.Sprintf("dns.nameserver[%d]", i), "address %q: %v", a, err)
				}
			}
		}
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			bad("dns.listen", "%q: %v", c.Listen, err)
		}
	}
	if c.TTL > maxTTL {
		bad("dns.ttl", "%s: at most %s (answers should follow the cluster)", c.TTL, maxTTL)
	}
	if c.MaxAnswers > maxAnswersLimit {
		bad("dns.max_answers", "%d: at most %d", c.MaxAnswers, maxAnswersLimit)
	}
	// Each region alone first, so that a problem points at its table.
	alone := true
	for i, r := range c.Regions {
		if _, err := NewTable([]Region{{Name: r.Name, CIDRs: r.CIDRs}}); err != nil {
			bad(fmt.Sprintf("dns.region[%d]", i), "%v", err)
			alone = false
		}
	}
	if _, err := NewTable(c.Regions); err != nil && alone {
		bad("dns.region", "%v", err)
	}
	return out
}
