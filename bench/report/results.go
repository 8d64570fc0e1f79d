package report

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"os"
	"slices"
	"sync"
)

// Results is a flat set of named metrics (for example
// "fanout_p99_ms_tcp_19000") written as one JSON object with sorted keys.
// Only finite numbers are kept: JSON has no NaN or Inf, and a metric that
// could not be measured is better absent than a made-up number, so Set
// records such keys in Missing instead. Results is safe for concurrent use;
// its zero value is an empty set.
type Results struct {
	mu      sync.Mutex
	values  map[string]float64
	missing map[string]bool
}

// NewResults returns an empty set.
func NewResults() *Results {
	return &Results{values: map[string]float64{}, missing: map[string]bool{}}
}

// Set stores v under key. A NaN or infinite v is not stored: key is added to
// Missing and any value it already had (say, from a file loaded by Merge)
// is left as it was. A later finite Set removes key from Missing.
func (r *Results) Set(key string, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.init()
	if math.IsNaN(v) || math.IsInf(v, 0) {
		r.missing[key] = true
		return
	}
	r.values[key] = v
	delete(r.missing, key)
}

func (r *Results) init() {
	if r.values == nil {
		r.values = map[string]float64{}
		r.missing = map[string]bool{}
	}
}

// Get returns the value stored under key.
func (r *Results) Get(key string) (float64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.values[key]
	return v, ok
}

// Keys returns the stored keys, sorted.
func (r *Results) Keys() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.values))
}

// Missing returns, sorted, the keys whose latest Set was NaN or infinite.
func (r *Results) Missing() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.missing))
}

// Merge loads the results file at path, so that a run measuring only some
// metrics adds to the file instead of replacing it. A key already in r keeps
// its value (what this run measured is newer than the file). A missing file
// is not an error: there is nothing yet to accumulate. JSON nulls, which
// other tools may write for unmeasured metrics, are skipped.
func (r *Results) Merge(path string) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("merge results: %w", err)
	}
	var file map[string]*float64
	if err := json.Unmarshal(data, &file); err != nil {
		return fmt.Errorf("merge results %s: %w", path, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.init()
	for k, v := range file {
		if _, ok := r.values[k]; ok || v == nil {
			continue
		}
		r.values[k] = *v
	}
	return nil
}

// Write replaces the file at path with every stored metric as one indented
// JSON object, keys sorted, atomically (see writeFileAtomic).
func (r *Results) Write(path string) error {
	data, err := r.MarshalJSON()
	if err != nil {
		return fmt.Errorf("write results %s: %w", path, err)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, data, "", "  "); err != nil {
		return fmt.Errorf("write results %s: %w", path, err)
	}
	buf.WriteByte('\n')
	return writeFileAtomic(path, buf.Bytes())
}

// MarshalJSON encodes the stored metrics as one JSON object, keys sorted.
func (r *Results) MarshalJSON() ([]byte, error) {
	r.mu.Lock()
	values := maps.Clone(r.values)
	if values == nil {
		values = map[string]float64{} // "{}", not "null"
	}
	r.mu.Unlock()
	// encoding/json writes map keys in sorted order.
	return json.Marshal(values)
}
