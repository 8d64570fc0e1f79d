package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"imgate/gateway"
)

// Configuration comes from four layers, each overriding the one before:
// defaults (gateway.DefaultConfig), the TOML file (--config), environment
// variables (IMGATE_<FLAG>, e.g. IMGATE_ADMIN_PASSWORD), and flags.

// fileConfig mirrors gateway.Config in TOML; durations are strings ("30s").
type fileConfig struct {
	NodeID            *string   `toml:"node_id"`
	DataDir           *string   `toml:"data_dir"`
	Listen            []string  `toml:"listen"`
	TLSCert           *string   `toml:"tls_cert"`
	TLSKey            *string   `toml:"tls_key"`
	AdminAddr         *string   `toml:"admin_addr"`
	AdminPassword     *string   `toml:"admin_password"`
	HTTPAddr          *string   `toml:"http_addr"`
	HTTPToken         *string   `toml:"http_token"`
	HeartbeatInterval *duration `toml:"heartbeat_interval"`
	AuthTimeout       *duration `toml:"auth_timeout"`
	MaxRoomsPerConn   *int      `toml:"max_rooms_per_conn"`
	MaxConnsPerUser   *int      `toml:"max_conns_per_user"`
	EchoSVID          *uint32   `toml:"echo_svid"`
	DrainTimeout      *duration `toml:"drain_timeout"`
	LogLevel          *string   `toml:"log_level"`  // read by logSettings
	LogFormat         *string   `toml:"log_format"` // read by logSettings
	Transport         struct {
		Loops            *int      `toml:"loops"`
		MaxFrame         *int      `toml:"max_frame"`
		QueueBytes       *int      `toml:"queue_bytes"`
		ReadBuffer       *int      `toml:"read_buffer"`
		SendBuffer       *int      `toml:"send_buffer"`
		StreamReadBuffer *int      `toml:"stream_read_buffer"`
		WSPath           *string   `toml:"ws_path"`
		WSOrigins        []string  `toml:"ws_origins"`
		HandshakeTimeout *duration `toml:"handshake_timeout"`
		WriteTimeout     *duration `toml:"write_timeout"`
		Linger           *duration `toml:"linger"`
		QUICIdleTimeout  *duration `toml:"quic_idle_timeout"`
		KCPPreset        *string   `toml:"kcp_preset"`
		KCPCrypt         *string   `toml:"kcp_crypt"`
		KCPKey           *string   `toml:"kcp_key"`
		KCPMaxEmbryonic  *int      `toml:"kcp_max_embryonic"`
		KCPDataShards    *int      `toml:"kcp_data_shards"`
		KCPParityShards  *int      `toml:"kcp_parity_shards"`
		QUICWindow       *int      `toml:"quic_receive_window"`
		QUIC0RTT         *bool     `toml:"quic_0rtt"`
	} `toml:"transport"`
	Broadcast struct {
		Workers   *int `toml:"workers"`
		Shards    *int `toml:"shards"`
		SmallRoom *int `toml:"small_room"`
		QueueLen  *int `toml:"queue_len"`
		MaxBatch  *int `toml:"max_batch"`
	} `toml:"broadcast"`
	Auth struct {
		Keys     []gateway.KeyConfig `toml:"keys"`
		Leeway   *duration           `toml:"leeway"`
		Issuer   string              `toml:"issuer"`
		Audience string              `toml:"audience"`
	} `toml:"auth"`
	Cluster clusterFile `toml:"cluster"` // cluster.go
	Route   routeFile   `toml:"route"`
	DNS     dnsFile     `toml:"dns"` // dns.go
}

type duration time.Duration

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = duration(v)
	return err
}

func set[T any](dst *T, src *T) {
	if src != nil {
		*dst = *src
	}
}

func setDur(dst *time.Duration, src *duration) {
	if src != nil {
		*dst = time.Duration(*src)
	}
}

func decodeFile(path string) (*fileConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f fileConfig
	dec := toml.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &f, nil
}

