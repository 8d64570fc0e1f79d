package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Embedded is an in-process NATS server with JetStream, the bus of the
// single-binary setup. Components of the same process connect to it without
// a socket (nats.InProcessServer); other processes use its client address.
type Embedded struct {
	srv *server.Server
}

// StartEmbedded starts the server; dataDir holds JetStream's files unless
// cfg.StoreDir says otherwise.
func StartEmbedded(cfg EmbeddedConfig, name, dataDir string, log *slog.Logger) (*Embedded, error) {
	if log == nil {
		log = slog.Default()
	}
	host, port, err := splitListen(cfg.Listen, "127.0.0.1:4222")
	if err != nil {
		return nil, fmt.Errorf("embedded nats listen %q: %w", cfg.Listen, err)
	}
	store := cfg.StoreDir
	if store == "" {
		store = filepath.Join(dataDir, "nats")
	}
	if err := os.MkdirAll(store, 0o700); err != nil {
		return nil, fmt.Errorf("embedded nats store: %w", err)
	}
	opts := &server.Options{
		ServerName: Token(name),
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   store,
		NoSigs:     true,
		MaxPayload: 8 << 20,
	}
	if cfg.ClusterListen != "" {
		ch, cp, err := splitListen(cfg.ClusterListen, "")
		if err != nil {
			return nil, fmt.Errorf("embedded nats cluster listen %q: %w", cfg.ClusterListen, err)
		}
		opts.Cluster = server.ClusterOpts{Name: cfg.ClusterName, Host: ch, Port: cp}
		if opts.Cluster.Name == "" {
			opts.Cluster.Name = "imgate"
		}
		for _, r := range cfg.Routes {
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("embedded nats route %q: %w", r, err)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	srv.SetLoggerV2(natsLogger{log.With("component", "nats-server")}, false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(15 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("embedded nats: not ready after 15s")
	}
	return &Embedded{srv: srv}, nil
}

// ClientURL is where other processes connect.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// Server is the nats-server instance.
func (e *Embedded) Server() *server.Server { return e.srv }

// Close shuts the server down and waits for it.
func (e *Embedded) Close() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// splitListen parses host:port; port 0 asks nats-server for a free port.
func splitListen(addr, def string) (string, int, error) {
	if addr == "" {
		addr = def
	}
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, err
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

// natsLogger sends nats-server's notices and errors to slog (debug and
// trace are off).
type natsLogger struct{ log *slog.Logger }

func (l natsLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l natsLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Debugf(format string, v ...any)  {}
func (l natsLogger) Tracef(format string, v ...any)  {}

// Connect opens a bus connection for a component named name: to cfg.NATS,
// or in-process to embedded when cfg.NATS is empty. It keeps reconnecting
// for ever and, when no server answers at first, returns a connection that
// is still trying (the caller keeps working without the bus meanwhile).
// extra options come last (the gateway adds nats.NoEcho).
func Connect(cfg Config, name string, embedded *Embedded, log *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.Default()
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(cfg.ReconnectWait),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(true),
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(2),
		nats.ReconnectBufSize(16 << 20),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: our own Close
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(natsErrors(log)),
	}
	switch {
	case cfg.CredsFile != "":
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	case cfg.NKeyFile != "":
		o, err := nats.NkeyOptionFromSeed(cfg.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("nats nkey: %w", err)
		}
		opts = append(opts, o)
	case cfg.User != "":
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	case cfg.Token != "":
		opts = append(opts, nats.Token(cfg.Token))
	}
	if cfg.TLSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.TLSCA))
	}
	if cfg.TLSCert != "" {
		opts = append(opts, nats.ClientCert(cfg.TLSCert, cfg.TLSKey))
	}
	opts = append(opts, extra...)
	var url string
	switch {
	case len(cfg.NATS) > 0:
		for i, u := range cfg.NATS {
			if i > 0 {
				url += ","
			}
			url += u
		}
	case embedded != nil:
		opts = append(opts, nats.InProcessServer(embedded.srv))
		url = embedded.ClientURL()
	default:
		return nil, errors.New("cluster: no NATS servers configured and no embedded server")
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("nats connect %s: %w", url, err)
	}
	return nc, nil
}

// natsErrors logs asynchronous NATS errors (slow consumer, permissions) at
// most once a second per kind.
func natsErrors(log *slog.Logger) nats.ErrHandler {
	var last = map[string]time.Time{}
	var mu = make(chan struct{}, 1)
	return func(_ *nats.Conn, sub *nats.Subscription, err error) {
		mu <- struct{}{}
		defer func() { <-mu }()
		k := err.Error()
		if time.Since(last[k]) < time.Second {
			return
		}
		last[k] = time.Now()
		subj := ""
		if sub != nil {
			subj = sub.Subject
		}
		log.Warn("nats async error", "err", err, "subject", subj)
	}
}
