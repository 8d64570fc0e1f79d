// Package broadcast holds rooms and fans messages out to their members with
// zero copies: a message is encoded once into a reference-counted Frame whose
// buffer serves stream and WebSocket connections alike, and each recipient's
// queue holds a reference to it, not a copy.
//
// Invariants:
//   - A Frame's bytes are immutable once shared; it returns to its pool when
//     the last reference is released.
//   - Fan-out allocates nothing per recipient.
//   - Messages published to a room by one goroutine reach each member in
//     publish order (a shard's tasks always run on one worker).
//   - A worker never blocks on a socket: members queue and write
//     non-blockingly; a member whose queue is full handles that itself.
package broadcast
