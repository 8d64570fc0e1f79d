package route

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
	"os"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"imgate/cluster"
	"imgate/proto"
)

// Daemon is one Route daemon.
type Daemon struct {
	cfg    Config
	nc     *nats.Conn
	prefix string
	log    *slog.Logger
	pusher *cluster.Pusher

	bridges  []*bridge
	announce *nats.Subscription

	mu        sync.Mutex
	backends  map[uint32]map[string]heardBackend // svid -> instance
	httpAddr  string
	closeHTTP func() error
}

type heardBackend struct {
	cluster.Announcement
	heard time.Time
}

// New builds a daemon on the bus paths, under prefix ("" = "imgate"):
// bridges serve on the primary path, pushes go out on the active one.
func New(cfg Config, paths *cluster.Paths, prefix string, log *slog.Logger) (*Daemon, error) {
	nc := paths.Primary()
	if log == nil {
		log = slog.Default()
	}
	if cfg.Instance == "" {
		host, _ := os.Hostname()
		cfg.Instance = fmt.Sprintf("route@%s/%d", host, os.Getpid())
	}
	d := &Daemon{
		cfg: cfg, nc: nc, prefix: prefix, log: log.With("component", "route"),
		pusher:   cluster.NewPathPusher(paths, prefix),
		backends: make(map[uint32]map[string]heardBackend),
	}
	seen := map[uint32]bool{}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute}}
	for _, b := range cfg.Bridges {
		if b.SVID == 0 || b.URL == "" {
			return nil, fmt.Errorf("route: bridge needs an svid and a url: %+v", b)
		}
		if seen[b.SVID] {
			return nil, fmt.Errorf("route: svid %d bridged twice", b.SVID)
		}
		seen[b.SVID] = true
		d.bridges = append(d.bridges, newBridge(b, client))
	}
	return d, nil
}

// Start subscribes the bridged SVIDs and opens the HTTP API.
func (d *Daemon) Start() error {
	sub, err := d.nc.Subscribe(cluster.NewSubjects(d.prefix).Backends(), d.onAnnouncement)
	if err != nil {
		return err
	}
	d.announce = sub
	for _, b := range d.bridges {
		be, err := cluster.ServeSVIDMsg(d.nc, d.prefix, b.cfg.SVID, d.cfg.Instance, "http", b.onRequest, b.healthy)
		if err != nil {
			d.Close()
			return fmt.Errorf("route: svid %d: %w", b.cfg.SVID, err)
		}
		b.backend = be
		d.log.Info("route: bridging", "svid", b.cfg.SVID, "url", b.cfg.URL)
	}
	if d.cfg.HTTPAddr != "" {
		if err := d.serveHTTP(); err != nil {
			d.Close()
			return err
		}
		d.log.Info("route: http api", "addr", d.HTTPAddr())
	}
	return nil
}

// HTTPAddr is the bound API address.
func (d *Daemon) HTTPAddr() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.httpAddr
}

// Close stops serving; answers in flight still go out.
func (d *Daemon) Close() error {
	for _, b := range d.bridges {
		if b.backend != nil {
			b.backend.Close()
		}
	}
	if d.announce != nil {
		d.announce.Unsubscribe()
	}
	d.mu.Lock()
	closeHTTP := d.closeHTTP
	d.closeHTTP = nil
	d.mu.Unlock()
	if closeHTTP != nil {
		return closeHTTP()
	}
	return nil
}

