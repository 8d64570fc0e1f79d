package gateway

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"imgate/broadcast"
	"imgate/proto"
	"imgate/transport"
)

// The admin and HTTP tests run a real gateway on loopback and real clients
// against it: raw protocol clients speaking proto frames over TCP, go-redis
// and the redis-cli binary on the admin port, net/http on the API.

var opsKey = KeyConfig{ID: "k1", Alg: AlgHS256, Secret: "ops-test-secret-0123456789abcdef-0123"}

// startOpsServer starts a gateway with every operator interface on an
// ephemeral loopback port; edit adjusts the config first.
func startOpsServer(t *testing.T, edit func(*Config)) *Server {
	t.Helper()
	cfg := Config{
		NodeID:            "ops-test",
		Listen:            []string{"tcp://127.0.0.1:0", "ws://127.0.0.1:0/ws"},
		AdminAddr:         "127.0.0.1:0",
		HTTPAddr:          "127.0.0.1:0",
		DataDir:           t.TempDir(),
		Auth:              AuthConfig{Keys: []KeyConfig{opsKey}},
		HeartbeatInterval: 30 * time.Second,
		Transport:         transport.Config{Loops: 1},
		Broadcast:         broadcast.Config{Workers: 1},
	}
	if edit != nil {
		edit(&cfg)
	}
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if s.AdminAddr() == "" || strings.HasSuffix(s.AdminAddr(), ":0") {
		t.Fatalf("AdminAddr() = %q, want the bound address", s.AdminAddr())
	}
	if s.HTTPAddr() == "" || strings.HasSuffix(s.HTTPAddr(), ":0") {
		t.Fatalf("HTTPAddr() = %q, want the bound address", s.HTTPAddr())
	}
	return s
}

// opsClient is a minimal raw-protocol client on the TCP listener.
type opsClient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
	id   uint64
	seq  uint32
}

