package cluster

import (
	"time"
)

// Config is a cluster node's configuration. DefaultConfig documents every
// default; cmd/imgate fills it from the [cluster] section of the file, flags
// and environment.
type Config struct {
	// NodeID names the node on the bus and in the registry; the gateway's
	// node id. Region is the node's edge-room label. Default "default".
	NodeID string
	Region string
	// AdvertiseHost is the address clients reach this node's listeners at
	// (an IP for the smart-DNS responder's A/AAAA answers, or a name).
	// Default: the listener's own address, or for a wildcard listener this
	// host's first global unicast address (loopback when it has none).
	AdvertiseHost string
	// Capacity is the number of connections this node is sized for; a
	// node's load, by which DNS and HTTPDNS order nodes, is its connections
	// divided by it. Default 1,000,000.
	Capacity int

	// NATS lists the servers of an external NATS cluster
	// (nats://host:4222, tls://...). Empty: connect to the embedded server.
	NATS []string
	// Credentials for an external cluster: a .creds file (JWT + nkey
	// seed), an nkey seed file, user and password, or a token.
	CredsFile string
	NKeyFile  string
	User      string
	Password  string
	Token     string
	// TLS: a CA bundle to verify the servers, and a client certificate and
	// key for mutual TLS.
	TLSCA   string
	TLSCert string
	TLSKey  string

	// Embedded is the in-process NATS server `imgate all` starts when NATS
	// is empty.
	Embedded EmbeddedConfig

	// Prefix starts every subject and names the KV buckets. Default "imgate".
	Prefix string
	// Liveness: a node silent this long is dead and its registry entries
	// are removed; heartbeats go out every third of it. Default 3s.
	Liveness time.Duration
	// RequestTimeout bounds an uplink's wait for its backend. Default 5s.
	RequestTimeout time.Duration
	// Replicas of the KV buckets; 0 picks 3 when the NATS cluster knows of
	// at least three servers, else 1.
	Replicas int
	// InboundQueue is how many bus messages may wait for delivery to local
	// connections before NATS counts this node a slow consumer. Default
	// 65536.
	InboundQueue int
	// ReconnectWait is the pause between reconnect attempts. Default 250ms.
	ReconnectWait time.Duration
	// Paths is how many connections a node keeps to an external NATS
	// cluster: 2 (the default with two or more servers listed) keeps a
	// second on another server so that losing a server loses no push; 1
	// saves the duplicate traffic.
	Paths int

	// Handoff of a drained client's pushes to its next node (handoff.go):
	// how long a draining node holds them for a claim (default 10s), how
	// many bytes per device (default 256 KiB; the oldest go first), and how
	// long the new node's claim waits for the answer (default 2s).
	HandoffHold    time.Duration
	HandoffBytes   int
	HandoffTimeout time.Duration
}

// EmbeddedConfig configures the in-process NATS server.
type EmbeddedConfig struct {
	// Listen is the client address. Default 127.0.0.1:4222 (loopback: the
	// embedded server is for this host's components); port 0 picks one.
	Listen string
	// StoreDir holds JetStream data. Default <data dir>/nats.
	StoreDir string
	// ClusterListen and Routes, when set, make the embedded server a member
	// of a NATS cluster (several `imgate all` nodes, no separate NATS).
	ClusterName   string
	ClusterListen string
	Routes        []string
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		Region:         "default",
		Capacity:       1_000_000,
		Prefix:         DefaultPrefix,
		Liveness:       3 * time.Second,
		RequestTimeout: 5 * time.Second,
		InboundQueue:   65536,
		ReconnectWait:  250 * time.Millisecond,
		HandoffHold:    10 * time.Second,
		HandoffBytes:   256 << 10,
		HandoffTimeout: 2 * time.Second,
		Embedded:       EmbeddedConfig{Listen: "127.0.0.1:4222"},
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Region == "" {
		c.Region = d.Region
	}
	if c.Capacity <= 0 {
		c.Capacity = d.Capacity
	}
	if c.Prefix == "" {
		c.Prefix = d.Prefix
	}
	if c.Liveness <= 0 {
		c.Liveness = d.Liveness
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = d.RequestTimeout
	}
	if c.InboundQueue <= 0 {
		c.InboundQueue = d.InboundQueue
	}
	if c.ReconnectWait <= 0 {
		c.ReconnectWait = d.ReconnectWait
	}
	if c.HandoffHold <= 0 {
		c.HandoffHold = d.HandoffHold
	}
	if c.HandoffBytes <= 0 {
		c.HandoffBytes = d.HandoffBytes
	}
	if c.HandoffTimeout <= 0 {
		c.HandoffTimeout = d.HandoffTimeout
	}
	if c.Embedded.Listen == "" {
		c.Embedded.Listen = d.Embedded.Listen
	}
	return c
}
