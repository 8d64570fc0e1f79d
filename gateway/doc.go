// Package gateway turns transport connections into sessions: authentication
// with JWTs, heartbeats, the per-user device policy, the registry of who is
// connected, rooms, request dispatch by SVID, and the operator interfaces
// (redis-protocol admin port, HTTP API, Prometheus metrics).
//
// Invariants:
//   - Nothing on a connection's read path blocks: uplinks leave through the
//     Dispatcher, pushes are queued, never written synchronously to a slow
//     peer.
//   - A session's uid, device and allowed rooms are written once, before it
//     is marked authenticated and enters the user index.
//   - Bad input from one connection closes that connection only, with a
//     CLOSE frame carrying the reason, and is counted.
package gateway