func loadFile(path string, c *gateway.Config) error {
	f, err := decodeFile(path)
	if err != nil {
		return err
	}
	set(&c.NodeID, f.NodeID)
	set(&c.DataDir, f.DataDir)
	if f.Listen != nil {
		c.Listen = f.Listen
	}
	set(&c.TLSCert, f.TLSCert)
	set(&c.TLSKey, f.TLSKey)
	set(&c.AdminAddr, f.AdminAddr)
	set(&c.AdminPassword, f.AdminPassword)
	set(&c.HTTPAddr, f.HTTPAddr)
	set(&c.HTTPToken, f.HTTPToken)
	setDur(&c.HeartbeatInterval, f.HeartbeatInterval)
	setDur(&c.AuthTimeout, f.AuthTimeout)
	set(&c.MaxRoomsPerConn, f.MaxRoomsPerConn)
	set(&c.MaxConnsPerUser, f.MaxConnsPerUser)
	set(&c.EchoSVID, f.EchoSVID)
	setDur(&c.DrainTimeout, f.DrainTimeout)
	t := &c.Transport
	set(&t.Loops, f.Transport.Loops)
	set(&t.MaxFrame, f.Transport.MaxFrame)
	set(&t.QueueBytes, f.Transport.QueueBytes)
	set(&t.ReadBuffer, f.Transport.ReadBuffer)
	set(&t.SendBuffer, f.Transport.SendBuffer)
	set(&t.StreamReadBuffer, f.Transport.StreamReadBuffer)
	set(&t.WSPath, f.Transport.WSPath)
	if f.Transport.WSOrigins != nil {
		t.WSOrigins = f.Transport.WSOrigins
	}
	setDur(&t.HandshakeTimeout, f.Transport.HandshakeTimeout)
	setDur(&t.WriteTimeout, f.Transport.WriteTimeout)
	setDur(&t.Linger, f.Transport.Linger)
	setDur(&t.QUICIdleTimeout, f.Transport.QUICIdleTimeout)
	set(&t.KCP.Preset, f.Transport.KCPPreset)
	set(&t.KCP.Crypt, f.Transport.KCPCrypt)
	set(&t.KCP.Key, f.Transport.KCPKey)
	set(&t.KCP.MaxEmbryonic, f.Transport.KCPMaxEmbryonic)
	set(&t.KCP.DataShards, f.Transport.KCPDataShards)
	set(&t.KCP.ParityShards, f.Transport.KCPParityShards)
	set(&t.QUICReceiveWindow, f.Transport.QUICWindow)
	if f.Transport.QUIC0RTT != nil {
		t.QUICDisable0RTT = !*f.Transport.QUIC0RTT
	}
	b := &c.Broadcast
	set(&b.Workers, f.Broadcast.Workers)
	set(&b.Shards, f.Broadcast.Shards)
	set(&b.SmallRoom, f.Broadcast.SmallRoom)
	set(&b.QueueLen, f.Broadcast.QueueLen)
	set(&b.MaxBatch, f.Broadcast.MaxBatch)
	if f.Auth.Keys != nil {
		c.Auth.Keys = f.Auth.Keys
	}
	setDur(&c.Auth.Leeway, f.Auth.Leeway)
	c.Auth.Issuer, c.Auth.Audience = f.Auth.Issuer, f.Auth.Audience
	return nil
}

// setting is one flag, also readable from IMGATE_<NAME>.
type setting struct {
	name, usage string
	apply       func(c *gateway.Config, v string) error
}

func str(dst func(*gateway.Config) *string) func(*gateway.Config, string) error {
	return func(c *gateway.Config, v string) error { *dst(c) = v; return nil }
}

func integer(dst func(*gateway.Config) *int) func(*gateway.Config, string) error {
	return func(c *gateway.Config, v string) error {
		n, err := strconv.Atoi(v)
		*dst(c) = n
		return err
	}
}

func dur(dst func(*gateway.Config) *time.Duration) func(*gateway.Config, string) error {
	return func(c *gateway.Config, v string) error {
		d, err := time.ParseDuration(v)
		*dst(c) = d
		return err
	}
}

func list(dst func(*gateway.Config) *[]string) func(*gateway.Config, string) error {
	return func(c *gateway.Config, v string) error {
		var out []string
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
		*dst(c) = out
		return nil
	}
}

