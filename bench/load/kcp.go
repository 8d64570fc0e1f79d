package load

import (
	"net"
	"sync"

	kcp "github.com/xtaci/kcp-go/v5"

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

// dialKCPGo opens a kcp-go session (its own UDP socket) in stream mode with
// the fast settings: the client side of imgate-idle's kcp-go baseline.
func dialKCPGo(addr string) (net.Conn, error) {
	s, err := kcp.DialWithOptions(addr, nil, 0, 0)
	if err != nil {
		return nil, err
	}
	s.SetStreamMode(true)
	s.SetNoDelay(1, 20, 2, 1)
	s.SetWindowSize(128, 128)
	return s, nil
}
