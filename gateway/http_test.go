package gateway

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"imgate/proto"
)

// httpCall sends a request to the server's HTTP API and returns the status
// and body.
func httpCall(t *testing.T, s *Server, method, path, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+s.HTTPAddr()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, b
}

// httpJSON calls the API, expects 200 and decodes the JSON answer into out.
func httpJSON(t *testing.T, s *Server, method, path, body string, out any) {
	t.Helper()
	status, b := httpCall(t, s, method, path, body)
	if status != http.StatusOK {
		t.Fatalf("%s %s %s: status %d: %s", method, path, body, status, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
	}
}

func postCount(t *testing.T, s *Server, path, body, field string) int {
	t.Helper()
	var out map[string]int
	httpJSON(t, s, "POST", path, body, &out)
	n, ok := out[field]
	if !ok {
		t.Fatalf("POST %s: answer %v has no %q", path, out, field)
	}
	return n
}

func TestHTTPPush(t *testing.T) {
	s := startOpsServer(t, nil)
	alice := dialOps(t, s, "alice", "phone", "lobby")
	bob := dialOps(t, s, "bob", "web", "lobby")

	if n := postCount(t, s, "/push/user", `{"uid":"alice","payload":"hi alice"}`, "delivered"); n != 1 {
		t.Fatalf("push/user delivered %d", n)
	}
	if h, p := alice.expectPush("hi alice"); h.Flags != 0 || len(p.Topic) != 0 || p.ConvID != 0 {
		t.Fatalf("user push: flags %x topic %q conv %d", h.Flags, p.Topic, p.ConvID)
	}

	binary := string([]byte{0, 1, 2, 0xff})
	body := `{"uid":"alice","payload_b64":"` + base64.StdEncoding.EncodeToString([]byte(binary)) + `","conv_id":7,"seq":18446744073709551615}`
	if n := postCount(t, s, "/push/user", body, "delivered"); n != 1 {
		t.Fatalf("push/user b64 delivered %d", n)
	}
	if _, p := alice.expectPush(binary); p.ConvID != 7 || p.Seq != 1<<64-1 {
		t.Fatalf("conv %d seq %d, want 7 and 2^64-1", p.ConvID, p.Seq)
	}

	if n := postCount(t, s, "/push/users", `{"uids":["alice","bob","nobody"],"payload":"to some"}`, "delivered"); n != 2 {
		t.Fatalf("push/users delivered %d", n)
	}
	alice.expectPush("to some")
	bob.expectPush("to some")

	if n := postCount(t, s, "/push/room", `{"room":"lobby","payload":"to lobby"}`, "delivered"); n != 2 {
		t.Fatalf("push/room delivered %d", n)
	}
	for _, c := range []*opsClient{alice, bob} {
		if h, p := c.expectPush("to lobby"); h.Flags&proto.FlagRoom == 0 || string(p.Topic) != "lobby" {
			t.Fatalf("room push: flags %x topic %q", h.Flags, p.Topic)
		}
	}
	if n := postCount(t, s, "/push/room", `{"room":"empty","payload":"x"}`, "delivered"); n != 0 {
		t.Fatalf("push to an empty room delivered %d", n)
	}

	if n := postCount(t, s, "/push/all", `{"payload":""}`, "delivered"); n != 2 {
		t.Fatalf("push/all delivered %d", n)
	}
	for _, c := range []*opsClient{alice, bob} {
		if h, _ := c.expectPush(""); h.Flags&proto.FlagBroadcast == 0 {
			t.Fatalf("broadcast flags %x", h.Flags)
		}
	}
}

func TestHTTPPresence(t *testing.T) {
	s := startOpsServer(t, nil)
	alice := dialOps(t, s, "alice", "phone", "lobby")
	bob := dialOps(t, s, "bob", "web", "lobby")

	var count struct {
		Connections, Users, Rooms int
		ByTransport               map[string]int `json:"by_transport"`
	}
	httpJSON(t, s, "GET", "/count", "", &count)
	if count.Connections != 2 || count.Users != 2 || count.Rooms != 1 || count.ByTransport["tcp"] != 2 {
		t.Fatalf("/count = %+v", count)
	}

	if n := postCount(t, s, "/room/join", `{"uid":"alice","room":"vip"}`, "joined"); n != 1 {
		t.Fatalf("room/join joined %d", n)
	}
	if n := postCount(t, s, "/push/room", `{"room":"vip","payload":"vip only"}`, "delivered"); n != 1 {
		t.Fatalf("push to vip delivered %d", n)
	}
	alice.expectPush("vip only")

	var rooms struct {
		Rooms []struct {
			Name    string
			Members int
		}
		Total int
	}
	httpJSON(t, s, "GET", "/rooms", "", &rooms)
	if rooms.Total != 2 || len(rooms.Rooms) != 2 || rooms.Rooms[0].Name != "lobby" || rooms.Rooms[0].Members != 2 || rooms.Rooms[1].Name != "vip" {
		t.Fatalf("/rooms = %+v", rooms)
	}
	httpJSON(t, s, "GET", "/rooms?limit=1", "", &rooms)
	if rooms.Total != 2 || len(rooms.Rooms) != 1 {
		t.Fatalf("/rooms?limit=1 = %+v", rooms)
	}

	var room struct {
		Room     string
		Members  int
		Sessions []SessionInfo
	}
	httpJSON(t, s, "GET", "/room?name=lobby", "", &room)
	if room.Room != "lobby" || room.Members != 2 || len(room.Sessions) != 2 {
		t.Fatalf("/room?name=lobby = %+v", room)
	}
	httpJSON(t, s, "GET", "/room?name=lobby&offset=1&limit=1", "", &room)
	if room.Members != 2 || len(room.Sessions) != 1 {
		t.Fatalf("/room page = %+v", room)
	}
	httpJSON(t, s, "GET", "/room?name=nowhere", "", &room)
	if room.Members != 0 || room.Sessions == nil || len(room.Sessions) != 0 {
		t.Fatalf("/room?name=nowhere = %+v", room)
	}

	var sess struct {
		UID      string
		Sessions []SessionInfo
	}
	httpJSON(t, s, "GET", "/session?uid=alice", "", &sess)
	if sess.UID != "alice" || len(sess.Sessions) != 1 {
		t.Fatalf("/session?uid=alice = %+v", sess)
	}
	in := sess.Sessions[0]
	if in.ConnID != FormatConnID(alice.id) || in.Device != "phone" || in.Transport != "tcp" || in.Node != "ops-test" ||
		!in.Authed || strings.Join(in.Rooms, ",") != "lobby,vip" {
		t.Fatalf("alice's session = %+v", in)
	}
	httpJSON(t, s, "GET", "/session?conn="+FormatConnID(bob.id), "", &sess)
	if sess.UID != "bob" || len(sess.Sessions) != 1 || sess.Sessions[0].ConnID != FormatConnID(bob.id) {
		t.Fatalf("/session?conn = %+v", sess)
	}
	httpJSON(t, s, "GET", "/session?uid=nobody", "", &sess)
	if sess.Sessions == nil || len(sess.Sessions) != 0 {
		t.Fatalf("/session?uid=nobody = %+v", sess)
	}
	if status, b := httpCall(t, s, "GET", "/session?conn=0000000000000001", ""); status != http.StatusNotFound {
		t.Fatalf("/session for an unknown conn: %d %s", status, b)
	}

	if n := postCount(t, s, "/room/leave", `{"uid":"alice","room":"vip"}`, "left"); n != 1 {
		t.Fatalf("room/leave left %d", n)
	}
	if n := postCount(t, s, "/room/leave", `{"uid":"alice","room":"vip"}`, "left"); n != 0 {
		t.Fatalf("second room/leave left %d", n)
	}

	if n := postCount(t, s, "/kick", `{"target":"bob","reason":"enough"}`, "kicked"); n != 1 {
		t.Fatalf("kick bob kicked %d", n)
	}
	bob.expectClose(proto.CodeKicked, "enough")
	if n := postCount(t, s, "/kick", `{"target":"`+FormatConnID(alice.id)+`"}`, "kicked"); n != 1 {
		t.Fatalf("kick by conn id kicked %d", n)
	}
	alice.expectClose(proto.CodeKicked, "kicked by operator")
	waitFor(t, "kicked connections to close", func() bool {
		httpJSON(t, s, "GET", "/count", "", &count)
		return count.Connections == 0 && count.Users == 0 && count.Rooms == 0
	})
}

func TestHTTPBadRequests(t *testing.T) {
	s := startOpsServer(t, nil)
	dialOps(t, s, "alice", "phone", "lobby")
	big := strings.Repeat("x", proto.DefaultMaxFrame)
	for _, tc := range []struct {
		method, path, body string
		status             int
		msg                string
	}{
		{"POST", "/push/user", `{`, 400, "bad JSON"},
		{"POST", "/push/user", ``, 400, "bad JSON"},
		{"POST", "/push/user", `{"uid":"alice","payload":"x"} {}`, 400, "trailing"},
		{"POST", "/push/user", `{"uid":"alice","payload":"x","bogus":1}`, 400, "bogus"},
		{"POST", "/push/user", `{"uid":"alice","payload":7}`, 400, "bad JSON"},
		{"POST", "/push/user", `{"uid":"alice"}`, 400, "payload or payload_b64 is required"},
		{"POST", "/push/user", `{"payload":"x"}`, 400, "uid is required"},
		{"POST", "/push/user", `{"uid":"alice","payload":"x","payload_b64":"eA=="}`, 400, "not both"},
		{"POST", "/push/user", `{"uid":"alice","payload_b64":"%%%"}`, 400, "payload_b64"},
		{"POST", "/push/user", `{"uid":"alice","payload":"` + big + `"}`, 400, "max_frame"},
		{"POST", "/push/user", `{"uid":"alice","payload":"` + strings.Repeat("x", maxRequestBody) + `"}`, 413, "request body over"},
		{"POST", "/push/users", `{"payload":"x"}`, 400, "uids is required"},
		{"POST", "/push/room", `{"payload":"x"}`, 400, "room"},
		{"POST", "/push/room", `{"room":"` + strings.Repeat("r", 256) + `","payload":"x"}`, 400, "room"},
		{"POST", "/push/all", `[]`, 400, "bad JSON"},
		{"POST", "/kick", `{}`, 400, "target is required"},
		{"POST", "/room/join", `{"uid":"alice"}`, 400, "uid and room are required"},
		{"POST", "/room/join", `{"uid":"alice","room":"bad\u0001"}`, 400, "BAD_REQUEST"},
		{"POST", "/room/leave", `{"room":"lobby"}`, 400, "uid and room are required"},
		{"GET", "/room", ``, 400, "name is required"},
		{"GET", "/room?name=lobby&limit=-1", ``, 400, "limit"},
		{"GET", "/rooms?limit=x", ``, 400, "limit"},
		{"GET", "/session", ``, 400, "uid or conn is required"},
		{"GET", "/session?conn=xyz", ``, 400, "16-hex-digit"},
		{"GET", "/session?uid=a&conn=0000000000000001", ``, 400, "not both"},
	} {
		status, b := httpCall(t, s, tc.method, tc.path, tc.body)
		var e struct{ Error string }
		if status != tc.status || json.Unmarshal(b, &e) != nil || !strings.Contains(e.Error, tc.msg) {
			t.Errorf("%s %s %.60s: %d %s, want %d with an error containing %q", tc.method, tc.path, tc.body, status, b, tc.status, tc.msg)
		}
	}
	if status, _ := httpCall(t, s, "GET", "/push/user", ""); status != http.StatusMethodNotAllowed {
		t.Errorf("GET /push/user: %d, want 405", status)
	}
	if status, _ := httpCall(t, s, "GET", "/nothing", ""); status != http.StatusNotFound {
		t.Errorf("GET /nothing: %d, want 404", status)
	}
}

func TestHTTPHealthAndMetrics(t *testing.T) {
	s := startOpsServer(t, nil)
	alice := dialOps(t, s, "alice", "phone")
	if n := postCount(t, s, "/push/user", `{"uid":"alice","payload":"count me"}`, "delivered"); n != 1 {
		t.Fatalf("push delivered %d", n)
	}
	alice.expectPush("count me")

	for _, path := range []string{"/healthz", "/readyz"} {
		if status, b := httpCall(t, s, "GET", path, ""); status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, status, b)
		}
	}
	status, b := httpCall(t, s, "GET", "/metrics", "")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: %d", status)
	}
	for _, want := range []string{
		`imgate_connections{transport="tcp"} 1`,
		`imgate_pushes_total{kind="user"} 1`,
		"imgate_users_online 1",
		"go_goroutines",
	} {
		if !bytes.Contains(b, []byte(want)) {
			t.Fatalf("/metrics lacks %q:\n%s", want, b)
		}
	}

	// Once Close begins the node is not ready; the listener is gone by then,
	// so ask the handler directly.
	s.Close()
	rec := httptest.NewRecorder()
	s.httpHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz after Close: %d, want 503", rec.Code)
	}
	if _, err := http.Get("http://" + s.HTTPAddr() + "/healthz"); err == nil {
		t.Fatal("HTTP API still answers after Close")
	}
}

