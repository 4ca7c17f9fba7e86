package chat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"tether/actors/conn"
	"tether/actors/protocol"
	"tether/auth"
	"tether/config"
)

// Authentication on a listener with auth.mode token or proxy (DESIGN.md
// section 11). Until it is done a connection may only auth and ping:
// anything else is answered unauthorized and closes it, and so does a
// connection still unauthenticated after auth.timeout. Once done, its
// user id is bound to it (the admin API pushes to it), its name and
// avatar are the identity's whatever the client says, and the rooms it
// may join are the identity's. At the identity's expiry it closes
// (token_expired) unless a refresh extended it first.

// deadline is the connection's authentication deadline: the auth
// timeout, then the identity's expiry. A timer posts it to the actor;
// only the latest one set counts (an earlier one may already be queued
// when it is replaced).
type deadline struct {
	timer  *time.Timer
	reason conn.Reason
}

func (*deadline) IgnoreDeadLetterLogging() {}

// proxyAnswered is a proxy backend's answer, posted back to the actor.
type proxyAnswered struct {
	ref     json.RawMessage
	refresh bool
	who     *auth.Identity
	err     error
}

func (*proxyAnswered) IgnoreDeadLetterLogging() {}

// maxWaiting and maxWaitingBytes bound the messages a client sends while
// its proxy backend is asked; they are handled in order once it answers.
// Without the byte bound an unauthenticated connection could hold 16
// messages of max_frame each.
const (
	maxWaiting      = 16
	maxWaitingBytes = 16 << 10
)

// authOpened starts the authentication of a new connection: the auth
// timeout, and, with a token in the WebSocket URL (?token=), the check
// of that token.
func (a *App) authOpened(c *conn.Actor) {
	if hs := c.Handshake(); hs != nil {
		a.headers = hs.Header // kept for the backend until the auth is done
		if hs.Token != "" {
			a.authenticate(c, nil, hs.Token, false)
		}
	}
	if a.who == nil && !c.Closing() {
		a.setDeadline(c, time.Now().Add(a.auth.Timeout), conn.ReasonUnauthorized)
	}
}

// wait keeps a message sent while the backend is asked who the
// connection is: it is handled once the answer is in.
func (a *App) wait(c *conn.Actor, data []byte) {
	held := len(data)
	for _, w := range a.waiting {
		held += len(w)
	}
	if len(a.waiting) >= maxWaiting || held > maxWaitingBytes {
		a.fail(c, nil, protocol.CodeBusy, fmt.Sprintf("messages waiting for the authentication are bounded (%d, %d bytes); retry once it is answered", maxWaiting, maxWaitingBytes))
		return
	}
	a.waiting = append(a.waiting, append([]byte(nil), data...))
}

// unauthenticated handles a request that arrives before the connection
// is authenticated: only auth and ping are taken.
func (a *App) unauthenticated(c *conn.Actor, req *protocol.Request) {
	switch req.Op {
	case "ping":
		c.Send(protocol.Encode(&protocol.Reply{Op: "pong", ID: req.ID}))
	case "pong":
	case "auth":
		a.authenticate(c, req.ID, req.Token, false)
	default:
		a.refuse(c, req.ID, protocol.CodeUnauthorized, req.Op+" before authentication: send {\"op\":\"auth\",\"token\":...} first")
	}
}

// authenticate checks a token (or asks the backend) for auth or refresh.
func (a *App) authenticate(c *conn.Actor, ref json.RawMessage, token string, refresh bool) {
	if a.auth.Verifier != nil {
		who, err := a.auth.Verifier.Verify(token)
		a.authenticated(c, &proxyAnswered{ref: ref, refresh: refresh, who: who, err: err})
		return
	}
	a.asking = true
	req := &auth.ProxyRequest{
		Listener: c.Settings().Listener, Conn: c.ID(), Remote: c.RemoteAddr(),
		Token: token, Headers: a.headers, Refresh: refresh,
	}
	system, self, proxy := c.Context().ActorSystem(), c.Context().Self(), a.auth.Proxy
	go func() {
		who, err := proxy.Ask(context.Background(), req)
		system.Root.Send(self, &proxyAnswered{ref: ref, refresh: refresh, who: who, err: err})
	}()
}

