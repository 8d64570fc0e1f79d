package transport

import (
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/klauspost/reedsolomon"

	"imgate/transport/arq"
)

// Forward error correction for KCP: Reed-Solomon parity over groups of
// datagrams, so that a lost datagram is rebuilt from the others on arrival
// instead of being resent a round trip later. It is the weak-network lever
// that ARQ alone lacks: under 20 % loss with in-order delivery most messages
// wait behind some loss, and FEC removes that wait for all but the groups
// that lose more than their parity.
//
// Datagram (docs/PROTOCOL.md §11.4):
//
//	SHARD 0x13 | token u64 | seq u32 | conv u32 | data u8 | parity u8 | k u8 | shard
//
// Shards are numbered per session and direction; group g holds seq
// g*(data+parity) .. +data-1 (data shards: len u16 + the KCP segments) and
// the parity shards after them. Data shards go out at once and are used at
// once; parity follows when the group is full or, for sparse traffic, when no
// data came for one flush interval: then the group is short (k data shards,
// the rest counted as zeros) and carries parity in proportion,
// ceil(parity*k/data). A receiver rebuilds missing data shards once any
// k of the group's real shards arrived. Either side may send shards or plain
// DATA; the receiver takes both, so the setting needs no agreement.

const (
	kcpShard     = 0x13
	kcpFECHeader = 11 // seq, conv, data, parity, k
	fecGroups    = 4  // groups a receiver keeps open
)

// rsCodecs caches Reed-Solomon codecs by shape; building one is costly.
var rsCodecs sync.Map // [2]int -> reedsolomon.Encoder

func rsCodec(data, parity int) (reedsolomon.Encoder, error) {
	key := [2]int{data, parity}
	if c, ok := rsCodecs.Load(key); ok {
		return c.(reedsolomon.Encoder), nil
	}
	c, err := reedsolomon.New(data, parity)
	if err != nil {
		return nil, err
	}
	rsCodecs.Store(key, c)
	return c, nil
}

func validFEC(data, parity int) error {
	if data == 0 && parity == 0 {
		return nil
	}
	if data < 1 || parity < 1 || data+parity > 255 {
		return fmt.Errorf("kcp fec %d/%d: want data >= 1, parity >= 1, data+parity <= 255", data, parity)
	}
	return nil
}

// fecOut is a session's sending side: the open group's data shards.
type fecOut struct {
	data, parity int
	seq          uint32   // next shard number
	shards       [][]byte // copies of this group's data shards (len + payload), pooled
	opened       uint32   // ms the group's first shard went out
}

// fecIn is a session's receiving side: the last few groups' shards.
type fecIn struct {
	groups [fecGroups]fecGroup
}

type fecGroup struct {
	id           uint32
	used         bool
	done         bool // every data shard is here or rebuilt
	data, parity int
	k            int // data shards in the group; 0 until a parity shard says
	shards       [][]byte
	have         int // real shards held
	haveData     int
}

// sendData wraps payload (KCP segments, with s.sock.reserve bytes of free
// space before it in buf) as a data shard, sends it and keeps a copy for the
// group's parity. Called with s.mu held.
func (s *kcpSession) sendData(buf []byte) {
	f := s.fecOut
	if len(f.shards) == 0 {
		f.opened = arq.Clock()
	}
	payload := buf[s.sock.reserve:]
	hdr := buf[s.sock.reserve-kcpFECHeader-2 : s.sock.reserve]
	idx := len(f.shards)
	binary.BigEndian.PutUint32(hdr, f.seq+uint32(idx))
	binary.BigEndian.PutUint32(hdr[4:], s.conv)
	hdr[8], hdr[9], hdr[10] = byte(f.data), byte(f.parity), 0
	binary.BigEndian.PutUint16(hdr[11:], uint16(len(payload)))
	shard := append(getBuf(len(payload)+2), hdr[11:]...)
	f.shards = append(f.shards, append(shard, payload...))
	s.sock.send(buf, kcpShard, s.token, s.addr)
	if len(f.shards) == f.data {
		s.closeGroup()
	}
}

// closeGroup sends the open group's parity and starts the next group.
// Called with s.mu held.
func (s *kcpSession) closeGroup() {
	f := s.fecOut
	k := len(f.shards)
	if k == 0 {
		return
	}
	size := 0
	for _, sh := range f.shards {
		size = max(size, len(sh))
	}
	np := f.parity
	if k < f.data {
		np = min(f.parity, (f.parity*k+f.data-1)/f.data)
	}
	codec, err := rsCodec(f.data, f.parity)
	if err == nil {
		sc := getFECScratch(f.data+f.parity, size, s.sock.reserve-2+size)
		defer fecScratchPool.Put(sc)
		all := sc.shards
		for i := range k {
			copy(all[i], f.shards[i]) // the rest of each shard is zero
		}
		if err = codec.Encode(all); err == nil {
			pkt := sc.pkt
			for j := range np {
				hdr := pkt[s.sock.reserve-kcpFECHeader-2:]
				binary.BigEndian.PutUint32(hdr, f.seq+uint32(f.data+j))
				binary.BigEndian.PutUint32(hdr[4:], s.conv)
				hdr[8], hdr[9], hdr[10] = byte(f.data), byte(f.parity), byte(k)
				copy(hdr[kcpFECHeader:], all[f.data+j])
				s.sock.send(pkt, kcpShard, s.token, s.addr)
			}
		}
	}
	for i, sh := range f.shards {
		putBuf(sh)
		f.shards[i] = nil
	}
	f.shards = f.shards[:0]
	if cap(f.shards) > 0 {
		f.shards = nil // an idle session keeps no array
	}
	f.seq += uint32(f.data + f.parity)
}

