// Package route is the Route daemon (`imgate route`): it serves SVIDs for
// backends that do not speak NATS, by bridging each configured SVID to an
// HTTP endpoint (timeout, retries with backoff, a concurrency limit and a
// circuit breaker per SVID); it takes downlink pushes over HTTP (user,
// users, room, all, kick, join, leave) and publishes them on the bus; and it
// reports which SVIDs have live backends, from the announcements every
// backend (its own bridges included) publishes on <p>.backends.
//
// Invariants:
//   - The daemon talks to gateways only through the bus; it imports no
//     gateway code and holds no client connection.
//   - Every request it takes from the bus gets exactly one answer: the
//     endpoint's reply, or an error with an imgate code (TIMEOUT,
//     BACKEND_ERROR, RATE_LIMITED) the client sees in its ERROR frame.
//   - An open circuit answers at once and sends nothing to the endpoint
//     until its cooldown ends; then one trial request decides.
package route
