package steer

import (
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"imgate/cluster"
)

type staticSource []cluster.NodeStatus

func (s staticSource) Nodes() []cluster.NodeStatus { return s }

// FuzzRespond drives the whole request path after the wire parse (which
// miekg/dns does, answering FORMERR itself when it fails): any message
// that parses must get an answer that packs, or none, and never a panic.
// Seeds: testdata/fuzz/FuzzRespond.
func FuzzRespond(f *testing.F) {
	now := time.Now()
	src := staticSource{
		{Node: "eu-1", Region: "eu", Load: 0.2, Heard: now, Endpoints: []string{"tcp://10.0.1.1:7100", "quic://[2001:db8::1]:7103"}},
		{Node: "us-1", Region: "us", Load: 0.1, Heard: now, Endpoints: []string{"tcp://10.0.2.1:7100", "tcp://name.example:7100"}},
		{Node: "d", Region: "eu", Draining: true, Heard: now, Endpoints: []string{"tcp://10.0.9.9:7100"}},
	}
	cfg := testDNSConfig()
	cfg.MaxAnswers = 3
	r, err := NewResponder(cfg, src, nil, testLog())
	if err != nil {
		f.Fatal(err)
	}
	q := new(dns.Msg)
	q.SetQuestion("gw.test.", dns.TypeA)
	q.SetEdns0(4096, false)
	seed, _ := q.Pack()
	f.Add(seed, true, false)
	f.Fuzz(func(t *testing.T, data []byte, v6src, tcp bool) {
		req := new(dns.Msg)
		if req.Unpack(data) != nil {
			return
		}
		src := netip.MustParseAddr("127.0.0.2")
		if v6src {
			src = netip.MustParseAddr("2001:db8:3::9")
		}
		resp := r.respond(req, src, tcp)
		if resp == nil {
			return
		}
		b, err := resp.Pack()
		if err != nil {
			t.Fatalf("answer does not pack: %v\nrequest %v\nanswer %v", err, req, resp)
		}
		if len(resp.Answer) > cfg.MaxAnswers+len(cfg.Nameservers[0].Addrs) {
			t.Fatalf("%d answers", len(resp.Answer))
		}
		if !tcp && len(b) > ednsSize {
			t.Fatalf("UDP answer of %d bytes", len(b))
		}
	})
}
