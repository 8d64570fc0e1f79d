// Package arq is a KCP protocol engine built for holding very many mostly
// idle sessions: the segments on the wire are KCP's (the format of
// github.com/xtaci/kcp-go in stream mode, which the tests check it against),
// but a session at rest holds no queue, no buffer and no timer. kcp-go's own
// engine allocates its send and receive rings and an MTU-sized buffer up
// front, 16.4 KB per session before a byte moves, which is more than the
// whole budget of an idle imgate session; here the queues are nil until
// data is in flight and segment buffers come from a shared pool.
//
// An Engine is not safe for concurrent use: its owner serialises Input, Send
// and Flush (imgate's KCP transport holds a per-session mutex).
package arq

import (
	"encoding/binary"
	"errors"
	"sync"
	"time"
)

// Commands and sizes from the KCP protocol.
const (
	cmdPush = 81 // data
	cmdAck  = 82 // acknowledgement of one segment
	cmdWAsk = 83 // window probe: ask the peer for its window
	cmdWIns = 84 // window size tell

	// Overhead is the size of a segment header.
	Overhead = 24

	askSend = 1 // send a window probe
	askTell = 2 // tell our window

	rtoNoDelayMin = 30
	rtoMin        = 100
	rtoDef        = 200
	rtoMax        = 60000
	probeInit     = 7000
	probeLimit    = 120000
	threshInit    = 2
	threshMin     = 2
)

// Config holds the settings that KCP names nodelay, interval, resend and nc,
// plus windows, MTU and the dead-link limit. The presets name tested sets.
type Config struct {
	NoDelay    bool // lower minimum RTO (30 ms) and gentler RTO backoff
	Interval   int  // ms between flushes of a busy session (10..5000)
	Resend     int  // fast retransmit after this many later acks; 0 off
	NoCongest  bool // no congestion window: send up to min(send, peer) window
	SendWindow int  // segments in flight
	RecvWindow int  // segments buffered out of order
	MTU        int  // bytes per datagram given to output, header space included
	DeadLink   int  // transmissions of one segment before the session is dead
	AckNoDelay bool // acknowledge at once instead of on the next interval
}

// Presets, documented in docs/PROTOCOL.md (KCP).
var (
	// Normal is KCP's conservative mode with congestion control off:
	// 40 ms ticks, 100 ms minimum RTO, full RTO backoff.
	Normal = Config{Interval: 40, Resend: 2, NoCongest: true, SendWindow: 64, RecvWindow: 64, MTU: 1350, DeadLink: 20}
	// Fast trades bandwidth for latency: 20 ms ticks, 30 ms minimum RTO,
	// halved backoff, fast retransmit after two later acks.
	Fast = Config{NoDelay: true, Interval: 20, Resend: 2, NoCongest: true, SendWindow: 128, RecvWindow: 128, MTU: 1350, DeadLink: 40}
	// WeakNetwork is Fast with 10 ms ticks, immediate acks and more patience
	// before declaring the link dead: for lossy, high-RTT mobile links.
	WeakNetwork = Config{NoDelay: true, Interval: 10, Resend: 1, NoCongest: true, SendWindow: 256, RecvWindow: 256, MTU: 1350, DeadLink: 60, AckNoDelay: true}
)

// Preset returns the named preset: normal, fast or weak-network.
func Preset(name string) (Config, error) {
	switch name {
	case "", "normal":
		return Normal, nil
	case "fast":
		return Fast, nil
	case "weak-network", "weak":
		return WeakNetwork, nil
	}
	return Config{}, errors.New("arq: unknown preset " + name + " (want normal, fast, weak-network)")
}

func (c Config) withDefaults() Config {
	if c.Interval <= 0 {
		c.Interval = 100
	}
	c.Interval = min(max(c.Interval, 10), 5000)
	if c.SendWindow <= 0 {
		c.SendWindow = 32
	}
	if c.RecvWindow <= 0 {
		c.RecvWindow = 32
	}
	if c.MTU < 50+Overhead {
		c.MTU = 1400
	}
	c.MTU = min(c.MTU, MaxMTU)
	if c.DeadLink <= 0 {
		c.DeadLink = 20
	}
	return c
}

// Errors.
var (
	ErrDeadLink = errors.New("arq: peer stopped acknowledging (dead link)")
	ErrBadInput = errors.New("arq: malformed segment")
	ErrConv     = errors.New("arq: segment for another conversation")
)

// segment is one KCP segment in a send or receive queue. data is a pooled
// buffer of at most mss bytes.
type segment struct {
	sn, ts, resendts, rto, fastack, xmit uint32
	acked                                bool
	data                                 []byte
}

