// Package quictest helps test QUIC behaviour that depends on packet timing,
// with real sockets: a UDP relay between QUIC clients and one server that
// can hold back Handshake packets, in either direction.
//
// Holding the client's (HoldHandshake): the client has sent its TLS Finished
// but the server has not seen it, so the server's handshake stays
// incomplete for as long as a test needs, and what the client sent as 0-RTT
// data is read by the server before its handshake completes,
// deterministically. Holding the server's (HoldServerHandshake) keeps the
// client in its handshake too: everything it writes meanwhile leaves as
// 0-RTT data.
package quictest

import (
	"net"
	"sync"
)

// Proxy relays datagrams between clients and a server. Each client address
// gets a socket of its own towards the server, as a NAT would.
type Proxy struct {
	ln     *net.UDPConn
	server *net.UDPAddr

	mu         sync.Mutex
	hold       bool // the clients' Handshake packets
	holdServer bool // the server's
	held       []heldDatagram
	clients    map[string]*net.UDPConn
	closed     bool
}

type heldDatagram struct {
	up     *net.UDPConn // towards the server; nil for a datagram to a client
	client *net.UDPAddr
	data   []byte
}

// NewProxy relays to the QUIC server at server (host:port) from a new
// loopback port (Addr).
func NewProxy(server string) (*Proxy, error) {
	sa, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		return nil, err
	}
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, server: sa, clients: map[string]*net.UDPConn{}}
	go p.run()
	return p, nil
}

// Addr is where clients dial.
func (p *Proxy) Addr() string { return p.ln.LocalAddr().String() }

// HoldHandshake starts (true) or stops (false) holding back client
// datagrams that carry a Handshake packet; stopping sends what was held.
func (p *Proxy) HoldHandshake(on bool) { p.setHold(&p.hold, on, true) }

// HoldServerHandshake does the same for the server's datagrams.
func (p *Proxy) HoldServerHandshake(on bool) { p.setHold(&p.holdServer, on, false) }

func (p *Proxy) setHold(flag *bool, on, fromClient bool) {
	p.mu.Lock()
	*flag = on
	var release []heldDatagram
	if !on {
		kept := p.held[:0]
		for _, h := range p.held {
			if (h.up != nil) == fromClient {
				release = append(release, h)
			} else {
				kept = append(kept, h)
			}
		}
		p.held = kept
	}
	p.mu.Unlock()
	for _, h := range release {
		if h.up != nil {
			h.up.Write(h.data)
		} else {
			p.ln.WriteToUDP(h.data, h.client)
		}
	}
}

// Held is how many datagrams are held back now.
func (p *Proxy) Held() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.held)
}

// Close stops relaying.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	clients := p.clients
	p.clients = nil
	p.mu.Unlock()
	p.ln.Close()
	for _, c := range clients {
		c.Close()
	}
}

func (p *Proxy) run() {
	buf := make([]byte, 65536)
	for {
		n, from, err := p.ln.ReadFromUDP(buf)
		if err != nil {
			return
		}
		data := append([]byte(nil), buf[:n]...)
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		up := p.clients[from.String()]
		if up == nil {
			if up, err = net.DialUDP("udp", nil, p.server); err != nil {
				p.mu.Unlock()
				continue
			}
			p.clients[from.String()] = up
			go p.down(up, from)
		}
		if p.hold && carriesHandshake(data) {
			p.held = append(p.held, heldDatagram{up: up, data: data})
			p.mu.Unlock()
			continue
		}
		p.mu.Unlock()
		up.Write(data)
	}
}

// down relays the server's datagrams back to one client.
func (p *Proxy) down(up *net.UDPConn, client *net.UDPAddr) {
	buf := make([]byte, 65536)
	for {
		n, err := up.Read(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.holdServer && carriesHandshake(buf[:n]) {
			p.held = append(p.held, heldDatagram{client: client, data: append([]byte(nil), buf[:n]...)})
			p.mu.Unlock()
			continue
		}
		p.mu.Unlock()
		p.ln.WriteToUDP(buf[:n], client)
	}
}

// carriesHandshake walks the QUIC packets coalesced in a datagram (RFC 9000
// §12.2) and reports a Handshake packet among them. Long headers keep their
// type and lengths outside header protection, so no keys are needed.
func carriesHandshake(b []byte) bool {
	for len(b) > 0 {
		if b[0]&0x80 == 0 {
			return false // a short header: the rest is one 1-RTT packet
		}
		if len(b) < 6 {
			return false
		}
		version := uint32(b[1])<<24 | uint32(b[2])<<16 | uint32(b[3])<<8 | uint32(b[4])
		typ := b[0] >> 4 & 3
		initial, handshake := typ == 0, typ == 2
		if version == 0x6b3343cf { // QUIC v2 (RFC 9369) numbers its types differently
			initial, handshake = typ == 1, typ == 3
		}
		if handshake {
			return true
		}
		i := 5
		at := func(i int) []byte { return b[min(i, len(b)):] }
		if i >= len(b) {
			return false
		}
		i += 1 + int(b[i]) // destination connection ID
		if i >= len(b) {
			return false
		}
		i += 1 + int(b[i]) // source connection ID
		if initial {
			n, l := varint(at(i))
			if l == 0 || n > uint64(len(b)) {
				return false
			}
			i += l + int(n) // token
		}
		n, l := varint(at(i))
		if l == 0 || n > uint64(len(b)) {
			return false
		}
		i += l + int(n)
		if i > len(b) {
			return false
		}
		b = b[i:]
	}
	return false
}

// varint decodes a QUIC variable-length integer; l == 0 when b is too short.
func varint(b []byte) (v uint64, l int) {
	if len(b) == 0 {
		return 0, 0
	}
	l = 1 << (b[0] >> 6)
	if len(b) < l {
		return 0, 0
	}
	v = uint64(b[0] & 0x3f)
	for _, c := range b[1:l] {
		v = v<<8 | uint64(c)
	}
	return v, l
}
