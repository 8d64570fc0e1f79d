// Package weaknet measures imgate over an impaired network: message latency
// and delivery for every transport under packet loss and delay that a kernel
// without tc netem cannot produce.
//
// A Lab is two network namespaces, the gateway's and the client's, each with
// one TUN device on 10.77.0.0/30. Between the devices runs imgate-netem, the
// userspace shim that drops and delays packets; nothing else connects the
// namespaces, so every transport crosses the same impaired link. The real
// gateway binary runs in its namespace (`ip netns exec`); a probe process in
// the client namespace dials it by URL with the client library and reports,
// as JSON lines, every push it receives; the harness, outside both, pushes a
// stamped, numbered message at a steady rate through the admin port, over a
// connection it opened from inside the gateway namespace, so the publishing
// path is never impaired.
//
// Invariants:
//   - Nothing is added to the namespace the harness runs in: no device, no
//     address, no route. Several labs (other engineers', other runs) can
//     exist at once; their namespaces carry the harness's pid, and a lab
//     removes namespaces left by harness processes that no longer exist.
//   - Every process a lab starts dies with the harness (Pdeathsig) and is
//     stopped, and every namespace deleted, by Lab.Close, whatever failed.
//   - Every wait is bounded.
//   - A message counts as sent to the client when the gateway answers the
//     push with at least one connection reached; each such message must
//     arrive exactly once and in order. A transport the client library or
//     the gateway does not know (kcp:// until it lands) is reported as not
//     available, never as passed.
package weaknet
