package gateway

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Token signing algorithms a key may be configured with.
const (
	AlgHS256 = "HS256"
	AlgEdDSA = "EdDSA"
)

// minHS256Secret is the shortest HS256 secret accepted: RFC 7518 section 3.2
// requires a key at least as long as the hash output (256 bits).
const minHS256Secret = 32

// KeyConfig is one token key. The algorithm is pinned here, never taken from
// a token's header, so an HS256 token can never be checked against an EdDSA
// public key (alg confusion).
type KeyConfig struct {
	ID         string `toml:"id"`          // kid; may be empty only when it is the sole key
	Alg        string `toml:"alg"`         // "HS256" or "EdDSA"
	Secret     string `toml:"secret"`      // HS256 shared secret (as is)
	SecretFile string `toml:"secret_file"` // or read it from a file (trailing newline trimmed)
	PublicKey  string `toml:"public_key"`  // EdDSA: PEM (PKIX) text, or path to a PEM file
	PrivateKey string `toml:"private_key"` // EdDSA: PEM (PKCS8) text or path; only needed to mint tokens
}

// name is how errors refer to the key.
func (k KeyConfig) name() string {
	if k.ID == "" {
		return "auth key (no id)"
	}
	return fmt.Sprintf("auth key %q", k.ID)
}

// keyMaterial is a KeyConfig loaded and checked: verify is a []byte secret or
// an ed25519.PublicKey, sign is the []byte secret, an ed25519.PrivateKey, or
// nil when the key can only verify.
type keyMaterial struct {
	id     string
	alg    string
	verify any
	sign   any
}

// loadKey reads and checks a key's material, resolving files.
func loadKey(k KeyConfig) (*keyMaterial, error) {
	switch {
	case strings.EqualFold(k.Alg, AlgHS256):
		return loadHS256(k)
	case strings.EqualFold(k.Alg, AlgEdDSA):
		return loadEdDSA(k)
	case k.Alg == "":
		return nil, fmt.Errorf("%s: alg is required (HS256 or EdDSA)", k.name())
	default:
		return nil, fmt.Errorf("%s: alg %q not supported (want HS256 or EdDSA)", k.name(), k.Alg)
	}
}

func loadHS256(k KeyConfig) (*keyMaterial, error) {
	if k.PublicKey != "" || k.PrivateKey != "" {
		return nil, fmt.Errorf("%s: public_key/private_key are for EdDSA keys; HS256 takes secret or secret_file", k.name())
	}
	var secret []byte
	switch {
	case k.Secret != "" && k.SecretFile != "":
		return nil, fmt.Errorf("%s: set secret or secret_file, not both", k.name())
	case k.Secret != "":
		secret = []byte(k.Secret)
	case k.SecretFile != "":
		b, err := os.ReadFile(k.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("%s: read secret_file: %w", k.name(), err)
		}
		secret = []byte(strings.TrimRight(string(b), "\r\n"))
	default:
		return nil, fmt.Errorf("%s: HS256 needs secret or secret_file", k.name())
	}
	if len(secret) < minHS256Secret {
		return nil, fmt.Errorf("%s: HS256 secret is %d bytes; need at least %d", k.name(), len(secret), minHS256Secret)
	}
	return &keyMaterial{id: k.ID, alg: AlgHS256, verify: secret, sign: secret}, nil
}

func loadEdDSA(k KeyConfig) (*keyMaterial, error) {
	if k.Secret != "" || k.SecretFile != "" {
		return nil, fmt.Errorf("%s: secret/secret_file are for HS256 keys; EdDSA takes public_key (and private_key to sign)", k.name())
	}
	if k.PublicKey == "" && k.PrivateKey == "" {
		return nil, fmt.Errorf("%s: EdDSA needs public_key (PEM text or file)", k.name())
	}
	m := &keyMaterial{id: k.ID, alg: AlgEdDSA}
	var pub ed25519.PublicKey
	if k.PublicKey != "" {
		block, err := readPEM(k.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("%s: public_key: %w", k.name(), err)
		}
		parsed, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: public_key: %w", k.name(), err)
		}
		var ok bool
		if pub, ok = parsed.(ed25519.PublicKey); !ok {
			return nil, fmt.Errorf("%s: public_key is a %T, not an Ed25519 key", k.name(), parsed)
		}
	}
	if k.PrivateKey != "" {
		block, err := readPEM(k.PrivateKey)
		if err != nil {
			return nil, fmt.Errorf("%s: private_key: %w", k.name(), err)
		}
		parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: private_key: %w", k.name(), err)
		}
		priv, ok := parsed.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%s: private_key is a %T, not an Ed25519 key", k.name(), parsed)
		}
		derived := priv.Public().(ed25519.PublicKey)
		if pub != nil && !pub.Equal(derived) {
			return nil, fmt.Errorf("%s: private_key does not match public_key", k.name())
		}
		pub = derived
		m.sign = priv
	}
	m.verify = pub
	return m, nil
}

// readPEM decodes the first PEM block of s, which is PEM text when it holds a
// "-----BEGIN" line and a file path otherwise.
func readPEM(s string) (*pem.Block, error) {
	data := []byte(s)
	if !strings.Contains(s, "-----BEGIN") {
		b, err := os.ReadFile(s)
		if err != nil {
			return nil, err
		}
		data = b
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	return block, nil
}

// DefaultDevKey loads, or creates on first use, the HS256 key a gateway falls
// back to when no keys are configured: dataDir/auth/default.key, 32 random
// bytes in hex (the hex text itself is the secret). The file is 0600 in a
// 0700 directory. `imgate token` without --config signs with the same key, so
// a development setup needs no key management.
func DefaultDevKey(dataDir string) (KeyConfig, error) {
	dir := filepath.Join(dataDir, "auth")
	path := filepath.Join(dir, "default.key")
	key := KeyConfig{ID: "default", Alg: AlgHS256, SecretFile: path}

	if _, err := os.Stat(path); err == nil {
		return key, checkDevKey(key)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return KeyConfig{}, fmt.Errorf("dev key: %w", err)
	}

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return KeyConfig{}, fmt.Errorf("dev key: %w", err)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return KeyConfig{}, fmt.Errorf("dev key: %w", err)
	}
	// Write a temporary file and hard-link it into place: the link fails if
	// another process created the key first, and no reader ever sees a
	// half-written key.
	tmp, err := os.CreateTemp(dir, ".default.key.*") // CreateTemp uses mode 0600
	if err != nil {
		return KeyConfig{}, fmt.Errorf("dev key: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(hex.EncodeToString(raw[:]) + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if closeErr := tmp.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return KeyConfig{}, fmt.Errorf("dev key: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return KeyConfig{}, fmt.Errorf("dev key: %w", err)
	}
	return key, checkDevKey(key)
}

// checkDevKey reports a dev key file that is empty or truncated, naming it so
// the operator knows what to delete.
func checkDevKey(k KeyConfig) error {
	if _, err := loadKey(k); err != nil {
		return fmt.Errorf("dev key %s: %w (delete it to have a new one made)", k.SecretFile, err)
	}
	return nil
}
