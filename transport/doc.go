// Package transport carries imgate frames over TCP, WebSocket, their TLS
// forms and QUIC, and hands them to a Handler; KCP joins through the same
// Conn and Listener interfaces, so nothing above this package knows which
// transport a connection uses.
//
// TCP and WebSocket run on an epoll reactor: no goroutine and no buffer per
// connection at rest. TLS kinds and QUIC run on the goroutine path
// (stream.go): crypto/tls needs a blocking net.Conn, and quic-go offers
// only blocking stream reads.
//
// Invariants:
//   - Handler calls for one connection never overlap.
//   - A Frame handed to Send/Enqueue is released exactly once.
//   - A socket is closed only by its loop, or by its writer when the loop has
//     already let go of it; nobody writes to a descriptor after its close.
//   - A frame a QUIC client sent as 0-RTT data reaches the Handler while
//     EarlyConn.Early reports true; a connection without 0-RTT data is opened
//     only once its handshake has completed.
package transport
