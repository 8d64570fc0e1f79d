package weaknet

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"imgate/bench/report"
)

// Table is every result, one row each, for the terminal.
func Table(results []Result) *report.Table {
	t := &report.Table{Title: "weak network: push latency and delivery per transport",
		Header: []string{"transport", "condition", "p50", "p99", "max", "delivered/sent", "lost", "dup", "reordered", "reconnects", "link drop", "note"}}
	for _, r := range results {
		switch {
		case r.Err != "":
			t.Add(r.Transport, r.Condition.String(), "-", "-", "-", "-", "-", "-", "-", "-", "-", "FAILED: "+firstLine(r.Err))
		case !r.Available:
			t.Add(r.Transport, r.Condition.String(), "-", "-", "-", "-", "-", "-", "-", "-", "-", "not available: "+firstLine(r.Note))
		default:
			t.Add(r.Transport, r.Condition.String(), r.Quantile(50), r.Quantile(99), r.Quantile(100),
				fmt.Sprintf("%d/%d", r.Delivered, r.Sent), r.Lost, r.Duplicated, r.Reordered, r.Reconnects,
				fmt.Sprintf("%.1f%%", 100*r.Link.LossRate()))
		}
	}
	return t
}

// Markdown is the table for bench/RESULTS.md: a row per transport, and per
// condition p50, p99, delivered/sent and reconnects. Transports not
// available and runs that failed say so in their row, with the reason in a
// note under the table.
func Markdown(results []Result) string {
	var conds []Condition
	var transports []string
	for _, r := range results {
		if !slices.Contains(conds, r.Condition) {
			conds = append(conds, r.Condition)
		}
		if !slices.Contains(transports, r.Transport) {
			transports = append(transports, r.Transport)
		}
	}
	var b strings.Builder
	b.WriteString("| transport |")
	for _, c := range conds {
		fmt.Fprintf(&b, " p50 @ %s | p99 | delivered/sent | reconnects |", c.short())
	}
	b.WriteString("\n|---|")
	for range conds {
		b.WriteString("---:|---:|---:|---:|")
	}
	b.WriteString("\n")
	// Reasons under the table, each once with the rows it explains.
	var reasons []string
	rowsFor := map[string][]string{}
	note := func(row, reason string) {
		if !slices.Contains(reasons, reason) {
			reasons = append(reasons, reason)
		}
		if !slices.Contains(rowsFor[reason], row) {
			rowsFor[reason] = append(rowsFor[reason], row)
		}
	}
	for _, name := range transports {
		fmt.Fprintf(&b, "| %s |", name)
		for _, c := range conds {
			i := slices.IndexFunc(results, func(r Result) bool { return r.Transport == name && r.Condition == c })
			if i < 0 {
				b.WriteString(" | | | |")
				continue
			}
			r := results[i]
			switch {
			case r.Err != "":
				note(name+" @ "+c.short(), "failed: "+firstLine(r.Err))
				b.WriteString(" failed | – | – | – |")
			case !r.Available:
				note(name, "not available: "+firstLine(r.Note))
				b.WriteString(" not available | – | – | – |")
			default:
				delivered := fmt.Sprintf("%s/%s", formatCount(r.Delivered), formatCount(r.Sent))
				if r.Lost+r.Duplicated+r.Reordered > 0 {
					delivered += fmt.Sprintf(" (**lost %d, dup %d, reordered %d**)", r.Lost, r.Duplicated, r.Reordered)
				}
				fmt.Fprintf(&b, " %s | %s | %s | %d |", roundMillis(r.Quantile(50)), roundMillis(r.Quantile(99)), delivered, r.Reconnects)
			}
		}
		b.WriteString("\n")
	}
	if len(reasons) > 0 {
		b.WriteString("\n")
	}
	for _, reason := range reasons {
		fmt.Fprintf(&b, "- %s: %s\n", strings.Join(rowsFor[reason], ", "), reason)
	}
	return b.String()
}

// roundMillis shows a latency in whole milliseconds ("1,234 ms"), or with
// one decimal below 10 ms.
func roundMillis(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	if ms < 10 {
		return fmt.Sprintf("%.1f ms", ms)
	}
	return formatCount(int64(ms+0.5)) + " ms"
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
