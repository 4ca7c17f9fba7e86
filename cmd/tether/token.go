package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"tether/auth"
	"tether/config"
)

// tokenCmd mints a token for a token listener, for testing (Centrifugo's
// gentoken): with the listener's hmac_secret, or with --private-key when
// the listener verifies RS256 or ES256 with a public key.
func tokenCmd() *cobra.Command {
	var cf configFlags
	var id auth.Identity
	var rooms, listener, privateKey string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "token --user U [--name N] [--rooms 'lobby,team:*'] [--ttl 1h]",
		Short: "mint a client token (JWT) that a token listener of the configuration accepts, for testing",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := cf.load()
			if err != nil {
				return err
			}
			key, err := signingKey(cfg, listener, privateKey)
			if err != nil {
				return err
			}
			if rooms != "" {
				id.Rooms = strings.Split(rooms, ",")
			}
			if err := id.Check(); err != nil {
				return err
			}
			token, err := auth.Mint(key, &id, ttl)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), token)
			return nil
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&id.User, "user", "", "user id: the sub claim, bound to the connection")
	cmd.Flags().StringVar(&id.Name, "name", "", "the name rooms show (default: the user id)")
	cmd.Flags().StringVar(&id.Avatar, "avatar", "", "the avatar rooms show")
	cmd.Flags().StringVar(&rooms, "rooms", "", "comma-separated glob patterns of the rooms it may join (default: no claim, the rooms anyone may join)")
	cmd.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long it is valid (the exp claim); 0: no expiry")
	cmd.Flags().StringVar(&listener, "listener", "", "the token listener whose key signs (default: the only one)")
	cmd.Flags().StringVar(&privateKey, "private-key", "", "PEM RSA or P-256 private key, for a listener with public_key_file")
	_ = cmd.MarkFlagRequired("user")
	return cmd
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
