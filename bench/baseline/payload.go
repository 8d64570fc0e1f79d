package baseline

import (
	"encoding/binary"
	"time"
)

// PayloadSize is the size of every benchmark message.
const PayloadSize = 128

// StampPayload writes the publish time and seq into the first 16 bytes of p.
func StampPayload(p []byte, sent time.Time, seq uint64) {
	binary.BigEndian.PutUint64(p[0:8], uint64(sent.UnixNano()))
	binary.BigEndian.PutUint64(p[8:16], seq)
}

// ReadPayload returns the publish time (unix nanoseconds) and seq stamped into p.
func ReadPayload(p []byte) (sentUnixNano int64, seq uint64) {
	return int64(binary.BigEndian.Uint64(p[0:8])), binary.BigEndian.Uint64(p[8:16])
}
