package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"imgate/proto"
)

// MaxTokenSize is the longest token Verify will parse; longer ones are
// rejected before any decoding so a client cannot make the gateway chew on
// megabytes of base64.
const MaxTokenSize = 8 << 10

// DefaultLeeway is the clock skew allowed for exp, nbf and iat.
const DefaultLeeway = 30 * time.Second

// ErrNoKeys is returned by NewAuthenticator when AuthConfig has no keys; a
// caller may then fall back to DefaultDevKey.
var ErrNoKeys = errors.New("auth: no keys configured (add [[auth.keys]] or use the dev key)")

// AuthConfig holds the settings for token verification. Its zero value with
// at least one key is usable: Leeway 0 means DefaultLeeway.
type AuthConfig struct {
	Keys     []KeyConfig   `toml:"keys"`     // verification keys, selected by the JWT header `kid`
	Leeway   time.Duration `toml:"leeway"`   // allowed clock skew for exp/nbf/iat; 0 = 30s, negative = none
	Issuer   string        `toml:"issuer"`   // if set, `iss` must match
	Audience string        `toml:"audience"` // if set, `aud` must contain it
}

// DefaultAuthConfig returns an AuthConfig with documented defaults and no
// keys.
func DefaultAuthConfig() AuthConfig {
	return AuthConfig{Leeway: DefaultLeeway}
}

// Claims is what a verified token says about a connection.
type Claims struct {
	UID    string
	Device string   // "default" when the token has none
	Rooms  []string // nil = any room may be joined; empty = none
	Expiry time.Time
}

// DefaultDevice is the Device of a token without a device claim.
const DefaultDevice = "default"

// AllowsRoom reports whether the token lets its holder join room.
func (c Claims) AllowsRoom(room string) bool {
	return c.Rooms == nil || slices.Contains(c.Rooms, room)
}

// tokenClaims is the JSON payload of an imgate token.
type tokenClaims struct {
	jwt.RegisteredClaims
	UID    string   `json:"uid,omitempty"`
	Device string   `json:"device,omitempty"`
	Rooms  []string `json:"rooms,omitzero"` // omitzero keeps [] (no rooms) apart from absent (any room)
}

// Authenticator verifies tokens against a fixed set of keys. It is immutable
// after NewAuthenticator and so safe for concurrent use; to rotate keys build
// a new one and swap it in.
type Authenticator struct {
	keys   map[string]*keyMaterial // by kid
	sole   *keyMaterial            // the only key, chosen for tokens without a kid; nil when there are several
	parser *jwt.Parser
	leeway time.Duration
	cfg    AuthConfig
}

// NewAuthenticator loads and checks every key in cfg; an error names the key
// and what is wrong with it.
func NewAuthenticator(cfg AuthConfig) (*Authenticator, error) {
	if len(cfg.Keys) == 0 {
		return nil, ErrNoKeys
	}
	a := &Authenticator{keys: make(map[string]*keyMaterial, len(cfg.Keys)), cfg: cfg}
	for i, kc := range cfg.Keys {
		if kc.ID == "" && len(cfg.Keys) > 1 {
			return nil, fmt.Errorf("auth.keys[%d]: id is required when more than one key is configured", i)
		}
		if _, dup := a.keys[kc.ID]; dup {
			return nil, fmt.Errorf("auth.keys[%d]: duplicate id %q", i, kc.ID)
		}
		m, err := loadKey(kc)
		if err != nil {
			return nil, fmt.Errorf("auth.keys[%d]: %w", i, err)
		}
		a.keys[kc.ID] = m
	}
	if len(cfg.Keys) == 1 {
		a.sole = a.keys[cfg.Keys[0].ID]
	}

	a.leeway = cfg.Leeway
	switch {
	case a.leeway == 0:
		a.leeway = DefaultLeeway
	case a.leeway < 0:
		a.leeway = 0
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{AlgHS256, AlgEdDSA}),
		jwt.WithLeeway(a.leeway),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	a.parser = jwt.NewParser(opts...)
	return a, nil
}

