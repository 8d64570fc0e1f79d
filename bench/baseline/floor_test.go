package baseline

import (
	"net"
	"testing"
	"time"
)

// startFloor runs RunFloorServer in-process and returns its addresses; cleanup
// asks it to quit and checks it returned nil.
func startFloor(t *testing.T, threads int) (dataAddr, controlAddr string) {
	t.Helper()
	dataAddr, controlAddr = freeAddr(t), freeAddr(t)
	done := make(chan error, 1)
	go func() { done <- RunFloorServer(dataAddr, controlAddr, threads) }()
	t.Cleanup(func() {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("RunFloorServer: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("RunFloorServer did not return after quit")
		}
	})
	return dataAddr, controlAddr
}

// dialFloor connects to a floor server started by startFloor, retrying while its
// goroutine starts listening; cleanup quits the server and closes the client.
func dialFloor(t *testing.T, dataAddr, controlAddr string, n int, srcs []net.IP, onMsg func(int, []byte)) *FloorClient {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		client, err := DialFloor(dataAddr, controlAddr, n, srcs, onMsg, nil)
		if err == nil {
			t.Cleanup(func() {
				if err := client.Quit(); err != nil {
					t.Errorf("Quit: %v", err)
				}
				client.Close()
			})
			return client
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFloorRoundsReachEveryReceiverInOrder(t *testing.T) {
	const receivers = 100
	dataAddr, controlAddr := startFloor(t, 2)
	check := newOrderChecker(receivers)
	client := dialFloor(t, dataAddr, controlAddr, receivers, loopbackSources(4), check.onMsg)
	if err := client.WaitConns(receivers, 5*time.Second); err != nil {
		t.Fatal(err)
	}

	seq := uint64(1)
	var serverTime time.Duration
	for _, phase := range []struct{ rounds, batch int }{{20, 1}, {5, 4}} {
		for range phase.rounds {
			took, err := client.Round(seq, phase.batch)
			if err != nil {
				t.Fatal(err)
			}
			if took <= 0 {
				t.Fatalf("round %d took %v, want > 0", seq, took)
			}
			serverTime += took
			seq += uint64(phase.batch)
		}
	}
	check.waitAll(t, seq-1, 5*time.Second)
	if n := client.ReadErrors(); n != 0 {
		t.Fatalf("%d data connections failed", n)
	}
	t.Logf("%d receivers got seqs 1..%d in order; server wrote for %v in total", receivers, seq-1, serverTime)
}

func TestFloorControlErrors(t *testing.T) {
	dataAddr, controlAddr := startFloor(t, 1)
	client := dialFloor(t, dataAddr, controlAddr, 0, nil, nil)
	for _, line := range []string{
		"round x 1\n",
		"round 1 0\n",
		"round 1 100000\n",
		"round 1\n",
		"hello\n",
		"\n",
	} {
		if reply, err := client.exchange(line); err == nil {
			t.Errorf("%q: got reply %q, want an error", line, reply)
		}
	}
	// The connection stays usable after errors, and a round with no receivers is fine.
	if _, err := client.Round(1, 1); err != nil {
		t.Fatal(err)
	}
	if n, err := client.Conns(); err != nil || n != 0 {
		t.Fatalf("Conns = %d, %v; want 0", n, err)
	}
}

func TestFloorDropsAClosedReceiver(t *testing.T) {
	const receivers = 10
	dataAddr, controlAddr := startFloor(t, 2)
	check := newOrderChecker(receivers)
	client := dialFloor(t, dataAddr, controlAddr, receivers, nil, check.onMsg)
	if err := client.WaitConns(receivers, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	client.conns[3].Close() // counted as a read error: the test closed it behind Close's back
	// The first writes after the peer closed may still succeed (the RST comes back
	// asynchronously); keep writing until the server notices.
	seq := uint64(1)
	for deadline := time.Now().Add(5 * time.Second); ; seq++ {
		if _, err := client.Round(seq, 1); err != nil {
			t.Fatal(err)
		}
		n, err := client.Conns()
		if err != nil {
			t.Fatal(err)
		}
		if n == receivers-1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server still counts %d connections after the receiver closed", n)
		}
	}
	check.got[3].Store(seq) // excuse the closed receiver
	check.waitAll(t, seq, 5*time.Second)
}
