package gateway

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net"
	"os"
	"path"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tidwall/redcon"

	"imgate/broadcast"
	"imgate/proto"
	"imgate/transport"
)

// Version is the build's version, set at link time:
//
//	go build -ldflags "-X imgate/gateway.Version=v1.2.3" ./cmd/imgate
var Version = "dev"

// processStart is what INFO's uptime_in_seconds counts from.
var processStart = time.Now()

// The admin port speaks the redis protocol (RESP2), so `redis-cli -p 7379`
// and any redis client library drive it. Commands (case-insensitive):
//
//	PING [msg]                      PONG, or msg
//	AUTH [default] <password>       when Config.AdminPassword is set
//	QUIT
//	INFO [section ...]              server, clients, rooms, traffic, memory; all (default)
//	CLIENT LIST [limit]             one line per connection, oldest first (default 1000; 0 = all)
//	CLIENT COUNT                    open connections (integer)
//	ROOMS [limit]                   flat array name, members, name, members ... largest first (default 100; 0 = all)
//	ROOM <room> [offset limit]      flat array conn_id, uid, conn_id, uid ... (default 0 100)
//	USER <uid>                      the user's connections, CLIENT LIST lines
//	KICK <uid|conn_id> [reason]     connections closed with KICKED (integer)
//	PUSH <uid> <payload>            connections reached (integer)
//	ROOMPUSH <room> <payload>       members reached (integer)
//	BROADCAST <payload>             connections reached (integer)
//	JOIN <uid> <room>               server-side join of every connection of uid (integer)
//	LEAVE <uid> <room>              connections that left (integer)
//	CONFIG GET <pattern> [...]      flat array name, value for the effective configuration
//	DRAIN [seconds]                 lame duck: stop accepting, close clients with SHUTDOWN spread over
//	                                the period (default drain_timeout); OK, or an error if already draining
//	COMMAND [...]                   empty array (redis-cli asks for COMMAND DOCS on start)
//
// Errors follow redis: "-ERR unknown command 'x'", "-ERR wrong number of
// arguments for 'x' command", "-NOAUTH Authentication required.".

const (
	defaultClientListLimit = 1000
	defaultRoomsLimit      = 100
	defaultRoomPageLimit   = 100
)

// adminCommand is one admin verb: its argument bounds (after the name;
// max -1 = unbounded) and what it does. Commands that run before AUTH are
// marked open.
type adminCommand struct {
	min, max int
	open     bool
	run      func(a *admin, c redcon.Conn, args [][]byte)
}

var adminCommands map[string]adminCommand

func init() {
	// Assigned in init, not in the declaration: COMMAND COUNT reads the
	// table, which would make its initialization refer to itself.
	adminCommands = map[string]adminCommand{
		"ping":      {0, 1, false, (*admin).ping},
		"auth":      {1, 2, true, (*admin).auth},
		"quit":      {0, -1, true, (*admin).quit},
		"hello":     {0, -1, true, (*admin).hello},
		"info":      {0, -1, false, (*admin).info},
		"client":    {1, -1, false, (*admin).client},
		"rooms":     {0, 1, false, (*admin).rooms},
		"room":      {1, 3, false, (*admin).room},
		"user":      {1, 1, false, (*admin).user},
		"kick":      {1, -1, false, (*admin).kick},
		"push":      {2, 2, false, (*admin).push},
		"roompush":  {2, 2, false, (*admin).roomPush},
		"broadcast": {1, 1, false, (*admin).broadcast},
		"join":      {2, 2, false, (*admin).join},
		"leave":     {2, 2, false, (*admin).leave},
		"config":    {1, -1, false, (*admin).config},
		"drain":     {0, 1, false, (*admin).drain},
		"command":   {0, -1, false, (*admin).command},
	}
}

// admin serves the admin port for one Server.
type admin struct {
	srv *Server
	// password is the SHA-256 of Config.AdminPassword (nil: no password).
	// Comparing digests keeps the comparison constant-time whatever the
	// lengths.
	password []byte
}

