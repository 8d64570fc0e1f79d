package transport

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	kcp "github.com/xtaci/kcp-go/v5"

	"imgate/proto"
	"imgate/transport/arq"
)

// KCP: the imgate frame stream over KCP's ARQ on one UDP socket per
// listener. kcp-go's Listener costs 59 KB per idle session in our harness
// (goroutines, rings and buffers each; bench/RESULTS.md) and keys sessions by
// source address; here a session is an arq.Engine (288 B at rest) found by
// its conversation id, and
// every datagram carries the session's 64-bit token, so a client whose
// address changes keeps its session and a stranger cannot inject into it.
// One timer heap per socket drives retransmissions and delayed acks of the
// sessions that have something in flight; idle sessions have no timer.
//
// Datagram (docs/PROTOCOL.md §11.4), after optional kcp-go block encryption
// (16-byte nonce, CRC-32, then the rest, all encrypted):
//
//	DATA  0x11 | token u64 | KCP segments (conv is in each segment)
//	CLOSE 0x12 | token u64 | conv u32 | code u16
//
// CLOSE is the close signal KCP lacks: sent by the side that ends the
// session (with the imgate close code), and by a server that receives data
// for a session it does not know, so the client reconnects at once instead
// of waiting for a heartbeat timeout.

const (
	kcpData       = 0x11
	kcpClose      = 0x12
	kcpEnvelope   = 9  // type + token
	kcpCryptHdr   = 20 // nonce + crc, when encrypted
	kcpCloseSize  = kcpEnvelope + 6
	kcpMaxDatagam = 2048
)

// KCPOptions are one KCP endpoint's settings: the ARQ tuning (from a preset,
// then individual overrides) and the optional packet encryption.
type KCPOptions struct {
	Preset string
	ARQ    arq.Config
	// Crypt names a kcp-go block cipher (aes, salsa20, none); Key is the
	// shared secret it is derived from (SHA-256). Empty Crypt: no encryption.
	Crypt string
	Key   string
	// DataShards and ParityShards turn on forward error correction
	// (kcp_fec.go): parity datagrams per group of data datagrams. 0/0: off.
	DataShards, ParityShards int
	// MaxEmbryonic bounds sessions that have not yet delivered a frame
	// (a flood of new sessions from many addresses); over it new sessions
	// are refused and counted. Server side only.
	MaxEmbryonic int
}

// ParseKCPOptions reads the settings of a kcp:// URL's query: preset,
// nodelay, interval, resend, nc, sndwnd, rcvwnd, mtu, deadlink, acknodelay,
// crypt, key. base supplies what the URL leaves out.
func ParseKCPOptions(q url.Values, base KCPOptions) (KCPOptions, error) {
	o := base
	if p := q.Get("preset"); p != "" {
		o.Preset = p
	}
	cfg, err := arq.Preset(o.Preset)
	if err != nil {
		return o, err
	}
	if o.Preset == base.Preset && base.ARQ != (arq.Config{}) {
		cfg = base.ARQ
	}
	ints := []struct {
		name string
		dst  *int
	}{
		{"interval", &cfg.Interval}, {"resend", &cfg.Resend}, {"sndwnd", &cfg.SendWindow},
		{"rcvwnd", &cfg.RecvWindow}, {"mtu", &cfg.MTU}, {"deadlink", &cfg.DeadLink},
	}
	for _, f := range ints {
		if v := q.Get(f.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return o, fmt.Errorf("kcp option %s=%q: want a non-negative integer", f.name, v)
			}
			*f.dst = n
		}
	}
	bools := []struct {
		name string
		dst  *bool
	}{{"nodelay", &cfg.NoDelay}, {"nc", &cfg.NoCongest}, {"acknodelay", &cfg.AckNoDelay}}
	for _, f := range bools {
		if v := q.Get(f.name); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return o, fmt.Errorf("kcp option %s=%q: want true/false or 1/0", f.name, v)
			}
			*f.dst = b
		}
	}
	if cfg.MTU > arq.MaxMTU {
		return o, fmt.Errorf("kcp option mtu=%d: at most %d", cfg.MTU, arq.MaxMTU)
	}
	o.ARQ = cfg
	for _, f := range []struct {
		name string
		dst  *int
	}{{"datashard", &o.DataShards}, {"parityshard", &o.ParityShards}} {
		if v := q.Get(f.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return o, fmt.Errorf("kcp option %s=%q: want a non-negative integer", f.name, v)
			}
			*f.dst = n
		}
	}
	if err := validFEC(o.DataShards, o.ParityShards); err != nil {
		return o, err
	}
	if v := q.Get("crypt"); v != "" {
		o.Crypt = v
	}
	if v := q.Get("key"); v != "" {
		o.Key = v
	}
	if _, err := o.block(); err != nil {
		return o, err
	}
	return o, nil
}

