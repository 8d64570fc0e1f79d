package gateway

import (
	"errors"
	"fmt"
)

// Reload applies the settings that can change on a live node from cfg (a
// freshly loaded configuration): the auth keys (their files are read
// again, so a rotated key file takes effect), max_conns_per_user,
// max_rooms_per_conn and heartbeat_interval. Everything else in cfg is
// ignored: listeners, buffers and the rest need a restart. On an error
// nothing changes. Connections already authenticated stay; a lowered limit
// applies to the next AUTH or JOIN, and a new heartbeat interval to the
// connections that authenticate after it (each is held to the interval its
// AUTH_OK announced).
func (s *Server) Reload(cfg Config) error {
	cfg = cfg.withDefaults()
	auth, err := NewAuthenticator(cfg.Auth)
	if errors.Is(err, ErrNoKeys) {
		key, kerr := DefaultDevKey(s.cfg.DataDir)
		if kerr != nil {
			return fmt.Errorf("reload: auth: no keys configured and no dev key: %w", kerr)
		}
		cfg.Auth.Keys = []KeyConfig{key}
		auth, err = NewAuthenticator(cfg.Auth)
	}
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	s.auth.Store(auth)
	s.heartbeat.Store(int64(cfg.HeartbeatInterval))
	s.maxConnsPerUser.Store(int64(cfg.MaxConnsPerUser))
	s.maxRoomsPerConn.Store(int64(cfg.MaxRoomsPerConn))
	s.log.Info("reloaded", "auth_keys", len(cfg.Auth.Keys), "max_conns_per_user", cfg.MaxConnsPerUser, "max_rooms_per_conn", cfg.MaxRoomsPerConn, "heartbeat_interval", cfg.HeartbeatInterval)
	return nil
}