const fastackDone = 0xFFFFFFFF

// Output sends one datagram's worth of segments. buf is valid only during
// the call; its first `reserve` bytes (see New) are free for the caller's
// envelope.
type Output func(buf []byte)

// Engine is one KCP session's state machine.
type Engine struct {
	cfg     Config
	conv    uint32
	mss     uint32
	reserve int
	output  Output

	sndUna, sndNxt, rcvNxt uint32
	ssthresh, cwnd, incr   uint32
	rmtWnd                 uint32
	srtt, rttvar           int32
	rto, minrto            uint32
	probe                  uint32
	tsProbe, probeWait     uint32
	nextFlush              uint32 // when a busy session's interval flush is due
	dead                   bool

	sndQueue []segment // accepted by Send, beyond the window
	sndBuf   []segment // sent, not yet acknowledged, in sn order
	rcvBuf   []segment // received out of order, in sn order
	ready    []segment // in order, waiting for TakeReady
	acks     []uint32  // pending acks: sn, ts pairs
}

// New returns an engine for conversation conv. reserve bytes at the front of
// every output buffer are left for the caller's envelope; cfg.MTU counts them.
func New(conv uint32, cfg Config, reserve int, out Output) *Engine {
	cfg = cfg.withDefaults()
	e := &Engine{cfg: cfg, conv: conv, reserve: reserve, output: out}
	e.mss = uint32(cfg.MTU - reserve - Overhead)
	e.rmtWnd = uint32(cfg.RecvWindow)
	e.rto = rtoDef
	e.minrto = rtoMin
	if cfg.NoDelay {
		e.minrto = rtoNoDelayMin
	}
	e.ssthresh = threshInit
	return e
}

// Conv is the conversation id.
func (e *Engine) Conv() uint32 { return e.conv }

// MSS is the largest payload one segment carries.
func (e *Engine) MSS() int { return int(e.mss) }

// Dead reports that a segment went unacknowledged DeadLink times.
func (e *Engine) Dead() bool { return e.dead }

// WaitSnd is the number of segments accepted but not yet acknowledged.
func (e *Engine) WaitSnd() int { return len(e.sndQueue) + len(e.sndBuf) }

// SendRoom is how many more bytes Send should be given before the engine's
// queue runs a full window ahead of the wire; callers keep the rest in their
// own (bounded) queue.
func (e *Engine) SendRoom() int {
	limit := 2 * e.cfg.SendWindow
	n := limit - e.WaitSnd()
	if n <= 0 {
		return 0
	}
	return n * int(e.mss)
}

// Owed reports acks or window answers waiting for the next Flush: the
// caller schedules one within Interval (or at once with AckNoDelay).
func (e *Engine) Owed() bool { return len(e.acks) > 0 || e.probe != 0 }

// Idle reports that nothing is in flight, queued or owed to the peer: the
// session needs no timer until the next Input or Send.
func (e *Engine) Idle() bool {
	return len(e.sndQueue) == 0 && len(e.sndBuf) == 0 && len(e.acks) == 0 && e.probe == 0 && len(e.ready) == 0
}

// Release returns every pooled buffer; the engine must not be used after.
func (e *Engine) Release() {
	for _, q := range [][]segment{e.sndQueue, e.sndBuf, e.rcvBuf, e.ready} {
		for i := range q {
			putSeg(q[i].data)
		}
	}
	e.sndQueue, e.sndBuf, e.rcvBuf, e.ready, e.acks = nil, nil, nil, nil, nil
}

// Send queues p as stream bytes (copied), topping up the last queued
// segment first, as KCP's stream mode does.
func (e *Engine) Send(p []byte) {
	if n := len(e.sndQueue); n > 0 {
		last := &e.sndQueue[n-1]
		if room := int(e.mss) - len(last.data); room > 0 {
			k := min(room, len(p))
			last.data = append(last.data, p[:k]...)
			p = p[k:]
		}
	}
	for len(p) > 0 {
		k := min(int(e.mss), len(p))
		buf := getSeg()[:k]
		copy(buf, p)
		e.sndQueue = append(e.sndQueue, segment{data: buf})
		p = p[k:]
	}
}

// TakeReady appends the in-order payloads received so far to dst and hands
// their buffers over: the caller returns each with Recycle once consumed.
//
// Like KCP, a receiver whose window was full tells the peer at the next
// Flush that it has room again, rather than leave it to the peer's window
// probe (seconds away).
func (e *Engine) TakeReady(dst [][]byte) [][]byte {
	if len(e.ready) > 0 && e.wndUnused() == 0 {
		e.probe |= askTell
	}
	for i := range e.ready {
		dst = append(dst, e.ready[i].data)
		e.ready[i].data = nil
	}
	e.ready = shrink(e.ready[:0])
	return dst
}