// block builds the packet cipher, nil when packets are not encrypted.
func (o KCPOptions) block() (kcp.BlockCrypt, error) {
	if o.Crypt == "" || o.Crypt == "none" && o.Key == "" {
		return nil, nil
	}
	if o.Key == "" {
		return nil, fmt.Errorf("kcp crypt %q needs a key", o.Crypt)
	}
	k := sha256.Sum256([]byte(o.Key))
	switch o.Crypt {
	case "aes":
		return kcp.NewAESBlockCrypt(k[:])
	case "salsa20":
		return kcp.NewSalsa20BlockCrypt(k[:])
	case "none":
		return kcp.NewNoneBlockCrypt(k[:])
	}
	return nil, fmt.Errorf("kcp crypt %q: want aes, salsa20 or none", o.Crypt)
}

// kcpPeer is one session as its socket sees it: the server's kcpConn or the
// client's kcpClientConn.
type kcpPeer interface {
	sess() *kcpSession
	input(segs []byte, from netip.AddrPort)
	peerClosed(code proto.Code)
	onTimer()
}

// kcpSession is the state both sides share: identity, address and engine.
type kcpSession struct {
	sock  *kcpSocket
	conv  uint32
	token uint64

	mu     sync.Mutex // guards eng, addr, gone, fecOut, fecIn
	eng    *arq.Engine
	addr   netip.AddrPort
	gone   bool
	fecOut *fecOut // nil: FEC off on this side
	fecIn  *fecIn  // allocated by the first shard received

	// Timer heap position, guarded by the socket's timer mutex.
	due  uint32
	hidx int
}

func (s *kcpSession) init(sock *kcpSocket, conv uint32, token uint64, addr netip.AddrPort) {
	s.sock, s.conv, s.token, s.addr, s.hidx = sock, conv, token, addr, -1
	s.eng = arq.New(conv, sock.opts.ARQ, sock.reserve, s.output)
	if d, p := sock.opts.DataShards, sock.opts.ParityShards; d > 0 {
		s.fecOut = &fecOut{data: d, parity: p}
	}
}

// output is the engine's datagram sink; it runs with s.mu held.
func (s *kcpSession) output(buf []byte) {
	if s.fecOut != nil {
		s.sendData(buf)
		return
	}
	s.sock.send(buf, kcpData, s.token, s.addr)
}

// flush runs the engine's flush and closes an FEC group that has waited
// long enough; it returns when the session next needs a timer and whether
// it needs one at all. Called with s.mu held.
func (s *kcpSession) flush(now uint32) (next uint32, busy bool) {
	next, busy = s.eng.Flush(now)
	if due, open := s.flushFEC(now); open && (!busy || int32(due-next) < 0) {
		next, busy = due, true
	}
	return next, busy
}

// flushFEC closes an FEC group that has waited a flush interval for more
// data, and says when to look again. Called with s.mu held.
func (s *kcpSession) flushFEC(now uint32) (next uint32, open bool) {
	f := s.fecOut
	if f == nil || len(f.shards) == 0 {
		return 0, false
	}
	due := f.opened + uint32(s.sock.opts.ARQ.Interval)
	if int32(now-due) >= 0 {
		s.closeGroup()
		return 0, false
	}
	return due, true
}

