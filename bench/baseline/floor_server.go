package baseline

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// maxFloorBatch caps the messages per write a round may ask for (128 KiB), so a
// bad control line cannot make the server allocate without bound.
const maxFloorBatch = 1024

// RunFloorServer is the floor: it accepts TCP connections on dataAddr and, per
// round requested on controlAddr, writes one PayloadSize message (or batch copies
// in one buffer) to every connection with one write(2) each, from threads
// goroutines locked to OS threads that split the sockets among them. It speaks no
// protocol and never reads the data connections, so its CPU per message is the
// least a fan-out over TCP can cost.
//
// Control protocol, one line each way:
//
//	round <seq> <batch>  ->  done <nanoseconds the round took>
//	count                ->  conns <connections accepted and not failed>
//	quit                 ->  bye   (then RunFloorServer returns nil)
//	anything else        ->  error <why>
//
// A round stamps every copy with the round's start time; with batch k the copies
// carry seq..seq+k-1. Rounds from several control connections run one at a time.
// A connection whose write fails is dropped from later rounds.
func RunFloorServer(dataAddr, controlAddr string, threads int) error {
	if threads < 1 {
		return fmt.Errorf("floor server: threads = %d, want >= 1", threads)
	}
	data, err := net.Listen("tcp", dataAddr)
	if err != nil {
		return fmt.Errorf("floor server: data listener: %w", err)
	}
	control, err := net.Listen("tcp", controlAddr)
	if err != nil {
		data.Close()
		return fmt.Errorf("floor server: control listener: %w", err)
	}
	s := &floorServer{
		data:    data,
		control: control,
		workers: make([]chan floorRound, threads),
		quit:    make(chan struct{}),
	}
	for w := range s.workers {
		s.workers[w] = make(chan floorRound)
		s.background.Go(func() { s.writeLoop(w) })
	}
	s.background.Go(s.acceptData)
	s.background.Go(s.acceptControl)

	<-s.quit
	s.shutdown()
	return nil
}

type floorServer struct {
	data, control net.Listener
	workers       []chan floorRound // one per locked thread
	background    sync.WaitGroup    // workers, accept loops and control handlers

	mu          sync.Mutex
	conns       []*floorConn // append-only until shutdown
	controlConn map[net.Conn]struct{}
	closed      bool // set by shutdown: accept loops close what they still get

	roundMu  sync.Mutex // one round at a time; guards buf and quitting
	buf      []byte
	roundsWG sync.WaitGroup
	quitting bool

	quit     chan struct{}
	quitOnce sync.Once
}

// floorRound is one round's work for one thread: the connections it shares with
// the other threads (thread w takes indices w, w+T, ...) and the bytes to write.
type floorRound struct {
	conns   []*floorConn
	payload []byte
}

type floorConn struct {
	tcp  *net.TCPConn // kept so the descriptor stays open
	raw  syscall.RawConn
	fd   int
	dead atomic.Bool
}

func (s *floorServer) acceptData() {
	for {
		conn, err := s.data.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// EMFILE and friends: back off briefly and keep serving, as net/http does.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		tcp := conn.(*net.TCPConn)
		raw, err := tcp.SyscallConn()
		if err != nil {
			conn.Close()
			continue
		}
		c := &floorConn{tcp: tcp, raw: raw}
		raw.Control(func(fd uintptr) { c.fd = int(fd) })
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			return
		}
		s.conns = append(s.conns, c)
		s.mu.Unlock()
	}
}

func (s *floorServer) acceptControl() {
	for {
		conn, err := s.control.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			return
		}
		if s.controlConn == nil {
			s.controlConn = make(map[net.Conn]struct{})
		}
		s.controlConn[conn] = struct{}{}
		s.mu.Unlock()
		s.background.Go(func() { s.serveControl(conn) })
	}
}

func (s *floorServer) serveControl(conn net.Conn) {
	defer func() {
		s.mu.Lock()
		delete(s.controlConn, conn)
		s.mu.Unlock()
		conn.Close()
	}()
	lines := bufio.NewScanner(conn)
	for lines.Scan() {
		reply := s.command(lines.Text())
		if _, err := conn.Write([]byte(reply)); err != nil {
			return
		}
		if reply == "bye\n" {
			s.quitOnce.Do(func() { close(s.quit) })
			return
		}
	}
}