// Input processes one datagram's segments. It reports whether the peer
// acknowledged data (the send window may have opened).
func (e *Engine) Input(data []byte, now uint32) (acked bool, err error) {
	if len(data) < Overhead {
		return false, ErrBadInput
	}
	prevUna := e.sndUna
	var latestTS uint32
	sawAck := false
	fastResend := false
	for len(data) >= Overhead {
		conv := binary.LittleEndian.Uint32(data)
		cmd := data[4]
		frg := data[5]
		wnd := binary.LittleEndian.Uint16(data[6:])
		ts := binary.LittleEndian.Uint32(data[8:])
		sn := binary.LittleEndian.Uint32(data[12:])
		una := binary.LittleEndian.Uint32(data[16:])
		n := binary.LittleEndian.Uint32(data[20:])
		data = data[Overhead:]
		if conv != e.conv {
			return false, ErrConv
		}
		if uint64(n) > uint64(len(data)) || cmd < cmdPush || cmd > cmdWIns || (cmd == cmdPush && frg != 0) {
			return false, ErrBadInput
		}
		e.rmtWnd = uint32(wnd)
		e.parseUna(una)
		switch cmd {
		case cmdAck:
			e.parseAck(sn)
			if e.parseFastack(sn, ts) {
				fastResend = true
			}
			sawAck, latestTS = true, ts
		case cmdPush:
			if diff(sn, e.rcvNxt+uint32(e.cfg.RecvWindow)) < 0 {
				e.acks = append(e.acks, sn, ts)
				if diff(sn, e.rcvNxt) >= 0 {
					e.parseData(sn, data[:n])
				}
			}
		case cmdWAsk:
			e.probe |= askTell
		}
		data = data[n:]
	}
	if sawAck && diff(now, latestTS) >= 0 {
		e.updateRTT(diff(now, latestTS))
	}
	if !e.cfg.NoCongest && diff(e.sndUna, prevUna) > 0 && e.cwnd < e.rmtWnd {
		e.growCwnd()
	}
	acked = e.sndUna != prevUna || fastResend
	if fastResend || (e.cfg.AckNoDelay && len(e.acks) > 0) {
		e.Flush(now)
	}
	return acked, nil
}

func (e *Engine) parseUna(una uint32) {
	k := 0
	for k < len(e.sndBuf) && diff(una, e.sndBuf[k].sn) > 0 {
		putSeg(e.sndBuf[k].data)
		k++
	}
	if k > 0 {
		e.sndBuf = shrink(e.sndBuf[:copy(e.sndBuf, e.sndBuf[k:])])
	}
	e.shrinkBuf()
}

func (e *Engine) shrinkBuf() {
	// Acked segments stay in sndBuf until una passes them (as in KCP);
	// skip over a leading run of them.
	if len(e.sndBuf) > 0 {
		e.sndUna = e.sndBuf[0].sn
	} else {
		e.sndUna = e.sndNxt
	}
}

func (e *Engine) parseAck(sn uint32) {
	if diff(sn, e.sndUna) < 0 || diff(sn, e.sndNxt) >= 0 {
		return
	}
	for i := range e.sndBuf {
		s := &e.sndBuf[i]
		if s.sn == sn {
			if !s.acked {
				s.acked = true
				putSeg(s.data)
				s.data = nil
			}
			break
		}
		if diff(sn, s.sn) < 0 {
			break
		}
	}
}

func (e *Engine) parseFastack(sn, ts uint32) bool {
	if e.cfg.Resend <= 0 || diff(sn, e.sndUna) < 0 || diff(sn, e.sndNxt) >= 0 {
		return false
	}
	fire := false
	for i := range e.sndBuf {
		s := &e.sndBuf[i]
		if diff(sn, s.sn) < 0 {
			break
		}
		if sn != s.sn && !s.acked && diff(s.ts, ts) <= 0 && s.fastack != fastackDone {
			s.fastack++
			if s.fastack >= uint32(e.cfg.Resend) {
				fire = true
			}
		}
	}
	return fire
}