// fecScratch is one group's encoding space, pooled: the shards (zeroed,
// each exactly the group's shard size) and the parity datagram.
type fecScratch struct {
	back   []byte
	shards [][]byte
	pkt    []byte
}

var fecScratchPool sync.Pool

func getFECScratch(n, size, pktSize int) *fecScratch {
	sc, _ := fecScratchPool.Get().(*fecScratch)
	if sc == nil {
		sc = &fecScratch{}
	}
	if cap(sc.back) < n*size {
		sc.back = make([]byte, n*size)
	}
	sc.back = sc.back[:n*size]
	clear(sc.back)
	sc.shards = sc.shards[:0]
	for i := range n {
		sc.shards = append(sc.shards, sc.back[i*size:(i+1)*size:(i+1)*size])
	}
	if cap(sc.pkt) < pktSize {
		sc.pkt = make([]byte, pktSize)
	}
	sc.pkt = sc.pkt[:pktSize]
	clear(sc.pkt)
	return sc
}

func padTo(b []byte, n int) []byte {
	out := make([]byte, n)
	copy(out, b)
	return out
}

// receiveShard files one shard and returns the KCP payloads to feed: the
// data shard's own (at once) and any the group can now rebuild. Called with
// s.mu held.
func (s *kcpSession) receiveShard(seq uint32, data, parity, k int, shard []byte) (payloads [][]byte) {
	if validFEC(data, parity) != nil || data == 0 {
		return nil
	}
	if s.fecIn == nil {
		s.fecIn = &fecIn{}
	}
	n := uint32(data + parity)
	id, idx := seq/n, int(seq%n)
	isData := idx < data
	if isData {
		if len(shard) < 2 || int(binary.BigEndian.Uint16(shard)) > len(shard)-2 {
			return nil
		}
		payloads = append(payloads, shard[2:2+binary.BigEndian.Uint16(shard)])
	}
	g := s.fecIn.group(id, data, parity)
	if g == nil || g.done || g.shards[idx] != nil {
		return payloads
	}
	g.shards[idx] = append([]byte(nil), shard...)
	g.have++
	if isData {
		g.haveData++
	} else if k > 0 && k <= data {
		g.k = k
	}
	want := g.k
	if want == 0 {
		want = data
	}
	if g.haveData >= want {
		g.release()
		return payloads
	}
	if g.k == 0 || g.have < g.k {
		return payloads // no parity yet, or not enough shards
	}
	// Rebuild: missing shards of a short group beyond k are zeros.
	size := 0
	for _, sh := range g.shards {
		size = max(size, len(sh))
	}
	shards := make([][]byte, data+parity)
	for i, sh := range g.shards {
		switch {
		case sh != nil:
			shards[i] = padTo(sh, size)
		case i < data && i >= want:
			shards[i] = make([]byte, size)
		}
	}
	codec, err := rsCodec(data, parity)
	if err != nil || codec.ReconstructData(shards) != nil {
		return payloads
	}
	for i := 0; i < want; i++ {
		if g.shards[i] == nil {
			sh := shards[i]
			if l := int(binary.BigEndian.Uint16(sh)); l <= len(sh)-2 && l > 0 {
				payloads = append(payloads, sh[2:2+l])
				s.sock.stats.FECRebuilt.Add(1)
			}
		}
	}
	g.release()
	return payloads
}

// group finds or opens group id, evicting the oldest; nil if id is older
// than every group kept (its time has passed).
func (in *fecIn) group(id uint32, data, parity int) *fecGroup {
	oldest := -1
	for i := range in.groups {
		g := &in.groups[i]
		if g.used && g.id == id {
			if g.data != data || g.parity != parity {
				return nil
			}
			return g
		}
		if !g.used {
			oldest = i
		} else if oldest < 0 || in.groups[oldest].used && int32(g.id-in.groups[oldest].id) < 0 {
			oldest = i
		}
	}
	g := &in.groups[oldest]
	if g.used && int32(id-g.id) < 0 {
		return nil
	}
	*g = fecGroup{id: id, used: true, data: data, parity: parity, shards: make([][]byte, data+parity)}
	return g
}

// release frees a finished group's copies; the slot stays, marked done, so
// that late shards of it are ignored.
func (g *fecGroup) release() {
	g.done = true
	g.shards = nil
}