// authenticated takes the verdict on an auth or a refresh.
func (a *App) authenticated(c *conn.Actor, m *proxyAnswered) {
	a.asking = false
	// The backend is unavailable when asking it failed; what it answered
	// and this node refuses (an expiry past, another user) is a refusal.
	unavailable := m.err != nil && a.auth.Proxy != nil && !errors.Is(m.err, auth.ErrDenied) && !errors.Is(m.err, auth.ErrExpired)
	if m.err == nil && !m.who.Expires.IsZero() && !m.who.Expires.After(time.Now()) {
		m.err = fmt.Errorf("%w: the backend's expires_at has passed", auth.ErrExpired)
	}
	if m.err == nil && m.refresh && m.who.User != a.who.User {
		m.err = fmt.Errorf("the token is for user %q; this connection is %q's", m.who.User, a.who.User)
	}
	if m.err != nil {
		code := protocol.CodeUnauthorized
		if unavailable {
			code = protocol.CodeUnavailable
		}
		c.Log().Info().Err(m.err).Bool("refresh", m.refresh).Msg("authentication refused")
		if m.refresh {
			// The connection stays what it was until its expiry: a
			// refresh that fails takes nothing away yet.
			a.fail(c, m.ref, code, m.err.Error())
			return
		}
		if unavailable {
			a.fail(c, m.ref, code, "the authentication backend failed: "+m.err.Error())
			c.Close(conn.ReasonUnauthorized)
			return
		}
		a.refuse(c, m.ref, code, m.err.Error())
		return
	}
	first := a.who == nil
	a.who, a.headers = m.who, nil
	a.name, a.avatar = m.who.Name, m.who.Avatar
	if a.name == "" {
		a.name = m.who.User
	}
	if first {
		a.deps.Registry.Bind(c.ID(), m.who.User)
	}
	if m.who.Expires.IsZero() {
		a.stopDeadline()
	} else {
		a.setDeadline(c, m.who.Expires, conn.ReasonTokenExpired)
	}
	ok := &protocol.AuthOK{Op: "ok", ID: m.ref, User: m.who.User, Name: a.name, Avatar: a.avatar}
	if !m.who.Expires.IsZero() {
		ok.Expires = m.who.Expires.Unix()
	}
	c.Send(protocol.Encode(ok))
	waiting := a.waiting
	a.waiting = nil
	for _, data := range waiting {
		a.Frame(c, data)
	}
}

// refuse answers an error and closes the connection unauthorized.
func (a *App) refuse(c *conn.Actor, ref json.RawMessage, code, message string) {
	a.fail(c, ref, code, message)
	c.Close(conn.ReasonUnauthorized)
}

// setDeadline closes the connection with reason at t, unless replaced.
func (a *App) setDeadline(c *conn.Actor, t time.Time, reason conn.Reason) {
	a.stopDeadline()
	d := &deadline{reason: reason}
	system, self := c.Context().ActorSystem(), c.Context().Self()
	d.timer = time.AfterFunc(time.Until(t), func() { system.Root.Send(self, d) })
	a.deadline = d
}

func (a *App) stopDeadline() {
	if a.deadline != nil {
		a.deadline.timer.Stop()
		a.deadline = nil
	}
}

// deadlinePassed closes the connection when d is still its deadline.
func (a *App) deadlinePassed(c *conn.Actor, d *deadline) {
	if d != a.deadline {
		return // replaced (a refresh) after it fired
	}
	a.deadline = nil
	c.Log().Info().Str("reason", d.reason.String()).Msg("authentication deadline passed")
	c.Close(d.reason)
}

// mayJoin says whether the connection may join room (or see its
// members): the namespace's join option, and, once authenticated, the
// identity's rooms.
func (a *App) mayJoin(room string) (bool, string) {
	open := a.deps.Options.Options(room).Join != config.JoinToken
	switch {
	case a.who != nil && !a.who.MayJoin(room, open):
		if open {
			return false, "the token's rooms do not include " + room
		}
		return false, "joining " + room + " needs a token whose rooms include it"
	case a.who == nil && !open:
		return false, "joining " + room + " needs a token whose rooms include it"
	}
	return true, ""
}