func (e *Engine) parseData(sn uint32, payload []byte) {
	// Insert into rcvBuf in sn order unless already there.
	i := len(e.rcvBuf)
	for i > 0 && diff(e.rcvBuf[i-1].sn, sn) > 0 {
		i--
	}
	if i > 0 && e.rcvBuf[i-1].sn == sn {
		return
	}
	buf := getSeg()[:len(payload)]
	copy(buf, payload)
	e.rcvBuf = append(e.rcvBuf, segment{})
	copy(e.rcvBuf[i+1:], e.rcvBuf[i:])
	e.rcvBuf[i] = segment{sn: sn, data: buf}
	// Move the in-order run to ready.
	k := 0
	for k < len(e.rcvBuf) && e.rcvBuf[k].sn == e.rcvNxt {
		e.ready = append(e.ready, e.rcvBuf[k])
		e.rcvNxt++
		k++
	}
	if k > 0 {
		n := copy(e.rcvBuf, e.rcvBuf[k:])
		clear(e.rcvBuf[n:])
		e.rcvBuf = shrink(e.rcvBuf[:n])
	}
}

func (e *Engine) updateRTT(rtt int32) {
	if e.srtt == 0 {
		e.srtt, e.rttvar = rtt, rtt/2
	} else {
		delta := rtt - e.srtt
		e.srtt += delta / 8
		if delta < 0 {
			delta = -delta
		}
		if rtt < e.srtt-e.rttvar {
			e.rttvar += (delta - e.rttvar) / 32
		} else {
			e.rttvar += (delta - e.rttvar) / 4
		}
	}
	rto := uint32(e.srtt) + max(uint32(e.cfg.Interval), uint32(e.rttvar)*4)
	e.rto = min(max(rto, e.minrto), rtoMax)
}

func (e *Engine) growCwnd() {
	mss := e.mss
	if e.cwnd < e.ssthresh {
		e.cwnd++
		e.incr += mss
	} else {
		if e.incr < mss {
			e.incr = mss
		}
		e.incr += mss*mss/e.incr + mss/16
		if (e.cwnd+1)*mss <= e.incr {
			e.cwnd = (e.incr + mss - 1) / mss
		}
	}
	if e.cwnd > e.rmtWnd {
		e.cwnd = e.rmtWnd
		e.incr = e.rmtWnd * mss
	}
}

func (e *Engine) wndUnused() uint16 {
	n := e.cfg.RecvWindow - len(e.rcvBuf) - len(e.ready)
	if n < 0 {
		return 0
	}
	return uint16(min(n, 0xFFFF))
}

// Flush sends pending acks, window probes, new segments within the window
// and due retransmissions. It returns when the session next needs a Flush
// (ms on the caller's clock) and false when it needs none until new input.
func (e *Engine) Flush(now uint32) (next uint32, busy bool) {
	w := writer{e: e, buf: getSeg()[:e.reserve]}
	defer w.done()
	wnd := e.wndUnused()

	for i := 0; i+1 < len(e.acks); i += 2 {
		// Acks below rcvNxt are implied by una; keep the last for its RTT
		// sample (KCP does the same).
		if diff(e.acks[i], e.rcvNxt) >= 0 || i+2 == len(e.acks) {
			w.segment(cmdAck, wnd, e.acks[i+1], e.acks[i], nil)
		}
	}
	e.acks = shrinkU(e.acks[:0])

	if e.rmtWnd == 0 {
		if e.probeWait == 0 {
			e.probeWait = probeInit
			e.tsProbe = now + e.probeWait
		} else if diff(now, e.tsProbe) >= 0 {
			e.probeWait = min(max(e.probeWait, probeInit)+e.probeWait/2, probeLimit)
			e.tsProbe = now + e.probeWait
			e.probe |= askSend
		}
	} else {
		e.tsProbe, e.probeWait = 0, 0
	}
	if e.probe&askSend != 0 {
		w.segment(cmdWAsk, wnd, 0, 0, nil)
	}
	if e.probe&askTell != 0 {
		w.segment(cmdWIns, wnd, 0, 0, nil)
	}
	e.probe = 0

	cwnd := min(uint32(e.cfg.SendWindow), e.rmtWnd)
	if !e.cfg.NoCongest {
		cwnd = min(cwnd, max(e.cwnd, 1))
	}
	moved := 0
	for len(e.sndQueue) > moved && diff(e.sndNxt, e.sndUna+cwnd) < 0 {
		s := e.sndQueue[moved]
		s.sn = e.sndNxt
		e.sndNxt++
		e.sndBuf = append(e.sndBuf, s)
		moved++
	}
	if moved > 0 {
		n := copy(e.sndQueue, e.sndQueue[moved:])
		clear(e.sndQueue[n:])
		e.sndQueue = shrink(e.sndQueue[:n])
	}

	resent := uint32(e.cfg.Resend)
	if resent == 0 {
		resent = fastackDone
	}
	var lost, changed bool
	minDue := now + uint32(e.cfg.Interval)
	busy = false
	for i := range e.sndBuf {
		s := &e.sndBuf[i]
		if s.acked {
			continue
		}
		send := false
		switch {
		case s.xmit == 0:
			send = true
			s.rto = e.rto
			s.resendts = now + s.rto
		case s.fastack >= resent && s.fastack != fastackDone:
			send = true
			s.fastack = fastackDone
			s.rto = e.rto
			s.resendts = now + s.rto
			changed = true
		case s.fastack > 0 && s.fastack != fastackDone && moved == 0:
			// Early retransmit: a later segment was acked and nothing
			// new is going out that could trigger a fast ack.
			send = true
			s.fastack = fastackDone
			s.rto = e.rto
			s.resendts = now + s.rto
			changed = true
		case diff(now, s.resendts) >= 0:
			send = true
			if e.cfg.NoDelay {
				s.rto += e.rto / 2
			} else {
				s.rto += e.rto
			}
			s.fastack = 0
			s.resendts = now + s.rto
			lost = true
		}
		if send {
			s.xmit++
			s.ts = now
			w.segment(cmdPush, wnd, s.ts, s.sn, s.data)
			if s.xmit >= uint32(e.cfg.DeadLink) {
				e.dead = true
			}
		}
		busy = true
		if diff(s.resendts, minDue) < 0 {
			minDue = s.resendts
		}
	}

	if !e.cfg.NoCongest {
		if changed {
			e.ssthresh = max((e.sndNxt-e.sndUna)/2, threshMin)
			e.cwnd = e.ssthresh + resent
			e.incr = e.cwnd * e.mss
		}
		if lost {
			e.ssthresh = max(cwnd/2, threshMin)
			e.cwnd, e.incr = 1, e.mss
		}
		if e.cwnd < 1 {
			e.cwnd, e.incr = 1, e.mss
		}
	}
	if len(e.sndQueue) > 0 || e.rmtWnd == 0 {
		busy = true
	}
	return minDue, busy
}

