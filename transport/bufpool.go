package transport

import (
	"math/bits"
	"sync"
)

// Buffers for half-received frames come from power-of-two size classes and go
// back as soon as the frame completes, so a quiet connection holds none.
const (
	minBufShift = 8  // 256 B
	maxBufShift = 25 // 32 MiB: max frame plus one read
)

var bufPools [maxBufShift + 1]sync.Pool

func bufClass(n int) int {
	if n <= 1<<minBufShift {
		return minBufShift
	}
	return bits.Len(uint(n - 1))
}

// getBuf returns an empty buffer with capacity of at least n.
func getBuf(n int) []byte {
	c := bufClass(n)
	if c > maxBufShift {
		return make([]byte, 0, n)
	}
	if p, ok := bufPools[c].Get().(*[]byte); ok {
		return (*p)[:0]
	}
	return make([]byte, 0, 1<<c)
}

// putBuf returns b to its pool.
func putBuf(b []byte) {
	c := bits.Len(uint(cap(b))) - 1
	if b == nil || c < minBufShift || c > maxBufShift || cap(b) != 1<<c {
		return
	}
	b = b[:0]
	bufPools[c].Put(&b)
}

// growBuf returns a buffer holding b's bytes with room for n in all.
func growBuf(b []byte, n int) []byte {
	if cap(b) >= n {
		return b
	}
	nb := append(getBuf(n), b...)
	putBuf(b)
	return nb
}