// kcpSocket is one UDP socket and the sessions it carries.
type kcpSocket struct {
	conn    atomic.Pointer[net.UDPConn] // swapped by a client's Rebind
	opts    KCPOptions
	block   kcp.BlockCrypt
	envAt   int // where the envelope starts: after the crypt header, if any
	reserve int // bytes before the segments: crypt header, envelope, FEC header
	closed  atomic.Bool

	shards [64]struct {
		sync.RWMutex
		m map[uint32]kcpPeer
	}
	timers kcpTimers

	// unknown handles DATA for a conversation the socket does not know:
	// the server may accept it as a new session.
	unknown func(conv uint32, token uint64, segs []byte, from netip.AddrPort) kcpPeer
	stats   *KCPStats
	// drop counts a datagram dropped for r (the listener also reports it
	// in the engine's per-transport drop counters).
	drop   func(r DropReason)
	resets tokenBucket
}

// KCPStats counts what a KCP socket rejected or noticed.
type KCPStats struct {
	BadDatagrams atomic.Int64 // undecodable, wrong token, bad segments
	Refused      atomic.Int64 // new sessions over MaxEmbryonic
	Resets       atomic.Int64 // CLOSE sent for data of unknown sessions
	Migrations   atomic.Int64 // sessions that moved to a new address
	FECRebuilt   atomic.Int64 // lost datagrams rebuilt from FEC parity
}

func newKCPSocket(conn *net.UDPConn, opts KCPOptions, stats *KCPStats) (*kcpSocket, error) {
	block, err := opts.block()
	if err != nil {
		return nil, err
	}
	s := &kcpSocket{opts: opts, block: block, stats: stats}
	s.drop = func(DropReason) { stats.BadDatagrams.Add(1) }
	s.swap(conn)
	if block != nil {
		s.envAt = kcpCryptHdr
	}
	s.reserve = s.envAt + kcpEnvelope
	if opts.DataShards > 0 {
		s.reserve += kcpFECHeader + 2
	}
	s.opts.ARQ.MTU = min(max(opts.ARQ.MTU, 576), arq.MaxMTU)
	for i := range s.shards {
		s.shards[i].m = make(map[uint32]kcpPeer)
	}
	s.resets = tokenBucket{rate: 1000, burst: 1000}
	s.timers.init(s)
	return s, nil
}

func (s *kcpSocket) udp() *net.UDPConn { return s.conn.Load() }

// swap makes conn the socket's UDP socket and returns the previous one.
func (s *kcpSocket) swap(conn *net.UDPConn) *net.UDPConn {
	conn.SetReadBuffer(4 << 20)
	conn.SetWriteBuffer(4 << 20)
	return s.conn.Swap(conn)
}

func (s *kcpSocket) shard(conv uint32) *struct {
	sync.RWMutex
	m map[uint32]kcpPeer
} {
	return &s.shards[conv%uint32(len(s.shards))]
}

func (s *kcpSocket) lookup(conv uint32) kcpPeer {
	sh := s.shard(conv)
	sh.RLock()
	p := sh.m[conv]
	sh.RUnlock()
	return p
}

// add registers p unless its conversation id is taken.
func (s *kcpSocket) add(p kcpPeer) bool {
	sh := s.shard(p.sess().conv)
	sh.Lock()
	defer sh.Unlock()
	if _, taken := sh.m[p.sess().conv]; taken {
		return false
	}
	sh.m[p.sess().conv] = p
	return true
}

func (s *kcpSocket) remove(p kcpPeer) {
	ss := p.sess()
	sh := s.shard(ss.conv)
	sh.Lock()
	if sh.m[ss.conv] == p {
		delete(sh.m, ss.conv)
	}
	sh.Unlock()
	s.timers.remove(ss)
}

func (s *kcpSocket) count() int {
	n := 0
	for i := range s.shards {
		s.shards[i].RLock()
		n += len(s.shards[i].m)
		s.shards[i].RUnlock()
	}
	return n
}

func (s *kcpSocket) peers() []kcpPeer {
	var out []kcpPeer
	for i := range s.shards {
		s.shards[i].RLock()
		for _, p := range s.shards[i].m {
			out = append(out, p)
		}
		s.shards[i].RUnlock()
	}
	return out
}

// send fills the envelope in buf[:s.reserve], encrypts when configured and
// writes the datagram. A failed write is a lost datagram: KCP resends.
func (s *kcpSocket) send(buf []byte, typ byte, token uint64, to netip.AddrPort) {
	env := buf[s.envAt:]
	env[0] = typ
	binary.BigEndian.PutUint64(env[1:], token)
	if s.block != nil {
		rand.Read(buf[:16])
		binary.LittleEndian.PutUint32(buf[16:], crc32.ChecksumIEEE(buf[kcpCryptHdr:]))
		s.block.Encrypt(buf, buf)
	}
	s.udp().WriteToUDPAddrPort(buf, to)
}