// dialOps connects, authenticates as uid on device and joins rooms.
func dialOps(t *testing.T, s *Server, uid, device string, rooms ...string) *opsClient {
	t.Helper()
	var addr string
	for _, l := range s.Listeners() {
		if l.Kind() == transport.KindTCP {
			addr = l.Addr().String()
		}
	}
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	c := &opsClient{t: t, conn: nc, r: bufio.NewReader(nc)}
	token, err := MintToken(opsKey, Claims{UID: uid, Device: device, Expiry: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatalf("MintToken: %v", err)
	}
	seq := c.send(proto.OpAuth, []byte(token))
	f := c.read()
	if f.Op != proto.OpAuthOK || f.Seq != seq {
		t.Fatalf("%s: got %v seq %d after AUTH, want AUTH_OK seq %d", uid, f.Op, f.Seq, seq)
	}
	ok, err := proto.ParseAuthOK(f.Body)
	if err != nil {
		t.Fatalf("AUTH_OK: %v", err)
	}
	c.id = ok.ConnID
	for _, room := range rooms {
		c.join(room)
	}
	return c
}

func (c *opsClient) send(op proto.Op, body []byte) uint32 {
	c.t.Helper()
	c.seq++
	if _, err := c.conn.Write(proto.AppendFrame(nil, proto.Header{Op: op, Seq: c.seq}, body)); err != nil {
		c.t.Fatalf("write %v: %v", op, err)
	}
	return c.seq
}

// next reads one frame, waiting at most five seconds.
func (c *opsClient) next() (proto.Frame, error) {
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var prefix [4]byte
	if _, err := io.ReadFull(c.r, prefix[:]); err != nil {
		return proto.Frame{}, err
	}
	size, err := proto.FrameSize(prefix[:], proto.MaxFrameLimit)
	if err != nil {
		return proto.Frame{}, err
	}
	buf := make([]byte, size)
	binary.BigEndian.PutUint32(buf, binary.BigEndian.Uint32(prefix[:]))
	if _, err := io.ReadFull(c.r, buf[4:]); err != nil {
		return proto.Frame{}, err
	}
	return proto.DecodeExact(buf, proto.MaxFrameLimit)
}

func (c *opsClient) read() proto.Frame {
	c.t.Helper()
	f, err := c.next()
	if err != nil {
		c.t.Fatalf("conn %s: read: %v", FormatConnID(c.id), err)
	}
	return f
}

func (c *opsClient) join(room string) {
	c.t.Helper()
	seq := c.send(proto.OpJoin, []byte(room))
	if f := c.read(); f.Op != proto.OpReply || f.Seq != seq {
		c.t.Fatalf("JOIN %s: got %v seq %d, want REPLY seq %d (body %q)", room, f.Op, f.Seq, seq, f.Body)
	}
}

// expectPush reads the next frame and checks it is a PUSH with payload.
func (c *opsClient) expectPush(payload string) (proto.Header, proto.Push) {
	c.t.Helper()
	f := c.read()
	if f.Op != proto.OpPush {
		c.t.Fatalf("got %v, want PUSH %q", f.Op, payload)
	}
	p, err := proto.ParsePush(f.Body)
	if err != nil {
		c.t.Fatalf("PUSH body: %v", err)
	}
	if string(p.Payload) != payload {
		c.t.Fatalf("PUSH payload %q, want %q", p.Payload, payload)
	}
	return f.Header, p
}

// expectClose reads a CLOSE with code (and reason, unless empty).
func (c *opsClient) expectClose(code proto.Code, reason string) {
	c.t.Helper()
	f := c.read()
	if f.Op != proto.OpClose {
		c.t.Fatalf("got %v, want CLOSE %v", f.Op, code)
	}
	e, err := proto.ParseError(f.Body)
	if err != nil {
		c.t.Fatalf("CLOSE body: %v", err)
	}
	if e.Code != code || (reason != "" && string(e.Message) != reason) {
		c.t.Fatalf("CLOSE %v %q, want %v %q", e.Code, e.Message, code, reason)
	}
	// A client hangs up on CLOSE; that ends the server's linger at once.
	c.conn.Close()
}

// waitFor polls cond until it holds or five seconds pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newRedis(t *testing.T, s *Server, password string) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: s.AdminAddr(), Password: password, PoolSize: 1, DialTimeout: 5 * time.Second})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

func TestAdminRedisClient(t *testing.T) {
	s := startOpsServer(t, nil)
	alice := dialOps(t, s, "alice", "phone", "lobby")
	bob := dialOps(t, s, "bob", "web", "lobby", "ops")
	ctx := context.Background()
	rdb := newRedis(t, s, "")

	do := func(args ...any) any {
		t.Helper()
		v, err := rdb.Do(ctx, args...).Result()
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return v
	}
	doErr := func(args ...any) string {
		t.Helper()
		v, err := rdb.Do(ctx, args...).Result()
		if err == nil {
			t.Fatalf("%v = %v, want an error", args, v)
		}
		return err.Error()
	}
	wantInt := func(want int64, args ...any) {
		t.Helper()
		if got := do(args...); got != want {
			t.Fatalf("%v = %v, want %d", args, got, want)
		}
	}
	wantContains := func(text string, subs ...string) {
		t.Helper()
		for _, sub := range subs {
			if !strings.Contains(text, sub) {
				t.Fatalf("output lacks %q:\n%s", sub, text)
			}
		}
	}

	if got := do("PING"); got != "PONG" {
		t.Fatalf("PING = %v", got)
	}
	if got := do("ping", "hello there"); got != "hello there" {
		t.Fatalf("PING msg = %v", got)
	}

	info := do("INFO").(string)
	wantContains(info, "# Server\r\n", "imgate_version:"+Version+"\r\n", "node_id:ops-test\r\n",
		"process_id:", "uptime_in_seconds:", "listeners:tcp://127.0.0.1:", ",ws://127.0.0.1:",
		"# Clients\r\n", "connected_clients:2\r\n", "users_online:2\r\n", "connections_tcp:2\r\n", "connections_ws:0\r\n",
		"# Rooms\r\n", "rooms:2\r\n", "largest_room:lobby\r\n", "largest_room_members:2\r\n",
		"# Traffic\r\n", "frames_in:", "bytes_out:", "slow_consumer_drops:0\r\n",
		"# Memory\r\n", "go_heap_alloc:", "used_memory_rss:", "goroutines:")
	clients := do("info", "CLIENTS").(string)
	wantContains(clients, "# Clients\r\n", "connected_clients:2")
	if strings.Contains(clients, "# Server") || strings.Contains(clients, "# Memory") {
		t.Fatalf("INFO clients printed other sections:\n%s", clients)
	}

	wantInt(2, "CLIENT", "COUNT")
	list := do("client", "list").(string)
	if n := strings.Count(list, "\n"); n != 2 {
		t.Fatalf("CLIENT LIST has %d lines, want 2:\n%s", n, list)
	}
	wantContains(list, "id="+FormatConnID(alice.id)+" uid=alice device=phone transport=tcp addr=127.0.0.1:",
		"rooms=lobby qbuf=0 authed=1\n", "uid=bob device=web", "rooms=lobby,ops ")
	if got := do("CLIENT", "LIST", "1").(string); strings.Count(got, "\n") != 1 {
		t.Fatalf("CLIENT LIST 1:\n%s", got)
	}
	user := do("USER", "alice").(string)
	if strings.Count(user, "\n") != 1 || !strings.HasPrefix(user, "id="+FormatConnID(alice.id)+" uid=alice ") {
		t.Fatalf("USER alice = %q", user)
	}
	if got := do("USER", "nobody"); got != "" {
		t.Fatalf("USER nobody = %q", got)
	}

	if got := do("ROOMS"); !slices.Equal(got.([]any), []any{"lobby", int64(2), "ops", int64(1)}) {
		t.Fatalf("ROOMS = %v", got)
	}
	if got := do("ROOMS", "1"); len(got.([]any)) != 2 {
		t.Fatalf("ROOMS 1 = %v", got)
	}
	members := do("ROOM", "lobby").([]any)
	if len(members) != 4 || !slices.Contains(members, any(FormatConnID(alice.id))) || !slices.Contains(members, any("bob")) {
		t.Fatalf("ROOM lobby = %v", members)
	}
	if got := do("ROOM", "lobby", "1", "5"); len(got.([]any)) != 2 {
		t.Fatalf("ROOM lobby 1 5 = %v", got)
	}
	if got := do("ROOM", "nowhere"); len(got.([]any)) != 0 {
		t.Fatalf("ROOM nowhere = %v", got)
	}

	wantInt(1, "PUSH", "alice", "to alice")
	if h, p := alice.expectPush("to alice"); h.Flags != 0 || len(p.Topic) != 0 {
		t.Fatalf("user push flags %x topic %q", h.Flags, p.Topic)
	}
	wantInt(0, "PUSH", "nobody", "x")
	wantInt(2, "roompush", "lobby", "to lobby")
	for _, c := range []*opsClient{alice, bob} {
		if h, p := c.expectPush("to lobby"); h.Flags&proto.FlagRoom == 0 || string(p.Topic) != "lobby" {
			t.Fatalf("room push flags %x topic %q", h.Flags, p.Topic)
		}
	}
	wantInt(2, "BROADCAST", "to all")
	for _, c := range []*opsClient{alice, bob} {
		if h, _ := c.expectPush("to all"); h.Flags&proto.FlagBroadcast == 0 {
			t.Fatalf("broadcast flags %x", h.Flags)
		}
	}

	wantInt(1, "JOIN", "alice", "ops")
	wantInt(2, "ROOMPUSH", "ops", "to ops")
	alice.expectPush("to ops")
	bob.expectPush("to ops")
	wantInt(1, "LEAVE", "alice", "ops")
	wantInt(0, "LEAVE", "alice", "ops")
	wantContains(doErr("JOIN", "alice", "bad\x01room"), "BAD_REQUEST")

	if got := do("CONFIG", "GET", "heartbeat*"); !slices.Equal(got.([]any), []any{"heartbeat_interval", "30s"}) {
		t.Fatalf("CONFIG GET heartbeat* = %v", got)
	}
	if got := do("config", "get", "MAX_*"); len(got.([]any)) != 6 {
		t.Fatalf("CONFIG GET max_* = %v", got)
	}
	all := do("CONFIG", "GET", "*").([]any)
	for _, v := range all {
		if strings.Contains(v.(string), opsKey.Secret) {
			t.Fatalf("CONFIG GET * shows the key secret: %v", all)
		}
	}
	wantContains(doErr("CONFIG", "SET", "heartbeat_interval", "1s"), "not supported")

	if got := do("COMMAND", "DOCS"); len(got.([]any)) != 0 {
		t.Fatalf("COMMAND DOCS = %v", got)
	}
	if got := do("COMMAND"); len(got.([]any)) != 0 {
		t.Fatalf("COMMAND = %v", got)
	}
	if got := doErr("FLUSHALL"); got != "ERR unknown command 'FLUSHALL'" {
		t.Fatalf("unknown command error = %q", got)
	}
	if got := doErr("PUSH", "alice"); got != "ERR wrong number of arguments for 'push' command" {
		t.Fatalf("arity error = %q", got)
	}
	wantContains(doErr("ROOMS", "many"), "not an integer")
	wantContains(doErr("PUSH", "alice", strings.Repeat("x", proto.DefaultMaxFrame)), "max_frame")

	wantInt(1, "KICK", "alice", "go", "away")
	alice.expectClose(proto.CodeKicked, "go away")
	wantInt(1, "KICK", FormatConnID(bob.id))
	bob.expectClose(proto.CodeKicked, "kicked by operator")
	waitFor(t, "connections to close", func() bool { return do("CLIENT", "COUNT") == int64(0) })
	wantInt(0, "KICK", "alice")

	traffic := do("INFO", "traffic").(string)
	wantContains(traffic, "kicks:2\r\n", "pushes:5\r\n")
}

func TestAdminPassword(t *testing.T) {
	const password = "admin-pw-do-not-print"
	s := startOpsServer(t, func(c *Config) { c.AdminPassword = password })
	ctx := context.Background()

	// One connection, so that AUTH applies to the commands after it.
	conn := newRedis(t, s, "").Conn()
	t.Cleanup(func() { conn.Close() })
	for _, cmd := range [][]any{{"PING"}, {"INFO"}, {"CLIENT", "COUNT"}, {"NOSUCH"}} {
		if err := conn.Do(ctx, cmd...).Err(); err == nil || err.Error() != "NOAUTH Authentication required." {
			t.Fatalf("%v before AUTH: err = %v, want NOAUTH", cmd, err)
		}
	}
	for _, args := range [][]any{{"AUTH", "wrong"}, {"AUTH", "default", "wrong"}, {"AUTH", "bob", password}} {
		err := conn.Do(ctx, args...).Err()
		if err == nil || err.Error() != "WRONGPASS invalid username-password pair or user is disabled." {
			t.Fatalf("%v: err = %v, want WRONGPASS", args, err)
		}
	}
	if err := conn.Do(ctx, "PING").Err(); err == nil {
		t.Fatal("PING after a wrong password succeeded")
	}
	if got, err := conn.Do(ctx, "AUTH", password).Result(); err != nil || got != "OK" {
		t.Fatalf("AUTH = %v, %v", got, err)
	}
	if got, err := conn.Do(ctx, "PING").Result(); err != nil || got != "PONG" {
		t.Fatalf("PING after AUTH = %v, %v", got, err)
	}
	got, err := conn.Do(ctx, "CONFIG", "GET", "admin_password").Result()
	if err != nil || !slices.Equal(got.([]any), []any{"admin_password", "(set)"}) {
		t.Fatalf("CONFIG GET admin_password = %v, %v", got, err)
	}

	// The two-argument form, on a fresh connection.
	conn2 := newRedis(t, s, "").Conn()
	t.Cleanup(func() { conn2.Close() })
	if err := conn2.Do(ctx, "AUTH", "default", password).Err(); err != nil {
		t.Fatalf("AUTH default <password>: %v", err)
	}
	if err := conn2.Do(ctx, "CLIENT", "COUNT").Err(); err != nil {
		t.Fatalf("CLIENT COUNT after AUTH default: %v", err)
	}

	// A stock client given the password: HELLO is refused, it falls back to AUTH.
	if got, err := newRedis(t, s, password).Ping(ctx).Result(); err != nil || got != "PONG" {
		t.Fatalf("go-redis with Password: PING = %v, %v", got, err)
	}
}

// redisCLI returns the redis-cli binary, skipping the test when it is not
// installed (failing instead under CI, where it must be).
func redisCLI(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-cli")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redis-cli not on PATH (CI is set): install redis-tools")
		}
		t.Skip("redis-cli not on PATH; install redis-tools (Debian) to run the admin port against the real client")
	}
	return bin
}

