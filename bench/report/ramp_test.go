package report

import (
	"math"
	"slices"
	"testing"
)

// runRamp drives r against pass until it finishes (or 10000 steps, which
// would mean Next never says stop).
func runRamp(t *testing.T, r *Ramp, pass func(rate float64) bool) {
	t.Helper()
	for range 10000 {
		rate, ok := r.Next()
		if !ok {
			return
		}
		if again, _ := r.Next(); again != rate {
			t.Fatalf("Next before Report changed the rate: %v then %v", rate, again)
		}
		r.Report(rate, pass(rate))
	}
	t.Fatal("ramp did not finish")
}

func TestRamp(t *testing.T) {
	threshold := func(limit float64) func(float64) bool {
		return func(rate float64) bool { return rate <= limit }
	}
	tests := []struct {
		name         string
		ramp         Ramp
		pass         func(float64) bool
		bestLo       float64 // Best must lie in bestLo..bestHi
		bestHi       float64
		maxSteps     int     // at most this many steps (0: no check)
		highestTried float64 // no rate above this is tried (0: no check)
	}{
		{
			name:   "threshold 3500",
			ramp:   Ramp{Start: 10, Factor: 2, Precision: 0.05},
			pass:   threshold(3500),
			bestLo: 3500 / 1.05, bestHi: 3500,
		},
		{
			name:   "threshold 3500, tight precision",
			ramp:   Ramp{Start: 10, Factor: 2, Precision: 0.001},
			pass:   threshold(3500),
			bestLo: 3500 / 1.001, bestHi: 3500,
		},
		{
			name:   "threshold exactly on a step",
			ramp:   Ramp{Start: 10, Factor: 2, Precision: 0.05},
			pass:   threshold(2560),
			bestLo: 2560, bestHi: 2560,
		},
		{
			name:   "Max passes: finish at Max",
			ramp:   Ramp{Start: 10, Factor: 2, Max: 1000, Precision: 0.05},
			pass:   threshold(1e9),
			bestLo: 1000, bestHi: 1000, maxSteps: 8, highestTried: 1000,
		},
		{
			name:   "Max fails: bisect below it",
			ramp:   Ramp{Start: 10, Factor: 2, Max: 1000, Precision: 0.05},
			pass:   threshold(700),
			bestLo: 700 / 1.05, bestHi: 700, highestTried: 1000,
		},
		{
			name:   "Start above Max starts at Max",
			ramp:   Ramp{Start: 5000, Factor: 2, Max: 1000},
			pass:   threshold(1e9),
			bestLo: 1000, bestHi: 1000, maxSteps: 1, highestTried: 1000,
		},
		{
			name:   "MaxSteps stops the climb",
			ramp:   Ramp{Start: 10, Factor: 2, Precision: 0.05, MaxSteps: 5},
			pass:   threshold(3500),
			bestLo: 160, bestHi: 160, maxSteps: 5,
		},
		{
			name:   "MaxSteps stops the bisection",
			ramp:   Ramp{Start: 10, Factor: 2, Precision: 0.0001, MaxSteps: 12},
			pass:   threshold(3500),
			bestLo: 2560, bestHi: 3500, maxSteps: 12,
		},
		{
			name:   "Start fails: Best is 0",
			ramp:   Ramp{Start: 10, Factor: 2},
			pass:   threshold(5),
			bestLo: 0, bestHi: 0, maxSteps: 1,
		},
		{
			name:   "defaults",
			ramp:   Ramp{},
			pass:   threshold(100),
			bestLo: 100 / 1.05, bestHi: 100,
		},
		{
			name:   "no Max, no MaxSteps: bounded anyway",
			ramp:   Ramp{Start: 1, Factor: 2},
			pass:   threshold(math.Inf(1)),
			bestLo: 1e300, bestHi: math.MaxFloat64, maxSteps: maxRampSteps,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.ramp
			runRamp(t, &r, tt.pass)
			best := r.Best()
			steps := r.Steps()
			if best < tt.bestLo || best > tt.bestHi {
				t.Errorf("Best = %v, want %v..%v; steps %v", best, tt.bestLo, tt.bestHi, steps)
			}
			if best > 0 && !tt.pass(best) {
				t.Errorf("Best %v is a failing rate", best)
			}
			if tt.maxSteps > 0 && len(steps) > tt.maxSteps {
				t.Errorf("%d steps, want at most %d", len(steps), tt.maxSteps)
			}
			for _, s := range steps {
				if tt.highestTried > 0 && s.Rate > tt.highestTried {
					t.Errorf("tried %v above Max %v", s.Rate, tt.highestTried)
				}
				if s.Passed != tt.pass(s.Rate) {
					t.Errorf("step %v recorded wrongly", s)
				}
			}
			// Deterministic: a second ramp with the same answers tries the
			// same rates.
			again := tt.ramp
			runRamp(t, &again, tt.pass)
			if !slices.Equal(again.Steps(), steps) {
				t.Errorf("second run differs:\n%v\n%v", again.Steps(), steps)
			}
		})
	}
}

func TestRampSequence(t *testing.T) {
	r := Ramp{Start: 10, Factor: 2, Precision: 0.05}
	runRamp(t, &r, func(rate float64) bool { return rate <= 3500 })
	var rates []float64
	for _, s := range r.Steps() {
		rates = append(rates, s.Rate)
	}
	// Doubling from 10 up to the first failure at 5120, then geometric
	// bisection between 2560 and 5120.
	climb := []float64{10, 20, 40, 80, 160, 320, 640, 1280, 2560, 5120}
	if !slices.Equal(rates[:len(climb)], climb) {
		t.Fatalf("climb %v, want %v", rates[:len(climb)], climb)
	}
	if got, want := rates[len(climb)], math.Sqrt(2560*5120); got != want {
		t.Errorf("first bisection step %v, want %v", got, want)
	}
	if n := len(rates); n > len(climb)+5 {
		t.Errorf("%d steps; bisecting a factor of 2 to 5%% needs at most 5", n)
	}
}

func TestRampNoisy(t *testing.T) {
	// A rate that passes above one that failed is not trusted as Best.
	var r Ramp
	r.Report(100, true)
	r.Report(200, false)
	r.Report(400, true)
	if got := r.Best(); got != 100 {
		t.Errorf("Best = %v, want 100", got)
	}
	// A retry failing below the earlier pass lowers Best.
	r.Report(80, false)
	if got := r.Best(); got != 0 {
		t.Errorf("Best = %v, want 0", got)
	}
}
