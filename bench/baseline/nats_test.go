package baseline

import (
	"errors"
	"io/fs"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func TestNATSFanOutReachesEverySubscriberInOrder(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server (tens of seconds the first time)")
	}
	const (
		subscribers = 100
		messages    = 50
		subject     = "bench.room"
	)
	dir := t.TempDir()
	bin, err := BuildNATSServer(dir)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if again, err := BuildNATSServer(dir); err != nil || again != bin {
		t.Fatalf("second BuildNATSServer = %q, %v; want %q reused", again, err, bin)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("second BuildNATSServer took %v; the fresh binary should be reused", took)
	}

	port, err := freeLoopbackPort()
	if err != nil {
		t.Fatal(err)
	}
	server, err := StartNATS(bin, port)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			server.Stop()
		}
	})

	t.Run("second server on the same port fails", func(t *testing.T) {
		other, err := StartNATS(bin, port)
		if err == nil {
			other.Stop()
			t.Fatal("StartNATS on a port in use: want an error")
		}
		t.Logf("as expected: %v", err)
	})

	serverRSSIdle, err := RSS(server.PID)
	if err != nil {
		t.Fatal(err)
	}
	check := newOrderChecker(subscribers)
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	goroutinesBefore := runtime.NumGoroutine()
	subs, err := Subscribe(server.URL, subject, subscribers, loopbackSources(4), check.onMsg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(subs.Close)
	if err := subs.Flush(); err != nil {
		t.Fatal(err)
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	t.Logf("nats.go per connection: %.1f goroutines, %.1f KiB heap",
		float64(runtime.NumGoroutine()-goroutinesBefore)/subscribers,
		float64(after.HeapAlloc-before.HeapAlloc)/subscribers/1024)

	publisher, err := nats.Connect(server.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer publisher.Close()
	payload := make([]byte, PayloadSize)
	for seq := uint64(1); seq <= messages; seq++ {
		StampPayload(payload, time.Now(), seq)
		if err := publisher.Publish(subject, payload); err != nil {
			t.Fatal(err)
		}
	}
	if err := publisher.Flush(); err != nil {
		t.Fatal(err)
	}
	check.waitAll(t, messages, 10*time.Second)

	if n := subs.SlowConsumerErrors(); n != 0 {
		t.Errorf("%d client-side slow-consumer errors", n)
	}
	if n := subs.AsyncErrors(); n != 0 {
		t.Errorf("%d async errors", n)
	}
	if n := subs.Disconnects(); n != 0 {
		t.Errorf("%d disconnects", n)
	}
	if n, err := server.SlowConsumers(); err != nil || n != 0 {
		t.Errorf("server slow consumers = %d, %v; want 0", n, err)
	}
	if cpu, err := CPUTime(server.PID); err != nil || cpu < 0 {
		t.Errorf("CPUTime(nats-server) = %v, %v", cpu, err)
	}
	if rss, err := RSS(server.PID); err != nil || rss <= 0 {
		t.Errorf("RSS(nats-server) = %d, %v", rss, err)
	} else {
		t.Logf("nats-server rss: %.1f MiB idle, %.1f MiB with %d subscribers",
			float64(serverRSSIdle)/(1<<20), float64(rss)/(1<<20), subscribers)
	}

	publisher.Close()
	subs.Close()
	stopped = true
	if err := server.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	// Stop is only done once the process is reaped.
	if _, err := CPUTime(server.PID); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("CPUTime after Stop = %v; want the process gone", err)
	}
	if _, err := os.Stat(server.confPath); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("config %s after Stop: %v; want it removed", server.confPath, err)
	}
	if _, err := os.Stat(server.LogPath); err != nil {
		t.Errorf("log after Stop: %v; want it kept", err)
	}
}