// adminConn is one admin connection's state.
type adminConn struct {
	authed bool
}

// serveAdmin starts the redis-protocol admin port.
func (s *Server) serveAdmin(addr string) (closer func() error, bound string, err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	a := &admin{srv: s}
	if s.cfg.AdminPassword != "" {
		sum := sha256.Sum256([]byte(s.cfg.AdminPassword))
		a.password = sum[:]
	}
	rs := redcon.NewServerNetwork("tcp", ln.Addr().String(), a.handle, a.accept, nil)
	rs.AcceptError = func(err error) {
		// redcon retries Accept at once; pausing here keeps a persistent
		// error (out of file descriptors) from spinning a core.
		s.log.Warn("admin port: accept", "err", err)
		time.Sleep(100 * time.Millisecond)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		rs.Serve(ln)
	}()
	closer = func() error {
		// Closing the listener ends Serve, which then closes every admin
		// connection.
		err := ln.Close()
		<-served
		return err
	}
	return closer, ln.Addr().String(), nil
}

// AdminAddr is the admin port's bound address ("" when it is off or Start
// has not run).
func (s *Server) AdminAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.adminAddr
}

func (a *admin) accept(c redcon.Conn) bool {
	c.SetContext(&adminConn{authed: a.password == nil})
	return true
}

func (a *admin) handle(c redcon.Conn, cmd redcon.Command) {
	name := string(cmd.Args[0])
	def, ok := adminCommands[strings.ToLower(name)]
	if !ok {
		def, ok = a.srv.extraAdmin[strings.ToLower(name)]
	}
	// Before AUTH even unknown commands answer NOAUTH: the port tells a
	// stranger nothing about itself.
	if !c.Context().(*adminConn).authed && !def.open {
		c.WriteError("NOAUTH Authentication required.")
		return
	}
	if !ok {
		c.WriteError(fmt.Sprintf("ERR unknown command '%s'", name))
		return
	}
	args := cmd.Args[1:]
	if len(args) < def.min || (def.max >= 0 && len(args) > def.max) {
		c.WriteError(fmt.Sprintf("ERR wrong number of arguments for '%s' command", strings.ToLower(name)))
		return
	}
	def.run(a, c, args)
}

func (a *admin) ping(c redcon.Conn, args [][]byte) {
	if len(args) == 1 {
		c.WriteBulk(args[0])
		return
	}
	c.WriteString("PONG")
}

