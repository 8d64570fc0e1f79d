package load

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Admin publishes through the gateway's redis-protocol admin port, the way
// an operator or a backend without the bus would: commands are pipelined on
// one connection and the integer replies are read by a second goroutine.
type Admin struct {
	c       net.Conn
	w       *bufio.Writer
	mu      sync.Mutex
	sent    atomic.Int64
	replies atomic.Int64
	errs    atomic.Int64
	lastErr atomic.Value
	done    chan struct{}
}

// DialAdmin connects to the admin port (AUTH first when password is set).
func DialAdmin(addr, password string) (*Admin, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("admin %s: %w", addr, err)
	}
	a := &Admin{c: c, w: bufio.NewWriterSize(c, 64<<10), done: make(chan struct{})}
	go a.readReplies()
	if password != "" {
		a.command("AUTH", []byte(password))
		a.Flush()
	}
	return a, nil
}

func (a *Admin) command(args ...any) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	fmt.Fprintf(a.w, "*%d\r\n", len(args))
	for _, arg := range args {
		var b []byte
		switch v := arg.(type) {
		case string:
			b = []byte(v)
		case []byte:
			b = v
		}
		fmt.Fprintf(a.w, "$%d\r\n", len(b))
		a.w.Write(b)
		a.w.WriteString("\r\n")
	}
	a.sent.Add(1)
	return nil
}

// RoomPush queues ROOMPUSH room payload (call Flush to send).
func (a *Admin) RoomPush(room string, payload []byte) error {
	return a.command("ROOMPUSH", room, payload)
}

// Push queues PUSH uid payload.
func (a *Admin) Push(uid string, payload []byte) error { return a.command("PUSH", uid, payload) }

// Flush sends what is queued.
func (a *Admin) Flush() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.w.Flush()
}

// Wait waits until every command sent so far is answered.
func (a *Admin) Wait(timeout time.Duration) error {
	a.Flush()
	deadline := time.Now().Add(timeout)
	for a.replies.Load() < a.sent.Load() {
		if time.Now().After(deadline) {
			return fmt.Errorf("admin: %d of %d replies after %v", a.replies.Load(), a.sent.Load(), timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// Errors is the number of error replies; LastError the latest.
func (a *Admin) Errors() int64 { return a.errs.Load() }
func (a *Admin) LastError() string {
	s, _ := a.lastErr.Load().(string)
	return s
}

func (a *Admin) readReplies() {
	defer close(a.done)
	r := bufio.NewReader(a.c)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return
		}
		switch line[0] {
		case '-':
			a.errs.Add(1)
			a.lastErr.Store(string(bytes.TrimSpace(line)))
		case '$': // a bulk reply (INFO): skip its body
			n, _ := strconv.Atoi(string(bytes.TrimSpace(line[1:])))
			if n > 0 {
				r.Discard(n + 2)
			}
		}
		a.replies.Add(1)
	}
}

// Close closes the connection.
func (a *Admin) Close() {
	a.c.Close()
	<-a.done
}

// HTTPPusher pushes to single users through the HTTP API, from a few
// keep-alive connections.
type HTTPPusher struct {
	url    string
	client *http.Client
	errs   atomic.Int64
}

// NewHTTPPusher targets the API at addr (host:port).
func NewHTTPPusher(addr string) *HTTPPusher {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}
	return &HTTPPusher{url: "http://" + addr + "/push/user", client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// Push sends one push to uid and reports failure.
func (h *HTTPPusher) Push(uid string, payload []byte) error {
	body, _ := json.Marshal(map[string]string{"uid": uid, "payload_b64": base64.StdEncoding.EncodeToString(payload)})
	resp, err := h.client.Post(h.url, "application/json", bytes.NewReader(body))
	if err != nil {
		h.errs.Add(1)
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		h.errs.Add(1)
		return fmt.Errorf("push: HTTP %d", resp.StatusCode)
	}
	return nil
}

// Errors is the number of failed pushes.
func (h *HTTPPusher) Errors() int64 { return h.errs.Load() }

// Pace calls fn(i) for i in [0, count) at rate calls per second, catching up
// in bursts when a sleep overshoots, so the average rate holds. Bounded by
// count; it returns how long it took.
func Pace(rate float64, count int, fn func(i int)) time.Duration {
	start := time.Now()
	for i := 0; i < count; i++ {
		due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		fn(i)
	}
	return time.Since(start)
}
