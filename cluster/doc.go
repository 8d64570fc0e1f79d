// Package cluster makes gateway nodes one IM system over NATS: cross-node
// pushes by interest, uplinks routed to backends by SVID, an online registry
// in JetStream KV, and node liveness by heartbeats. It plugs into a
// gateway.Server through the gateway's seams (Observer, Relay, Dispatcher
// fallback, extra admin commands and HTTP routes); the gateway never imports
// it and runs without it. NATS is the engine: this package writes no cluster
// protocol of its own, only the subject layout and message formats of
// docs/CLUSTER.md.
//
// Files by concern: bus.go (connection, embedded server), subject.go (the
// layout), interest.go (room and user subscriptions held while the node has
// local members), downlink.go (bus messages in, pushes out), svid.go (uplink
// requests), registry.go (online registry), liveness.go (heartbeats, the
// reaper), query.go (admin and HTTP queries), pusher.go and backend.go (the
// Go side for backends), node.go (wiring).
//
// Invariants:
//   - Nothing on a connection's read path waits for NATS: subscriptions,
//     registry writes and requests are queued or published without waiting
//     for an answer; a JOIN answer alone may wait for its room's subscription
//     to reach the NATS server, and never while the bus is down.
//   - A bus message is encoded into a frame once per node, whatever the
//     number of local recipients; the gateway's fan-out does the rest.
//   - Pushes accepted on this node are delivered locally at once and
//     published for the others; the node's bus connection does not echo
//     them back (NATS no_echo), so each arrives once.
//   - While NATS is unreachable, local pushes keep working; registry entries
//     are resynchronised, and subscriptions restored by nats.go, on reconnect.
//   - Registry entries carry the node's boot id: a node's entries from a
//     previous life are purged at start, those of a dead node by the reaper.
package cluster