func (a *admin) auth(c redcon.Conn, args [][]byte) {
	if a.password == nil {
		c.WriteError("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
		return
	}
	given := args[len(args)-1]
	user := "default"
	if len(args) == 2 {
		user = string(args[0])
	}
	sum := sha256.Sum256(given)
	match := subtle.ConstantTimeCompare(sum[:], a.password) == 1
	if !match || user != "default" {
		a.srv.log.Warn("admin: wrong password", "addr", c.RemoteAddr())
		c.WriteError("WRONGPASS invalid username-password pair or user is disabled.")
		return
	}
	c.Context().(*adminConn).authed = true
	c.WriteString("OK")
}

func (a *admin) quit(c redcon.Conn, _ [][]byte) {
	c.WriteString("OK")
	c.Close()
}

// hello refuses RESP3, which makes clients that open with HELLO (go-redis
// v9) fall back to RESP2 and a plain AUTH.
func (a *admin) hello(c redcon.Conn, _ [][]byte) {
	c.WriteError("NOPROTO this server speaks RESP2 only")
}

func (a *admin) command(c redcon.Conn, args [][]byte) {
	if len(args) == 1 && strings.EqualFold(string(args[0]), "count") {
		c.WriteInt(len(adminCommands))
		return
	}
	c.WriteArray(0)
}

// info writes redis-style "# Section" blocks of name:value lines.
func (a *admin) info(c redcon.Conn, args [][]byte) {
	want := map[string]bool{}
	for _, arg := range args {
		want[strings.ToLower(string(arg))] = true
	}
	all := len(want) == 0 || want["all"] || want["default"] || want["everything"]
	var b bytes.Buffer
	for _, sec := range []struct {
		name string
		fill func(w *infoWriter)
	}{
		{"Server", a.infoServer},
		{"Clients", a.infoClients},
		{"Rooms", a.infoRooms},
		{"Traffic", a.infoTraffic},
		{"Memory", a.infoMemory},
		{"CPU", a.infoCPU},
	} {
		if !all && !want[strings.ToLower(sec.name)] {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("\r\n")
		}
		fmt.Fprintf(&b, "# %s\r\n", sec.name)
		sec.fill(&infoWriter{&b})
	}
	c.WriteBulk(b.Bytes())
}

type infoWriter struct{ b *bytes.Buffer }

func (w *infoWriter) put(name string, value any) {
	fmt.Fprintf(w.b, "%s:%v\r\n", name, value)
}

func (a *admin) infoServer(w *infoWriter) {
	s := a.srv
	var urls []string
	for _, l := range s.Listeners() {
		urls = append(urls, l.URL())
	}
	w.put("imgate_version", Version)
	w.put("go_version", runtime.Version())
	w.put("node_id", s.cfg.NodeID)
	w.put("process_id", os.Getpid())
	w.put("uptime_in_seconds", int64(time.Since(processStart).Seconds()))
	w.put("listeners", strings.Join(urls, ","))
	w.put("admin_addr", s.AdminAddr())
	w.put("http_addr", s.HTTPAddr())
	draining := 0
	if s.Draining() {
		draining = 1
	}
	w.put("draining", draining)
}

func (a *admin) drain(c redcon.Conn, args [][]byte) {
	var period time.Duration
	if len(args) == 1 {
		secs, err := strconv.ParseFloat(string(args[0]), 64)
		if err != nil || secs <= 0 || secs > 86400 {
			c.WriteError("ERR drain period must be a number of seconds between 0 and 86400")
			return
		}
		period = time.Duration(secs * float64(time.Second))
	}
	if !a.srv.Drain(period) {
		c.WriteError("ERR already draining")
		return
	}
	a.srv.log.Info("admin: drain", "period", period, "addr", c.RemoteAddr())
	c.WriteString("OK")
}

func (a *admin) infoClients(w *infoWriter) {
	conns, users, _ := a.srv.Counts()
	w.put("connected_clients", conns)
	w.put("users_online", users)
	byKind := a.srv.ConnsByTransport()
	for _, k := range transport.Kinds {
		w.put("connections_"+k.String(), byKind[k.String()])
	}
}

func (a *admin) infoRooms(w *infoWriter) {
	w.put("rooms", a.srv.hub.RoomCount())
	largest := a.srv.hub.Rooms(1)
	if len(largest) == 0 {
		largest = []broadcast.RoomInfo{{}}
	}
	w.put("largest_room", largest[0].Name)
	w.put("largest_room_members", largest[0].Members)
}

func (a *admin) infoTraffic(w *infoWriter) {
	sums := a.srv.metricSums()
	for _, f := range []struct{ name, family string }{
		{"frames_in", "imgate_frames_in_total"},
		{"frames_out", "imgate_frames_out_total"},
		{"bytes_in", "imgate_bytes_in_total"},
		{"bytes_out", "imgate_bytes_out_total"},
		{"pushes", "imgate_pushes_total"},
		{"uplinks", "imgate_uplinks_total"},
		{"uplink_errors", "imgate_uplink_errors_total"},
		{"connections_opened", "imgate_connections_opened_total"},
		{"connections_closed", "imgate_connections_closed_total"},
		{"bad_frames", "imgate_bad_frames_total"},
		{"auth_failures", "imgate_auth_failures_total"},
		{"auth_timeouts", "imgate_auth_timeouts_total"},
		{"heartbeat_timeouts", "imgate_heartbeat_timeouts_total"},
		{"slow_consumer_drops", "imgate_slow_consumer_drops_total"},
		{"kicks", "imgate_kicks_total"},
		{"replaced", "imgate_replaced_total"},
	} {
		w.put(f.name, strconv.FormatFloat(sums[f.family], 'f', -1, 64))
	}
}

func (a *admin) infoMemory(w *infoWriter) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	w.put("go_heap_alloc", ms.HeapAlloc)
	w.put("go_heap_sys", ms.HeapSys)
	w.put("go_sys", ms.Sys)
	w.put("go_gc_runs", ms.NumGC)
	if rss, ok := processRSS(); ok {
		w.put("used_memory_rss", rss)
	}
	w.put("goroutines", runtime.NumGoroutine())
}

