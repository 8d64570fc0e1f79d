package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/pelletier/go-toml/v2"

	"imgate/gateway"
)

// Signals, as systemd drives them (systemd/imgate.service):
//
//	SIGTERM  drain: listeners close, /readyz 503, clients closed with
//	         SHUTDOWN spread over drain_timeout, then exit (a second
//	         SIGTERM or a SIGINT exits at once)
//	SIGINT   close at once (Ctrl-C in a terminal)
//	SIGHUP   re-read the config: auth keys, max_conns_per_user,
//	         max_rooms_per_conn, log_level
//
// An admin DRAIN ends the process the same way when the drain is over.

// newLogger builds the process logger from --log-level (which wins when
// given on the command line or in IMGATE_LOG_LEVEL) and the config file's
// log_level and log_format. The level is a LevelVar so SIGHUP can change it.
func newLogger(args []string, flagLevel string) (*slog.Logger, *slog.LevelVar, error) {
	level, format := fileLogSettings(configPath(args))
	if flagGiven(args, "log-level") || os.Getenv("IMGATE_LOG_LEVEL") != "" || level == "" {
		level = flagLevel
	}
	lv := new(slog.LevelVar)
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, nil, fmt.Errorf("log level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), lv, nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), lv, nil
	}
	return nil, nil, fmt.Errorf("log_format %q: want text or json", format)
}

// fileLogSettings reads log_level and log_format from the config file
// ("" when unset or unreadable: loadConfig has reported the file already).
func fileLogSettings(path string) (level, format string) {
	if path == "" {
		return "", ""
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", ""
	}
	var f struct {
		LogLevel  string `toml:"log_level"`
		LogFormat string `toml:"log_format"`
	}
	toml.Unmarshal(data, &f)
	return f.LogLevel, f.LogFormat
}

// configPath is the --config value in args, or $IMGATE_CONFIG.
func configPath(args []string) string {
	for i, a := range args {
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name != "config" || !strings.HasPrefix(a, "-") {
			continue
		}
		if hasValue {
			return value
		}
		if i+1 < len(args) {
			return args[i+1]
		}
	}
	return os.Getenv("IMGATE_CONFIG")
}

func flagGiven(args []string, name string) bool {
	for _, a := range args {
		if n, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "="); n == name && strings.HasPrefix(a, "-") {
			return true
		}
	}
	return false
}

// serve runs a started server until a signal or a finished drain ends it,
// telling systemd where it stands.
func serve(cmd string, args []string, sys *system, log *slog.Logger, lv *slog.LevelVar) error {
	srv := sys.srv
	if srv == nil {
		return serveDaemon(cmd, args, sys, log)
	}
	base := gateway.DefaultConfig()
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sig)
	status := func() string {
		conns, users, _ := srv.Counts()
		return fmt.Sprintf("STATUS=serving %d connections, %d users on %d listeners", conns, users, len(srv.Listeners()))
	}
	if err := sdNotify("READY=1\n" + status()); err != nil {
		log.Warn("sd_notify", "err", err)
	}
	var watchdog <-chan time.Time
	if d := watchdogInterval(); d > 0 {
		t := time.NewTicker(d)
		defer t.Stop()
		watchdog = t.C
	}
	statusTick := time.NewTicker(10 * time.Second)
	defer statusTick.Stop()
	for {
		select {
		case s := <-sig:
			switch {
			case s == syscall.SIGHUP:
				reload(cmd, args, base, srv, log, lv)
				sys.reloadSteering(cmd, args, log)
				sdNotify(status())
			case s == syscall.SIGTERM && !srv.Draining():
				log.Info("SIGTERM: draining", "period", srv.Config().DrainTimeout)
				sdNotify("STOPPING=1\nSTATUS=draining")
				srv.Drain(0)
			default:
				log.Info("shutting down", "signal", s.String())
				sdNotify("STOPPING=1\nSTATUS=shutting down")
				sys.stop(log)
				return nil
			}
		case <-srv.Drained():
			log.Info("drained: shutting down")
			sdNotify("STOPPING=1\nSTATUS=drained, shutting down")
			sys.stop(log)
			return nil
		case <-watchdog:
			sdNotify("WATCHDOG=1")
		case <-statusTick.C:
			if srv.Draining() {
				conns, _, _ := srv.Counts()
				sdNotify(fmt.Sprintf("STOPPING=1\nSTATUS=draining, %d connections left", conns))
			} else {
				sdNotify(status())
			}
		}
	}
}

// serveDaemon runs a process without a gateway (the route daemon, the
// smart-DNS responder) until SIGINT or SIGTERM. SIGHUP re-reads the [dns]
// section where the responder runs; the route daemon reloads nothing and
// says so, instead of ending as the signal's default action would.
func serveDaemon(cmd string, args []string, sys *system, log *slog.Logger) error {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sig)
	what := "route daemon serving"
	if sys.daemon == nil && sys.dns != nil {
		what = "dns responder serving on " + sys.dns.Addr()
	}
	sdNotify("READY=1\nSTATUS=" + what)
	for {
		s := <-sig
		if s == syscall.SIGHUP {
			if sys.dns == nil {
				log.Info("SIGHUP: this role reloads nothing; restart it to apply a new configuration")
			}
			sys.reloadSteering(cmd, args, log)
			continue
		}
		log.Info("shutting down", "signal", s.String())
		sdNotify("STOPPING=1")
		sys.stop(log)
		return nil
	}
}

// reload re-reads the configuration (file, environment, flags) and applies
// what can change live; a bad file changes nothing.
func reload(cmd string, args []string, base gateway.Config, srv *gateway.Server, log *slog.Logger, lv *slog.LevelVar) {
	cfg, flagLevel, err := loadConfig(cmd, args, base)
	if err == nil {
		err = srv.Reload(cfg)
	}
	if err != nil {
		log.Error("SIGHUP: reload failed; keeping the running configuration", "err", err)
		sdNotify("STATUS=reload failed: " + err.Error())
		return
	}
	level, _ := fileLogSettings(configPath(args))
	if flagGiven(args, "log-level") || os.Getenv("IMGATE_LOG_LEVEL") != "" || level == "" {
		level = flagLevel
	}
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		log.Error("SIGHUP: log level", "err", err)
	}
	log.Info("SIGHUP: configuration reloaded", "log_level", lv.Level().String())
}
