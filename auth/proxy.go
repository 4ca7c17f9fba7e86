package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// ProxyRequest is what a proxy listener POSTs to its backend, as JSON, to
// authenticate a connection (Centrifugo's connect proxy): the backend
// decides from the token the client sent, or from the WebSocket upgrade's
// headers (a session cookie), and the client's address.
type ProxyRequest struct {
	Listener string              `json:"listener"`
	Conn     string              `json:"conn"`
	Remote   string              `json:"remote"`
	Token    string              `json:"token,omitempty"`
	Headers  map[string][]string `json:"headers,omitempty"` // WebSocket listeners: the upgrade request's
	// Refresh says that the connection is authenticated already and asks
	// to extend it (the refresh op): the backend must answer the same
	// user.
	Refresh bool `json:"refresh,omitempty"`
}

// ProxyAnswer is the backend's answer to an allowed connection (status
// 200). A refusal is status 401 or 403; any other status, or no answer
// within auth.proxy.timeout, is the backend failing.
type ProxyAnswer struct {
	User   string   `json:"user"`
	Name   string   `json:"name,omitempty"`
	Avatar string   `json:"avatar,omitempty"`
	Rooms  []string `json:"rooms,omitempty"`
	// ExpiresAt is when the connection's authentication ends, in Unix
	// seconds: without a refresh by then it closes (token_expired).
	// 0: never.
	ExpiresAt int64 `json:"expires_at,omitempty"`
}

// ErrDenied is a backend's refusal (401 or 403).
var ErrDenied = errors.New("refused by the authentication backend")

// maxProxyAnswer bounds the answer read from the backend.
const maxProxyAnswer = 64 << 10

// Proxy asks an HTTP backend who connections are. Safe for concurrent
// use.
type Proxy struct {
	url    string
	client *http.Client
}

// NewProxy returns the proxy of url, whose answers may take timeout.
func NewProxy(url string, timeout time.Duration) *Proxy {
	return &Proxy{url: url, client: &http.Client{Timeout: timeout}}
}

// Ask posts req and returns the identity the backend answers: ErrDenied
// when it refuses, another error when it fails or says what tether cannot
// take.
func (p *Proxy) Ask(ctx context.Context, req *ProxyRequest) (*Identity, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(hr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxProxyAnswer))
	if err != nil {
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden:
		return nil, ErrDenied
	default:
		return nil, fmt.Errorf("the authentication backend answered %s", resp.Status)
	}
	var a ProxyAnswer
	if err := json.Unmarshal(data, &a); err != nil {
		return nil, fmt.Errorf("the authentication backend's answer: %w", err)
	}
	id := &Identity{User: a.User, Name: a.Name, Avatar: a.Avatar, Rooms: a.Rooms}
	if a.ExpiresAt > 0 {
		id.Expires = time.Unix(a.ExpiresAt, 0)
	}
	if err := id.Check(); err != nil {
		return nil, fmt.Errorf("the authentication backend's answer: %w", err)
	}
	return id, nil
}