// sendClose tells to that session conv has ended with code.
func (s *kcpSocket) sendClose(conv uint32, token uint64, code proto.Code, to netip.AddrPort) {
	var b [kcpCryptHdr + kcpCloseSize]byte
	body := s.envAt + kcpEnvelope
	buf := b[:body+6]
	binary.BigEndian.PutUint32(buf[body:], conv)
	binary.BigEndian.PutUint16(buf[body+4:], uint16(code))
	s.send(buf, kcpClose, token, to)
}

// readLoop reads datagrams from conn until it closes.
func (s *kcpSocket) readLoop(conn *net.UDPConn) {
	buf := make([]byte, kcpMaxDatagam)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if s.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			slog.Warn("kcp read failed", "addr", conn.LocalAddr(), "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.handle(buf[:n], netip.AddrPortFrom(from.Addr().Unmap(), from.Port()))
	}
}

// handle routes one datagram. Anything malformed, spoofed or unknown is
// dropped and counted, touching no session.
func (s *kcpSocket) handle(p []byte, from netip.AddrPort) {
	if len(p) >= kcpMaxDatagam {
		s.drop(DropHeader) // truncated: larger than any MTU
		return
	}
	if s.block != nil {
		if len(p) < kcpCryptHdr+kcpEnvelope {
			s.drop(DropHeader)
			return
		}
		s.block.Decrypt(p, p)
		if crc32.ChecksumIEEE(p[kcpCryptHdr:]) != binary.LittleEndian.Uint32(p[16:]) {
			s.drop(DropHeader)
			return
		}
		p = p[kcpCryptHdr:]
	}
	if len(p) < kcpEnvelope {
		s.drop(DropHeader)
		return
	}
	typ, token, body := p[0], binary.BigEndian.Uint64(p[1:]), p[kcpEnvelope:]
	switch {
	case typ == kcpData && len(body) >= arq.Overhead:
		conv := binary.LittleEndian.Uint32(body)
		peer := s.lookup(conv)
		if peer == nil {
			if s.unknown != nil {
				peer = s.unknown(conv, token, body, from)
			}
			if peer == nil {
				return
			}
		} else if peer.sess().token != token {
			s.drop(DropUnknownConn) // a guessed or stale conversation id
			return
		}
		peer.input(body, from)
	case typ == kcpShard && len(body) >= kcpFECHeader:
		s.handleShard(token, body, from)
	case typ == kcpClose && len(body) == 6:
		conv := binary.BigEndian.Uint32(body)
		if peer := s.lookup(conv); peer != nil && peer.sess().token == token {
			peer.peerClosed(proto.Code(binary.BigEndian.Uint16(body[4:])))
		}
	default:
		s.drop(DropHeader)
	}
}

// handleShard files an FEC shard with its session and feeds what it yields.
func (s *kcpSocket) handleShard(token uint64, body []byte, from netip.AddrPort) {
	seq, conv := binary.BigEndian.Uint32(body), binary.BigEndian.Uint32(body[4:])
	data, parity, k := int(body[8]), int(body[9]), int(body[10])
	shard := body[kcpFECHeader:]
	if data == 0 || validFEC(data, parity) != nil {
		s.drop(DropHeader)
		return
	}
	peer := s.lookup(conv)
	if peer == nil {
		// Only a data shard can open a session: its payload is DATA's.
		isData := int(seq%uint32(data+parity)) < data
		if !isData || s.unknown == nil || len(shard) < 2+arq.Overhead {
			s.drop(DropUnknownConn)
			return
		}
		if peer = s.unknown(conv, token, shard[2:], from); peer == nil {
			return
		}
	} else if peer.sess().token != token {
		s.drop(DropUnknownConn)
		return
	}
	ss := peer.sess()
	ss.mu.Lock()
	var payloads [][]byte
	if !ss.gone {
		payloads = ss.receiveShard(seq, data, parity, k, shard)
	}
	ss.mu.Unlock()
	for _, p := range payloads {
		if len(p) >= arq.Overhead {
			peer.input(p, from)
		}
	}
}

