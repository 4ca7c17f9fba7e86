package auth

import (
	"time"

	"tether/config"
)

// Listener is the authentication of one listener's connections: its mode,
// and the verifier or the proxy it uses.
type Listener struct {
	// Mode is config.AuthToken or config.AuthProxy.
	Mode string
	// Timeout is how long a connection may stay unauthenticated.
	Timeout  time.Duration
	Verifier *Verifier // mode token
	Proxy    *Proxy    // mode proxy
}

// New returns the authentication of a listener, or nil for mode none
// (anyone connects).
func New(cfg config.Auth) (*Listener, error) {
	l := &Listener{Mode: cfg.Mode, Timeout: cfg.Timeout.D()}
	switch cfg.Mode {
	case config.AuthToken:
		v, err := NewVerifier(cfg.JWT)
		if err != nil {
			return nil, err
		}
		l.Verifier = v
	case config.AuthProxy:
		l.Proxy = NewProxy(cfg.Proxy.URL, cfg.Proxy.Timeout.D())
	default:
		return nil, nil
	}
	return l, nil
}
