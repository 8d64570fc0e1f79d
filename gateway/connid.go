package gateway

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"strconv"
	"sync"
)

// Connection ids are unique across nodes without coordination: a 40-bit
// random prefix drawn at start (and drawn again every 2^24 connections)
// followed by a 24-bit counter. Ids within one prefix never collide; two
// live prefixes collide with odds of about n/2^40 for n live prefixes in the
// whole cluster.
type connIDs struct {
	mu     sync.Mutex
	prefix uint64
	n      uint64
}

const connCounterBits = 24

func (g *connIDs) next() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.prefix == 0 || g.n == 1<<connCounterBits {
		var b [8]byte
		rand.Read(b[:])
		g.prefix = binary.BigEndian.Uint64(b[:])>>connCounterBits | 1 // never 0
		g.n = 0
	}
	g.n++
	return g.prefix<<connCounterBits | g.n
}

// FormatConnID renders a connection id as 16 hex digits (admin and API form).
func FormatConnID(id uint64) string { return fmt.Sprintf("%016x", id) }

// ParseConnID parses FormatConnID's form.
func ParseConnID(s string) (uint64, bool) {
	if len(s) != 16 {
		return 0, false
	}
	id, err := strconv.ParseUint(s, 16, 64)
	return id, err == nil
}
