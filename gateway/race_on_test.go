//go:build race

package gateway

// raceEnabled: the race detector drops sync.Pool items on purpose, so
// allocation counts are only meaningful without it (make test runs the
// allocation tests in a separate pass without -race).
const raceEnabled = true
