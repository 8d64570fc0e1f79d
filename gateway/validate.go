package gateway

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"imgate/proto"
)

// FieldError is one bad setting, named by its TOML key ("transport.max_frame",
// "listen[2]", "auth.keys[0]") so that `imgate config check` can point at the
// line that sets it.
type FieldError struct {
	Field string
	Msg   string
}

func (e FieldError) Error() string { return e.Field + ": " + e.Msg }

// listenSchemes are the client listener URL schemes the transport serves.
var listenSchemes = map[string]bool{"tcp": true, "ws": true, "tls": true, "wss": true, "kcp": true, "quic": true}

// Validate checks the settings that New and Start would otherwise reject
// late (or clamp silently): listener URLs, addresses, limits, durations,
// the TLS pair and the auth keys (whose files it reads). It reports every
// problem, not only the first. A zero value that New replaces by its
// default is not an error; a negative one is.
func (c Config) Validate() []FieldError {
	var errs []FieldError
	bad := func(field, format string, args ...any) {
		errs = append(errs, FieldError{field, fmt.Sprintf(format, args...)})
	}
	if len(c.NodeID) > 255 {
		bad("node_id", "%d bytes; at most 255", len(c.NodeID))
	}
	if len(c.Listen) == 0 {
		bad("listen", "no client listeners")
	}
	for i, raw := range c.Listen {
		field := fmt.Sprintf("listen[%d]", i)
		u, err := url.Parse(raw)
		switch {
		case err != nil:
			bad(field, "%q is not a URL: %v", raw, err)
			continue
		case !listenSchemes[u.Scheme]:
			bad(field, "%q: unknown scheme %q (want tcp, ws, tls, wss, kcp or quic)", raw, u.Scheme)
			continue
		}
		if err := checkHostPort(u.Host); err != nil {
			bad(field, "%q: %v", raw, err)
		}
	}
	for _, a := range []struct{ field, addr string }{{"admin_addr", c.AdminAddr}, {"http_addr", c.HTTPAddr}} {
		if a.addr == "" {
			continue // off
		}
		if err := checkHostPort(a.addr); err != nil {
			bad(a.field, "%q: %v", a.addr, err)
		}
	}
	switch {
	case (c.TLSCert == "") != (c.TLSKey == ""):
		bad("tls_cert", "tls_cert and tls_key go together")
	case c.TLSCert != "":
		if _, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey); err != nil {
			bad("tls_cert", "cannot load the pair: %v", err)
		}
	}

	positive := func(field string, n int) {
		if n < 0 {
			bad(field, "%d: must be positive (0 = default)", n)
		}
	}
	positiveDur := func(field string, d time.Duration) {
		if d < 0 {
			bad(field, "%v: must be positive (0 = default)", d)
		}
	}
	positive("max_rooms_per_conn", c.MaxRoomsPerConn)
	positive("max_conns_per_user", c.MaxConnsPerUser)
	positiveDur("auth_timeout", c.AuthTimeout)
	positiveDur("heartbeat_interval", c.HeartbeatInterval)
	positiveDur("drain_timeout", c.DrainTimeout)
	if c.HeartbeatInterval > 0 && c.HeartbeatInterval < time.Second {
		bad("heartbeat_interval", "%v: under a second makes every client a heartbeat storm", c.HeartbeatInterval)
	}

	t := c.Transport
	positive("transport.loops", t.Loops)
	positive("transport.max_frame", t.MaxFrame)
	if t.MaxFrame > proto.MaxFrameLimit {
		bad("transport.max_frame", "%d: over the protocol's ceiling of %d", t.MaxFrame, proto.MaxFrameLimit)
	}
	if t.MaxFrame > 0 && t.MaxFrame < proto.HeaderSize {
		bad("transport.max_frame", "%d: smaller than the %d-byte header", t.MaxFrame, proto.HeaderSize)
	}
	positive("transport.queue_bytes", t.QueueBytes)
	if t.QueueBytes > 0 && t.MaxFrame > 0 && t.QueueBytes < t.MaxFrame {
		bad("transport.queue_bytes", "%d: smaller than max_frame (%d): one full frame would close the connection", t.QueueBytes, t.MaxFrame)
	}
	positive("transport.read_buffer", t.ReadBuffer)
	positive("transport.send_buffer", t.SendBuffer)
	positive("transport.stream_read_buffer", t.StreamReadBuffer)
	positive("transport.quic_receive_window", t.QUICReceiveWindow)
	positive("transport.kcp_max_embryonic", t.KCP.MaxEmbryonic)
	positive("transport.kcp_data_shards", t.KCP.DataShards)
	positive("transport.kcp_parity_shards", t.KCP.ParityShards)
	if (t.KCP.DataShards == 0) != (t.KCP.ParityShards == 0) {
		bad("transport.kcp_data_shards", "FEC needs both kcp_data_shards and kcp_parity_shards (or neither)")
	}
	switch strings.ToLower(t.KCP.Preset) {
	case "", "normal", "fast", "weak-network":
	default:
		bad("transport.kcp_preset", "%q: want normal, fast or weak-network", t.KCP.Preset)
	}
	switch strings.ToLower(t.KCP.Crypt) {
	case "", "none":
	case "aes", "salsa20":
		if t.KCP.Key == "" {
			bad("transport.kcp_key", "kcp_crypt %q needs kcp_key", t.KCP.Crypt)
		}
	default:
		bad("transport.kcp_crypt", "%q: want \"\", aes or salsa20", t.KCP.Crypt)
	}
	if t.WSPath != "" && !strings.HasPrefix(t.WSPath, "/") {
		bad("transport.ws_path", "%q: must start with /", t.WSPath)
	}
	positiveDur("transport.handshake_timeout", t.HandshakeTimeout)
	positiveDur("transport.write_timeout", t.WriteTimeout)
	positiveDur("transport.linger", t.Linger)
	positiveDur("transport.quic_idle_timeout", t.QUICIdleTimeout)

	b := c.Broadcast
	positive("broadcast.workers", b.Workers)
	positive("broadcast.shards", b.Shards)
	positive("broadcast.small_room", b.SmallRoom)
	positive("broadcast.queue_len", b.QueueLen)
	positive("broadcast.max_batch", b.MaxBatch)

	// The keys: NewAuthenticator reads their files and names what is wrong.
	// No keys is fine: the node then makes a development key.
	if len(c.Auth.Keys) > 0 {
		if _, err := NewAuthenticator(c.Auth); err != nil {
			field := "auth.keys"
			msg := err.Error()
			if rest, ok := strings.CutPrefix(msg, "auth.keys["); ok {
				if i := strings.Index(rest, "]: "); i >= 0 {
					field, msg = "auth.keys["+rest[:i]+"]", rest[i+3:]
				}
			}
			bad(field, "%s", msg)
		}
	}
	return errs
}

// checkHostPort accepts "host:port" and ":port" with a numeric port.
func checkHostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	var n int
	if _, err := fmt.Sscanf(port, "%d", &n); err != nil || n < 0 || n > 65535 || fmt.Sprint(n) != port {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}
