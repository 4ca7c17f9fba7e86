package chat

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"tether/actors/conn"
	"tether/auth"
	"tether/client"
	"tether/config"
	"tether/test/check"
)

// secret is the HS256 key of the token listeners here.
const secret = "a-secret-of-at-least-32-bytes-for-hs256"

// tokens returns the authentication of a token listener.
func tokens(t *testing.T, timeout time.Duration) *auth.Listener {
	t.Helper()
	au, err := auth.New(config.Auth{Mode: config.AuthToken, JWT: config.JWT{HMACSecret: secret}, Timeout: config.Duration(timeout)})
	if err != nil {
		t.Fatal(err)
	}
	return au
}

// token signs id's token, valid for ttl (0: no expiry).
func token(t *testing.T, id auth.Identity, ttl time.Duration) string {
	t.Helper()
	s, err := auth.Mint([]byte(secret), &id, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestOnlyAuthAndPingBeforeAuthentication guards unauthenticated: the
// welcome says the listener wants a token; before it, ping is answered
// and anything else (or a bad token) is refused unauthorized and closes
// the connection, whose last frame says why.
func TestOnlyAuthAndPingBeforeAuthentication(t *testing.T) {
	n := start(t, tokens(t, 10*time.Second))
	c := n.dial(t)
	if c.Welcome.Auth != config.AuthToken {
		t.Fatalf("welcome %+v; want auth token", c.Welcome)
	}
	if err := c.Ping(); err != nil {
		t.Fatalf("ping before auth: %v", err)
	}
	write(t, c, `{"op":"join","id":1,"room":"lobby"}`, `{"op":"ping","id":2}`)
	if got := []string{answer(recv(t, c)), answer(recv(t, c))}; !slices.Equal(got, []string{"1 error unauthorized", "close"}) {
		t.Fatalf("join before auth: %q; want unauthorized, then close (and no pong)", got)
	}
	if r := n.Closed(t, c.ID()); r != conn.ReasonUnauthorized {
		t.Fatalf("closed %s, want unauthorized", r)
	}

	bad := n.dial(t)
	if ev, _ := bad.Authenticate(token(t, auth.Identity{User: "ann"}, time.Hour) + "x"); ev == nil || ev.Code != "unauthorized" {
		t.Fatalf("a bad signature: %+v; want unauthorized", ev)
	}
	if r := n.Closed(t, bad.ID()); r != conn.ReasonUnauthorized {
		t.Fatalf("closed %s, want unauthorized", r)
	}
}

// TestTheAuthTimeoutEndsAtAuthentication guards the deadline: a
// connection still unauthenticated after auth.timeout closes
// unauthorized; one that authenticated (with a token that never
// expires) has no deadline left.
func TestTheAuthTimeoutEndsAtAuthentication(t *testing.T) {
	n := start(t, tokens(t, 500*time.Millisecond))
	idle, authed := n.dial(t), n.dial(t)
	if _, err := authed.Authenticate(token(t, auth.Identity{User: "ann"}, 0)); err != nil {
		t.Fatal(err)
	}
	if r := n.Closed(t, idle.ID()); r != conn.ReasonUnauthorized {
		t.Fatalf("the idle connection closed %s, want unauthorized", r)
	}
	n.open(t, authed.ID(), 300*time.Millisecond)
}

// TestTheIdentityComesFromTheToken guards authenticated: the ok says who
// the connection is; its name and avatar are the token's whatever a join
// says, it may join the token's rooms only, it is bound to its user, and
// a second auth is refused.
func TestTheIdentityComesFromTheToken(t *testing.T) {
	n := start(t, tokens(t, 10*time.Second))
	c := n.dial(t)
	ann := auth.Identity{User: "ann", Name: "Ann", Avatar: "ann.png", Rooms: []string{"lobby", "staff:*"}}
	ok, err := c.Authenticate(token(t, ann, time.Hour))
	if err != nil || ok.User != "ann" || ok.Name != "Ann" || ok.Avatar != "ann.png" || time.Until(time.Unix(ok.Expires, 0)) < 59*time.Minute {
		t.Fatalf("auth: %+v %v; want ann, Ann, ann.png, for an hour", ok, err)
	}
	if _, err := c.Call(client.Request{Op: "join", Room: "lobby", Name: "Mallory", Avatar: "m.png"}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"elsewhere", "staff"} {
		if ev, _ := c.Call(client.Request{Op: "join", Room: r}); ev == nil || ev.Code != "forbidden" {
			t.Errorf("join %s, not in the token: %+v; want forbidden", r, ev)
		}
	}
	if _, err := c.Call(client.Request{Op: "join", Room: "staff:desk"}); err != nil {
		t.Fatalf("join staff:desk with staff:* in the token: %v", err)
	}
	members, err := c.Call(client.Request{Op: "members", Room: "lobby"})
	if err != nil || len(members.Members) != 1 || members.Members[0].Name != "Ann" || members.Members[0].Avatar != "ann.png" {
		t.Fatalf("members %+v %v; want Ann with ann.png", members, err)
	}
	if users := n.Registry.User("ann"); len(users) != 1 {
		t.Errorf("%d connections bound to ann, want 1", len(users))
	}
	if ev, _ := c.Authenticate(token(t, auth.Identity{User: "bob"}, time.Hour)); ev == nil || ev.Code != "bad_request" {
		t.Errorf("a second auth: %+v; want bad_request", ev)
	}
	n.open(t, c.ID(), 50*time.Millisecond)
}

// TestRefreshMovesTheExpiry guards refresh: at the identity's expiry the
// connection closes token_expired, unless a refresh for the same user
// moved it; a refresh for another user, or with a bad token, is refused
// and takes nothing away.
func TestRefreshMovesTheExpiry(t *testing.T) {
	n := start(t, tokens(t, 10*time.Second))
	short := token(t, auth.Identity{User: "bob"}, 2*time.Second)
	expiring, refreshed := n.dial(t), n.dial(t)
	for _, c := range []*client.Client{expiring, refreshed} {
		if _, err := c.Authenticate(short); err != nil {
			t.Fatal(err)
		}
	}
	for _, tok := range []string{token(t, auth.Identity{User: "eve"}, time.Hour), "garbage"} {
		if ev, _ := refreshed.Call(client.Request{Op: "refresh", Token: tok}); ev == nil || ev.Code != "unauthorized" {
			t.Fatalf("refresh with %.10s...: %+v; want unauthorized", tok, ev)
		}
	}
	ok, err := refreshed.Call(client.Request{Op: "refresh", Token: token(t, auth.Identity{User: "bob"}, time.Hour)})
	if err != nil || ok.User != "bob" || time.Until(time.Unix(ok.Expires, 0)) < 59*time.Minute {
		t.Fatalf("refresh: %+v %v; want bob for an hour", ok, err)
	}
	if r := n.Closed(t, expiring.ID()); r != conn.ReasonTokenExpired {
		t.Fatalf("closed %s, want token_expired", r)
	}
	n.open(t, refreshed.ID(), 300*time.Millisecond)
}

// backend is a proxy listener's authentication backend. A token
// "allow:<user>" is that user, "hold:<user>" too once the test says
// release, "deny" is refused (403); anything else fails (500).
type backend struct {
	*httptest.Server
	release chan struct{}
	held    atomic.Int32 // requests waiting for release
}

func newBackend(t *testing.T) *backend {
	b := &backend{release: make(chan struct{})}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req auth.ProxyRequest
		_ = json.NewDecoder(r.Body).Decode(&req) // a body it cannot read has no token: a failure
		verdict, user, _ := strings.Cut(req.Token, ":")
		switch verdict {
		case "hold":
			b.held.Add(1)
			select {
			case <-b.release:
			case <-r.Context().Done():
				return
			}
			b.held.Add(-1)
		case "allow":
		case "deny":
			http.Error(w, "no", http.StatusForbidden)
			return
		default:
			http.Error(w, "backend bug", http.StatusInternalServerError)
			return
		}
		_ = json.NewEncoder(w).Encode(auth.ProxyAnswer{User: user, Rooms: []string{"lobby"}})
	}))
	t.Cleanup(b.Close)
	return b
}

