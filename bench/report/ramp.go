package report

import "math"

// Ramp searches for the highest publish rate that still passes: it starts
// at Start and multiplies by Factor while rates pass (stopping at Max if Max
// passes), then, after the first failure, bisects geometrically between the
// highest pass and the lowest failure until they are within Precision of
// each other. Geometric bisection suits rates, whose effects scale by
// ratios, not differences. If Start itself fails the ramp ends with Best 0:
// a gateway that cannot carry the lowest rate asked for needs looking at,
// not a search downwards.
//
// A Ramp is deterministic: it proposes rates from the answers it was given
// and nothing else. Use it as
//
//	for rate, ok := r.Next(); ok; rate, ok = r.Next() {
//		r.Report(rate, try(rate))
//	}
type Ramp struct {
	Start     float64 // first rate tried; default 1
	Factor    float64 // growth per step before the first failure; default 2
	Max       float64 // highest rate tried; 0 means no limit
	Precision float64 // finish when hi/lo < 1+Precision; default 0.05
	MaxSteps  int     // finish after this many reported steps; 0 means maxRampSteps

	steps   []RampStep
	pending float64 // rate Next proposed and Report has not answered; 0 if none
}

// RampStep is one rate tried and its outcome.
type RampStep struct {
	Rate   float64
	Passed bool
}

// maxRampSteps bounds a ramp given neither Max nor MaxSteps whose every
// rate passes; it would otherwise grow without end.
const maxRampSteps = 1000

// Next returns the next rate to try, or ok=false when the search is over.
// Calling Next again before Report returns the same rate.
func (r *Ramp) Next() (rate float64, ok bool) {
	if r.pending > 0 {
		return r.pending, true
	}
	limit := r.MaxSteps
	if limit <= 0 {
		limit = maxRampSteps
	}
	if len(r.steps) >= limit {
		return 0, false
	}
	start, factor, precision := r.Start, r.Factor, r.Precision
	if !(start > 0) {
		start = 1
	}
	if !(factor > 1) {
		factor = 2
	}
	if !(precision > 0) {
		precision = 0.05
	}
	if r.Max > 0 {
		start = min(start, r.Max)
	}

	lo, hi := r.bounds()
	switch {
	case len(r.steps) == 0:
		rate = start
	case hi == 0 && lo == 0:
		// Nothing passed and nothing failed: only rates <= 0 were reported.
		rate = start
	case hi == 0:
		// Everything so far passed: step up, capped at Max.
		if r.Max > 0 && lo >= r.Max {
			return 0, false
		}
		rate = lo * factor
		if r.Max > 0 {
			rate = min(rate, r.Max)
		}
		if math.IsInf(rate, 0) {
			return 0, false
		}
	case lo == 0:
		return 0, false // the lowest rate tried failed
	default:
		if hi/lo < 1+precision {
			return 0, false
		}
		rate = math.Sqrt(lo * hi)
	}
	r.pending = rate
	return rate, true
}

// Report records the outcome of trying rate (normally the one Next gave).
func (r *Ramp) Report(rate float64, passed bool) {
	r.steps = append(r.steps, RampStep{Rate: rate, Passed: passed})
	r.pending = 0
}

// Best returns the highest rate that passed and lies below every rate that
// failed, or 0 if there is none. A rate that passed above a failed one (a
// noisy system) is not trusted.
func (r *Ramp) Best() float64 {
	lo, _ := r.bounds()
	return lo
}

// Steps returns the rates tried so far, in order.
func (r *Ramp) Steps() []RampStep {
	return append([]RampStep(nil), r.steps...)
}

// bounds returns the lowest failing rate hi (0 if none failed) and the
// highest passing rate lo below it (0 if none).
func (r *Ramp) bounds() (lo, hi float64) {
	for _, s := range r.steps {
		if !s.Passed && s.Rate > 0 && (hi == 0 || s.Rate < hi) {
			hi = s.Rate
		}
	}
	for _, s := range r.steps {
		if s.Passed && s.Rate > lo && (hi == 0 || s.Rate < hi) {
			lo = s.Rate
		}
	}
	return lo, hi
}
