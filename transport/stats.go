package transport

import "sync/atomic"

// Stats are the engine's own counters (the gateway counts the rest). All
// fields and methods are safe for concurrent use.
type Stats struct {
	AcceptErrors   atomic.Int64
	HandshakeFails atomic.Int64 // every kind and reason; see HandshakeFailures
	KCP            KCPStats     // KCP listeners' own events (their drops are in badDatagrams too)

	badDatagrams [len(kindNames)][numDropReasons]atomic.Int64
	handshakes   [len(kindNames)][numHandshakeFailures]atomic.Int64
}

// DropReason says why a UDP listener dropped a datagram that no connection
// took: garbage, probes, or packets for connections long gone. Datagrams of
// live connections that fail to decrypt are dropped by the connection and
// are not counted here.
type DropReason uint8

// Drop reasons.
const (
	DropNotQUIC     DropReason = iota // neither a QUIC long nor a short header (first two bits clear)
	DropHeader                        // a header that cannot be parsed
	DropUnknownConn                   // a short header for no known connection
	DropUnexpected                    // a long header that cannot start a connection (not an Initial, an Initial too small, ...)
	DropVersion                       // a QUIC version the node does not speak (answered with Version Negotiation when the node has time)
	DropOverload                      // dropped to protect the node: a queue was full
	DropOther
	numDropReasons
)

var dropReasonNames = [numDropReasons]string{
	DropNotQUIC: "not_quic", DropHeader: "header", DropUnknownConn: "unknown_conn",
	DropUnexpected: "unexpected_packet", DropVersion: "version", DropOverload: "overload", DropOther: "other",
}

func (r DropReason) String() string {
	if r < numDropReasons {
		return dropReasonNames[r]
	}
	return "other"
}

// DropReasons lists every reason, for metrics.
var DropReasons = func() []DropReason {
	rs := make([]DropReason, numDropReasons)
	for i := range rs {
		rs[i] = DropReason(i)
	}
	return rs
}()

// HandshakeFailure says why a transport handshake (TLS, QUIC) failed.
type HandshakeFailure uint8

// Handshake failure reasons.
const (
	HandshakeALPN    HandshakeFailure = iota // the client offered no protocol the node speaks (QUIC: not imgate/1)
	HandshakeTLS                             // any other TLS failure: bad certificate, bad Finished, unsupported versions...
	HandshakeTimeout                         // the client went silent or did not finish in time
	HandshakeRefused                         // the node refused it (accept queue full, shutting down)
	HandshakePeer                            // the client abandoned it
	HandshakeOther
	numHandshakeFailures
)

var handshakeFailureNames = [numHandshakeFailures]string{
	HandshakeALPN: "alpn", HandshakeTLS: "tls", HandshakeTimeout: "timeout",
	HandshakeRefused: "refused", HandshakePeer: "peer", HandshakeOther: "other",
}

func (f HandshakeFailure) String() string {
	if f < numHandshakeFailures {
		return handshakeFailureNames[f]
	}
	return "other"
}

// HandshakeFailures lists every reason, for metrics.
var HandshakeFailures = func() []HandshakeFailure {
	fs := make([]HandshakeFailure, numHandshakeFailures)
	for i := range fs {
		fs[i] = HandshakeFailure(i)
	}
	return fs
}()

// BadDatagrams is how many datagrams listeners of kind k dropped for r.
func (s *Stats) BadDatagrams(k Kind, r DropReason) int64 {
	if int(k) >= len(s.badDatagrams) || r >= numDropReasons {
		return 0
	}
	return s.badDatagrams[k][r].Load()
}

// Handshakes is how many handshakes on listeners of kind k failed for f.
func (s *Stats) Handshakes(k Kind, f HandshakeFailure) int64 {
	if int(k) >= len(s.handshakes) || f >= numHandshakeFailures {
		return 0
	}
	return s.handshakes[k][f].Load()
}

// AddBadDatagram counts one dropped datagram (UDP listeners call it).
func (s *Stats) AddBadDatagram(k Kind, r DropReason) {
	if int(k) < len(s.badDatagrams) && r < numDropReasons {
		s.badDatagrams[k][r].Add(1)
	}
}

// AddHandshakeFailure counts one failed handshake.
func (s *Stats) AddHandshakeFailure(k Kind, f HandshakeFailure) {
	s.HandshakeFails.Add(1)
	if int(k) < len(s.handshakes) && f < numHandshakeFailures {
		s.handshakes[k][f].Add(1)
	}
}
