package cluster

import (
	"net"
	"net/url"

	"imgate/gateway"
)

// advertised lists the URLs clients reach srv's listeners at, for
// heartbeats (and so for smart DNS and HTTPDNS): each listener's scheme,
// path and bound port, with host in place of a wildcard address.
func advertised(srv *gateway.Server, host string) []string {
	listen := srv.Config().Listen
	var out []string
	for i, l := range srv.Listeners() {
		h, port, err := net.SplitHostPort(l.Addr().String())
		if err != nil {
			continue
		}
		switch {
		case host != "":
			h = host
		case h == "" || net.ParseIP(h).IsUnspecified():
			h = localHost()
		}
		u := url.URL{Scheme: l.Kind().String(), Host: net.JoinHostPort(h, port)}
		if i < len(listen) {
			if lu, err := url.Parse(listen[i]); err == nil && lu.Scheme == u.Scheme {
				u.Path = lu.Path
			}
		}
		out = append(out, u.String())
	}
	return out
}

// localHost is this host's first global unicast address, or loopback.
func localHost() string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.IsGlobalUnicast() {
			return n.IP.String()
		}
	}
	return "127.0.0.1"
}
