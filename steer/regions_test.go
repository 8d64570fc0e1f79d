package steer

import (
	"net/netip"
	"testing"
)

func TestTableLookup(t *testing.T) {
	table, err := NewTable([]Region{
		{Name: "eu", CIDRs: []string{"10.0.0.0/8", "2001:db8:e::/48"}, Fallback: []string{"us"}},
		{Name: "eu-paris", CIDRs: []string{"10.1.0.0/16"}},
		{Name: "us", CIDRs: []string{"10.1.2.0/24", "192.0.2.7/32", "2001:db8::/32"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ addr, want string }{
		{"10.9.9.9", "eu"},
		{"10.1.9.9", "eu-paris"}, // longer prefix wins
		{"10.1.2.3", "us"},       // longest
		{"192.0.2.7", "us"},
		{"192.0.2.8", ""},
		{"::ffff:10.1.2.3", "us"}, // v4-mapped counts as IPv4
		{"2001:db8:e::1", "eu"},
		{"2001:db8:f::1", "us"},
		{"2002::1", ""},
		{"", ""},
	} {
		a, _ := netip.ParseAddr(c.addr)
		if got := table.Lookup(a); got != c.want {
			t.Errorf("Lookup(%s) = %q, want %q", c.addr, got, c.want)
		}
	}
	if got := table.Scope(netip.MustParseAddr("10.0.0.1")); got != 32 {
		t.Errorf("v4 scope %d, want 32", got)
	}
	if got := table.Scope(netip.MustParseAddr("2001:db8::1")); got != 48 {
		t.Errorf("v6 scope %d, want 48", got)
	}
	if got := table.Fallback("eu"); len(got) != 1 || got[0] != "us" {
		t.Errorf("fallback of eu %v", got)
	}
}

func TestTableErrors(t *testing.T) {
	for _, c := range []struct {
		name    string
		regions []Region
	}{
		{"bad cidr", []Region{{Name: "a", CIDRs: []string{"10.0.0.0/33"}}}},
		{"not a cidr", []Region{{Name: "a", CIDRs: []string{"10.0.0.1"}}}},
		{"no name", []Region{{CIDRs: []string{"10.0.0.0/8"}}}},
		{"twice", []Region{{Name: "a"}, {Name: "a"}}},
		{"shared cidr", []Region{{Name: "a", CIDRs: []string{"10.0.0.0/8"}}, {Name: "b", CIDRs: []string{"10.1.0.0/8"}}}},
		{"unknown fallback", []Region{{Name: "a", Fallback: []string{"b"}}}},
	} {
		if _, err := NewTable(c.regions); err == nil {
			t.Errorf("%s: no error", c.name)
		}
	}
	if table, err := NewTable(nil); err != nil || table.Lookup(netip.MustParseAddr("10.0.0.1")) != "" {
		t.Errorf("empty table: %v", err)
	}
}