// Verify checks a compact-form JWT and returns its claims. Every error is a
// *proto.Error: CodeTokenExpired for a token past its exp (plus leeway),
// CodeAuthFailed for anything else. Messages never contain the token.
func (a *Authenticator) Verify(token []byte) (Claims, error) {
	token = bytes.TrimSpace(token)
	switch {
	case len(token) == 0:
		return Claims{}, authFailed("empty token")
	case len(token) > MaxTokenSize:
		return Claims{}, authFailed("token is %d bytes; the limit is %d", len(token), MaxTokenSize)
	}
	if n := bytes.Count(token, []byte{'.'}) + 1; n != 3 {
		return Claims{}, authFailed("malformed token: %d dot-separated segments, want 3 (header.claims.signature)", n)
	}

	var tc tokenClaims
	parsed, err := a.parser.ParseWithClaims(string(token), &tc, a.keyFor)
	if err != nil {
		return Claims{}, a.explain(err, parsed, &tc)
	}

	uid := tc.UID
	if uid == "" {
		uid = tc.Subject
	}
	if uid == "" {
		return Claims{}, authFailed("missing uid claim (and no sub to fall back on)")
	}
	device := tc.Device
	if device == "" {
		device = DefaultDevice
	}
	return Claims{UID: uid, Device: device, Rooms: tc.Rooms, Expiry: tc.ExpiresAt.Time}, nil
}

// keyFor picks the verification key by kid and refuses a token whose alg is
// not the one configured for that key: the header's alg alone is never
// trusted.
func (a *Authenticator) keyFor(t *jwt.Token) (any, error) {
	var k *keyMaterial
	switch kid := t.Header["kid"].(type) {
	case nil:
		if a.sole == nil {
			return nil, authFailed("token has no kid header; %d keys are configured, so one is required", len(a.keys))
		}
		k = a.sole
	case string:
		if kid == "" && a.sole != nil {
			k = a.sole
			break
		}
		if k = a.keys[kid]; k == nil {
			return nil, authFailed("unknown key id %q", clip(kid))
		}
	default:
		return nil, authFailed("kid header must be a string")
	}
	if alg := t.Method.Alg(); alg != k.alg {
		return nil, authFailed("token alg %s does not match key %q, which is %s", alg, k.id, k.alg)
	}
	return k.verify, nil
}

// explain turns a jwt parse error into a *proto.Error a human can act on.
func (a *Authenticator) explain(err error, t *jwt.Token, tc *tokenClaims) *proto.Error {
	var pe *proto.Error
	if errors.As(err, &pe) { // from keyFor
		return pe
	}
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return malformed(err)
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		// alg missing or unknown to the library
		if t != nil {
			if alg, ok := t.Header["alg"].(string); ok {
				return authFailed("alg %q not accepted (want HS256 or EdDSA)", clip(alg))
			}
		}
		return authFailed("token header has no alg")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		if t != nil && t.Method != nil {
			if alg := t.Method.Alg(); alg != AlgHS256 && alg != AlgEdDSA {
				return authFailed("alg %q not accepted (want HS256 or EdDSA)", alg)
			}
		}
		return authFailed("signature invalid")
	// Claims are checked only after the signature, so what follows is about
	// a token we signed.
	case errors.Is(err, jwt.ErrTokenExpired):
		return proto.Errorf(proto.CodeTokenExpired, "token expired at %s (leeway %s); get a new one",
			tc.ExpiresAt.UTC().Format(time.RFC3339), a.leeway)
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		switch {
		case tc.ExpiresAt == nil:
			return authFailed("missing exp claim; tokens must expire")
		case a.cfg.Issuer != "" && tc.Issuer == "":
			return authFailed("missing iss claim; want %q", a.cfg.Issuer)
		case a.cfg.Audience != "" && len(tc.Audience) == 0:
			return authFailed("missing aud claim; want %q", a.cfg.Audience)
		}
		return authFailed("missing required claim")
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return authFailed("token not valid before %s (nbf, leeway %s); check clocks",
			tc.NotBefore.UTC().Format(time.RFC3339), a.leeway)
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return authFailed("token issued in the future (iat %s, leeway %s); check the issuer's clock",
			tc.IssuedAt.UTC().Format(time.RFC3339), a.leeway)
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return authFailed("iss claim does not match; want %q", a.cfg.Issuer)
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return authFailed("aud claim does not include %q", a.cfg.Audience)
	}
	return authFailed("token rejected")
}

