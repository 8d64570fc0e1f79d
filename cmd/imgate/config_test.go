package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"imgate/gateway"
)

// The shipped example must load as is: every key in it is one the loader
// knows (unknown keys are refused).
func TestExampleConfigLoads(t *testing.T) {
	cfg := gateway.DefaultConfig()
	if err := loadFile(filepath.Join("..", "..", "docs", "imgate.example.toml"), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.NodeID != "edge-1" || cfg.HeartbeatInterval != 30*time.Second || cfg.Transport.QUICIdleTimeout != 90*time.Second || len(cfg.Listen) != 4 {
		t.Fatalf("example not applied: %+v", cfg)
	}
	if cfg.Transport.QUICReceiveWindow != 262144 || cfg.Transport.QUICDisable0RTT {
		t.Fatalf("example's QUIC settings not applied: %+v", cfg.Transport)
	}
	path := filepath.Join(t.TempDir(), "off.toml")
	os.WriteFile(path, []byte("[transport]\nquic_0rtt = false\n"), 0o600)
	if err := loadFile(path, &cfg); err != nil || !cfg.Transport.QUICDisable0RTT {
		t.Fatalf("quic_0rtt = false: %v, disabled %v", err, cfg.Transport.QUICDisable0RTT)
	}
}

// Layers: defaults < file < environment < flags.
func TestConfigLayers(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.toml")
	os.WriteFile(path, []byte("node_id = \"from-file\"\nmax_rooms_per_conn = 7\nheartbeat_interval = \"12s\"\n"), 0o600)
	t.Setenv("IMGATE_MAX_ROOMS", "9")
	t.Setenv("IMGATE_NODE", "from-env")
	cfg, _, err := loadConfig("gateway", []string{"--config", path, "--node", "from-flag"}, gateway.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NodeID != "from-flag" || cfg.MaxRoomsPerConn != 9 || cfg.HeartbeatInterval != 12*time.Second {
		t.Fatalf("layers: node %q rooms %d heartbeat %v", cfg.NodeID, cfg.MaxRoomsPerConn, cfg.HeartbeatInterval)
	}
	if _, _, err := loadConfig("gateway", []string{"--max-rooms", "many"}, gateway.DefaultConfig()); err == nil {
		t.Fatal("a bad flag value must be an error")
	}
	os.WriteFile(path, []byte("no_such_key = 1\n"), 0o600)
	if _, _, err := loadConfig("gateway", []string{"--config", path}, gateway.DefaultConfig()); err == nil {
		t.Fatal("an unknown key must be an error")
	}
}
