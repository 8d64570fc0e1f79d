package report

import (
	"bytes"
	"encoding/xml"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// svgDoc is what a test reads back from a chart: every element's name and
// class, and the text of every element with a class.
type svgDoc struct {
	elements []string            // local names, in order
	texts    map[string][]string // class -> texts
	width    string
}

// parseSVG checks that data is well-formed XML with an <svg> root and
// collects what the tests look at.
func parseSVG(t *testing.T, data []byte) svgDoc {
	t.Helper()
	doc := svgDoc{texts: map[string][]string{}}
	dec := xml.NewDecoder(bytes.NewReader(data))
	var classes []string
	depth := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v\n%s", err, data)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				if tok.Name.Local != "svg" || tok.Name.Space != "http://www.w3.org/2000/svg" {
					t.Fatalf("root element %v, want svg in the SVG namespace", tok.Name)
				}
			}
			depth++
			class := ""
			for _, a := range tok.Attr {
				switch a.Name.Local {
				case "class":
					class = a.Value
				case "width":
					if depth == 1 {
						doc.width = a.Value
					}
				case "points", "x", "y", "x1", "y1", "x2", "y2", "cx", "cy":
					if strings.Contains(a.Value, "NaN") || strings.Contains(a.Value, "Inf") {
						t.Errorf("<%s %s=%q>: a NaN reached the drawing", tok.Name.Local, a.Name.Local, a.Value)
					}
				}
			}
			doc.elements = append(doc.elements, tok.Name.Local)
			classes = append(classes, class)
		case xml.EndElement:
			depth--
			classes = classes[:len(classes)-1]
		case xml.CharData:
			if len(classes) > 0 && classes[len(classes)-1] != "" {
				c := classes[len(classes)-1]
				doc.texts[c] = append(doc.texts[c], string(tok))
			}
		}
	}
	return doc
}

func (d svgDoc) count(name string) int {
	n := 0
	for _, e := range d.elements {
		if e == name {
			n++
		}
	}
	return n
}

func TestChartSVG(t *testing.T) {
	nan := math.NaN()
	tests := []struct {
		name       string
		chart      Chart
		polylines  int
		circles    int // markers plus one per legend entry
		xTicks     []string
		yTicks     []string
		noData     bool
		seriesText []string
	}{
		{
			name: "log-log latency vs rate",
			chart: Chart{
				Title: "p99 <latency> & rate", XLabel: "rate (msg/s)", YLabel: "p99 (ms)", LogX: true, LogY: true,
				Series: []Series{
					{Name: "tcp", Points: []Point{{10, 1.5}, {100, 2}, {1000, 8}, {5000, 40}}},
					{Name: "ws & tls", Points: []Point{{10, 2}, {100, nan}, {1000, 9}, {-3, 5}}},
				},
			},
			polylines: 2, circles: 4 + 2 + 2,
			xTicks:     []string{"10", "100", "1000", "10000"},
			yTicks:     []string{"1", "10", "100"},
			seriesText: []string{"tcp", "ws & tls"},
		},
		{
			name: "linear CDF",
			chart: Chart{
				Title: "CDF", XLabel: "latency (ms)", YLabel: "fraction",
				Series: []Series{{Name: "all", Points: []Point{{0.5, 0.1}, {1, 0.5}, {2, 0.9}, {7.5, 1}}}},
			},
			polylines: 1, circles: 4 + 1,
			xTicks:     []string{"0", "2", "4", "6", "8"},
			yTicks:     []string{"0.0", "0.2", "0.4", "0.6", "0.8", "1.0"},
			seriesText: []string{"all"},
		},
		{
			name:      "single point",
			chart:     Chart{Series: []Series{{Name: "one", Points: []Point{{3, 7}}}}},
			polylines: 0, circles: 1 + 1,
			seriesText: []string{"one"},
		},
		{
			name: "empty series",
			chart: Chart{Title: "nothing yet", LogX: true, Series: []Series{
				{Name: "empty"}, {Name: "nan only", Points: []Point{{nan, 1}}},
			}},
			polylines: 0, circles: 2,
			noData:     true,
			seriesText: []string{"empty", "nan only"},
		},
		{
			name:      "no series",
			chart:     Chart{LogY: true},
			polylines: 0, circles: 0,
			noData: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := parseSVG(t, tt.chart.SVG())
			if doc.width != "800" {
				t.Errorf("width %q, want 800", doc.width)
			}
			if got := doc.count("polyline"); got != tt.polylines {
				t.Errorf("%d polylines, want %d", got, tt.polylines)
			}
			if got := doc.count("circle"); got != tt.circles {
				t.Errorf("%d circles, want %d", got, tt.circles)
			}
			if tt.xTicks != nil && !slices.Equal(doc.texts["xtick"], tt.xTicks) {
				t.Errorf("x ticks %q, want %q", doc.texts["xtick"], tt.xTicks)
			}
			if tt.yTicks != nil && !slices.Equal(doc.texts["ytick"], tt.yTicks) {
				t.Errorf("y ticks %q, want %q", doc.texts["ytick"], tt.yTicks)
			}
			if got := len(doc.texts["nodata"]) > 0; got != tt.noData {
				t.Errorf("'no data' shown = %v, want %v", got, tt.noData)
			}
			if legend := doc.texts["legend"]; !slices.Equal(legend, tt.seriesText) {
				t.Errorf("legend %q, want %q", legend, tt.seriesText)
			}
			if tt.chart.Title != "" && !slices.Equal(doc.texts["title"], []string{tt.chart.Title}) {
				t.Errorf("title %q, want %q", doc.texts["title"], tt.chart.Title)
			}
			if len(doc.texts["xtick"]) < 2 || len(doc.texts["ytick"]) < 2 {
				t.Errorf("too few ticks: x %q y %q", doc.texts["xtick"], doc.texts["ytick"])
			}
		})
	}
}

