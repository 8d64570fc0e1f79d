package load

import (
	"net"
	"sync"

	"imgate/transport"
)

// kcpDialers multiplexes many KCP sessions over one UDP socket per source
// address, as quicDialer does for QUIC.
type kcpDialers struct {
	srcs []net.IP
	opts transport.KCPOptions
	mu   sync.Mutex
	ds   map[int]*transport.KCPDialer
}

func newKCPDialers(srcs []net.IP, preset string) *kcpDialers {
	return &kcpDialers{srcs: srcs, opts: transport.KCPOptions{Preset: preset}, ds: make(map[int]*transport.KCPDialer)}
}

func (k *kcpDialers) dial(addr string, i int) (net.Conn, error) {
	s := i % len(k.srcs)
	k.mu.Lock()
	d := k.ds[s]
	if d == nil {
		var err error
		d, err = transport.NewKCPDialer(net.JoinHostPort(k.srcs[s].String(), "0"), k.opts)
		if err != nil {
			k.mu.Unlock()
			return nil, err
		}
		k.ds[s] = d
	}
	k.mu.Unlock()
	return d.Dial(addr)
}

func (k *kcpDialers) close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, d := range k.ds {
		d.Close()
	}
}
