package cluster

import (
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Stamps make a push identifiable across bus paths: every Pusher (backends,
// the route daemon, each node's relay) puts its origin id and a sequence
// number counting all its publishes on each message. One origin's messages
// on one subject travel in order on each path, so a receiver keeps, per
// origin and subject, the highest sequence it delivered and drops anything
// not above it: the second path's copies and a failed-over publisher's
// republished ones.
const (
	HeaderOrigin = "Imgate-Origin"
	HeaderOseq   = "Imgate-Oseq"
)

// originIdle is how long an origin's marks are kept without news from it.
const originIdle = 5 * time.Minute

// dedup holds the marks; it is used from the node's delivery goroutine only
// (forget is called under its own lock from the interest reconciler).
type dedup struct {
	mu      sync.Mutex
	origins map[string]*originMarks
	swept   time.Time
}

type originMarks struct {
	last     time.Time
	subjects map[string]uint64
}

func newDedup() *dedup { return &dedup{origins: make(map[string]*originMarks)} }

// stamp reads a message's origin and sequence ("" when unstamped).
func stamp(m *nats.Msg) (origin string, seq uint64) {
	if m.Header == nil {
		return "", 0
	}
	origin = m.Header.Get(HeaderOrigin)
	if origin == "" {
		return "", 0
	}
	seq, err := strconv.ParseUint(m.Header.Get(HeaderOseq), 10, 64)
	if err != nil {
		return "", 0
	}
	return origin, seq
}

// first reports whether (origin, subject, seq) is new, and marks it.
func (d *dedup) first(origin, subject string, seq uint64, now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	o := d.origins[origin]
	if o == nil {
		o = &originMarks{subjects: make(map[string]uint64)}
		d.origins[origin] = o
	}
	o.last = now
	if seq <= o.subjects[subject] {
		return false
	}
	o.subjects[subject] = seq
	if now.Sub(d.swept) > time.Minute {
		d.swept = now
		for k, o := range d.origins {
			if now.Sub(o.last) > originIdle {
				delete(d.origins, k)
			}
		}
	}
	return true
}

// raise marks everything of origin on subject up to seq as delivered.
func (d *dedup) raise(origin, subject string, seq uint64, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	o := d.origins[origin]
	if o == nil {
		o = &originMarks{subjects: make(map[string]uint64)}
		d.origins[origin] = o
	}
	o.last = now
	o.subjects[subject] = max(o.subjects[subject], seq)
}

// marks returns, per origin, the highest sequence taken on subject.
func (d *dedup) marks(subject string) map[string]uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out map[string]uint64
	for origin, o := range d.origins {
		if seq, ok := o.subjects[subject]; ok {
			if out == nil {
				out = make(map[string]uint64)
			}
			out[origin] = seq
		}
	}
	return out
}

// forget drops the marks of a subject the node no longer subscribes to.
func (d *dedup) forget(subject string) {
	d.mu.Lock()
	for _, o := range d.origins {
		delete(o.subjects, subject)
	}
	d.mu.Unlock()
}