func (d *Daemon) onAnnouncement(m *nats.Msg) {
	var a cluster.Announcement
	if json.Unmarshal(m.Data, &a) != nil || a.SVID == 0 || a.Instance == "" {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	by := d.backends[a.SVID]
	if by == nil {
		by = make(map[string]heardBackend)
		d.backends[a.SVID] = by
	}
	by[a.Instance] = heardBackend{a, time.Now()}
}

// SVIDStatus is one SVID in /svids.
type SVIDStatus struct {
	SVID     uint32          `json:"svid"`
	Live     bool            `json:"live"` // at least one healthy backend announced itself recently
	Backends []BackendStatus `json:"backends"`
	Bridge   *BridgeStatus   `json:"bridge,omitempty"`
}

// BackendStatus is one announcing backend.
type BackendStatus struct {
	Instance string `json:"instance"`
	Kind     string `json:"kind"`
	Healthy  bool   `json:"healthy"`
	AgeMS    int64  `json:"age_ms"`
}

// BridgeStatus is this daemon's bridge of an SVID.
type BridgeStatus struct {
	URL      string `json:"url"`
	Circuit  string `json:"circuit"`
	Failures int    `json:"consecutive_failures"`
	InFlight int64  `json:"in_flight"`
	Served   uint64 `json:"served"`
	Failed   uint64 `json:"failed"`
	Refused  uint64 `json:"refused"`
}

// SVIDs reports every SVID with a backend heard within three announcement
// intervals, and this daemon's bridges.
func (d *Daemon) SVIDs() []SVIDStatus {
	now := time.Now()
	out := map[uint32]*SVIDStatus{}
	get := func(svid uint32) *SVIDStatus {
		if out[svid] == nil {
			out[svid] = &SVIDStatus{SVID: svid, Backends: []BackendStatus{}}
		}
		return out[svid]
	}
	d.mu.Lock()
	for svid, by := range d.backends {
		for inst, hb := range by {
			age := now.Sub(hb.heard)
			if age > 3*cluster.AnnounceInterval {
				delete(by, inst)
				continue
			}
			s := get(svid)
			s.Backends = append(s.Backends, BackendStatus{Instance: inst, Kind: hb.Kind, Healthy: hb.Healthy, AgeMS: age.Milliseconds()})
			s.Live = s.Live || hb.Healthy
		}
	}
	d.mu.Unlock()
	for _, b := range d.bridges {
		st, streak := b.breaker.current()
		s := get(b.cfg.SVID)
		s.Bridge = &BridgeStatus{URL: b.cfg.URL, Circuit: st.String(), Failures: streak, InFlight: b.inFlight.Load(),
			Served: b.served.Load(), Failed: b.failed.Load(), Refused: b.refused.Load()}
	}
	list := make([]SVIDStatus, 0, len(out))
	for _, s := range out {
		sort.Slice(s.Backends, func(i, j int) bool { return s.Backends[i].Instance < s.Backends[j].Instance })
		list = append(list, *s)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].SVID < list[j].SVID })
	return list
}

// The HTTP API:
//
//	POST /push/user   {"uid", payload}         -> {"published": 1}
//	POST /push/users  {"uids": [...], payload} -> {"published": n}
//	POST /push/room   {"room", payload}        -> {"published": 1}
//	POST /push/all    {payload}                -> {"published": 1}
//	POST /kick        {"target", "reason"}     -> {"published": 1}
//	POST /room/join   {"uid", "room"}          -> {"published": 1}
//	POST /room/leave  {"uid", "room"}          -> {"published": 1}
//	GET  /svids                                -> {"svids": [SVIDStatus]}
//	GET  /healthz                              200 while connected to the bus, else 503
//	GET  /metrics                              Prometheus: imgate_route_* per SVID
//
// payload is "payload" (text) or "payload_b64", with optional "conv_id" and
// "seq". Publishing does not wait for delivery: "published" counts messages
// handed to NATS, not connections reached.
func (d *Daemon) serveHTTP() error {
	ln, err := net.Listen("tcp", d.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("route http: %w", err)
	}
	mux := http.NewServeMux()
	api := func(pattern string, fn http.HandlerFunc) { mux.Handle(pattern, d.requireToken(fn)) }
	api("POST /push/user", d.push(func(r *pushRequest, m cluster.Message) (int, error) {
		return 1, d.pusher.User(r.UID, m)
	}))
	api("POST /push/users", d.push(func(r *pushRequest, m cluster.Message) (int, error) {
		if len(r.UIDs) == 0 {
			return 0, errBad("uids is required")
		}
		return len(r.UIDs), d.pusher.Users(r.UIDs, m)
	}))
	api("POST /push/room", d.push(func(r *pushRequest, m cluster.Message) (int, error) {
		return 1, d.pusher.Room(r.Room, m)
	}))
	api("POST /push/all", d.push(func(r *pushRequest, m cluster.Message) (int, error) {
		return 1, d.pusher.All(m)
	}))
	api("POST /kick", d.control(func(r *controlRequest) error { return d.pusher.Kick(r.Target, r.Reason) }))
	api("POST /room/join", d.control(func(r *controlRequest) error { return d.pusher.Join(r.UID, r.Room) }))
	api("POST /room/leave", d.control(func(r *controlRequest) error { return d.pusher.Leave(r.UID, r.Room) }))
	api("GET /svids", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"svids": d.SVIDs()})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.registry(), promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if !d.nc.IsConnected() {
			http.Error(w, "bus unreachable", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
		ErrorLog: slog.NewLogLogger(d.log.Handler(), slog.LevelWarn)}
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("route http stopped", "err", err)
		}
	}()
	d.mu.Lock()
	d.httpAddr = ln.Addr().String()
	d.closeHTTP = func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err := hs.Shutdown(ctx)
		<-served
		return err
	}
	d.mu.Unlock()
	return nil
}