func TestChartManySeriesDistinct(t *testing.T) {
	seen := map[[2]string]bool{}
	for i := range 25 {
		c, d := seriesStyle(i)
		if seen[[2]string{c, d}] {
			t.Errorf("series %d repeats style %s %q", i, c, d)
		}
		seen[[2]string{c, d}] = true
	}
}

func TestAxisTicks(t *testing.T) {
	tests := []struct {
		name   string
		lo, hi float64
		log    bool
		want   []string
	}{
		{"unit", 0, 1, false, []string{"0.0", "0.2", "0.4", "0.6", "0.8", "1.0"}},
		{"starts at zero", 1200, 3500, false, []string{"0", "1000", "2000", "3000", "4000"}},
		{"narrow range keeps offset", 97, 103, false, []string{"96", "98", "100", "102", "104"}},
		{"negative", -7, 13, false, []string{"-10", "-5", "0", "5", "10", "15"}},
		{"constant", 5, 5, false, []string{"2", "3", "4", "5", "6", "7", "8"}},
		{"log one decade", 2, 8, true, []string{"1", "10"}},
		{"log sub-unit", 0.003, 0.5, true, []string{"0.001", "0.01", "0.1", "1"}},
		{"log wide", 1e-2, 1e12, true, []string{"0.01", "1", "100", "10000", "1000000", "1e8", "1e10", "1e12"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAxis(tt.lo, tt.hi, tt.log)
			if !slices.Equal(a.labels, tt.want) {
				t.Errorf("ticks %q, want %q", a.labels, tt.want)
			}
			if a.lo > tt.lo || a.hi < tt.hi {
				t.Errorf("axis %v..%v does not cover %v..%v", a.lo, a.hi, tt.lo, tt.hi)
			}
		})
	}
}

func TestChartWriteSVG(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.svg")
	c := Chart{Title: "t", Series: []Series{{Name: "s", Points: []Point{{1, 1}, {2, 4}}}}}
	if err := c.WriteSVG(path); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, c.SVG()) {
		t.Error("file differs from SVG()")
	}
}
