package gateway

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"imgate/proto"
)

// The HTTP API takes JSON and answers JSON; errors are {"error": "..."} with
// 400 for a bad request (malformed JSON, unknown or missing fields), 404 for
// an unknown connection id, 413 for a body over maxRequestBody.
//
//	POST /push/user   {"uid", payload}            -> {"delivered": n}
//	POST /push/users  {"uids": [...], payload}    -> {"delivered": n}
//	POST /push/room   {"room", payload}           -> {"delivered": n}
//	POST /push/all    {payload}                   -> {"delivered": n}
//	POST /kick        {"target": uid|conn_id, "reason"} -> {"kicked": n}
//	POST /room/join   {"uid", "room"}             -> {"joined": n}
//	POST /room/leave  {"uid", "room"}             -> {"left": n}
//	GET  /count                                   -> {"connections", "users", "rooms", "by_transport"}
//	GET  /rooms?limit=100                         -> {"rooms": [{"name", "members"}], "total": n}
//	GET  /room?name=r&offset=0&limit=100          -> {"room", "members": n, "sessions": [SessionInfo]}
//	GET  /session?uid=u | ?conn=<conn_id>         -> {"uid", "sessions": [SessionInfo]}
//	GET  /healthz  200 while the process runs
//	GET  /readyz   200 while every listener is up and the node is neither draining nor shutting down, else 503
//	GET  /metrics  Prometheus
//
// payload is "payload" (UTF-8 text) or "payload_b64" (standard base64), plus
// optional "conv_id" and "seq" for pushes inside a conversation.

// maxRequestBody bounds a request body.
const maxRequestBody = 1 << 20

const (
	defaultHTTPRoomsLimit = 100
	defaultHTTPPageLimit  = 100
)

// serveHTTP starts the HTTP API.
func (s *Server) serveHTTP(addr string) (closer func() error, bound string, err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	hs := &http.Server{
		Handler:           s.httpHandler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http api stopped", "err", err)
		}
	}()
	closer = func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err := hs.Shutdown(ctx)
		if err != nil {
			// Requests still running after the grace period are cut.
			err = hs.Close()
		}
		<-served
		return err
	}
	return closer, ln.Addr().String(), nil
}

// HTTPAddr is the HTTP API's bound address ("" when it is off or Start has
// not run).
func (s *Server) HTTPAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.httpAddr
}

func (s *Server) httpHandler() http.Handler {
	mux := http.NewServeMux()
	api := func(pattern string, fn http.HandlerFunc) { mux.Handle(pattern, s.requireToken(fn)) }
	api("POST /push/user", s.httpPushUser)
	api("POST /push/users", s.httpPushUsers)
	api("POST /push/room", s.httpPushRoom)
	api("POST /push/all", s.httpPushAll)
	api("POST /kick", s.httpKick)
	api("POST /room/join", s.httpJoin)
	api("POST /room/leave", s.httpLeave)
	api("GET /count", s.httpCount)
	api("GET /rooms", s.httpRooms)
	api("GET /room", s.httpRoom)
	api("GET /session", s.httpSession)
	for _, r := range s.extraHTTP {
		if r.public {
			mux.HandleFunc(r.pattern, r.handler)
		} else {
			api(r.pattern, r.handler)
		}
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", s.httpReady)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	// Profiles, for finding where the time goes under load (behind the
	// bearer token like the rest of the API).
	api("GET /debug/pprof/", pprof.Index)
	api("GET /debug/pprof/profile", pprof.Profile)
	api("GET /debug/pprof/symbol", pprof.Symbol)
	api("GET /debug/pprof/trace", pprof.Trace)
	return mux
}

// requireToken guards the API (not health or metrics) with
// "Authorization: Bearer <HTTPToken>" when a token is configured: anyone who
// reaches the API can push and kick.
func (s *Server) requireToken(next http.HandlerFunc) http.Handler {
	want := []byte("Bearer " + s.cfg.HTTPToken)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.HTTPToken != "" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="imgate"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong bearer token"})
			return
		}
		next(w, r)
	})
}

