//go:build race

package transport

// raceEnabled: the race detector slows QUIC handshakes about tenfold, so
// burst tests run smaller under it (make test runs them full size in a
// pass without -race).
const raceEnabled = true
