// Package client is the Go client library for imgate: it dials a gateway
// over tcp://, tls://, ws://, wss:// or quic://, authenticates, keeps the connection
// alive with heartbeats, correlates requests with their replies, delivers
// pushes, and reconnects with jittered backoff, re-joining its rooms. With
// Config.EndpointsFunc (HTTPDNS in locate.go) each connect pass first asks
// the cluster for the nearest healthy gateways.
//
// Invariants:
//   - Each connection has one reader goroutine and one write path (a mutex
//     around a reused buffer). The reader never waits on that path (its only
//     writes are WebSocket pong replies, under the transport's own lock), so
//     a slow network never stalls reading or push delivery.
//   - OnPush and nothing else runs on the delivery goroutine: pushes reach it
//     in arrival order, across reconnects, and every Push it sees owns its
//     bytes (copied out of the reused read buffer).
//   - A request's seq is unique among the requests in flight (uint32, never
//     0); a request still pending when its connection drops fails with an
//     error wrapping ErrConnectionLost and is never resent, since the client
//     cannot know whether the server acted on it. Resent are only requests
//     the server says it did not act on: one answered TOO_EARLY (sent again
//     once, after the handshake), and one pipelined behind an AUTH that was
//     refused (sent again on the next connection).
//   - quic:// endpoints keep their server's TLS session tickets; a reconnect
//     that has one resumes with 0-RTT and pipelines AUTH, the rooms' JOINs
//     and the requests waiting for a connection into its first packets
//     (docs/PROTOCOL.md §11.3).
//   - The client is strict with the server (docs/PROTOCOL.md §13): a frame
//     it must not accept drops the connection with ErrProtocol.
//   - A token the server refused is never sent again.
//   - After Close, or a server CLOSE that forbids coming back (REPLACED,
//     KICKED, AUTH_FAILED, TOKEN_EXPIRED without a TokenFunc), the client
//     stops for good: Closed fires and Err says why.
//
// The transport seam is dialFunc in dial.go: a new scheme is one function
// returning either a byte stream (frames back to back) or a message
// transport (one frame per message).
package client
