// Package report turns what imgate-bench measures into numbers, tables,
// charts and files: latency histograms that many goroutines record into, a
// flat JSON results file that partial runs accumulate into, an aligned
// terminal table, a one-line progress display, dependency-free SVG charts,
// and the rate ramp that searches for the highest publish rate that passes.
//
// Invariants:
//   - Histogram.Record and Sharded.Record allocate nothing and never fail:
//     durations outside 1us..120s are clamped to the nearest end.
//   - Nothing a Histogram reports lies outside 1us..120s, and Quantile, CDF
//     and Max are consistent with one another (all read the same buckets).
//   - Results files hold finite numbers only, keys sorted, and are replaced
//     atomically (temp file + rename), so a crash never leaves half a file.
//   - A Ramp is deterministic: the same pass/fail answers give the same
//     rates, and Best is always a rate that passed and lies below every rate
//     that failed.
package report
