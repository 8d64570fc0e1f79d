// Package proto is the imgate wire format: one binary frame layout that every
// transport (TCP, WebSocket, KCP, QUIC) carries unchanged.
//
// A frame is a 16-byte big-endian header followed by an op-specific body.
// docs/PROTOCOL.md is the normative description; this package is its
// reference implementation.
//
// Invariants:
//   - Decoding never allocates: a decoded Frame's Body aliases the input, so
//     it is valid only as long as the caller keeps the input bytes unchanged.
//   - Encoding appends to a caller-owned buffer and allocates only when that
//     buffer must grow.
//   - Nothing here knows about sockets, sessions or rooms.
package proto
