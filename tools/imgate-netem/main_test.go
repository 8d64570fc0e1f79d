package main

import (
	"io"
	"testing"
	"time"
)

func TestParseProbability(t *testing.T) {
	cases := []struct {
		in   string
		want float64
		ok   bool
	}{
		{"0.05", 0.05, true},
		{"5%", 0.05, true},
		{" 20% ", 0.2, true},
		{"0", 0, true},
		{"1", 1, true},
		{"100%", 1, true},
		{"1.5", 0, false},
		{"150%", 0, false},
		{"-1%", 0, false},
		{"five", 0, false},
	}
	for _, tc := range cases {
		got, err := parseProbability(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("parseProbability(%q) = %v, %v; want %v, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseBitRate(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"64000", 64000, true},
		{"500kbit", 500e3, true},
		{"10mbit", 10e6, true},
		{"10M", 10e6, true},
		{"1.5mbit", 1.5e6, true},
		{"1gbit", 1e9, true},
		{"0", 0, true},
		{"fast", 0, false},
		{"-5k", 0, false},
	}
	for _, tc := range cases {
		got, err := parseBitRate(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("parseBitRate(%q) = %v, %v; want %v, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseFlags(t *testing.T) {
	cases := []struct {
		name string
		args []string
		ok   bool
	}{
		{"minimal", []string{"--tun-a", "a0", "--tun-b", "b0"}, true},
		{"namespaces and impairments", []string{"--ns-a", "gw", "--tun-a", "t", "--ns-b", "cl", "--tun-b", "t", "--loss", "5%", "--delay", "50ms", "--jitter", "5ms", "--reorder", "0.01", "--rate", "10mbit", "--seed", "9"}, true},
		{"missing device", []string{"--tun-a", "a0"}, false},
		{"same device twice", []string{"--tun-a", "t", "--tun-b", "t"}, false},
		{"loss over 1", []string{"--tun-a", "a", "--tun-b", "b", "--loss", "2"}, false},
		{"zero backlog", []string{"--tun-a", "a", "--tun-b", "b", "--backlog", "0"}, false},
		{"tiny mtu", []string{"--tun-a", "a", "--tun-b", "b", "--mtu", "20"}, false},
		{"stray argument", []string{"--tun-a", "a", "--tun-b", "b", "extra"}, false},
	}
	for _, tc := range cases {
		o, err := parseFlags(tc.args, io.Discard)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v, want ok=%v", tc.name, err, tc.ok)
		}
		if tc.name == "namespaces and impairments" && err == nil {
			want := Impairment{Loss: 0.05, Delay: 50 * time.Millisecond, Jitter: 5 * time.Millisecond, Reorder: 0.01,
				ReorderDelay: DefaultReorderDelay, Rate: 10e6, Backlog: DefaultBacklog}
			if o.im != want || o.seed != 9 || o.nsA != "gw" || o.nsB != "cl" {
				t.Errorf("%s: parsed %+v seed %d, want %+v seed 9", tc.name, o.im, o.seed, want)
			}
		}
	}
}