// malformed names the part of the token that failed to decode. It matches
// the library's messages rather than echoing them, because some of those
// quote bytes from the token.
func malformed(err error) *proto.Error {
	msg := err.Error()
	var typeErr *json.UnmarshalTypeError
	switch {
	case strings.Contains(msg, "decode header"):
		return authFailed("malformed token: header is not base64url-encoded JSON")
	case strings.Contains(msg, "base64 decode claim"):
		return authFailed("malformed token: claims are not base64url-encoded")
	case errors.As(err, &typeErr) && typeErr.Field != "":
		claim, _, _ := strings.Cut(typeErr.Field, ".")
		return authFailed("malformed token: claim %q is a JSON %s, want %s", claim, typeErr.Value, jsonKind(typeErr))
	case strings.Contains(msg, "decode claim"):
		return authFailed("malformed token: claims are not a JSON object of the expected types " +
			"(exp/nbf/iat numbers; uid/sub/device/iss strings; rooms an array of strings)")
	case strings.Contains(msg, "decode signature"):
		return authFailed("malformed token: signature is not base64url-encoded")
	}
	return authFailed("malformed token")
}

func jsonKind(e *json.UnmarshalTypeError) string {
	if e.Type == nil {
		return "another type"
	}
	switch e.Type.String() {
	case "string":
		return "a string"
	case "[]string":
		return "an array of strings"
	}
	return e.Type.String()
}

func authFailed(format string, args ...any) *proto.Error {
	return proto.Errorf(proto.CodeAuthFailed, format, args...)
}

// clip bounds a header value quoted in an error message.
func clip(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// MintToken signs a token for c with key: kid header from key.ID, exp from
// c.Expiry (required), iat now. It is for `imgate token`, tests and backends
// written in Go; the gateway itself only verifies.
func MintToken(key KeyConfig, c Claims) (string, error) {
	return MintTokenFor(AuthConfig{}, key, c)
}

// MintTokenFor is MintToken for gateways that check iss or aud: it sets them
// from cfg.Issuer and cfg.Audience.
func MintTokenFor(cfg AuthConfig, key KeyConfig, c Claims) (string, error) {
	if c.UID == "" {
		return "", errors.New("mint token: uid is required")
	}
	if c.Expiry.IsZero() {
		return "", errors.New("mint token: expiry is required")
	}
	m, err := loadKey(key)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	if m.sign == nil {
		return "", fmt.Errorf("mint token: %s has no private_key; it can only verify", key.name())
	}
	method := jwt.GetSigningMethod(m.alg)
	tc := tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			ExpiresAt: jwt.NewNumericDate(c.Expiry),
			IssuedAt:  jwt.NewNumericDate(time.Now()),
			Issuer:    cfg.Issuer,
		},
		UID:    c.UID,
		Device: c.Device,
		Rooms:  c.Rooms,
	}
	if cfg.Audience != "" {
		tc.Audience = jwt.ClaimStrings{cfg.Audience}
	}
	t := jwt.NewWithClaims(method, tc)
	if key.ID != "" {
		t.Header["kid"] = key.ID
	}
	s, err := t.SignedString(m.sign)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return s, nil
}
