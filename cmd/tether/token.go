package main

import (
	"errors"
	"fmt"
	"strings"

	"tether/auth"
	"tether/config"
)

// runToken mints a token for a token listener, for testing (Centrifugo's
// gentoken): with the listener's hmac_secret, or with --private-key when
// the listener verifies RS256 or ES256 with a public key.
func runToken(c *call) error {
	cfg, err := c.config()
	if err != nil {
		return err
	}
	key, err := signingKey(cfg, c.String("listener"), c.String("private-key"))
	if err != nil {
		return err
	}
	id := auth.Identity{User: c.String("user"), Name: c.String("name"), Avatar: c.String("avatar")}
	if rooms := c.String("rooms"); rooms != "" {
		id.Rooms = strings.Split(rooms, ",")
	}
	if err := id.Check(); err != nil {
		return err
	}
	token, err := auth.Mint(key, &id, c.Duration("ttl"))
	if err != nil {
		return err
	}
	fmt.Fprintln(c.out, token)
	return nil
}

// signingKey is the key that signs tokens for the token listener named
// listener (or the only one).
func signingKey(cfg *config.Config, listener, privateKey string) (any, error) {
	var l *config.Listener
	for i := range cfg.Listeners {
		c := &cfg.Listeners[i]
		if c.Auth.Mode != config.AuthToken || (listener != "" && c.Name != listener) {
			continue
		}
		if l != nil && l.Auth.JWT != c.Auth.JWT {
			return nil, fmt.Errorf("listeners %s and %s verify tokens with different keys: choose one with --listener", l.Name, c.Name)
		}
		l = c
	}
	switch {
	case l == nil && listener != "":
		return nil, fmt.Errorf("no listener %s with auth.mode token in the configuration", listener)
	case l == nil:
		return nil, errors.New("no listener with auth.mode token in the configuration")
	case privateKey != "":
		return auth.ReadPrivateKey(privateKey)
	case l.Auth.JWT.HMACSecret != "":
		return []byte(l.Auth.JWT.HMACSecret), nil
	}
	return nil, fmt.Errorf("listener %s verifies with public_key_file %s: give the private key with --private-key", l.Name, l.Auth.JWT.PublicKeyFile)
}
