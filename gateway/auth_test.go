package gateway

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"imgate/proto"
)

// testKeys holds real key material shared by the auth tests.
type testKeys struct {
	h1, h2   KeyConfig // HS256
	e1       KeyConfig // EdDSA with private key
	e1Verify KeyConfig // the same EdDSA key, public half only
	edPub    ed25519.PublicKey
	edPriv   ed25519.PrivateKey
}

func newTestKeys(t testing.TB) testKeys {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))
	privPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}))
	return testKeys{
		h1:       KeyConfig{ID: "h1", Alg: AlgHS256, Secret: "h1-secret-0123456789abcdef0123456789"},
		h2:       KeyConfig{ID: "h2", Alg: AlgHS256, Secret: "h2-secret-0123456789abcdef0123456789"},
		e1:       KeyConfig{ID: "e1", Alg: AlgEdDSA, PublicKey: pubPEM, PrivateKey: privPEM},
		e1Verify: KeyConfig{ID: "e1", Alg: AlgEdDSA, PublicKey: pubPEM},
		edPub:    pub,
		edPriv:   priv,
	}
}

func newAuth(t testing.TB, cfg AuthConfig) *Authenticator {
	t.Helper()
	a, err := NewAuthenticator(cfg)
	if err != nil {
		t.Fatalf("NewAuthenticator: %v", err)
	}
	return a
}

func mint(t testing.TB, key KeyConfig, c Claims) string {
	t.Helper()
	if c.Expiry.IsZero() {
		c.Expiry = time.Now().Add(time.Hour)
	}
	s, err := MintToken(key, c)
	if err != nil {
		t.Fatalf("MintToken: %v", err)
	}
	return s
}

// craft signs arbitrary claims and headers, for tokens MintToken would never
// make.
func craft(t testing.TB, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return s
}

func inHour() int64 { return time.Now().Add(time.Hour).Unix() }