// infoCPU reports the process's CPU seconds like redis does, so that a
// benchmark against a remote node can compute CPU per delivery.
func (a *admin) infoCPU(w *infoWriter) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return
	}
	sec := func(t syscall.Timeval) string { return strconv.FormatFloat(float64(t.Nano())/1e9, 'f', 6, 64) }
	w.put("used_cpu_sys", sec(ru.Stime))
	w.put("used_cpu_user", sec(ru.Utime))
}

// metricSums adds up every series of each of the server's metric families
// (counters and gauges), by family name.
func (s *Server) metricSums() map[string]float64 {
	out := make(map[string]float64)
	families, _ := s.metrics.reg.Gather()
	for _, f := range families {
		var sum float64
		for _, m := range f.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			}
		}
		out[f.GetName()] = sum
	}
	return out
}

// processRSS reads the resident set size in bytes from /proc (Linux only).
func processRSS() (int64, bool) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		return kb << 10, err == nil
	}
	return 0, false
}

func (a *admin) client(c redcon.Conn, args [][]byte) {
	sub := strings.ToLower(string(args[0]))
	switch {
	case sub == "count" && len(args) == 1:
		conns, _, _ := a.srv.Counts()
		c.WriteInt(conns)
	case sub == "list" && len(args) <= 2:
		limit, ok := intArg(c, args[1:], 0, defaultClientListLimit)
		if !ok {
			return
		}
		var b strings.Builder
		for _, in := range a.srv.Sessions(limit) {
			b.WriteString(clientLine(in))
		}
		c.WriteBulkString(b.String())
	case sub == "setname" || sub == "setinfo":
		// Client libraries name themselves on connect; accept and ignore.
		c.WriteString("OK")
	case sub == "count" || sub == "list":
		c.WriteError(fmt.Sprintf("ERR wrong number of arguments for 'client|%s' command", sub))
	default:
		c.WriteError(fmt.Sprintf("ERR unknown subcommand '%s'. Try CLIENT LIST or CLIENT COUNT.", args[0]))
	}
}

// clientLine renders a session the way redis's CLIENT LIST renders a client.
func clientLine(in SessionInfo) string {
	authed := 0
	if in.Authed {
		authed = 1
	}
	return fmt.Sprintf("id=%s uid=%s device=%s transport=%s addr=%s age=%d idle=%d rooms=%s qbuf=%d authed=%d\n",
		in.ConnID, in.UID, in.Device, in.Transport, in.Remote,
		int64(time.Since(in.Since).Seconds()), int64(in.IdleSeconds),
		strings.Join(in.Rooms, ","), in.QueuedBytes, authed)
}

func (a *admin) rooms(c redcon.Conn, args [][]byte) {
	limit, ok := intArg(c, args, 0, defaultRoomsLimit)
	if !ok {
		return
	}
	list := a.srv.hub.Rooms(limit)
	c.WriteArray(2 * len(list))
	for _, r := range list {
		c.WriteBulkString(r.Name)
		c.WriteInt(r.Members)
	}
}

func (a *admin) room(c redcon.Conn, args [][]byte) {
	if len(args) == 2 {
		c.WriteError("ERR wrong number of arguments for 'room' command")
		return
	}
	offset, ok := intArg(c, args[1:], 0, 0)
	if !ok {
		return
	}
	limit, ok := intArg(c, args[1:], 1, defaultRoomPageLimit)
	if !ok {
		return
	}
	_, members := a.srv.RoomMembers(string(args[0]), offset, limit)
	c.WriteArray(2 * len(members))
	for _, m := range members {
		c.WriteBulkString(m.ConnID)
		c.WriteBulkString(m.UID)
	}
}