// asked waits until the backend holds a request.
func (b *backend) asked(t *testing.T) {
	t.Helper()
	check.For(t, 5*time.Second, time.Millisecond, func() error {
		if b.held.Load() == 0 {
			return fmt.Errorf("the backend holds no request")
		}
		return nil
	})
}

// TestProxyAnswersAreTakenInOrder guards authenticate with a proxy: while
// the backend is asked, what the client sends waits (up to maxWaiting;
// past it, busy) and is handled in order once the answer is in; a
// refresh while one is asked is busy, and other requests go on meanwhile;
// a refresh answered for another user is refused unauthorized and
// changes nothing; a refused auth closes the connection unauthorized, a
// failing backend unavailable.
func TestProxyAnswersAreTakenInOrder(t *testing.T) {
	b := newBackend(t)
	n := start(t, func() *auth.Listener {
		au, err := auth.New(config.Auth{Mode: config.AuthProxy, Timeout: config.Duration(10 * time.Second),
			Proxy: config.Proxy{URL: b.URL, Timeout: config.Duration(5 * time.Second)}})
		if err != nil {
			t.Fatal(err)
		}
		return au
	}())
	c := n.dial(t)
	requests := []string{`{"op":"auth","id":1,"token":"hold:ann"}`, `{"op":"join","id":2,"room":"lobby"}`}
	for i := 3; i <= maxWaiting+1; i++ {
		requests = append(requests, fmt.Sprintf(`{"op":"ping","id":%d}`, i))
	}
	write(t, c, append(requests, `{"op":"ping","id":99}`)...)
	if got := answer(recv(t, c)); got != "error busy" {
		t.Fatalf("past %d waiting: %q, want busy", maxWaiting, got)
	}
	b.asked(t)
	b.release <- struct{}{}
	var got []string
	for len(got) < maxWaiting+1 {
		got = append(got, answer(recv(t, c)))
	}
	// The join's ok is the room's, after the auth's; the rest are the
	// connection's, in order.
	want := []string{"1 ok"}
	for i := 3; i <= maxWaiting+1; i++ {
		want = append(want, fmt.Sprintf("%d pong", i))
	}
	own := slices.DeleteFunc(slices.Clone(got), func(s string) bool { return strings.HasPrefix(s, "2 ") })
	if slices.Index(got, "2 ok") < 1 || !slices.Equal(own, want) || len(n.Registry.User("ann")) != 1 {
		t.Fatalf("answers %q; want %q with the join's ok after the auth's, as ann", got, want)
	}

	write(t, c, `{"op":"refresh","id":20,"token":"hold:ann"}`, `{"op":"refresh","id":21,"token":"allow:ann"}`, `{"op":"ping","id":22}`)
	if got := []string{answer(recv(t, c)), answer(recv(t, c))}; !slices.Equal(got, []string{"21 error busy", "22 pong"}) {
		t.Fatalf("while a refresh is asked: %q; want the second refresh busy and the ping answered", got)
	}
	b.asked(t)
	b.release <- struct{}{}
	if got := answer(recv(t, c)); got != "20 ok" {
		t.Fatalf("refresh: %q, want ok", got)
	}
	if ev, _ := c.Call(client.Request{Op: "refresh", Token: "allow:bob"}); ev == nil || ev.Code != "unauthorized" {
		t.Fatalf("refresh answered for bob: %+v; want unauthorized (a refusal, not the backend failing)", ev)
	}
	n.open(t, c.ID(), 50*time.Millisecond)

	for tok, code := range map[string]string{"deny": "unauthorized", "fail": "unavailable"} {
		c := n.dial(t)
		if ev, _ := c.Authenticate(tok); ev == nil || ev.Code != code {
			t.Errorf("auth %s: %+v; want %s", tok, ev, code)
		}
		if r := n.Closed(t, c.ID()); r != conn.ReasonUnauthorized {
			t.Errorf("auth %s: closed %s, want unauthorized", tok, r)
		}
	}
}
