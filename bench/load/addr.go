package load

import (
	"fmt"
	"net"
	"strings"
)

// ParseSources parses a source address range such as 127.0.0.2-127.0.0.60
// (or one address): client sockets spread over several source addresses to
// pass the 64k ephemeral-port limit of one address.
func ParseSources(s string) ([]net.IP, error) {
	lo, hi, ok := strings.Cut(s, "-")
	a, c := net.ParseIP(lo).To4(), net.ParseIP(hi).To4()
	if !ok {
		c = a
	}
	if a == nil || c == nil || a[0] != c[0] || a[1] != c[1] || a[2] != c[2] || a[3] > c[3] {
		return nil, fmt.Errorf("--src %q: want A.B.C.x-A.B.C.y", s)
	}
	var out []net.IP
	for i := int(a[3]); i <= int(c[3]); i++ {
		out = append(out, net.IPv4(a[0], a[1], a[2], byte(i)))
	}
	return out, nil
}
