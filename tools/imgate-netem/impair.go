package main

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Impairment is what one direction of the link does to the packets crossing
// it. The zero value forwards every packet at once.
type Impairment struct {
	Loss   float64       // probability that a packet is dropped (0..1)
	Delay  time.Duration // one-way delay every packet waits
	Jitter time.Duration // the delay varies uniformly within Delay ± Jitter
	// Reorder is the probability that a packet is held back ReorderDelay
	// beyond its due time, so that packets sent after it overtake it. Jitter
	// alone never reorders: a packet is never due before the one ahead of it.
	Reorder      float64
	ReorderDelay time.Duration
	// Rate limits the link to this many bits per second (0: unlimited): a
	// packet waits for the ones ahead of it to be serialised, then Delay.
	Rate int64
	// Backlog is how many packets the direction holds at most, waiting for
	// the rate limiter or for their delay alike (as netem's limit counts
	// them); one more is dropped and counted.
	Backlog int
}

// Defaults for flags left unset.
const (
	DefaultBacklog      = 1000
	DefaultReorderDelay = 10 * time.Millisecond
)

// Validate reports a setting out of range.
func (im Impairment) Validate() error {
	switch {
	case im.Loss < 0 || im.Loss > 1:
		return fmt.Errorf("loss %v: want a probability in [0, 1]", im.Loss)
	case im.Reorder < 0 || im.Reorder > 1:
		return fmt.Errorf("reorder %v: want a probability in [0, 1]", im.Reorder)
	case im.Delay < 0 || im.Jitter < 0 || im.ReorderDelay < 0:
		return fmt.Errorf("delay %v, jitter %v, reorder delay %v: none may be negative", im.Delay, im.Jitter, im.ReorderDelay)
	case im.Rate < 0:
		return fmt.Errorf("rate %d: may not be negative", im.Rate)
	case im.Backlog < 1:
		return fmt.Errorf("backlog %d: want at least 1 packet", im.Backlog)
	}
	return nil
}

// verdict is what the scheduler decided for one packet.
type verdict uint8

const (
	forward   verdict = iota // queue it until its due time
	held                     // queue it, held back for reordering
	dropLoss                 // dropped by Loss
	dropQueue                // dropped: Backlog packets already wait
)

// scheduler decides, for each packet entering one direction, whether it is
// dropped and when it is due at the other side. Times are offsets from the
// link's start on the monotonic clock. It is deterministic: the same seed and
// the same arrivals give the same verdicts and due times. Not safe for
// concurrent use; each direction has its own.
type scheduler struct {
	im Impairment
	// One random stream per decision, so that, for one seed, which packets
	// are lost does not depend on the jitter or reorder settings.
	lossRNG, jitterRNG, reorderRNG *rand.Rand
	// lastDue is the due time of the latest packet not held back: a later
	// packet is never due before it, so jitter keeps the order.
	lastDue time.Duration
	// linkFree is when the rate limiter has serialised every packet so far.
	linkFree time.Duration
}

// newScheduler returns a scheduler for im; stream tells directions apart,
// so the two directions of one link draw different patterns from one seed.
func newScheduler(im Impairment, seed, stream uint64) *scheduler {
	rng := func(i uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, stream<<8|i)) }
	return &scheduler{im: im, lossRNG: rng(1), jitterRNG: rng(2), reorderRNG: rng(3)}
}

// admit decides the fate of a packet of size bytes arriving at now while
// queued packets wait in this direction.
func (s *scheduler) admit(now time.Duration, size, queued int) (due time.Duration, v verdict) {
	im := &s.im
	if im.Loss > 0 && s.lossRNG.Float64() < im.Loss {
		return 0, dropLoss
	}
	if queued >= im.Backlog {
		return 0, dropQueue
	}
	depart := now
	if im.Rate > 0 {
		depart = max(now, s.linkFree) + time.Duration(int64(size)*8*int64(time.Second)/im.Rate)
		s.linkFree = depart
	}
	delay := im.Delay
	if im.Jitter > 0 {
		delay += time.Duration(s.jitterRNG.Int64N(int64(2*im.Jitter)+1)) - im.Jitter
		delay = max(delay, 0)
	}
	due = max(depart+delay, s.lastDue)
	if im.Reorder > 0 && s.reorderRNG.Float64() < im.Reorder {
		// Not recorded in lastDue: the packets behind it keep their times
		// and so pass it.
		return due + im.ReorderDelay, held
	}
	s.lastDue = due
	return due, forward
}
