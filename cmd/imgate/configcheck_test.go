package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte(strings.Repeat("k", 40)+"\n"), 0o600)
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("tooshort\n"), 0o600)
	for _, tc := range []struct {
		name string
		toml string
		want []string // substrings, one per expected problem line, in order; none: valid
	}{
		{"empty file", "", nil},
		{"defaults spelled out", "heartbeat_interval = \"30s\"\ndrain_timeout = \"10s\"\nlog_level = \"debug\"\nlog_format = \"json\"\n", nil},
		{"key file readable", "[[auth.keys]]\nid = \"k1\"\nalg = \"HS256\"\nsecret_file = \"" + secret + "\"\n", nil},
		{"syntax", "node_id = = 1\n", []string{":1:11: "}},
		{"unknown keys", "node_id = \"a\"\nnode = \"b\"\n[transport]\nmax_frme = 3\n", []string{":2:1: node: unknown setting", ":4:1: transport.max_frme: unknown setting"}},
		{"type", "max_rooms_per_conn = \"ten\"\n", []string{":1:22: max_rooms_per_conn: cannot decode TOML string"}},
		{"duration", "\nauth_timeout = \"10 sec\"\n", []string{":2:16: auth_timeout: time: unknown unit"}},
		{"negative duration", "drain_timeout = \"-1s\"\n", []string{":1: drain_timeout: -1s: must be positive"}},
		{"scheme", "listen = [\"tcp://:7100\", \"udp://:7102\"]\n", []string{":1: listen[1]: \"udp://:7102\": unknown scheme \"udp\""}},
		{"port", "listen = [\"tcp://:71000\"]\n", []string{"listen[0]: \"tcp://:71000\": port \"71000\""}},
		{"no port", "http_addr = \"localhost\"\n", []string{":1: http_addr: \"localhost\": address localhost: missing port"}},
		{"limits", "max_conns_per_user = -2\n[transport]\nqueue_bytes = -1\n[broadcast]\nworkers = -4\n",
			[]string{":1: max_conns_per_user: -2", ":3: transport.queue_bytes: -1", ":5: broadcast.workers: -4"}},
		{"frame ceiling", "[transport]\nmax_frame = 33554432\n", []string{":2: transport.max_frame: 33554432: over", "transport.queue_bytes"}},
		{"kcp", "[transport]\nkcp_preset = \"turbo\"\nkcp_data_shards = 10\n", []string{":3: transport.kcp_data_shards: FEC needs both", ":2: transport.kcp_preset: \"turbo\""}},
		{"tls pair", "tls_cert = \"/nonexistent/cert.pem\"\n", []string{":1: tls_cert: tls_cert and tls_key go together"}},
		{"key file missing", "[[auth.keys]]\nid = \"a\"\nalg = \"HS256\"\nsecret_file = \"" + secret + "\"\n[[auth.keys]]\nid = \"b\"\nalg = \"HS256\"\nsecret_file = \"/nonexistent/key\"\n",
			[]string{":5: auth.keys[1]: auth key \"b\": read secret_file: open /nonexistent/key"}},
		{"key too short", "[[auth.keys]]\nalg = \"HS256\"\nsecret_file = \"" + short + "\"\n", []string{":1: auth.keys[0]: auth key (no id): HS256 secret is 8 bytes"}},
		{"dns", "[dns]\nzone = \"gw.example.com\"\nhostnames = [\"gw.example.com\", \"push.example.net\"]\nttl = \"2h\"\n" +
			"[[dns.region]]\nname = \"eu\"\ncidrs = [\"10.0.0.0/8\"]\nfallback = [\"us\"]\n[[dns.region]]\nname = \"us\"\ncidrs = [\"10.0.0.0/33\"]\n",
			[]string{":3: dns.hostnames[1]: \"push.example.net.\" is not a name inside zone", ":4: dns.ttl: 2h0m0s: at most 1h0m0s", ":9: dns.region[1]: region \"us\": cidr \"10.0.0.0/33\""}},
		{"dns without a zone", "[dns]\nenabled = true\n[[dns.region]]\nname = \"eu\"\nfallback = [\"ap\"]\n",
			[]string{": dns.zone: required", "dns.region: region \"eu\": fallback \"ap\" is not a region"}},
		{"dns limits", "[dns]\nttl = \"500ms\"\nmax_answers = -1\n", []string{":2: dns.ttl: 500ms: at least 1s", ":3: dns.max_answers: -1: must be positive"}},
		{"dns regions only (HTTPDNS on a gateway)", "[[dns.region]]\nname = \"eu\"\ncidrs = [\"10.0.0.0/8\", \"2001:db8::/32\"]\n", nil},
		{"log settings", "log_level = \"loud\"\nlog_format = \"xml\"\n", []string{":1: log_level: \"loud\"", ":2: log_format: \"xml\""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".toml")
			os.WriteFile(path, []byte(tc.toml), 0o600)
			got := checkConfigFile(path)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d problems, want %d:\n%s", len(got), len(tc.want), strings.Join(got, "\n"))
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(got[i], path) || !strings.Contains(got[i], w) {
					t.Errorf("problem %d = %q, want %s...%q", i, got[i], path, w)
				}
			}
			err := runConfig([]string{"check", path})
			if (err == nil) != (len(tc.want) == 0) {
				t.Errorf("runConfig: %v with %d problems", err, len(tc.want))
			}
		})
	}
	if runConfig([]string{"check", filepath.Join(dir, "missing.toml")}) == nil {
		t.Error("a missing file must fail")
	}
	if got := checkConfigFile(filepath.Join("..", "..", "docs", "imgate.example.toml")); len(got) > 0 {
		t.Errorf("the shipped example has problems: %v", got)
	}
}