// isSessionStart reports whether segs can open a session: data from a peer
// that has received nothing yet (una 0). Anything else for an unknown
// conversation belongs to a session this side has forgotten (a restart).
func isSessionStart(segs []byte) bool {
	return segs[4] == 81 && binary.LittleEndian.Uint32(segs[16:]) == 0
}

// kcpTimers is a min-heap of sessions by due time, with one goroutine that
// sleeps until the earliest and calls onTimer for every session that is due.
type kcpTimers struct {
	sock *kcpSocket
	mu   sync.Mutex
	heap []*kcpSession
	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

func (t *kcpTimers) init(s *kcpSocket) {
	t.sock = s
	t.wake = make(chan struct{}, 1)
	t.stop = make(chan struct{})
	t.done = make(chan struct{})
	go t.run()
}

// schedule arranges onTimer for ss at due (ms, arq.Clock), or earlier if it
// is already scheduled earlier.
func (t *kcpTimers) schedule(ss *kcpSession, due uint32) {
	t.mu.Lock()
	first := false
	if ss.hidx >= 0 {
		if int32(due-ss.due) < 0 {
			ss.due = due
			t.up(ss.hidx)
		}
	} else {
		ss.due = due
		ss.hidx = len(t.heap)
		t.heap = append(t.heap, ss)
		t.up(ss.hidx)
	}
	first = t.heap[0] == ss
	t.mu.Unlock()
	if first {
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
}

func (t *kcpTimers) remove(ss *kcpSession) {
	t.mu.Lock()
	if i := ss.hidx; i >= 0 {
		t.removeAt(i)
	}
	t.mu.Unlock()
}

func (t *kcpTimers) removeAt(i int) {
	last := len(t.heap) - 1
	ss := t.heap[i]
	t.swap(i, last)
	t.heap[last] = nil
	t.heap = t.heap[:last]
	ss.hidx = -1
	if i < last {
		t.down(i)
		t.up(i)
	}
	if len(t.heap) == 0 {
		t.heap = nil
	}
}

func (t *kcpTimers) less(i, j int) bool { return int32(t.heap[i].due-t.heap[j].due) < 0 }
func (t *kcpTimers) swap(i, j int) {
	t.heap[i], t.heap[j] = t.heap[j], t.heap[i]
	t.heap[i].hidx, t.heap[j].hidx = i, j
}

func (t *kcpTimers) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !t.less(i, p) {
			return
		}
		t.swap(i, p)
		i = p
	}
}

func (t *kcpTimers) down(i int) {
	n := len(t.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && t.less(r, l) {
			m = r
		}
		if !t.less(m, i) {
			return
		}
		t.swap(i, m)
		i = m
	}
}

func (t *kcpTimers) run() {
	defer close(t.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var due []*kcpSession
	for {
		now := arq.Clock()
		due = due[:0]
		wait := time.Hour
		t.mu.Lock()
		for len(t.heap) > 0 && int32(t.heap[0].due-now) <= 0 {
			ss := t.heap[0]
			t.removeAt(0)
			due = append(due, ss)
		}
		if len(t.heap) > 0 {
			wait = time.Duration(t.heap[0].due-now) * time.Millisecond
		}
		t.mu.Unlock()
		for _, ss := range due {
			if p := t.sock.lookup(ss.conv); p != nil && p.sess() == ss {
				p.onTimer()
			}
		}
		if len(due) > 0 {
			continue // onTimer may have scheduled something due now
		}
		timer.Reset(wait)
		select {
		case <-t.stop:
			return
		case <-t.wake:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		case <-timer.C:
		}
	}
}

func (t *kcpTimers) close() {
	select {
	case <-t.stop:
	default:
		close(t.stop)
		<-t.done
	}
}

// tokenBucket limits how often a socket answers unknown sessions, so that
// it cannot be used to reflect traffic at a spoofed address.
type tokenBucket struct {
	mu          sync.Mutex
	rate, burst float64
	tokens      float64
	last        time.Time
}

func (b *tokenBucket) allow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if b.last.IsZero() {
		b.tokens = b.burst
	} else {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// newToken returns a random nonzero session token.
func newToken() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:])
		if t := binary.BigEndian.Uint64(b[:]); t != 0 {
			return t
		}
	}
}