func (a *admin) user(c redcon.Conn, args [][]byte) {
	var b strings.Builder
	for _, in := range a.srv.UserSessions(string(args[0])) {
		b.WriteString(clientLine(in))
	}
	c.WriteBulkString(b.String())
}

func (a *admin) kick(c redcon.Conn, args [][]byte) {
	target := string(args[0])
	var words []string
	for _, w := range args[1:] {
		words = append(words, string(w))
	}
	n := a.srv.Kick(target, strings.Join(words, " "))
	if a.srv.relay != nil {
		a.srv.relay.RelayKick(target, strings.Join(words, " "))
	}
	a.srv.log.Info("admin: kick", "target", target, "kicked", n, "addr", c.RemoteAddr())
	c.WriteInt(n)
}

func (a *admin) push(c redcon.Conn, args [][]byte) {
	p := proto.Push{Payload: args[1]}
	if err := a.srv.checkPush(p); err != nil {
		c.WriteError("ERR " + err.Error())
		return
	}
	c.WriteInt(a.srv.PushUser(string(args[0]), p))
	if a.srv.relay != nil {
		a.srv.relay.RelayUsers([]string{string(args[0])}, p)
	}
}

func (a *admin) roomPush(c redcon.Conn, args [][]byte) {
	room := string(args[0])
	p := proto.Push{Topic: args[0], Payload: args[1]}
	if err := proto.CheckName(p.Topic); err != nil {
		c.WriteError("ERR room name: " + err.Error())
		return
	}
	if err := a.srv.checkPush(p); err != nil {
		c.WriteError("ERR " + err.Error())
		return
	}
	c.WriteInt(a.srv.PushRoom(room, p))
	if a.srv.relay != nil {
		a.srv.relay.RelayRoom(room, p)
	}
}

func (a *admin) broadcast(c redcon.Conn, args [][]byte) {
	p := proto.Push{Payload: args[0]}
	if err := a.srv.checkPush(p); err != nil {
		c.WriteError("ERR " + err.Error())
		return
	}
	c.WriteInt(a.srv.PushAll(p))
	if a.srv.relay != nil {
		a.srv.relay.RelayAll(p)
	}
}

func (a *admin) join(c redcon.Conn, args [][]byte) {
	uid, room := string(args[0]), string(args[1])
	n, err := a.srv.JoinUser(uid, room)
	if err != nil {
		c.WriteError("ERR " + err.Error())
		return
	}
	a.srv.log.Info("admin: join", "uid", uid, "room", room, "joined", n, "addr", c.RemoteAddr())
	c.WriteInt(n)
}

func (a *admin) leave(c redcon.Conn, args [][]byte) {
	uid, room := string(args[0]), string(args[1])
	n := a.srv.LeaveUser(uid, room)
	a.srv.log.Info("admin: leave", "uid", uid, "room", room, "left", n, "addr", c.RemoteAddr())
	c.WriteInt(n)
}

func (a *admin) config(c redcon.Conn, args [][]byte) {
	sub := strings.ToLower(string(args[0]))
	switch sub {
	case "get":
		if len(args) < 2 {
			c.WriteError("ERR wrong number of arguments for 'config|get' command")
			return
		}
		var out []configEntry
		for _, e := range a.srv.configEntries() {
			for _, pat := range args[1:] {
				if ok, err := path.Match(strings.ToLower(string(pat)), e.name); err != nil {
					c.WriteError(fmt.Sprintf("ERR bad pattern '%s'", pat))
					return
				} else if ok {
					out = append(out, e)
					break
				}
			}
		}
		c.WriteArray(2 * len(out))
		for _, e := range out {
			c.WriteBulkString(e.name)
			c.WriteBulkString(e.value)
		}
	case "set", "rewrite", "resetstat":
		c.WriteError(fmt.Sprintf("ERR CONFIG %s is not supported: the configuration is read at start", strings.ToUpper(sub)))
	default:
		c.WriteError(fmt.Sprintf("ERR unknown subcommand '%s'. Try CONFIG GET.", args[0]))
	}
}

