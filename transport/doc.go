// Package transport carries imgate frames over TCP and WebSocket (and their
// TLS forms) and hands them to a Handler; later KCP and QUIC join through
// the same Conn and Listener interfaces, so nothing above this package knows
// which transport a connection uses.
//
// TCP and WebSocket run on an epoll reactor: no goroutine per connection, and
// no buffer per connection at rest. TLS kinds run on the goroutine path
// (stream.go) because crypto/tls needs a blocking net.Conn.
//
// Invariants:
//   - Handler calls for one connection never overlap.
//   - A Frame handed to Send/Enqueue is released exactly once.
//   - A socket is closed only by its loop, or by its writer when the loop has
//     already let go of it; nobody writes to a descriptor after its close.
package transport
