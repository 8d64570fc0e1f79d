package baseline

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// floorReadBuffer is each data connection's read buffer: 32 messages, so one
	// read(2) drains a batch-32 write, at 4 KiB per receiver.
	floorReadBuffer = 32 * PayloadSize
	// floorControlTimeout bounds one control exchange; a round at 20k receivers
	// takes milliseconds, so reaching it means the floor server is stuck.
	floorControlTimeout = 2 * time.Minute
)

// FloorClient is the load side of the floor: n receiving data connections and the
// control connection that asks the floor server for rounds.
type FloorClient struct {
	conns []net.Conn

	controlMu sync.Mutex
	control   net.Conn
	replies   *bufio.Reader

	readers    sync.WaitGroup
	closing    atomic.Bool
	readErrors atomic.Int64
	closeOnce  sync.Once
}

// DialFloor connects the control connection, then opens n data connections from
// srcs (round-robin, bounded concurrency), each with a reader goroutine that
// splits the stream into PayloadSize messages and calls onMsg(i, payload). On
// error everything opened so far is closed.
func DialFloor(dataAddr, controlAddr string, n int, srcs []net.IP, onMsg func(i int, payload []byte), progress func(int)) (*FloorClient, error) {
	control, err := net.DialTimeout("tcp", controlAddr, dialTimeout)
	if err != nil {
		return nil, fmt.Errorf("floor control %s: %w", controlAddr, err)
	}
	f := &FloorClient{
		conns:   make([]net.Conn, n),
		control: control,
		replies: bufio.NewReader(control),
	}
	err = openAll(n, func(i int) error {
		conn, err := dialerFor(srcs, i).Dial("tcp", dataAddr)
		if err != nil {
			return fmt.Errorf("floor receiver %d: dial %s: %w", i, dataAddr, err)
		}
		f.conns[i] = conn
		f.readers.Go(func() { f.read(i, conn, onMsg) })
		return nil
	}, progress)
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// read delivers receiver i's messages in stream order until the connection ends.
func (f *FloorClient) read(i int, conn net.Conn, onMsg func(int, []byte)) {
	buf := make([]byte, floorReadBuffer)
	have := 0
	for {
		n, err := conn.Read(buf[have:])
		have += n
		off := 0
		for ; have-off >= PayloadSize; off += PayloadSize {
			// Capacity-capped so a callback's append cannot overwrite the next message.
			onMsg(i, buf[off:off+PayloadSize:off+PayloadSize])
		}
		have = copy(buf, buf[off:have])
		if err != nil {
			if !f.closing.Load() {
				f.readErrors.Add(1)
			}
			return
		}
	}
}

// Round asks the server for one round of batch messages per connection, stamped
// seq..seq+batch-1, and returns how long the server took to write them all. The
// messages may still be in flight when it returns.
func (f *FloorClient) Round(seq uint64, batch int) (time.Duration, error) {
	reply, err := f.exchange(fmt.Sprintf("round %d %d\n", seq, batch))
	if err != nil {
		return 0, err
	}
	ns, ok := strings.CutPrefix(reply, "done ")
	if !ok {
		return 0, fmt.Errorf("floor round %d: server said %q", seq, reply)
	}
	took, err := strconv.ParseInt(ns, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("floor round %d: bad reply %q: %w", seq, reply, err)
	}
	return time.Duration(took), nil
}

// Conns returns how many data connections the server has accepted and not lost.
func (f *FloorClient) Conns() (int, error) {
	reply, err := f.exchange("count\n")
	if err != nil {
		return 0, err
	}
	count, ok := strings.CutPrefix(reply, "conns ")
	if !ok {
		return 0, fmt.Errorf("floor count: server said %q", reply)
	}
	return strconv.Atoi(count)
}

// WaitConns polls until the server reports at least n connections, or timeout.
func (f *FloorClient) WaitConns(n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		have, err := f.Conns()
		if err != nil {
			return err
		}
		if have >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("floor: server has %d of %d connections after %v", have, n, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Quit tells the server to exit (RunFloorServer returns). Close does not.
func (f *FloorClient) Quit() error {
	reply, err := f.exchange("quit\n")
	if err != nil {
		return err
	}
	if reply != "bye" {
		return fmt.Errorf("floor quit: server said %q", reply)
	}
	return nil
}

// ReadErrors counts data connections that ended before Close: the server dropped
// them or a read failed. Their later messages are lost.
func (f *FloorClient) ReadErrors() int64 { return f.readErrors.Load() }

// exchange sends one control line and returns the reply without its newline.
func (f *FloorClient) exchange(line string) (string, error) {
	f.controlMu.Lock()
	defer f.controlMu.Unlock()
	f.control.SetDeadline(time.Now().Add(floorControlTimeout))
	if _, err := f.control.Write([]byte(line)); err != nil {
		return "", fmt.Errorf("floor control: %w", err)
	}
	reply, err := f.replies.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("floor control: %w", err)
	}
	reply = strings.TrimSuffix(reply, "\n")
	if msg, ok := strings.CutPrefix(reply, "error "); ok {
		return "", fmt.Errorf("floor server: %s", msg)
	}
	return reply, nil
}

// Close closes the data and control connections and waits for the readers, so no
// onMsg call runs after it returns. The server keeps running; see Quit.
func (f *FloorClient) Close() {
	f.closeOnce.Do(func() {
		f.closing.Store(true)
		f.control.Close()
		for _, conn := range f.conns {
			if conn != nil {
				conn.Close()
			}
		}
		f.readers.Wait()
	})
}
