package steer

import (
	"fmt"
	"net/netip"
	"sort"
)

// Region maps client networks to a region (edge room) and says where its
// clients go when the region has no healthy node.
type Region struct {
	Name string
	// CIDRs are the client networks of the region (IPv4 or IPv6).
	CIDRs []string
	// Fallback lists other regions in order of preference.
	Fallback []string
}

// Table maps a client address to its region by longest-prefix match over
// every region's CIDRs. It is immutable once built, so queries read it
// without locks.
type Table struct {
	// v4 and v6 hold one map per prefix length in use, longest first: a lookup
	// costs at most one map probe per distinct length (33 for IPv4, 129 for
	// IPv6), whatever the size of the table.
	v4, v6   []prefixSet
	fallback map[string][]string
	maxBits  [2]int // longest prefix per family (v4, v6): the ECS scope
}

type prefixSet struct {
	bits     int
	prefixes map[netip.Prefix]string
}

// NewTable builds the table; a CIDR that does not parse, or one claimed by
// two regions, is an error.
func NewTable(regions []Region) (*Table, error) {
	t := &Table{fallback: make(map[string][]string)}
	owner := make(map[netip.Prefix]string)
	for _, r := range regions {
		if r.Name == "" {
			return nil, fmt.Errorf("region without a name")
		}
		if _, dup := t.fallback[r.Name]; dup {
			return nil, fmt.Errorf("region %q defined twice", r.Name)
		}
		t.fallback[r.Name] = append([]string(nil), r.Fallback...)
		for _, c := range r.CIDRs {
			p, err := netip.ParsePrefix(c)
			if err != nil {
				return nil, fmt.Errorf("region %q: cidr %q: %w", r.Name, c, err)
			}
			p = p.Masked()
			if p.Addr().Is4In6() && p.Bits() >= 96 {
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96).Masked()
			}
			if prev, ok := owner[p]; ok && prev != r.Name {
				return nil, fmt.Errorf("cidr %s is in regions %q and %q", p, prev, r.Name)
			}
			owner[p] = r.Name
		}
	}
	for _, r := range regions {
		for _, f := range r.Fallback {
			if _, ok := t.fallback[f]; !ok {
				return nil, fmt.Errorf("region %q: fallback %q is not a region", r.Name, f)
			}
		}
	}
	for p, name := range owner {
		fam := 0
		sets := &t.v4
		if p.Addr().Is6() {
			fam, sets = 1, &t.v6
		}
		t.maxBits[fam] = max(t.maxBits[fam], p.Bits())
		i := sort.Search(len(*sets), func(i int) bool { return (*sets)[i].bits <= p.Bits() })
		if i == len(*sets) || (*sets)[i].bits != p.Bits() {
			*sets = append(*sets, prefixSet{})
			copy((*sets)[i+1:], (*sets)[i:])
			(*sets)[i] = prefixSet{bits: p.Bits(), prefixes: make(map[netip.Prefix]string)}
		}
		(*sets)[i].prefixes[p] = name
	}
	return t, nil
}

// Lookup returns the region of addr ("" when no CIDR holds it).
func (t *Table) Lookup(addr netip.Addr) string {
	if t == nil || !addr.IsValid() {
		return ""
	}
	addr = addr.Unmap()
	sets := t.v4
	if addr.Is6() {
		sets = t.v6
	}
	for _, s := range sets {
		p, err := addr.Prefix(s.bits)
		if err != nil {
			continue
		}
		if name, ok := s.prefixes[p]; ok {
			return name
		}
	}
	return ""
}

// Fallback is region's fallback order.
func (t *Table) Fallback(region string) []string {
	if t == nil {
		return nil
	}
	return t.fallback[region]
}

// Scope is the ECS scope prefix length for an answer to a client of this
// family: the longest prefix in the table. Every address in one block of
// that length matches the same entries, so the answer holds for the whole
// block, and resolvers may cache it for the block.
func (t *Table) Scope(addr netip.Addr) int {
	if t == nil {
		return 0
	}
	if addr.Unmap().Is6() {
		return t.maxBits[1]
	}
	return t.maxBits[0]
}
