package report

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Point is one (x, y) value of a series.
type Point struct{ X, Y float64 }

// Series is a named line on a chart; points are joined in the order given.
type Series struct {
	Name   string
	Points []Point
}

// Chart is a line chart rendered as a standalone SVG with no scripts, fonts
// or stylesheets to fetch, so it opens anywhere (a browser, GitHub, an
// editor preview). Axes pick round tick values; a log axis ticks each
// decade. Points that cannot be drawn (NaN, infinite, or not positive on a
// log axis) are skipped.
type Chart struct {
	Title, XLabel, YLabel string
	LogX, LogY            bool
	Series                []Series
}

// Canvas size and the palette. The first colours are the Tableau 10 set,
// chosen to stay distinct from one another; past ten series the colours
// repeat with a dash pattern so every line still differs.
const (
	chartWidth  = 800
	chartHeight = 480
)

var chartColours = []string{
	"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
	"#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
}

var chartDashes = []string{"", "6,3", "2,2", "8,3,2,3"}

// axis maps data values onto a fraction 0..1 of the plot's width or height.
type axis struct {
	lo, hi float64
	log    bool
	major  []float64
	minor  []float64 // log axes only: 2..9 times each decade
	labels []string  // one per major tick
}

func (a axis) frac(v float64) float64 {
	if a.log {
		return (math.Log10(v) - math.Log10(a.lo)) / (math.Log10(a.hi) - math.Log10(a.lo))
	}
	return (v - a.lo) / (a.hi - a.lo)
}

// drawable reports whether p can be placed on the chart's axes.
func (c Chart) drawable(p Point) bool {
	if math.IsNaN(p.X) || math.IsNaN(p.Y) || math.IsInf(p.X, 0) || math.IsInf(p.Y, 0) {
		return false
	}
	return (!c.LogX || p.X > 0) && (!c.LogY || p.Y > 0)
}