// pushRequest is the body of the /push/* endpoints; each uses the target
// fields it needs.
type pushRequest struct {
	UID        string   `json:"uid"`
	UIDs       []string `json:"uids"`
	Room       string   `json:"room"`
	Payload    *string  `json:"payload"`
	PayloadB64 *string  `json:"payload_b64"`
	ConvID     uint64   `json:"conv_id"`
	Seq        uint64   `json:"seq"`
}

// pushOf builds the Push the request describes.
func (s *Server) pushOf(req *pushRequest, topic string) (proto.Push, error) {
	p := proto.Push{ConvID: req.ConvID, Seq: req.Seq, Topic: []byte(topic)}
	switch {
	case req.Payload != nil && req.PayloadB64 != nil:
		return p, errors.New("give payload or payload_b64, not both")
	case req.Payload != nil:
		p.Payload = []byte(*req.Payload)
	case req.PayloadB64 != nil:
		b, err := base64.StdEncoding.DecodeString(*req.PayloadB64)
		if err != nil {
			return p, fmt.Errorf("payload_b64: %w", err)
		}
		p.Payload = b
	default:
		return p, errors.New("payload or payload_b64 is required")
	}
	return p, s.checkPush(p)
}

type deliveredResponse struct {
	Delivered int `json:"delivered"`
}

func (s *Server) httpPushUser(w http.ResponseWriter, r *http.Request) {
	var req pushRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if req.UID == "" {
		httpError(w, http.StatusBadRequest, "uid is required")
		return
	}
	p, err := s.pushOf(&req, "")
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, deliveredResponse{s.PushUser(req.UID, p)})
	if s.relay != nil {
		s.relay.RelayUsers([]string{req.UID}, p)
	}
}

func (s *Server) httpPushUsers(w http.ResponseWriter, r *http.Request) {
	var req pushRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if len(req.UIDs) == 0 {
		httpError(w, http.StatusBadRequest, "uids is required")
		return
	}
	p, err := s.pushOf(&req, "")
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, deliveredResponse{s.PushUsers(req.UIDs, p)})
	if s.relay != nil {
		s.relay.RelayUsers(req.UIDs, p)
	}
}

func (s *Server) httpPushRoom(w http.ResponseWriter, r *http.Request) {
	var req pushRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if err := proto.CheckName([]byte(req.Room)); err != nil {
		httpError(w, http.StatusBadRequest, "room: "+err.Error())
		return
	}
	p, err := s.pushOf(&req, req.Room)
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, deliveredResponse{s.PushRoom(req.Room, p)})
	if s.relay != nil {
		s.relay.RelayRoom(req.Room, p)
	}
}

func (s *Server) httpPushAll(w http.ResponseWriter, r *http.Request) {
	var req pushRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	p, err := s.pushOf(&req, "")
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, deliveredResponse{s.PushAll(p)})
	if s.relay != nil {
		s.relay.RelayAll(p)
	}
}

func (s *Server) httpKick(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Target string `json:"target"`
		Reason string `json:"reason"`
	}
	if !decodeJSON(w, r, &req) {
		return
	}
	if req.Target == "" {
		httpError(w, http.StatusBadRequest, "target is required")
		return
	}
	n := s.Kick(req.Target, req.Reason)
	if s.relay != nil {
		s.relay.RelayKick(req.Target, req.Reason)
	}
	s.log.Info("http: kick", "target", req.Target, "kicked", n, "addr", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]int{"kicked": n})
}

type membershipRequest struct {
	UID  string `json:"uid"`
	Room string `json:"room"`
}

func decodeMembership(w http.ResponseWriter, r *http.Request) (membershipRequest, bool) {
	var req membershipRequest
	if !decodeJSON(w, r, &req) {
		return req, false
	}
	if req.UID == "" || req.Room == "" {
		httpError(w, http.StatusBadRequest, "uid and room are required")
		return req, false
	}
	return req, true
}

func (s *Server) httpJoin(w http.ResponseWriter, r *http.Request) {
	req, ok := decodeMembership(w, r)
	if !ok {
		return
	}
	n, err := s.JoinUser(req.UID, req.Room)
	if err != nil {
		// A bad name or the room limit: the caller's to fix.
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"joined": n})
}

