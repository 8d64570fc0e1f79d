package report

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestResultsSetGetMissing(t *testing.T) {
	tests := []struct {
		name    string
		v       float64
		stored  bool
		missing bool
	}{
		{"finite", 12.5, true, false},
		{"zero", 0, true, false},
		{"negative", -3, true, false},
		{"NaN", math.NaN(), false, true},
		{"+Inf", math.Inf(1), false, true},
		{"-Inf", math.Inf(-1), false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewResults()
			r.Set("m", tt.v)
			v, ok := r.Get("m")
			if ok != tt.stored || (ok && v != tt.v) {
				t.Errorf("Get = %v, %v; want stored=%v", v, ok, tt.stored)
			}
			if got := slices.Contains(r.Missing(), "m"); got != tt.missing {
				t.Errorf("Missing contains m = %v, want %v", got, tt.missing)
			}
		})
	}

	var r Results // the zero value works
	r.Set("a", 1)
	r.Set("a", math.NaN()) // keeps the earlier value, but says it is missing now
	if v, ok := r.Get("a"); !ok || v != 1 || !slices.Equal(r.Missing(), []string{"a"}) {
		t.Errorf("after NaN over 1: Get = %v, %v; Missing = %v", v, ok, r.Missing())
	}
	r.Set("a", 2)
	if len(r.Missing()) != 0 {
		t.Errorf("a finite Set should clear Missing: %v", r.Missing())
	}
}

func TestResultsWriteMerge(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out", "results.json") // parent made by Write

	first := NewResults()
	first.Set("zeta", 3)
	first.Set("alpha", 1.5)
	first.Set("mid", 2)
	first.Set("bad", math.Inf(1))
	if err := first.Write(path); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "{\n  \"alpha\": 1.5,\n  \"mid\": 2,\n  \"zeta\": 3\n}\n"
	if string(data) != want {
		t.Errorf("file =\n%s\nwant\n%s", data, want)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("mode = %v, %v; want 0644", st.Mode(), err)
	}

	// A second, partial run: loads the file, overrides one key, adds one.
	second := NewResults()
	second.Set("mid", 20) // set before Merge: this run's value wins
	if err := second.Merge(path); err != nil {
		t.Fatal(err)
	}
	second.Set("new", 4)
	if err := second.Write(path); err != nil {
		t.Fatal(err)
	}
	var got map[string]float64
	data, _ = os.ReadFile(path)
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	wantMap := map[string]float64{"alpha": 1.5, "mid": 20, "zeta": 3, "new": 4}
	if len(got) != len(wantMap) {
		t.Errorf("got %v, want %v", got, wantMap)
	}
	for k, v := range wantMap {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if keys := second.Keys(); !slices.IsSorted(keys) || len(keys) != 4 {
		t.Errorf("Keys = %v", keys)
	}
	// Keys in the file are in sorted order.
	var order []string
	for _, line := range strings.Split(string(data), "\n") {
		if k, _, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			order = append(order, strings.Trim(k, `"`))
		}
	}
	if !slices.IsSorted(order) {
		t.Errorf("file keys not sorted: %v", order)
	}
	// No temp files are left behind.
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only results.json", len(entries))
	}
}

func TestResultsMergeInputs(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		content *string // nil: no file
		wantErr bool
		want    map[string]float64
	}{
		{"no file", nil, false, map[string]float64{}},
		{"nulls skipped", ptr(`{"a": 1, "b": null}`), false, map[string]float64{"a": 1}},
		{"empty object", ptr(`{}`), false, map[string]float64{}},
		{"not json", ptr(`nope`), true, nil},
		{"not numbers", ptr(`{"a": "x"}`), true, nil},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "r"+string(rune('0'+i))+".json")
			if tt.content != nil {
				if err := os.WriteFile(path, []byte(*tt.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			r := NewResults()
			err := r.Merge(path)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Merge err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if keys := r.Keys(); len(keys) != len(tt.want) {
				t.Errorf("keys = %v, want %v", keys, tt.want)
			}
			for k, v := range tt.want {
				if got, ok := r.Get(k); !ok || got != v {
					t.Errorf("%s = %v, %v; want %v", k, got, ok, v)
				}
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
