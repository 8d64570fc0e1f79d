package baseline

import (
	"os"
	"testing"
	"time"
)

func TestCPUTimeAndRSSOfSelf(t *testing.T) {
	// CPU time moves in 10 ms ticks; spin until the first one shows.
	deadline := time.Now().Add(5 * time.Second)
	var cpu time.Duration
	for cpu == 0 && time.Now().Before(deadline) {
		var err error
		if cpu, err = CPUTime(os.Getpid()); err != nil {
			t.Fatal(err)
		}
		for spin := time.Now(); time.Since(spin) < 5*time.Millisecond; {
		}
	}
	if cpu <= 0 {
		t.Fatalf("CPUTime(self) = %v after spinning, want > 0", cpu)
	}
	rss, err := RSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if rss <= 0 {
		t.Fatalf("RSS(self) = %d, want > 0", rss)
	}
	t.Logf("self: cpu %v, rss %.1f MiB", cpu, float64(rss)/(1<<20))
}

func TestCPUTimeOfMissingPID(t *testing.T) {
	if _, err := CPUTime(1 << 30); err == nil {
		t.Fatal("CPUTime of a pid that cannot exist: want an error")
	}
}

func TestParseStatTicks(t *testing.T) {
	for _, tc := range []struct {
		name, stat string
		want       int64
		wantErr    bool
	}{
		{"plain", "42 (nats-server) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 8 0 100 1000 200", 12, false},
		{"name with spaces and parens", "42 (a) b (c) R 1 42 42 0 -1 0 0 0 0 0 300 20 0 0 20 0 1 0 1 1 1", 320, false},
		{"no parens", "42 nats-server S 1", 0, true},
		{"truncated", "42 (x) S 1 2 3", 0, true},
		{"not a number", "42 (x) S 1 42 42 0 -1 0 0 0 0 0 u s 0 0 20 0 1 0 1 1 1", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatTicks([]byte(tc.stat))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("parseStatTicks = %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseVmRSS(t *testing.T) {
	for _, tc := range []struct {
		name, status string
		want         int64
		wantErr      bool
	}{
		{"present", "Name:\tx\nVmPeak:\t  900 kB\nVmRSS:\t    1234 kB\nThreads:\t5\n", 1234 << 10, false},
		{"absent", "Name:\tx\nState:\tZ (zombie)\n", 0, true},
		{"odd unit", "VmRSS:\t12 MB\n", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseVmRSS([]byte(tc.status))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("parseVmRSS = %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

// FuzzParseProcFiles checks the /proc parsers never panic and never report
// negative values, whatever the kernel (or a future kernel) writes.
func FuzzParseProcFiles(f *testing.F) {
	f.Add([]byte("42 (nats-server) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 8 0 100 1000 200"))
	f.Add([]byte("VmRSS:\t    1234 kB\n"))
	f.Add([]byte("1 ()) ) R 1 1 1 1 1 1 1 1 1 1 99999999999 1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if ticks, err := parseStatTicks(b); err == nil && ticks < 0 {
			t.Fatalf("parseStatTicks(%q) = %d", b, ticks)
		}
		if rss, err := parseVmRSS(b); err == nil && rss < 0 {
			t.Fatalf("parseVmRSS(%q) = %d", b, rss)
		}
	})
}