func TestAuthVerify(t *testing.T) {
	k := newTestKeys(t)
	hsSecret := []byte(k.h1.Secret)
	one := newAuth(t, AuthConfig{Keys: []KeyConfig{k.h1}})
	edOnly := newAuth(t, AuthConfig{Keys: []KeyConfig{k.e1Verify}})
	multi := newAuth(t, AuthConfig{Keys: []KeyConfig{k.h1, k.h2, k.e1Verify}})
	rotated := newAuth(t, AuthConfig{Keys: []KeyConfig{k.h2, k.e1Verify}}) // h1 retired
	strict := newAuth(t, AuthConfig{Keys: []KeyConfig{k.h1}, Issuer: "issuer.example", Audience: "imgate"})

	good := mint(t, k.h1, Claims{UID: "u1"})
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"uid":"admin","exp":9999999999}`)) + "." + parts[2]

	tests := []struct {
		name     string
		auth     *Authenticator
		token    string
		wantCode proto.Code // 0: must verify
		wantMsg  string
		check    func(t *testing.T, c Claims)
	}{
		{name: "hs256 good", auth: one, token: good, check: func(t *testing.T, c Claims) {
			if c.UID != "u1" || c.Device != "default" || c.Rooms != nil {
				t.Errorf("claims = %+v", c)
			}
		}},
		{name: "eddsa good", auth: edOnly, token: mint(t, k.e1, Claims{UID: "u2", Device: "phone"}),
			check: func(t *testing.T, c Claims) {
				if c.UID != "u2" || c.Device != "phone" {
					t.Errorf("claims = %+v", c)
				}
			}},
		{name: "rotation h1", auth: multi, token: mint(t, k.h1, Claims{UID: "a"})},
		{name: "rotation h2", auth: multi, token: mint(t, k.h2, Claims{UID: "b"})},
		{name: "rotation eddsa", auth: multi, token: mint(t, k.e1, Claims{UID: "c"})},
		{name: "retired key", auth: rotated, token: good, wantCode: proto.CodeAuthFailed, wantMsg: `unknown key id "h1"`},
		{name: "unknown kid", auth: multi, token: craft(t, jwt.SigningMethodHS256, hsSecret, "k9",
			jwt.MapClaims{"uid": "u", "exp": inHour()}), wantCode: proto.CodeAuthFailed, wantMsg: `unknown key id "k9"`},
		{name: "missing kid one key", auth: one, token: craft(t, jwt.SigningMethodHS256, hsSecret, "",
			jwt.MapClaims{"uid": "u", "exp": inHour()})},
		{name: "missing kid many keys", auth: multi, token: craft(t, jwt.SigningMethodHS256, hsSecret, "",
			jwt.MapClaims{"uid": "u", "exp": inHour()}), wantCode: proto.CodeAuthFailed, wantMsg: "no kid header"},
		{name: "non-string kid", auth: multi, token: craftHeader(t, hsSecret, `{"alg":"HS256","kid":7}`,
			`{"uid":"u","exp":`+itoa(inHour())+`}`), wantCode: proto.CodeAuthFailed, wantMsg: "kid header must be a string"},
		{name: "expired", auth: one, token: mint(t, k.h1, Claims{UID: "u", Expiry: time.Now().Add(-2 * time.Minute)}),
			wantCode: proto.CodeTokenExpired, wantMsg: "token expired at"},
		{name: "expired within leeway", auth: one, token: mint(t, k.h1, Claims{UID: "u", Expiry: time.Now().Add(-10 * time.Second)})},
		{name: "expired forged", auth: one, token: craft(t, jwt.SigningMethodHS256, []byte("another-secret-0123456789abcdef0123"), "h1",
			jwt.MapClaims{"uid": "u", "exp": time.Now().Add(-time.Hour).Unix()}), wantCode: proto.CodeAuthFailed, wantMsg: "signature invalid"},
		{name: "forged signature", auth: one, token: craft(t, jwt.SigningMethodHS256, []byte("another-secret-0123456789abcdef0123"), "h1",
			jwt.MapClaims{"uid": "u", "exp": inHour()}), wantCode: proto.CodeAuthFailed, wantMsg: "signature invalid"},
		{name: "tampered claims", auth: one, token: tampered, wantCode: proto.CodeAuthFailed, wantMsg: "signature invalid"},
		{name: "eddsa forged", auth: edOnly, token: craft(t, jwt.SigningMethodEdDSA, otherEdKey(t), "e1",
			jwt.MapClaims{"uid": "u", "exp": inHour()}), wantCode: proto.CodeAuthFailed, wantMsg: "signature invalid"},
		{name: "alg confusion raw pubkey", auth: edOnly, token: craft(t, jwt.SigningMethodHS256, []byte(k.edPub), "e1",
			jwt.MapClaims{"uid": "u", "exp": inHour()}), wantCode: proto.CodeAuthFailed, wantMsg: "does not match key"},
		{name: "alg confusion pem pubkey", auth: edOnly, token: craft(t, jwt.SigningMethodHS256, []byte(k.e1.PublicKey), "",
			jwt.MapClaims{"uid": "u", "exp": inHour()}), wantCode: proto.CodeAuthFailed, wantMsg: "does not match key"},
		{name: "alg confusion eddsa token on hs key", auth: one, token: craft(t, jwt.SigningMethodEdDSA, k.edPriv, "h1",
			jwt.MapClaims{"uid": "u", "exp": inHour()}), wantCode: proto.CodeAuthFailed, wantMsg: "does not match key"},
		{name: "alg none", auth: one, token: craft(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "h1",
			jwt.MapClaims{"uid": "u", "exp": inHour()}), wantCode: proto.CodeAuthFailed, wantMsg: `alg "none" not accepted`},
		{name: "alg HS512", auth: one, token: craft(t, jwt.SigningMethodHS512, hsSecret, "h1",
			jwt.MapClaims{"uid": "u", "exp": inHour()}), wantCode: proto.CodeAuthFailed, wantMsg: `alg "HS512" not accepted`},
		{name: "alg unknown", auth: one, token: craftHeader(t, hsSecret, `{"alg":"XX1","kid":"h1"}`,
			`{"uid":"u","exp":`+itoa(inHour())+`}`), wantCode: proto.CodeAuthFailed, wantMsg: `alg "XX1" not accepted`},
		{name: "alg missing", auth: one, token: craftHeader(t, hsSecret, `{"kid":"h1"}`,
			`{"uid":"u","exp":`+itoa(inHour())+`}`), wantCode: proto.CodeAuthFailed, wantMsg: "no alg"},
		{name: "missing uid", auth: one, token: craft(t, jwt.SigningMethodHS256, hsSecret, "h1",
			jwt.MapClaims{"device": "d", "exp": inHour()}), wantCode: proto.CodeAuthFailed, wantMsg: "missing uid claim"},
		{name: "uid wrong type", auth: one, token: craft(t, jwt.SigningMethodHS256, hsSecret, "h1",
			jwt.MapClaims{"uid": 42, "exp": inHour()}), wantCode: proto.CodeAuthFailed, wantMsg: `claim "uid" is a JSON number, want a string`},
		{name: "rooms wrong type", auth: one, token: craft(t, jwt.SigningMethodHS256, hsSecret, "h1",
			jwt.MapClaims{"uid": "u", "rooms": "lobby", "exp": inHour()}), wantCode: proto.CodeAuthFailed, wantMsg: `claim "rooms"`},
		{name: "exp wrong type", auth: one, token: craft(t, jwt.SigningMethodHS256, hsSecret, "h1",
			jwt.MapClaims{"uid": "u", "exp": "tomorrow"}), wantCode: proto.CodeAuthFailed, wantMsg: "claims are not a JSON object of the expected types"},
		{name: "sub fallback", auth: one, token: craft(t, jwt.SigningMethodHS256, hsSecret, "h1",
			jwt.MapClaims{"sub": "from-sub", "exp": inHour()}), check: func(t *testing.T, c Claims) {
			if c.UID != "from-sub" {
				t.Errorf("UID = %q, want from-sub", c.UID)
			}
		}},
		{name: "uid wins over sub", auth: one, token: craft(t, jwt.SigningMethodHS256, hsSecret, "h1",
			jwt.MapClaims{"uid": "u", "sub": "s", "exp": inHour()}), check: func(t *testing.T, c Claims) {
			if c.UID != "u" {
				t.Errorf("UID = %q, want u", c.UID)
			}
		}},
		{name: "rooms claim", auth: one, token: mint(t, k.h1, Claims{UID: "u", Rooms: []string{"lobby", "r2"}}),
			check: func(t *testing.T, c Claims) {
				if !slices.Equal(c.Rooms, []string{"lobby", "r2"}) || !c.AllowsRoom("lobby") || !c.AllowsRoom("r2") || c.AllowsRoom("r3") {
					t.Errorf("claims = %+v", c)
				}
			}},
		{name: "rooms empty means none", auth: one, token: mint(t, k.h1, Claims{UID: "u", Rooms: []string{}}),
			check: func(t *testing.T, c Claims) {
				if c.Rooms == nil || c.AllowsRoom("lobby") {
					t.Errorf("claims = %+v, want no rooms allowed", c)
				}
			}},
		{name: "rooms absent means any", auth: one, token: good, check: func(t *testing.T, c Claims) {
			if !c.AllowsRoom("anything") {
				t.Error("absent rooms must allow any room")
			}
		}},
		{name: "missing exp", auth: one, token: craft(t, jwt.SigningMethodHS256, hsSecret, "h1",
			jwt.MapClaims{"uid": "u"}), wantCode: proto.CodeAuthFailed, wantMsg: "missing exp claim"},
		{name: "nbf future", auth: one, token: craft(t, jwt.SigningMethodHS256, hsSecret, "h1",
			jwt.MapClaims{"uid": "u", "exp": inHour(), "nbf": time.Now().Add(5 * time.Minute).Unix()}),
			wantCode: proto.CodeAuthFailed, wantMsg: "not valid before"},
		{name: "nbf within leeway", auth: one, token: craft(t, jwt.SigningMethodHS256, hsSecret, "h1",
			jwt.MapClaims{"uid": "u", "exp": inHour(), "nbf": time.Now().Add(10 * time.Second).Unix()})},
		{name: "iat future", auth: one, token: craft(t, jwt.SigningMethodHS256, hsSecret, "h1",
			jwt.MapClaims{"uid": "u", "exp": inHour(), "iat": time.Now().Add(5 * time.Minute).Unix()}),
			wantCode: proto.CodeAuthFailed, wantMsg: "issued in the future"},
		{name: "iat within leeway", auth: one, token: craft(t, jwt.SigningMethodHS256, hsSecret, "h1",
			jwt.MapClaims{"uid": "u", "exp": inHour(), "iat": time.Now().Add(10 * time.Second).Unix()})},
		{name: "issuer and audience ok", auth: strict, token: craft(t, jwt.SigningMethodHS256, hsSecret, "h1",
			jwt.MapClaims{"uid": "u", "exp": inHour(), "iss": "issuer.example", "aud": []string{"x", "imgate"}})},
		{name: "issuer wrong", auth: strict, token: craft(t, jwt.SigningMethodHS256, hsSecret, "h1",
			jwt.MapClaims{"uid": "u", "exp": inHour(), "iss": "evil", "aud": "imgate"}),
			wantCode: proto.CodeAuthFailed, wantMsg: "iss claim does not match"},
		{name: "issuer missing", auth: strict, token: craft(t, jwt.SigningMethodHS256, hsSecret, "h1",
			jwt.MapClaims{"uid": "u", "exp": inHour(), "aud": "imgate"}),
			wantCode: proto.CodeAuthFailed, wantMsg: "missing iss claim"},
		{name: "audience wrong", auth: strict, token: craft(t, jwt.SigningMethodHS256, hsSecret, "h1",
			jwt.MapClaims{"uid": "u", "exp": inHour(), "iss": "issuer.example", "aud": "other"}),
			wantCode: proto.CodeAuthFailed, wantMsg: `aud claim does not include "imgate"`},
		{name: "oversize", auth: one, token: craft(t, jwt.SigningMethodHS256, hsSecret, "h1",
			jwt.MapClaims{"uid": strings.Repeat("x", MaxTokenSize), "exp": inHour()}),
			wantCode: proto.CodeAuthFailed, wantMsg: "the limit is 8192"},
		{name: "empty", auth: one, token: "", wantCode: proto.CodeAuthFailed, wantMsg: "empty token"},
		{name: "garbage", auth: one, token: "not a token at all", wantCode: proto.CodeAuthFailed, wantMsg: "1 dot-separated segments"},
		{name: "garbage binary", auth: one, token: "\x00\xff\xfe.\x01\x02.\x80", wantCode: proto.CodeAuthFailed, wantMsg: "header is not base64url"},
		{name: "garbage four segments", auth: one, token: good + ".x", wantCode: proto.CodeAuthFailed, wantMsg: "4 dot-separated segments"},
		{name: "header not json", auth: one, token: "bm90anNvbg.e30.c2ln", wantCode: proto.CodeAuthFailed, wantMsg: "header is not base64url-encoded JSON"},
		{name: "claims not base64", auth: one, token: parts[0] + ".!!!." + parts[2], wantCode: proto.CodeAuthFailed, wantMsg: "claims are not base64url"},
		{name: "signature not base64", auth: one, token: parts[0] + "." + parts[1] + ".!!!", wantCode: proto.CodeAuthFailed, wantMsg: "signature is not base64url"},
		{name: "surrounding whitespace", auth: one, token: " " + good + "\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.auth.Verify([]byte(tc.token))
			if tc.wantCode == 0 {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if c.Expiry.IsZero() {
					t.Error("Expiry not set")
				}
				if tc.check != nil {
					tc.check(t, c)
				}
				return
			}
			if err == nil {
				t.Fatalf("Verify succeeded (%+v), want %v", c, tc.wantCode)
			}
			t.Log(err)
			var pe *proto.Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %T %v is not a *proto.Error", err, err)
			}
			if pe.Code != tc.wantCode {
				t.Errorf("code = %v, want %v (%v)", pe.Code, tc.wantCode, err)
			}
			if !strings.Contains(pe.Msg, tc.wantMsg) {
				t.Errorf("message %q does not contain %q", pe.Msg, tc.wantMsg)
			}
			// No part of the token may come back in the message.
			for _, seg := range strings.Split(tc.token, ".") {
				if len(seg) >= 8 && strings.Contains(pe.Msg, seg) {
					t.Errorf("message %q echoes token segment %q", pe.Msg, seg)
				}
			}
		})
	}
}

// craftHeader signs a token with a hand-written header, for headers the jwt
// library would not produce.
func craftHeader(t testing.TB, secret []byte, header, claims string) string {
	t.Helper()
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(claims))
	sig, err := jwt.SigningMethodHS256.Sign(signing, secret)
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + enc.EncodeToString(sig)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func otherEdKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

func TestAuthConcurrentVerify(t *testing.T) {
	k := newTestKeys(t)
	a := newAuth(t, AuthConfig{Keys: []KeyConfig{k.h1, k.e1Verify}})
	tokens := []string{mint(t, k.h1, Claims{UID: "a"}), mint(t, k.e1, Claims{UID: "b"})}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				if _, err := a.Verify([]byte(tokens[(g+i)%2])); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestMintTokenRoundTrip(t *testing.T) {
	k := newTestKeys(t)
	exp := time.Now().Add(90 * time.Minute).Truncate(time.Second)
	in := Claims{UID: "user-7", Device: "tablet", Rooms: []string{"a", "b"}, Expiry: exp}
	for _, key := range []KeyConfig{k.h1, k.e1} {
		t.Run(key.Alg, func(t *testing.T) {
			s, err := MintToken(key, in)
			if err != nil {
				t.Fatal(err)
			}
			tok, _, err := jwt.NewParser().ParseUnverified(s, jwt.MapClaims{})
			if err != nil {
				t.Fatal(err)
			}
			if tok.Header["kid"] != key.ID || tok.Header["alg"] != key.Alg {
				t.Errorf("header = %v", tok.Header)
			}
			verifyKey := key
			verifyKey.PrivateKey = ""
			out, err := newAuth(t, AuthConfig{Keys: []KeyConfig{verifyKey}}).Verify([]byte(s))
			if err != nil {
				t.Fatal(err)
			}
			if out.UID != in.UID || out.Device != in.Device || !slices.Equal(out.Rooms, in.Rooms) || !out.Expiry.Equal(exp) {
				t.Errorf("round trip: got %+v, want %+v", out, in)
			}
		})
	}

	t.Run("issuer and audience", func(t *testing.T) {
		cfg := AuthConfig{Keys: []KeyConfig{k.h1}, Issuer: "iss", Audience: "aud"}
		s, err := MintTokenFor(cfg, k.h1, Claims{UID: "u", Expiry: exp})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := newAuth(t, cfg).Verify([]byte(s)); err != nil {
			t.Fatal(err)
		}
	})

	errCases := []struct {
		name string
		key  KeyConfig
		c    Claims
		want string
	}{
		{"no uid", k.h1, Claims{Expiry: exp}, "uid is required"},
		{"no expiry", k.h1, Claims{UID: "u"}, "expiry is required"},
		{"verify-only key", k.e1Verify, Claims{UID: "u", Expiry: exp}, "has no private_key"},
		{"bad key", KeyConfig{ID: "x", Alg: AlgHS256, Secret: "short"}, Claims{UID: "u", Expiry: exp}, "need at least 32"},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := MintToken(tc.key, tc.c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("MintToken error = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestAuthKeyConfig(t *testing.T) {
	k := newTestKeys(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	secretFile := write("secret", k.h1.Secret+"\n")
	pubFile := write("pub.pem", k.e1.PublicKey)
	privFile := write("priv.pem", k.e1.PrivateKey)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, _ := x509.MarshalPKIXPublicKey(&ecKey.PublicKey)
	ecPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecDER}))
	other := newTestKeys(t)

	tests := []struct {
		name    string
		keys    []KeyConfig
		wantErr string // "" = valid
	}{
		{"secret file trims newline", []KeyConfig{{ID: "h1", Alg: AlgHS256, SecretFile: secretFile}}, ""},
		{"pem files", []KeyConfig{{ID: "e1", Alg: AlgEdDSA, PublicKey: pubFile, PrivateKey: privFile}}, ""},
		{"private key only", []KeyConfig{{ID: "e1", Alg: AlgEdDSA, PrivateKey: privFile}}, ""},
		{"lowercase alg", []KeyConfig{{ID: "h1", Alg: "hs256", Secret: k.h1.Secret}}, ""},
		{"sole key without id", []KeyConfig{{Alg: AlgHS256, Secret: k.h1.Secret}}, ""},
		{"no keys", nil, "no keys configured"},
		{"no alg", []KeyConfig{{ID: "a", Secret: k.h1.Secret}}, "alg is required"},
		{"bad alg", []KeyConfig{{ID: "a", Alg: "RS256", Secret: k.h1.Secret}}, `alg "RS256" not supported`},
		{"short secret", []KeyConfig{{ID: "a", Alg: AlgHS256, Secret: "short"}}, "need at least 32"},
		{"no secret", []KeyConfig{{ID: "a", Alg: AlgHS256}}, "needs secret or secret_file"},
		{"both secrets", []KeyConfig{{ID: "a", Alg: AlgHS256, Secret: k.h1.Secret, SecretFile: secretFile}}, "not both"},
		{"missing secret file", []KeyConfig{{ID: "a", Alg: AlgHS256, SecretFile: filepath.Join(dir, "nope")}}, "read secret_file"},
		{"hs256 with pem", []KeyConfig{{ID: "a", Alg: AlgHS256, Secret: k.h1.Secret, PublicKey: pubFile}}, "are for EdDSA keys"},
		{"eddsa with secret", []KeyConfig{{ID: "a", Alg: AlgEdDSA, Secret: k.h1.Secret}}, "are for HS256 keys"},
		{"eddsa no key", []KeyConfig{{ID: "a", Alg: AlgEdDSA}}, "needs public_key"},
		{"eddsa bad pem", []KeyConfig{{ID: "a", Alg: AlgEdDSA, PublicKey: "-----BEGIN nonsense"}}, "no PEM block"},
		{"eddsa missing file", []KeyConfig{{ID: "a", Alg: AlgEdDSA, PublicKey: filepath.Join(dir, "nope.pem")}}, "public_key"},
		{"eddsa not ed25519", []KeyConfig{{ID: "a", Alg: AlgEdDSA, PublicKey: ecPEM}}, "not an Ed25519 key"},
		{"eddsa mismatched pair", []KeyConfig{{ID: "a", Alg: AlgEdDSA, PublicKey: k.e1.PublicKey, PrivateKey: other.e1.PrivateKey}}, "does not match"},
		{"duplicate id", []KeyConfig{k.h1, k.h1}, `duplicate id "h1"`},
		{"missing id among many", []KeyConfig{k.h1, {Alg: AlgHS256, Secret: k.h2.Secret}}, "auth.keys[1]: id is required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := NewAuthenticator(AuthConfig{Keys: tc.keys})
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("NewAuthenticator: %v", err)
				}
				// Every valid config must verify a token from its own key.
				key := tc.keys[0]
				if key.Alg == AlgEdDSA && key.PrivateKey == "" {
					key.PrivateKey = k.e1.PrivateKey
				}
				if _, err := a.Verify([]byte(mint(t, key, Claims{UID: "u"}))); err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("NewAuthenticator error = %v, want %q", err, tc.wantErr)
			}
		})
	}
	if _, err := NewAuthenticator(AuthConfig{}); !errors.Is(err, ErrNoKeys) {
		t.Errorf("empty config: %v, want ErrNoKeys", err)
	}
}

func TestAuthLeewayConfig(t *testing.T) {
	k := newTestKeys(t)
	tok := mint(t, k.h1, Claims{UID: "u", Expiry: time.Now().Add(-10 * time.Second)})
	for _, tc := range []struct {
		leeway time.Duration
		ok     bool
	}{{0, true}, {time.Minute, true}, {-1, false}, {2 * time.Second, false}} {
		_, err := newAuth(t, AuthConfig{Keys: []KeyConfig{k.h1}, Leeway: tc.leeway}).Verify([]byte(tok))
		if (err == nil) != tc.ok {
			t.Errorf("leeway %v: err = %v, want ok=%v", tc.leeway, err, tc.ok)
		}
	}
}

func TestDefaultDevKey(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	key, err := DefaultDevKey(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	wantPath := filepath.Join(dataDir, "auth", "default.key")
	if key.ID != "default" || key.Alg != AlgHS256 || key.SecretFile != wantPath {
		t.Fatalf("key = %+v", key)
	}
	fi, err := os.Stat(wantPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, want 0600", fi.Mode().Perm())
	}
	di, err := os.Stat(filepath.Dir(wantPath))
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("key dir mode = %v, want 0700", di.Mode().Perm())
	}
	first, err := os.ReadFile(wantPath)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := hex.DecodeString(strings.TrimSpace(string(first)))
	if err != nil || len(raw) != 32 {
		t.Fatalf("key file is not 32 bytes of hex: %q (%v)", first, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(wantPath))
	if len(entries) != 1 {
		t.Errorf("auth dir holds %d entries, want only default.key", len(entries))
	}

	token := mint(t, key, Claims{UID: "dev"})

	again, err := DefaultDevKey(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	second, _ := os.ReadFile(wantPath)
	if again != key || string(second) != string(first) {
		t.Fatal("second call did not reuse the key")
	}
	if _, err := newAuth(t, AuthConfig{Keys: []KeyConfig{again}}).Verify([]byte(token)); err != nil {
		t.Fatalf("token from first key fails with reloaded key: %v", err)
	}

	// Concurrent first use settles on one key.
	racy := filepath.Join(t.TempDir(), "racy")
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if _, err := DefaultDevKey(racy); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if entries, _ := os.ReadDir(filepath.Join(racy, "auth")); len(entries) != 1 {
		t.Errorf("concurrent creation left %d entries", len(entries))
	}

	// A truncated key file is reported, naming the file.
	if err := os.WriteFile(wantPath, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := DefaultDevKey(dataDir); err == nil || !strings.Contains(err.Error(), wantPath) {
		t.Errorf("truncated key: err = %v, want one naming %s", err, wantPath)
	}
}

func benchVerify(b *testing.B, key, verifyKey KeyConfig) {
	a := newAuth(b, AuthConfig{Keys: []KeyConfig{verifyKey}})
	token := []byte(mint(b, key, Claims{UID: "user-123456", Device: "phone", Rooms: []string{"lobby"}}))
	b.ReportAllocs()
	b.SetBytes(int64(len(token)))
	for b.Loop() {
		if _, err := a.Verify(token); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyHS256(b *testing.B) {
	k := newTestKeys(b)
	benchVerify(b, k.h1, k.h1)
}

func BenchmarkVerifyEdDSA(b *testing.B) {
	k := newTestKeys(b)
	benchVerify(b, k.e1, k.e1Verify)
}