// writer packs segments into datagrams of at most MTU bytes.
type writer struct {
	e   *Engine
	buf []byte
}

func (w *writer) segment(cmd byte, wnd uint16, ts, sn uint32, data []byte) {
	e := w.e
	if len(w.buf)+Overhead+len(data) > e.cfg.MTU {
		w.emit()
	}
	var h [Overhead]byte
	binary.LittleEndian.PutUint32(h[0:], e.conv)
	h[4] = cmd
	binary.LittleEndian.PutUint16(h[6:], wnd)
	binary.LittleEndian.PutUint32(h[8:], ts)
	binary.LittleEndian.PutUint32(h[12:], sn)
	binary.LittleEndian.PutUint32(h[16:], e.rcvNxt)
	binary.LittleEndian.PutUint32(h[20:], uint32(len(data)))
	w.buf = append(w.buf, h[:]...)
	w.buf = append(w.buf, data...)
}

func (w *writer) emit() {
	if len(w.buf) > w.e.reserve {
		w.e.output(w.buf)
	}
	w.buf = w.buf[:w.e.reserve]
}

func (w *writer) done() {
	w.emit()
	putSeg(w.buf)
}

// diff is later - earlier on the wrapping 32-bit clock or sequence space.
func diff(later, earlier uint32) int32 { return int32(later - earlier) }

// shrink drops a queue's backing array once it is empty, so an idle session
// holds none.
func shrink(q []segment) []segment {
	if len(q) == 0 {
		return nil
	}
	return q
}

func shrinkU(q []uint32) []uint32 {
	if len(q) == 0 {
		return nil
	}
	return q
}

// MaxMTU bounds Config.MTU.
const MaxMTU = 1500

// segPool holds segment and datagram buffers, sized for the largest MTU.
// It holds array pointers so that neither Get nor Put allocates.
var segPool = sync.Pool{New: func() any { return new([MaxMTU]byte) }}

func getSeg() []byte { return segPool.Get().(*[MaxMTU]byte)[:0] }

func putSeg(b []byte) {
	if cap(b) != MaxMTU {
		return
	}
	segPool.Put((*[MaxMTU]byte)(b[:MaxMTU]))
}

// Recycle returns a buffer that TakeReady handed over.
func Recycle(b []byte) { putSeg(b) }

// Clock is milliseconds on a monotonic clock, the unit Input and Flush take.
func Clock() uint32 { return uint32(time.Since(epoch) / time.Millisecond) }

var epoch = time.Now()