func TestAdminRedisCLI(t *testing.T) {
	bin := redisCLI(t)
	s := startOpsServer(t, nil)
	alice := dialOps(t, s, "alice", "phone", "lobby")

	cli := func(s *Server, args ...string) string {
		t.Helper()
		host, port, _ := net.SplitHostPort(s.AdminAddr())
		cmd := exec.Command(bin, append([]string{"-h", host, "-p", port}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("redis-cli %v: %v\n%s", args, err, out)
		}
		return strings.TrimRight(string(out), "\n")
	}
	want := func(got, want string) {
		t.Helper()
		if got != want {
			t.Fatalf("redis-cli printed %q, want %q", got, want)
		}
	}

	want(cli(s, "PING"), "PONG")
	if got := cli(s, "INFO", "server"); !strings.Contains(got, "imgate_version:"+Version) || !strings.Contains(got, "node_id:ops-test") {
		t.Fatalf("INFO server:\n%s", got)
	}
	want(cli(s, "CLIENT", "COUNT"), "1")
	if got := cli(s, "CLIENT", "LIST"); !strings.HasPrefix(got, "id="+FormatConnID(alice.id)+" uid=alice device=phone") {
		t.Fatalf("CLIENT LIST:\n%s", got)
	}
	want(cli(s, "ROOMS"), "lobby\n1")
	want(cli(s, "ROOM", "lobby"), FormatConnID(alice.id)+"\nalice")
	want(cli(s, "PUSH", "alice", "from redis-cli"), "1")
	alice.expectPush("from redis-cli")
	want(cli(s, "ROOMPUSH", "lobby", "room news"), "1")
	alice.expectPush("room news")
	want(cli(s, "BROADCAST", "hear ye"), "1")
	alice.expectPush("hear ye")
	want(cli(s, "CONFIG", "GET", "heartbeat*"), "heartbeat_interval\n30s")
	want(cli(s, "COMMAND", "DOCS"), "")
	want(cli(s, "NOPE"), "ERR unknown command 'NOPE'")
	want(cli(s, "KICK", "alice", "bye"), "1")
	alice.expectClose(proto.CodeKicked, "bye")

	locked := startOpsServer(t, func(c *Config) { c.AdminPassword = "cli-pw" })
	want(cli(locked, "PING"), "NOAUTH Authentication required.")
	want(cli(locked, "-a", "cli-pw", "--no-auth-warning", "PING"), "PONG")
	want(cli(locked, "--user", "default", "--pass", "cli-pw", "--no-auth-warning", "CLIENT", "COUNT"), "0")
}
