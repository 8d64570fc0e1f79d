package report

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Table is an aligned text table for the terminal. Columns whose cells are
// all numbers (optionally followed by a unit, as in "12.5ms" or "99%") are
// right-aligned so their digits line up; others are left-aligned.
type Table struct {
	Title  string
	Header []string
	Rows   [][]string
}

// Add appends a row. Floats get a precision that suits their size (see
// FormatFloat); durations are shown in milliseconds with 1 to 3 decimals
// (see FormatMillis); anything else as fmt's %v.
func (t *Table) Add(cells ...any) {
	row := make([]string, len(cells))
	for i, c := range cells {
		row[i] = formatCell(c)
	}
	t.Rows = append(t.Rows, row)
}

func formatCell(c any) string {
	switch v := c.(type) {
	case string:
		return v
	case time.Duration:
		return FormatMillis(v)
	case float64:
		return FormatFloat(v)
	case float32:
		return FormatFloat(float64(v))
	default:
		return fmt.Sprint(v)
	}
}

// FormatFloat formats v with about four significant digits but no exponent
// for ordinary magnitudes: whole numbers without decimals ("19000"), then
// 1 to 3 decimals as the value gets smaller ("123.5", "12.35", "1.235",
// "0.123"); NaN and infinities as "-".
func FormatFloat(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "-"
	case v == math.Trunc(v) && a < 1e15:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case a >= 0.001:
		return strconv.FormatFloat(v, 'f', 3, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

// FormatMillis formats d in milliseconds with a unit: 1 decimal from 100ms
// ("250.0ms"), 2 from 10ms ("12.35ms"), 3 below ("0.125ms").
func FormatMillis(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	decimals := 3
	switch a := math.Abs(ms); {
	case a >= 100:
		decimals = 1
	case a >= 10:
		decimals = 2
	}
	return strconv.FormatFloat(ms, 'f', decimals, 64) + "ms"
}

// Render writes the title (if any), the header, a rule, and the rows, with
// two spaces between columns and no trailing spaces. Rows may have fewer or
// more cells than the header.
func (t *Table) Render(w io.Writer) {
	cols := len(t.Header)
	for _, r := range t.Rows {
		cols = max(cols, len(r))
	}
	widths := make([]int, cols)
	numeric := make([]bool, cols)
	for i := range numeric {
		numeric[i] = true
	}
	measure := func(row []string, body bool) {
		for i, c := range row {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
			if body && c != "" && !looksNumeric(c) {
				numeric[i] = false
			}
		}
	}
	measure(t.Header, false)
	hasBody := make([]bool, cols)
	for _, r := range t.Rows {
		measure(r, true)
		for i, c := range r {
			hasBody[i] = hasBody[i] || c != ""
		}
	}
	for i := range numeric {
		numeric[i] = numeric[i] && hasBody[i]
	}

	var b strings.Builder
	line := func(row []string) {
		b.Reset()
		for i := 0; i < cols; i++ {
			c := ""
			if i < len(row) {
				c = row[i]
			}
			if i > 0 {
				b.WriteString("  ")
			}
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c))
			if numeric[i] {
				b.WriteString(pad + c)
			} else {
				b.WriteString(c + pad)
			}
		}
		io.WriteString(w, strings.TrimRight(b.String(), " ")+"\n")
	}

	if t.Title != "" {
		io.WriteString(w, t.Title+"\n")
	}
	if len(t.Header) > 0 {
		line(t.Header)
		total := 0
		for _, wd := range widths {
			total += wd
		}
		io.WriteString(w, strings.Repeat("-", total+2*max(cols-1, 0))+"\n")
	}
	for _, r := range t.Rows {
		line(r)
	}
}

// looksNumeric reports whether s is a number, possibly followed by a unit
// made of letters, '%' or '/' ("12.5ms", "99%", "5000/s"), or is "-" (how
// FormatFloat shows a missing value).
func looksNumeric(s string) bool {
	s = strings.TrimSpace(s)
	if s == "-" {
		return true
	}
	end := len(s)
	for end > 0 {
		c := s[end-1]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '%' || c == '/' || c == ' ' {
			end--
			continue
		}
		break
	}
	if end == 0 {
		return false
	}
	_, err := strconv.ParseFloat(s[:end], 64)
	return err == nil
}