// SVG renders the chart as an 800x480 SVG document.
func (c Chart) SVG() []byte {
	minX, maxX := math.Inf(1), math.Inf(-1)
	minY, maxY := math.Inf(1), math.Inf(-1)
	for _, s := range c.Series {
		for _, p := range s.Points {
			if !c.drawable(p) {
				continue
			}
			minX, maxX = min(minX, p.X), max(maxX, p.X)
			minY, maxY = min(minY, p.Y), max(maxY, p.Y)
		}
	}
	hasData := minX <= maxX
	xAxis := newAxis(minX, maxX, c.LogX)
	yAxis := newAxis(minY, maxY, c.LogY)

	// Plot area: room on the left for y tick labels and the rotated y label,
	// below for x tick labels and the x label, right for the legend.
	legendWidth := 0
	if len(c.Series) > 0 {
		longest := 0
		for _, s := range c.Series {
			longest = max(longest, utf8.RuneCountInString(s.Name))
		}
		legendWidth = min(220, 40+7*longest)
	}
	x0, x1 := 76.0, float64(chartWidth-20-legendWidth)
	y0, y1 := 44.0, float64(chartHeight-56)
	px := func(v float64) float64 { return x0 + xAxis.frac(v)*(x1-x0) }
	py := func(v float64) float64 { return y1 - yAxis.frac(v)*(y1-y0) }

	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		chartWidth, chartHeight, chartWidth, chartHeight)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", chartWidth, chartHeight)
	if c.Title != "" {
		fmt.Fprintf(&b, `<text class="title" x="%d" y="26" text-anchor="middle" font-size="16" font-weight="bold">%s</text>`+"\n",
			chartWidth/2, escapeXML(c.Title))
	}

	// Grid and ticks.
	b.WriteString(`<g stroke="#e6e6e6" stroke-width="1">` + "\n")
	for _, v := range xAxis.major {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`+"\n", px(v), y0, px(v), y1)
	}
	for _, v := range yAxis.major {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`+"\n", x0, py(v), x1, py(v))
	}
	b.WriteString("</g>\n")
	b.WriteString(`<g stroke="#333333" stroke-width="1">` + "\n")
	for _, v := range xAxis.major {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`+"\n", px(v), y1, px(v), y1+5)
	}
	for _, v := range xAxis.minor {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`+"\n", px(v), y1, px(v), y1+3)
	}
	for _, v := range yAxis.major {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`+"\n", x0-5, py(v), x0, py(v))
	}
	for _, v := range yAxis.minor {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`+"\n", x0-3, py(v), x0, py(v))
	}
	b.WriteString("</g>\n")
	fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#333333"/>`+"\n",
		x0, y0, x1-x0, y1-y0)
	for i, v := range xAxis.major {
		fmt.Fprintf(&b, `<text class="xtick" x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n",
			px(v), y1+19, xAxis.labels[i])
	}
	for i, v := range yAxis.major {
		fmt.Fprintf(&b, `<text class="ytick" x="%.1f" y="%.1f" text-anchor="end" dy="0.32em">%s</text>`+"\n",
			x0-8, py(v), yAxis.labels[i])
	}
	if c.XLabel != "" {
		fmt.Fprintf(&b, `<text class="xlabel" x="%.1f" y="%d" text-anchor="middle" font-size="13">%s</text>`+"\n",
			(x0+x1)/2, chartHeight-14, escapeXML(c.XLabel))
	}
	if c.YLabel != "" {
		fmt.Fprintf(&b, `<text class="ylabel" transform="translate(18 %.1f) rotate(-90)" text-anchor="middle" font-size="13">%s</text>`+"\n",
			(y0+y1)/2, escapeXML(c.YLabel))
	}
	if !hasData {
		fmt.Fprintf(&b, `<text class="nodata" x="%.1f" y="%.1f" text-anchor="middle" fill="#7f7f7f">no data</text>`+"\n",
			(x0+x1)/2, (y0+y1)/2)
	}

	// Series, then the legend beside the plot.
	for i, s := range c.Series {
		colour, dash := seriesStyle(i)
		var pts []Point
		for _, p := range s.Points {
			if c.drawable(p) {
				pts = append(pts, p)
			}
		}
		fmt.Fprintf(&b, `<g class="series" fill="%s" stroke="%s">`+"\n", colour, colour)
		if len(pts) >= 2 {
			b.WriteString(`<polyline fill="none" stroke-width="2" stroke-linejoin="round"`)
			if dash != "" {
				fmt.Fprintf(&b, ` stroke-dasharray="%s"`, dash)
			}
			b.WriteString(` points="`)
			for j, p := range pts {
				if j > 0 {
					b.WriteByte(' ')
				}
				fmt.Fprintf(&b, "%.1f,%.1f", px(p.X), py(p.Y))
			}
			b.WriteString(`"/>` + "\n")
		}
		// Markers show where measurements are; on dense series (a CDF) they
		// shrink so the line stays readable.
		r := 3.0
		if len(pts) > 50 {
			r = 1.5
		}
		for _, p := range pts {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="%.1f" stroke="none"/>`+"\n", px(p.X), py(p.Y), r)
		}
		b.WriteString("</g>\n")

		lx, ly := x1+16, y0+10+float64(i)*20
		fmt.Fprintf(&b, `<g class="legend-entry" fill="%s" stroke="%s">`, colour, colour)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke-width="2"`, lx, ly, lx+22, ly)
		if dash != "" {
			fmt.Fprintf(&b, ` stroke-dasharray="%s"`, dash)
		}
		fmt.Fprintf(&b, `/><circle cx="%.1f" cy="%.1f" r="3" stroke="none"/>`, lx+11, ly)
		fmt.Fprintf(&b, `<text class="legend" x="%.1f" y="%.1f" dy="0.32em" fill="#222222" stroke="none">%s</text></g>`+"\n",
			lx+30, ly, escapeXML(s.Name))
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// WriteSVG writes the chart to path atomically.
func (c Chart) WriteSVG(path string) error {
	return writeFileAtomic(path, c.SVG())
}

func seriesStyle(i int) (colour, dash string) {
	return chartColours[i%len(chartColours)], chartDashes[(i/len(chartColours))%len(chartDashes)]
}

func escapeXML(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

// newAxis chooses the range and ticks for data spanning lo..hi (lo > hi when
// there is no data).
func newAxis(lo, hi float64, log bool) axis {
	if log {
		return newLogAxis(lo, hi)
	}
	return newLinearAxis(lo, hi)
}

// newLinearAxis rounds the range out to "nice" ticks (1, 2 or 5 times a
// power of ten, about six of them). When all values share a sign and zero
// would take at most half the axis, the axis starts at zero, so a chart
// does not magnify small differences.
func newLinearAxis(lo, hi float64) axis {
	switch {
	case lo > hi:
		lo, hi = 0, 1
	case lo == hi && lo == 0:
		lo, hi = 0, 1
	case lo == hi:
		d := math.Abs(lo) / 2
		lo, hi = lo-d, hi+d
	case lo > 0 && lo <= hi/2:
		lo = 0
	case hi < 0 && hi >= lo/2:
		hi = 0
	}
	step := niceNumber(niceNumber(hi-lo, false)/5, true)
	start := math.Floor(lo/step) * step
	end := math.Ceil(hi/step) * step
	// Decimals enough to tell ticks apart; formatting through them also
	// removes float noise such as 0.30000000000000004.
	decimals := max(0, -int(math.Floor(math.Log10(step))))
	a := axis{lo: start, hi: end}
	n := int(math.Round((end - start) / step))
	for i := 0; i <= n; i++ {
		v, _ := strconv.ParseFloat(strconv.FormatFloat(start+float64(i)*step, 'f', decimals, 64), 64)
		a.major = append(a.major, v)
		a.labels = append(a.labels, strconv.FormatFloat(v, 'f', decimals, 64))
	}
	a.lo, a.hi = a.major[0], a.major[len(a.major)-1]
	return a
}

// niceNumber returns a number of the form {1,2,5,10} x 10^k close to x:
// rounded to the nearest when round is set, else the smallest not below x.
func niceNumber(x float64, round bool) float64 {
	exp := math.Floor(math.Log10(x))
	f := x / math.Pow(10, exp)
	var nf float64
	if round {
		switch {
		case f < 1.5:
			nf = 1
		case f < 3:
			nf = 2
		case f < 7:
			nf = 5
		default:
			nf = 10
		}
	} else {
		switch {
		case f <= 1:
			nf = 1
		case f <= 2:
			nf = 2
		case f <= 5:
			nf = 5
		default:
			nf = 10
		}
	}
	return nf * math.Pow(10, exp)
}

// newLogAxis spans whole decades around lo..hi with a labelled tick at each
// (every second or more decade when there are many) and unlabelled minor
// ticks at 2..9 times each decade when they fit.
func newLogAxis(lo, hi float64) axis {
	if lo > hi {
		lo, hi = 1, 10
	}
	e0 := int(math.Floor(math.Log10(lo)))
	e1 := int(math.Ceil(math.Log10(hi)))
	if e1 == e0 {
		e1++
	}
	every := (e1 - e0 + 7) / 8 // at most about 8 labelled ticks
	// End on a labelled decade, so the top of the axis is labelled.
	e1 = e0 + (e1-e0+every-1)/every*every
	decades := e1 - e0
	a := axis{lo: math.Pow(10, float64(e0)), hi: math.Pow(10, float64(e1)), log: true}
	for e := e0; e <= e1; e++ {
		if (e-e0)%every == 0 {
			a.major = append(a.major, math.Pow(10, float64(e)))
			a.labels = append(a.labels, decadeLabel(e))
		}
		if decades <= 6 && e < e1 {
			for m := 2; m <= 9; m++ {
				a.minor = append(a.minor, float64(m)*math.Pow(10, float64(e)))
			}
		}
	}
	return a
}

// decadeLabel writes 10^e plainly for ordinary magnitudes ("0.01", "1000")
// and as "1e9" beyond.
func decadeLabel(e int) string {
	if e >= -3 && e <= 6 {
		return strconv.FormatFloat(math.Pow(10, float64(e)), 'f', max(0, -e), 64)
	}
	return "1e" + strconv.Itoa(e)
}
