//go:build race

package client

// raceEnabled: quic-go has a known data race between opening a stream on a
// 0-RTT connection and the handshake completing (quic-go/quic-go#4303,
// open), which the race detector reports inside quic-go. The 0-RTT tests
// run without -race in a pass of their own (make test).
const raceEnabled = true