func (d *Daemon) requireToken(next http.HandlerFunc) http.Handler {
	want := []byte("Bearer " + d.cfg.HTTPToken)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.cfg.HTTPToken != "" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong bearer token"})
			return
		}
		next(w, r)
	})
}

type pushRequest struct {
	UID        string   `json:"uid"`
	UIDs       []string `json:"uids"`
	Room       string   `json:"room"`
	Payload    *string  `json:"payload"`
	PayloadB64 *string  `json:"payload_b64"`
	ConvID     uint64   `json:"conv_id"`
	Seq        uint64   `json:"seq"`
}

type controlRequest struct {
	Target string `json:"target"`
	Reason string `json:"reason"`
	UID    string `json:"uid"`
	Room   string `json:"room"`
}

type badRequest string

func (e badRequest) Error() string { return string(e) }
func errBad(msg string) error      { return badRequest(msg) }

func (d *Daemon) push(publish func(*pushRequest, cluster.Message) (int, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req pushRequest
		if !decodeJSON(w, r, &req) {
			return
		}
		m := cluster.Message{ConvID: req.ConvID, Seq: req.Seq}
		switch {
		case req.Payload != nil && req.PayloadB64 != nil:
			httpError(w, http.StatusBadRequest, "give payload or payload_b64, not both")
			return
		case req.Payload != nil:
			m.Payload = []byte(*req.Payload)
		case req.PayloadB64 != nil:
			b, err := base64.StdEncoding.DecodeString(*req.PayloadB64)
			if err != nil {
				httpError(w, http.StatusBadRequest, "payload_b64: "+err.Error())
				return
			}
			m.Payload = b
		default:
			httpError(w, http.StatusBadRequest, "payload or payload_b64 is required")
			return
		}
		if len(m.Payload)+proto.HeaderSize+proto.PushOverhead+len(req.Room) > proto.DefaultMaxFrame {
			httpError(w, http.StatusBadRequest, fmt.Sprintf("push over the default max_frame of %d bytes", proto.DefaultMaxFrame))
			return
		}
		n, err := publish(&req, m)
		d.answer(w, n, err)
	}
}

func (d *Daemon) control(publish func(*controlRequest) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req controlRequest
		if !decodeJSON(w, r, &req) {
			return
		}
		d.answer(w, 1, publish(&req))
	}
}

func (d *Daemon) answer(w http.ResponseWriter, n int, err error) {
	var bad badRequest
	switch {
	case errors.As(err, &bad), errors.Is(err, cluster.ErrBadName):
		httpError(w, http.StatusBadRequest, err.Error())
	case err != nil:
		httpError(w, http.StatusServiceUnavailable, err.Error())
	default:
		writeJSON(w, http.StatusOK, map[string]int{"published": n})
	}
}

func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		httpError(w, http.StatusBadRequest, "bad JSON: "+err.Error())
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func httpError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