// command executes one control line and returns the reply line.
func (s *floorServer) command(line string) string {
	fields := strings.Fields(line)
	if len(fields) == 0 {
		return "error empty command\n"
	}
	switch {
	case fields[0] == "round" && len(fields) == 3:
		seq, err := strconv.ParseUint(fields[1], 10, 64)
		if err != nil {
			return fmt.Sprintf("error bad seq %q\n", fields[1])
		}
		batch, err := strconv.Atoi(fields[2])
		if err != nil || batch < 1 || batch > maxFloorBatch {
			return fmt.Sprintf("error bad batch %q (1..%d)\n", fields[2], maxFloorBatch)
		}
		took, err := s.round(seq, batch)
		if err != nil {
			return fmt.Sprintf("error %v\n", err)
		}
		return fmt.Sprintf("done %d\n", took.Nanoseconds())
	case fields[0] == "count" && len(fields) == 1:
		return fmt.Sprintf("conns %d\n", s.liveConns())
	case fields[0] == "quit" && len(fields) == 1:
		return "bye\n"
	}
	return fmt.Sprintf("error unknown command %q\n", line)
}

// round writes batch stamped copies to every live connection and returns how long
// that took, stamping included.
func (s *floorServer) round(seq uint64, batch int) (time.Duration, error) {
	s.roundMu.Lock()
	defer s.roundMu.Unlock()
	if s.quitting {
		return 0, errors.New("shutting down")
	}
	start := time.Now()
	size := batch * PayloadSize
	if cap(s.buf) < size {
		s.buf = make([]byte, size)
	}
	payload := s.buf[:size]
	for k := range batch {
		StampPayload(payload[k*PayloadSize:], start, seq+uint64(k))
	}
	s.mu.Lock()
	conns := s.conns // existing elements never change, so sharing the slice is safe
	s.mu.Unlock()

	s.roundsWG.Add(len(s.workers))
	for _, w := range s.workers {
		w <- floorRound{conns: conns, payload: payload}
	}
	s.roundsWG.Wait()
	return time.Since(start), nil
}

// writeLoop is thread w: it owns every len(workers)-th connection of each round.
func (s *floorServer) writeLoop(w int) {
	runtime.LockOSThread()
	// Unlock on exit so the thread returns to the pool instead of being destroyed.
	defer runtime.UnlockOSThread()
	stride := len(s.workers)
	for r := range s.workers[w] {
		for j := w; j < len(r.conns); j += stride {
			c := r.conns[j]
			if c.dead.Load() {
				continue
			}
			if err := c.write(r.payload); err != nil {
				c.dead.Store(true)
			}
		}
		s.roundsWG.Done()
	}
}

// write sends p with write(2) on the raw descriptor, which skips the net package's
// per-call locking; only when the socket buffer is full does it fall back to the
// runtime poller to wait, then write the rest.
func (c *floorConn) write(p []byte) error {
	for len(p) > 0 {
		n, err := unix.Write(c.fd, p)
		switch {
		case err == nil:
			p = p[n:]
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			if err := c.waitWritable(); err != nil {
				return err
			}
		default:
			return err
		}
	}
	return nil
}

// waitWritable parks until the poller reports the socket writable: RawConn.Write
// waits whenever its callback returns false, and returns once it returns true.
func (c *floorConn) waitWritable() error {
	waited := false
	return c.raw.Write(func(uintptr) bool {
		if waited {
			return true
		}
		waited = true
		return false
	})
}

func (s *floorServer) liveConns() int {
	s.mu.Lock()
	conns := s.conns
	s.mu.Unlock()
	live := 0
	for _, c := range conns {
		if !c.dead.Load() {
			live++
		}
	}
	return live
}

// shutdown stops accepting, ends a round in progress, stops the threads and
// closes every connection, then waits for all background goroutines.
func (s *floorServer) shutdown() {
	s.data.Close()
	s.control.Close()
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.mu.Unlock()

	// A round can be parked on a receiver that stopped reading. Shutting the write
	// side wakes it with EPIPE but, unlike Close, keeps the descriptor number from
	// being reused while a thread may still write to it.
	for _, c := range conns {
		c.tcp.CloseWrite()
	}
	s.roundMu.Lock()
	s.quitting = true
	for _, w := range s.workers {
		close(w)
	}
	s.roundMu.Unlock()

	s.mu.Lock()
	for _, c := range s.conns {
		c.tcp.Close()
	}
	for conn := range s.controlConn {
		conn.Close()
	}
	s.mu.Unlock()
	s.background.Wait()
}
