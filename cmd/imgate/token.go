package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"imgate/gateway"
)

const tokenUsage = `usage: imgate token --uid U [--device D] [--ttl 24h] [--rooms a,b] [--kid K] [--config FILE] [--data ./data]

Prints one signed token on stdout. With --config the key comes from the
[[auth.keys]] of that file (--kid, or the first key that can sign); without it
the development key in <data>/auth/default.key is used (created if missing).
`

// runToken implements `imgate token`.
func runToken(args []string) error {
	return tokenCommand(args, os.Stdout, os.Stderr)
}

func tokenCommand(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("imgate token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, tokenUsage, "\nflags:\n")
		fs.PrintDefaults()
	}
	uid := fs.String("uid", "", "user id (required)")
	device := fs.String("device", "", `device id (the gateway assumes "default" when empty)`)
	ttl := fs.Duration("ttl", 24*time.Hour, "token lifetime")
	rooms := fs.String("rooms", "", "comma-separated rooms the token may join (absent: any room; empty: none)")
	kid := fs.String("kid", "", "key id to sign with (default: the first key that can sign)")
	configPath := fs.String("config", "", "TOML config whose [auth] table holds the keys")
	dataDir := fs.String("data", "./data", "data directory holding the dev key (without --config)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *uid == "" {
		return errors.New("--uid is required")
	}
	if *ttl <= 0 {
		return fmt.Errorf("--ttl must be positive, got %s", *ttl)
	}

	claims := gateway.Claims{UID: *uid, Device: *device, Expiry: time.Now().Add(*ttl)}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "rooms" {
			claims.Rooms = splitRooms(*rooms)
		}
	})

	var (
		cfg gateway.AuthConfig
		key gateway.KeyConfig
		err error
	)
	if *configPath != "" {
		if cfg, err = readAuthConfig(*configPath); err != nil {
			return err
		}
		if key, err = signingKey(cfg, *kid, *configPath); err != nil {
			return err
		}
	} else {
		if key, err = gateway.DefaultDevKey(*dataDir); err != nil {
			return err
		}
		if *kid != "" && *kid != key.ID {
			return fmt.Errorf("--kid %q: without --config the only key is the dev key %q", *kid, key.ID)
		}
		fmt.Fprintf(stderr, "imgate token: signing with dev key %s\n", key.SecretFile)
	}

	token, err := gateway.MintTokenFor(cfg, key, claims)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, token)
	return err
}

// splitRooms turns "a, b,,c" into [a b c]; an empty flag gives an empty,
// non-nil list, which the gateway reads as "no rooms".
func splitRooms(s string) []string {
	rooms := []string{}
	for r := range strings.SplitSeq(s, ",") {
		if r = strings.TrimSpace(r); r != "" {
			rooms = append(rooms, r)
		}
	}
	return rooms
}

// readAuthConfig reads what minting needs from the [auth] table of a TOML
// config file: keys, issuer and audience. Other tables and auth.leeway are
// not decoded, so the command works whatever form the file gives durations.
func readAuthConfig(path string) (gateway.AuthConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return gateway.AuthConfig{}, err
	}
	var file struct {
		Auth struct {
			Keys     []gateway.KeyConfig `toml:"keys"`
			Issuer   string              `toml:"issuer"`
			Audience string              `toml:"audience"`
		} `toml:"auth"`
	}
	if err := toml.Unmarshal(data, &file); err != nil {
		return gateway.AuthConfig{}, fmt.Errorf("%s: %w", path, err)
	}
	return gateway.AuthConfig{Keys: file.Auth.Keys, Issuer: file.Auth.Issuer, Audience: file.Auth.Audience}, nil
}

// signingKey picks the key named kid, or the first key that can sign when
// kid is empty.
func signingKey(cfg gateway.AuthConfig, kid, path string) (gateway.KeyConfig, error) {
	canSign := func(k gateway.KeyConfig) bool {
		return strings.EqualFold(k.Alg, gateway.AlgHS256) ||
			(strings.EqualFold(k.Alg, gateway.AlgEdDSA) && k.PrivateKey != "")
	}
	if len(cfg.Keys) == 0 {
		return gateway.KeyConfig{}, fmt.Errorf("%s: no [[auth.keys]] configured", path)
	}
	if kid == "" {
		for _, k := range cfg.Keys {
			if canSign(k) {
				return k, nil
			}
		}
		return gateway.KeyConfig{}, fmt.Errorf("%s: no key can sign (need an HS256 key, or an EdDSA key with private_key)", path)
	}
	ids := make([]string, 0, len(cfg.Keys))
	for _, k := range cfg.Keys {
		if k.ID == kid {
			if !canSign(k) {
				return gateway.KeyConfig{}, fmt.Errorf("%s: key %q cannot sign (EdDSA without private_key)", path, kid)
			}
			return k, nil
		}
		ids = append(ids, fmt.Sprintf("%q", k.ID))
	}
	return gateway.KeyConfig{}, fmt.Errorf("%s: no key with id %q (have %s)", path, kid, strings.Join(ids, ", "))
}