func (s *Server) httpLeave(w http.ResponseWriter, r *http.Request) {
	req, ok := decodeMembership(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"left": s.LeaveUser(req.UID, req.Room)})
}

func (s *Server) httpCount(w http.ResponseWriter, r *http.Request) {
	conns, users, rooms := s.Counts()
	writeJSON(w, http.StatusOK, struct {
		Connections int            `json:"connections"`
		Users       int            `json:"users"`
		Rooms       int            `json:"rooms"`
		ByTransport map[string]int `json:"by_transport"`
	}{conns, users, rooms, s.ConnsByTransport()})
}

func (s *Server) httpRooms(w http.ResponseWriter, r *http.Request) {
	limit, ok := queryInt(w, r, "limit", defaultHTTPRoomsLimit)
	if !ok {
		return
	}
	type room struct {
		Name    string `json:"name"`
		Members int    `json:"members"`
	}
	list := s.hub.Rooms(limit)
	out := make([]room, len(list))
	for i, ri := range list {
		out[i] = room{ri.Name, ri.Members}
	}
	writeJSON(w, http.StatusOK, struct {
		Rooms []room `json:"rooms"`
		Total int    `json:"total"`
	}{out, s.hub.RoomCount()})
}

func (s *Server) httpRoom(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	if name == "" {
		httpError(w, http.StatusBadRequest, "name is required")
		return
	}
	offset, ok := queryInt(w, r, "offset", 0)
	if !ok {
		return
	}
	limit, ok := queryInt(w, r, "limit", defaultHTTPPageLimit)
	if !ok {
		return
	}
	total, members := s.RoomMembers(name, offset, limit)
	if members == nil {
		members = []SessionInfo{}
	}
	writeJSON(w, http.StatusOK, struct {
		Room     string        `json:"room"`
		Members  int           `json:"members"`
		Sessions []SessionInfo `json:"sessions"`
	}{name, total, members})
}

func (s *Server) httpSession(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	uid, conn := q.Get("uid"), q.Get("conn")
	var sessions []SessionInfo
	switch {
	case uid != "" && conn != "":
		httpError(w, http.StatusBadRequest, "give uid or conn, not both")
		return
	case conn != "":
		id, ok := ParseConnID(conn)
		if !ok {
			httpError(w, http.StatusBadRequest, "conn must be a 16-hex-digit connection id")
			return
		}
		in, ok := s.Session(id)
		if !ok {
			httpError(w, http.StatusNotFound, "no connection "+conn+" on this node")
			return
		}
		uid, sessions = in.UID, []SessionInfo{in}
	case uid != "":
		sessions = s.UserSessions(uid)
	default:
		httpError(w, http.StatusBadRequest, "uid or conn is required")
		return
	}
	if sessions == nil {
		sessions = []SessionInfo{}
	}
	writeJSON(w, http.StatusOK, struct {
		UID      string        `json:"uid"`
		Sessions []SessionInfo `json:"sessions"`
	}{uid, sessions})
}

// httpReady answers 200 once every configured listener is open and until
// Close begins, so that a load balancer stops sending new clients to a node
// that is going away.
func (s *Server) httpReady(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.stop:
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	default:
	}
	if s.draining.Load() {
		http.Error(w, "draining", http.StatusServiceUnavailable)
		return
	}
	if up, want := len(s.Listeners()), len(s.cfg.Listen); up < want {
		http.Error(w, fmt.Sprintf("%d of %d listeners up", up, want), http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ready\n")
}

// decodeJSON reads one JSON object from a body of at most maxRequestBody
// bytes into v, refusing unknown fields so that a misspelt field is an error
// rather than a silent default. It answers the request itself on failure.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("trailing data after the JSON object")
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httpError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", tooBig.Limit))
			return false
		}
		httpError(w, http.StatusBadRequest, "bad JSON: "+err.Error())
		return false
	}
	return true
}

// queryInt reads a non-negative integer query parameter.
func queryInt(w http.ResponseWriter, r *http.Request, name string, def int) (int, bool) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		httpError(w, http.StatusBadRequest, name+" must be a non-negative integer")
		return 0, false
	}
	return n, true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func httpError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