// configEntry is one CONFIG GET name and value.
type configEntry struct{ name, value string }

// configEntries lists the effective configuration under the TOML key names,
// flattened: transport settings under their own names (max_frame), fan-out
// settings with a broadcast_ prefix, auth settings with auth_. Secrets are
// never shown: admin_password says only whether one is set, and keys are
// listed by id and algorithm.
func (s *Server) configEntries() []configEntry {
	c := s.cfg
	tc := c.Transport
	if s.engine != nil {
		tc = s.engine.Config()
	}
	bc := s.hub.Config()
	redact := func(secret string) string {
		if secret != "" {
			return "(set)"
		}
		return ""
	}
	var keys []string
	for _, k := range s.auth.Load().cfg.Keys {
		keys = append(keys, k.ID+":"+k.Alg)
	}
	itoa := strconv.Itoa
	dur := func(d time.Duration) string { return d.String() }
	return []configEntry{
		{"node_id", c.NodeID},
		{"data_dir", c.DataDir},
		{"listen", strings.Join(c.Listen, ",")},
		{"tls_cert", c.TLSCert},
		{"tls_key", c.TLSKey},
		{"admin_addr", c.AdminAddr},
		{"admin_password", redact(c.AdminPassword)},
		{"http_addr", c.HTTPAddr},
		{"http_token", redact(c.HTTPToken)},
		{"auth_timeout", dur(c.AuthTimeout)},
		{"heartbeat_interval", dur(time.Duration(s.heartbeat.Load()))},
		{"max_rooms_per_conn", itoa(int(s.maxRoomsPerConn.Load()))},
		{"max_conns_per_user", itoa(int(s.maxConnsPerUser.Load()))},
		{"drain_timeout", dur(c.DrainTimeout)},
		{"echo_svid", strconv.FormatUint(uint64(c.EchoSVID), 10)},
		{"auth_keys", strings.Join(keys, ",")},
		{"auth_leeway", dur(c.Auth.Leeway)},
		{"auth_issuer", c.Auth.Issuer},
		{"auth_audience", c.Auth.Audience},
		{"loops", itoa(tc.Loops)},
		{"max_frame", itoa(tc.MaxFrame)},
		{"queue_bytes", itoa(tc.QueueBytes)},
		{"send_buffer", itoa(tc.SendBuffer)},
		{"read_buffer", itoa(tc.ReadBuffer)},
		{"stream_read_buffer", itoa(tc.StreamReadBuffer)},
		{"ws_path", tc.WSPath},
		{"ws_origins", strings.Join(tc.WSOrigins, ",")},
		{"handshake_timeout", dur(tc.HandshakeTimeout)},
		{"write_timeout", dur(tc.WriteTimeout)},
		{"linger", dur(tc.Linger)},
		{"quic_idle_timeout", dur(tc.QUICIdleTimeout)},
		{"quic_receive_window", itoa(tc.QUICReceiveWindow)},
		{"quic_0rtt", strconv.FormatBool(!tc.QUICDisable0RTT)},
		{"broadcast_workers", itoa(bc.Workers)},
		{"broadcast_shards", itoa(bc.Shards)},
		{"broadcast_small_room", itoa(bc.SmallRoom)},
		{"broadcast_queue_len", itoa(bc.QueueLen)},
		{"broadcast_max_batch", itoa(bc.MaxBatch)},
		{"broadcast_max_batch_bytes", itoa(bc.MaxBatchBytes)},
	}
}

// intArg parses args[i] as a non-negative integer, or returns def when
// args has no element i; on a bad value it writes the error.
func intArg(c redcon.Conn, args [][]byte, i, def int) (int, bool) {
	if i >= len(args) {
		return def, true
	}
	n, err := strconv.Atoi(string(args[i]))
	if err != nil || n < 0 {
		c.WriteError("ERR value is not an integer or out of range")
		return 0, false
	}
	return n, true
}
