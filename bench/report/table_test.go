package report

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestTableRender(t *testing.T) {
	tab := Table{Title: "fan-out", Header: []string{"transport", "conns", "p50", "p99", "loss"}}
	tab.Add("tcp", 19000, 1500*time.Microsecond, 12345*time.Microsecond, 0.0)
	tab.Add("websocket", 500, 250*time.Millisecond, 2*time.Second, 0.125)
	var b strings.Builder
	tab.Render(&b)
	want := "" +
		"fan-out\n" +
		"transport  conns      p50       p99   loss\n" +
		"------------------------------------------\n" +
		"tcp        19000  1.500ms   12.35ms      0\n" +
		"websocket    500  250.0ms  2000.0ms  0.125\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestTableRaggedRows(t *testing.T) {
	tab := Table{Header: []string{"a"}}
	tab.Rows = append(tab.Rows, []string{"x", "long cell"}, nil)
	var b strings.Builder
	tab.Render(&b)
	want := "a\n------------\nx  long cell\n\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}

func TestFormatCell(t *testing.T) {
	tests := []struct {
		in   any
		want string
	}{
		{19000.0, "19000"},
		{-2.0, "-2"},
		{1234.567, "1235"},
		{123.456, "123.5"},
		{12.3456, "12.35"},
		{1.23456, "1.235"},
		{0.123456, "0.123"},
		{0.0001234, "0.000123"},
		{float32(2.5), "2.500"},
		{math.NaN(), "-"},
		{math.Inf(1), "-"},
		{250 * time.Millisecond, "250.0ms"},
		{12345 * time.Microsecond, "12.35ms"},
		{1500 * time.Microsecond, "1.500ms"},
		{125 * time.Microsecond, "0.125ms"},
		{42, "42"},
		{"text", "text"},
		{true, "true"},
	}
	for _, tt := range tests {
		if got := formatCell(tt.in); got != tt.want {
			t.Errorf("formatCell(%#v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