func TestHTTPBearerToken(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Listen = []string{"tcp://127.0.0.1:0"}
	cfg.AdminAddr, cfg.HTTPAddr, cfg.HTTPToken = "", "127.0.0.1:0", "s3cret"
	cfg.DataDir = t.TempDir()
	cfg.Auth.Keys = []KeyConfig{{ID: "k1", Alg: "HS256", Secret: "bearer-test-secret-0123456789abcdef"}}
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ok := func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }
	s.HandleHTTP("GET /extra", ok)
	s.HandlePublicHTTP("GET /v1/public", ok)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	get := func(path, auth string) int {
		req, _ := http.NewRequest("GET", "http://"+s.HTTPAddr()+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	cases := []struct {
		path, auth string
		want       int
	}{
		{"/count", "", http.StatusUnauthorized},
		{"/count", "Bearer wrong", http.StatusUnauthorized},
		{"/count", "Bearer s3cret", http.StatusOK},
		{"/healthz", "", http.StatusOK},
		{"/metrics", "", http.StatusOK},
		{"/extra", "", http.StatusUnauthorized},
		{"/extra", "Bearer s3cret", http.StatusOK},
		{"/v1/public", "", http.StatusOK}, // HandlePublicHTTP: what clients call (HTTPDNS)
	}
	for _, tc := range cases {
		if got := get(tc.path, tc.auth); got != tc.want {
			t.Errorf("GET %s with %q: %d, want %d", tc.path, tc.auth, got, tc.want)
		}
	}
}
