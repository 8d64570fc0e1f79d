package gateway

import (
	"os"
	"time"

	"imgate/broadcast"
	"imgate/transport"
)

// Config is the gateway's whole configuration. DefaultConfig documents every
// default; cmd/imgate fills it from file, flags and environment.
type Config struct {
	// NodeID names this node in AUTH_OK, connection listings and (later) the
	// cluster. Default: the host name.
	NodeID string
	// DataDir holds generated keys and certificates. Default: ./data.
	DataDir string

	// Listen lists client listeners as URLs: tcp://, ws://host:port/path,
	// tls://, wss://, kcp:// and quic:// (UDP). Default: tcp://0.0.0.0:7100,
	// ws://0.0.0.0:7101/ws, kcp://0.0.0.0:7102 and quic://0.0.0.0:7103.
	Listen []string
	// TLSCert and TLSKey are PEM files for tls:// and wss:// listeners.
	TLSCert, TLSKey string

	// AdminAddr is the redis-protocol admin port; "" disables it.
	AdminAddr string
	// AdminPassword, when set, must be given with AUTH before any command.
	AdminPassword string
	// HTTPAddr serves the push/presence API, health and /metrics; "" disables.
	HTTPAddr string
	// HTTPToken, when set, must be sent as "Authorization: Bearer <token>"
	// on every API call (health and metrics stay open).
	HTTPToken string

	Auth AuthConfig

	// AuthTimeout is how long a new connection may take to send AUTH.
	AuthTimeout time.Duration
	// HeartbeatInterval is announced in AUTH_OK; a connection silent for two
	// intervals is closed.
	HeartbeatInterval time.Duration
	// MaxRoomsPerConn bounds the rooms one connection is in.
	MaxRoomsPerConn int
	// MaxConnsPerUser bounds one user's connections on this node.
	MaxConnsPerUser int
	// EchoSVID, when non-zero, answers uplinks to that SVID with their own
	// payload (a built-in backend for trials and benchmarks).
	EchoSVID uint32
	// DrainTimeout is how long a drain (SIGTERM, admin DRAIN) spreads the
	// closing of client connections over before the node is empty.
	DrainTimeout time.Duration

	// Transport holds frame size, queue bytes, buffer sizes and WebSocket
	// settings; Broadcast the fan-out workers.
	Transport transport.Config
	Broadcast broadcast.Config
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "imgate"
	}
	return Config{
		NodeID:            host,
		DataDir:           "./data",
		Listen:            []string{"tcp://0.0.0.0:7100", "ws://0.0.0.0:7101/ws", "kcp://0.0.0.0:7102", "quic://0.0.0.0:7103"},
		AdminAddr:         "127.0.0.1:7379",
		HTTPAddr:          "0.0.0.0:7180",
		Auth:              DefaultAuthConfig(),
		AuthTimeout:       10 * time.Second,
		HeartbeatInterval: 30 * time.Second,
		MaxRoomsPerConn:   64,
		MaxConnsPerUser:   16,
		DrainTimeout:      30 * time.Second,
		Transport:         transport.DefaultConfig(),
		Broadcast:         broadcast.DefaultConfig(),
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.NodeID == "" {
		c.NodeID = d.NodeID
	}
	if len(c.NodeID) > 255 {
		c.NodeID = c.NodeID[:255]
	}
	if c.DataDir == "" {
		c.DataDir = d.DataDir
	}
	if c.AuthTimeout <= 0 {
		c.AuthTimeout = d.AuthTimeout
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = d.HeartbeatInterval
	}
	if c.MaxRoomsPerConn <= 0 {
		c.MaxRoomsPerConn = d.MaxRoomsPerConn
	}
	if c.MaxConnsPerUser <= 0 {
		c.MaxConnsPerUser = d.MaxConnsPerUser
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = d.DrainTimeout
	}
	// A fan-out batch queues up to MaxBatchBytes for a member before writing
	// it; that must stay well inside the queue limit, or a burst to readers
	// who keep up would look like slow consumers.
	queue := c.Transport.QueueBytes
	if queue <= 0 {
		queue = d.Transport.QueueBytes
	}
	if c.Broadcast.MaxBatchBytes <= 0 || c.Broadcast.MaxBatchBytes > queue/4 {
		c.Broadcast.MaxBatchBytes = queue / 4
	}
	return c
}