var settings = []setting{
	{"node", "node id (default: host name)", str(func(c *gateway.Config) *string { return &c.NodeID })},
	{"data", "data directory (generated keys, certificates)", str(func(c *gateway.Config) *string { return &c.DataDir })},
	{"listen", "client listeners, comma-separated URLs (tcp://, ws://host:port/path, tls://, wss://, quic://)", list(func(c *gateway.Config) *[]string { return &c.Listen })},
	{"tls-cert", "PEM certificate for tls:// and wss://", str(func(c *gateway.Config) *string { return &c.TLSCert })},
	{"tls-key", "PEM key for tls:// and wss://", str(func(c *gateway.Config) *string { return &c.TLSKey })},
	{"admin", "admin port address (redis protocol); empty disables", str(func(c *gateway.Config) *string { return &c.AdminAddr })},
	{"admin-password", "admin port password (AUTH)", str(func(c *gateway.Config) *string { return &c.AdminPassword })},
	{"http", "HTTP API address; empty disables", str(func(c *gateway.Config) *string { return &c.HTTPAddr })},
	{"http-token", "bearer token the HTTP API requires (empty: none)", str(func(c *gateway.Config) *string { return &c.HTTPToken })},
	{"heartbeat", "heartbeat interval announced to clients", dur(func(c *gateway.Config) *time.Duration { return &c.HeartbeatInterval })},
	{"auth-timeout", "time a new connection has to authenticate", dur(func(c *gateway.Config) *time.Duration { return &c.AuthTimeout })},
	{"max-rooms", "rooms per connection", integer(func(c *gateway.Config) *int { return &c.MaxRoomsPerConn })},
	{"max-conns-per-user", "connections per user on this node", integer(func(c *gateway.Config) *int { return &c.MaxConnsPerUser })},
	{"max-frame", "maximum frame size in bytes, header included", integer(func(c *gateway.Config) *int { return &c.Transport.MaxFrame })},
	{"queue-bytes", "outbound queue limit per connection in bytes", integer(func(c *gateway.Config) *int { return &c.Transport.QueueBytes })},
	{"send-buffer", "kernel send buffer per TCP socket in bytes (0: kernel autotuning)", integer(func(c *gateway.Config) *int { return &c.Transport.SendBuffer })},
	{"loops", "epoll loops (default: cores)", integer(func(c *gateway.Config) *int { return &c.Transport.Loops })},
	{"ws-origins", "allowed WebSocket Origin values, comma-separated (empty: any)", list(func(c *gateway.Config) *[]string { return &c.Transport.WSOrigins })},
	{"echo-svid", "answer uplinks to this SVID with their payload (0: off)", func(c *gateway.Config, v string) error {
		n, err := strconv.ParseUint(v, 10, 32)
		c.EchoSVID = uint32(n)
		return err
	}},
}

func envName(flag string) string {
	return "IMGATE_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// loadConfig builds the gateway config for `imgate all|gateway`.
func loadConfig(cmd string, args []string, base gateway.Config) (gateway.Config, string, error) {
	o, err := loadOptions(cmd, args, options{Gateway: base, Cluster: defaultClusterConfig(), Route: defaultRouteConfig(), DNS: defaultDNSConfig()})
	return o.Gateway, o.LogLevel, err
}

// loadOptions builds every component's config: the gateway's, the
// cluster's and the route daemon's share one file, environment and flag set.
func loadOptions(cmd string, args []string, base options) (options, error) {
	fs := flag.NewFlagSet("imgate "+cmd, flag.ContinueOnError)
	path := fs.String("config", os.Getenv("IMGATE_CONFIG"), "TOML configuration file (env IMGATE_CONFIG)")
	logLevel := fs.String("log-level", envOr("IMGATE_LOG_LEVEL", "info"), "debug, info, warn or error")
	values := make(map[string]*string, len(settings))
	for _, s := range settings {
		values[s.name] = fs.String(s.name, "", s.usage+" (env "+envName(s.name)+")")
	}
	clusterValues := registerClusterFlags(fs, clusterSettings)
	dnsValues := registerClusterFlags(fs, dnsSettings)
	if err := fs.Parse(args); err != nil {
		return base, err
	}
	o := base
	c := &o.Gateway
	if *path != "" {
		if err := loadFile(*path, c); err != nil {
			return o, err
		}
		if err := loadClusterFile(*path, &o); err != nil {
			return o, err
		}
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, s := range settings {
		v, ok := *values[s.name], given[s.name]
		if !ok {
			v, ok = os.LookupEnv(envName(s.name))
		}
		if !ok {
			continue
		}
		if err := s.apply(c, v); err != nil {
			return o, fmt.Errorf("--%s %q: %w", s.name, v, err)
		}
	}
	if err := applyClusterFlags(clusterSettings, clusterValues, given, &o); err != nil {
		return o, err
	}
	if err := applyClusterFlags(dnsSettings, dnsValues, given, &o); err != nil {
		return o, err
	}
	o.LogLevel = *logLevel
	return o, nil
}

func envOr(k, def string) string {
	if v, ok := os.LookupEnv(k); ok {
		return v
	}
	return def
}
