package route

import "time"

// Config is the daemon's configuration; DefaultConfig documents defaults.
type Config struct {
	// HTTPAddr serves the push API, /svids and /healthz; "" disables it.
	// Default 127.0.0.1:7280.
	HTTPAddr string
	// HTTPToken, when set, must be sent as "Authorization: Bearer <token>"
	// on the push API and /svids.
	HTTPToken string
	// Instance names this daemon in announcements. Default: host name.
	Instance string
	// Bridges map SVIDs to HTTP endpoints.
	Bridges []Bridge
}

// Bridge sends one SVID's uplinks to an HTTP endpoint: POST with the
// uplink payload as the body and its metadata in X-Imgate-* headers; a 2xx
// answer's body is the REPLY.
type Bridge struct {
	SVID uint32
	URL  string
	// Timeout bounds one attempt. Default 3s.
	Timeout time.Duration
	// Retries after a failed attempt (network error, timeout, 5xx; never
	// after a 4xx). Default 2.
	Retries int
	// Backoff before the first retry, doubled for each next one, with
	// jitter. Default 50ms.
	Backoff time.Duration
	// Concurrency bounds requests in flight to the endpoint; a request that
	// finds no slot within Timeout is answered RATE_LIMITED. Default 64.
	Concurrency int
	// BreakerFailures consecutive failed requests open the circuit for
	// BreakerCooldown. Defaults 5 and 10s.
	BreakerFailures int
	BreakerCooldown time.Duration
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config { return Config{HTTPAddr: "127.0.0.1:7280"} }

func (b Bridge) withDefaults() Bridge {
	if b.Timeout <= 0 {
		b.Timeout = 3 * time.Second
	}
	if b.Retries < 0 {
		b.Retries = 0
	} else if b.Retries == 0 {
		b.Retries = 2
	}
	if b.Backoff <= 0 {
		b.Backoff = 50 * time.Millisecond
	}
	if b.Concurrency <= 0 {
		b.Concurrency = 64
	}
	if b.BreakerFailures <= 0 {
		b.BreakerFailures = 5
	}
	if b.BreakerCooldown <= 0 {
		b.BreakerCooldown = 10 * time.Second
	}
	return b
}
