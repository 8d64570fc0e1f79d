// Package steer sends each client to its nearest healthy gateway: an
// authoritative DNS responder (miekg/dns) for the gateway hostnames, and
// HTTPDNS, the same ranking as JSON client URLs. Nodes, their region,
// load, draining state and endpoints come from the cluster's heartbeats
// (a cluster.Node inside a gateway, a cluster.Watcher in `imgate dns`).
//
// Files by concern: regions.go (client address to region, longest prefix),
// rank.go (which nodes, in which order), dns.go (the responder), httpdns.go
// (the JSON handler), metrics.go, config.go.
//
// Invariants:
//   - A draining, leaving or silent node is never handed out; when no node
//     is healthy the responder says SERVFAIL and HTTPDNS 503, never an
//     empty answer a resolver or client would cache.
//   - A query costs one ranking of the known nodes and at most MaxAnswers
//     records; nothing is looked up elsewhere, nothing recurses.
//   - Metric labels come from fixed sets and configured region names,
//     never from query contents.
package steer
