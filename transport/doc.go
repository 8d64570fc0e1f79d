// Package transport carries imgate frames over TCP, WebSocket, their TLS
// forms, KCP and QUIC, and hands them to a Handler through one Conn and
// Listener interface, so nothing above this package knows which transport a
// connection uses.
//
// TCP and WebSocket run on an epoll reactor: no goroutine and no buffer per
// connection at rest. KCP (kcp.go, kcp_listen.go, kcp_dial.go, kcp_fec.go)
// runs the arq engine for every session of a listener on one UDP socket,
// with one read goroutine and one timer heap per socket: no goroutine and no
// buffer per session at rest either. TLS kinds and QUIC run on the goroutine
// path (stream.go): crypto/tls needs a blocking net.Conn, and quic-go offers
// only blocking stream reads.
//
// Invariants:
//   - Handler calls for one connection never overlap.
//   - A Frame handed to Send/Enqueue is released exactly once.
//   - A socket is closed only by its loop, or by its writer when the loop has
//     already let go of it; nobody writes to a descriptor after its close.
//   - A KCP session's OnClose comes once, after its last OnFrame, whichever
//     of the reader, the timer heap or the janitor ends it.
//   - A frame a QUIC client sent as 0-RTT data reaches the Handler while
//     EarlyConn.Early reports true; a connection without 0-RTT data is opened
//     only once its handshake has completed.
package transport
