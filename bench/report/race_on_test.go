//go:build race

package report

// raceEnabled: the race detector instruments memory accesses and makes
// allocation counts meaningless, so allocation tests skip under -race.
const raceEnabled = true
