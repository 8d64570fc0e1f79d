package gateway

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"imgate/proto"
	"imgate/transport"
)

// hookRecorder is an Observer and a Relay that records what it hears and
// holds JOIN answers until the test releases them.
type hookRecorder struct {
	mu      sync.Mutex
	events  []string
	held    []func()
	relayed []string
}

func (h *hookRecorder) add(e string) {
	h.mu.Lock()
	h.events = append(h.events, e)
	h.mu.Unlock()
}

func (h *hookRecorder) has(e string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Contains(h.events, e) || slices.Contains(h.relayed, e)
}

func (h *hookRecorder) SessionAuthed(x *Session) { h.add("authed " + x.UID() + " " + x.Transport()) }
func (h *hookRecorder) SessionClosed(x *Session) { h.add("closed " + x.UID()) }
func (h *hookRecorder) RoomJoined(room string, first bool, ready func()) {
	if first {
		h.add("first " + room)
	}
	if ready != nil {
		h.mu.Lock()
		h.held = append(h.held, ready)
		h.mu.Unlock()
	}
}
func (h *hookRecorder) RoomLeft(room string, last bool) {
	if last {
		h.add("last " + room)
	}
}
func (h *hookRecorder) release() {
	h.mu.Lock()
	held := h.held
	h.held = nil
	h.mu.Unlock()
	for _, fn := range held {
		fn()
	}
}
func (h *hookRecorder) relay(e string) {
	h.mu.Lock()
	h.relayed = append(h.relayed, e)
	h.mu.Unlock()
}
func (h *hookRecorder) RelayUsers(uids []string, p proto.Push) {
	h.relay("users " + strings.Join(uids, ",") + " " + string(p.Payload))
}
func (h *hookRecorder) RelayRoom(room string, p proto.Push) {
	h.relay("room " + room + " " + string(p.Payload))
}
func (h *hookRecorder) RelayAll(p proto.Push)           { h.relay("all " + string(p.Payload)) }
func (h *hookRecorder) RelayKick(target, reason string) { h.relay("kick " + target) }

// The observer hears auth, first join, last leave and close; a JOIN is
// answered only once the observer calls ready; pushes from the admin port
// and the HTTP API reach the relay; extra admin commands and HTTP routes are
// served.
func TestHooks(t *testing.T) {
	h := &hookRecorder{}
	cfg := e2eConfig(t)
	cfg.AdminAddr = "127.0.0.1:0"
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.SetObserver(h)
	s.SetRelay(h)
	if err := s.HandleAdmin("hello", 0, 0, nil); err == nil {
		t.Fatal("HandleAdmin must refuse a built-in name")
	}
	if err := s.HandleAdmin("echoargs", 1, -1, func(args []string) (any, error) { return args, nil }); err != nil {
		t.Fatal(err)
	}
	s.HandleHTTP("GET /extra", func(w http.ResponseWriter, r *http.Request) { WriteJSON(w, 200, map[string]int{"x": 1}) })
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	es := &e2eServer{Server: s, t: t, urls: map[transport.Kind]string{}}
	for _, l := range s.Listeners() {
		if l.Kind() == transport.KindTCP {
			es.urls[l.Kind()] = l.Addr().String()
		}
	}

	c, _ := es.login(transport.KindTCP, "alice", "phone", nil)
	e2eWaitFor(t, e2eWait, "authed event", func() bool { return h.has("authed alice tcp") })

	c.send(proto.Header{Op: proto.OpJoin, Seq: 5}, []byte("lobby"))
	e2eWaitFor(t, e2eWait, "first join event", func() bool { return h.has("first lobby") })
	if f, err := c.read(100 * time.Millisecond); err == nil {
		t.Fatalf("JOIN answered before the observer was ready: %s", e2eShow(f))
	}
	h.release()
	c.expectReply(0, 5, nil)

	rdb := newRedis(t, s, "")
	ctx := context.Background()
	if got, err := rdb.Do(ctx, "ROOMPUSH", "lobby", "hi").Int(); err != nil || got != 1 {
		t.Fatalf("ROOMPUSH = %v, %v", got, err)
	}
	c.expect(proto.Header{Op: proto.OpPush, Flags: proto.FlagRoom}, proto.AppendPush(nil, proto.Push{Topic: []byte("lobby"), Payload: []byte("hi")}))
	if !h.has("room lobby hi") {
		t.Fatalf("relay did not hear the room push: %v", h.relayed)
	}
	if got, err := rdb.Do(ctx, "ECHOARGS", "a", "b").StringSlice(); err != nil || !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("ECHOARGS = %v, %v", got, err)
	}
	resp, err := http.Get("http://" + s.HTTPAddr() + "/extra")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.TrimSpace(string(body)) != `{"x":1}` {
		t.Fatalf("GET /extra = %s", body)
	}
	resp, err = http.Post("http://"+s.HTTPAddr()+"/push/user", "application/json", strings.NewReader(`{"uid":"alice","payload":"p"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !h.has("users alice p") {
		t.Fatalf("relay did not hear the user push: %v", h.relayed)
	}

	c.send(proto.Header{Op: proto.OpLeave, Seq: 6}, []byte("lobby"))
	c.expect(proto.Header{Op: proto.OpPush}, proto.AppendPush(nil, proto.Push{Payload: []byte("p")}))
	c.expectReply(0, 6, nil)
	if !h.has("last lobby") {
		t.Fatal("no last-leave event")
	}
	c.send(proto.Header{Op: proto.OpClose}, proto.AppendError(nil, proto.CodeNormal, ""))
	e2eWaitFor(t, e2eWait, "closed event", func() bool { return h.has("closed alice") })
}
