package test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"tether/actors/conn"
	"tether/auth"
	"tether/client"
	"tether/config"
)

// testSecret is the HS256 secret of the test token listeners.
const testSecret = "a-test-secret-of-at-least-32-bytes!"

// tokenListeners turns the TCP listener "tcp" and a WebSocket listener
// "ws" into token listeners with jwt.
func tokenListeners(jwtCfg config.JWT) func(*config.Config) {
	return func(c *config.Config) {
		wsListener("127.0.0.1:0")(c)
		for i := range c.Listeners {
			c.Listeners[i].Auth.Mode = config.AuthToken
			c.Listeners[i].Auth.JWT = jwtCfg
		}
	}
}

// mint signs a token for user with key; rooms nil leaves the claim out.
func mint(t *testing.T, key any, user, name string, rooms []string, ttl time.Duration) string {
	t.Helper()
	token, err := auth.Mint(key, &auth.Identity{User: user, Name: name, Rooms: rooms}, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// expectRefused checks that c's last request got error code and that the
// connection then closes with reason unauthorized.
func expectRefused(t *testing.T, n *testNode, c *client.Client, ev *client.Event, err error, code string) {
	t.Helper()
	if err == nil || ev == nil || ev.Code != code {
		t.Fatalf("answer %+v %v; want error %s", ev, err, code)
	}
	if r := n.closeReason(t, c.ID(), 5*time.Second); r != conn.ReasonUnauthorized {
		t.Fatalf("closed %s; want unauthorized", r)
	}
}

// TestWorkBeforeAuthIsUnauthorized: on a token listener the welcome says
// so; a join before auth is answered unauthorized and closes the
// connection (TCP's last frame says why), and a connection that never
// authenticates is closed unauthorized at auth.timeout.
func TestWorkBeforeAuthIsUnauthorized(t *testing.T) {
	n := startNode(t, func(c *config.Config) {
		tokenListeners(config.JWT{HMACSecret: testSecret})(c)
		c.Listeners[1].Auth.Timeout = config.Duration(300 * time.Millisecond)
	})
	c := n.dial(t, "tcp")
	if c.Welcome.Auth != config.AuthToken {
		t.Fatalf("welcome %+v; want auth token", c.Welcome)
	}
	if ev, err := c.Call(client.Request{Op: "ping"}); err != nil || ev.Op != "pong" {
		t.Fatalf("ping before auth: %+v %v; want pong", ev, err)
	}
	ev, err := c.Call(client.Request{Op: "join", Room: "lobby"})
	expectRefused(t, n, c, ev, err, "unauthorized")
	if last, err := c.Expect("close", 5*time.Second); err != nil || last.Reason != "unauthorized" {
		t.Fatalf("last frame %+v %v; want close unauthorized", last, err)
	}

	idle := n.dialWS(t)
	start := time.Now()
	if r := n.closeReason(t, idle.ID(), 5*time.Second); r != conn.ReasonUnauthorized {
		t.Fatalf("an idle unauthenticated connection closed %s; want unauthorized", r)
	}
	var ce *client.CloseError
	if _, err := idle.Expect("never", 5*time.Second); !errors.As(err, &ce) || ce.Code != 4006 || ce.Reason != "unauthorized" {
		t.Fatalf("close %v; want 4006 unauthorized", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("closed after %s; auth.timeout is 300ms", took)
	}
}

// TestBadTokensAreRefused: a wrong signature, an expired token, alg none,
// and an HS256 token signed with the listener's RSA public key (the
// algorithm confusion attack) are each refused and close the connection;
// RS256 and ES256 tokens signed with the right keys are taken.
func TestBadTokensAreRefused(t *testing.T) {
	dir := t.TempDir()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	writePublic := func(name string, key any) (string, []byte) {
		der, err := x509.MarshalPKIXPublicKey(key)
		if err != nil {
			t.Fatal(err)
		}
		data := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
		file := filepath.Join(dir, name)
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return file, data
	}
	rsaFile, rsaPEM := writePublic("rsa.pem", &rsaKey.PublicKey)
	ecFile, _ := writePublic("ec.pem", &ecKey.PublicKey)

	hs := startNode(t, tokenListeners(config.JWT{HMACSecret: testSecret}))
	rs := startNode(t, tokenListeners(config.JWT{PublicKeyFile: rsaFile}))
	es := startNode(t, tokenListeners(config.JWT{PublicKeyFile: ecFile}))

	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "mallory"}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	// The classic confusion: the attacker knows the public key and signs
	// HS256 with its PEM bytes as the secret.
	confused := mint(t, rsaPEM, "mallory", "", nil, time.Hour)
	for _, tc := range []struct {
		name  string
		node  *testNode
		token string
	}{
		{"wrong signature", hs, mint(t, []byte("another-secret-of-at-least-32-bytes"), "mallory", "", nil, time.Hour)},
		{"expired", hs, mint(t, []byte(testSecret), "ann", "", nil, -time.Minute)},
		{"alg none", hs, none},
		{"alg none on rs256", rs, none},
		{"hs256 signed with the rsa public key", rs, confused},
		{"es256 token on an rs256 listener", rs, mint(t, ecKey, "mallory", "", nil, time.Hour)},
		{"not a token", hs, "a.b.c"},
		{"no sub", hs, mint(t, []byte(testSecret), "", "", nil, time.Hour)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.node.dial(t, "tcp")
			ev, err := c.Authenticate(tc.token)
			expectRefused(t, tc.node, c, ev, err, "unauthorized")
		})
	}
	for _, tc := range []struct {
		name string
		node *testNode
		key  any
	}{{"rs256", rs, rsaKey}, {"es256", es, ecKey}, {"hs256", hs, []byte(testSecret)}} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.node.dial(t, "tcp")
			ev, err := c.Authenticate(mint(t, tc.key, "ann", "Ann", nil, time.Hour))
			if err != nil || ev.User != "ann" || ev.Name != "Ann" || ev.Expires == 0 {
				t.Fatalf("auth: %+v %v; want ok for ann", ev, err)
			}
			join(t, c, "lobby", "whoever")
		})
	}
}

// TestIdentityComesFromTheToken: the name and avatar a client gives are
// ignored once it is authenticated: the room sees the token's, and so
// do whispers; the connection is bound to the token's user (the admin
// API pushes to it); a room outside the rooms claim is forbidden, and so
// is its member list; a join: token namespace opens only to a claim that
// names it; a token in the WebSocket URL authenticates at once.
func TestIdentityComesFromTheToken(t *testing.T) {
	n := startNode(t, func(c *config.Config) {
		tokenListeners(config.JWT{HMACSecret: testSecret})(c)
		c.Rooms.Namespaces = []config.Namespace{{Prefix: "vip", RoomOptions: config.RoomOptions{Join: config.JoinToken, Publish: config.PublishMembers, Presence: true}}}
	})
	key := []byte(testSecret)
	ann := n.dial(t, "tcp")
	if _, err := ann.Authenticate(mint(t, key, "u-ann", "Ann", []string{"lobby", "team:*", "vip:gold"}, time.Hour)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	bob, err := client.DialWebSocket(ctx, "ws://"+n.addr("ws")+"/ws?token="+mint(t, key, "u-bob", "Bob", nil, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	if ev, err := bob.Expect("ok", 5*time.Second); err != nil || ev.User != "u-bob" {
		t.Fatalf("a token in the URL: %+v %v; want ok for u-bob", ev, err)
	}

	join(t, bob, "lobby", "Bob")
	if _, err := ann.Call(client.Request{Op: "join", Room: "lobby", Name: "Bob", Avatar: "fake"}); err != nil {
		t.Fatal(err)
	}
	ev, err := bob.Expect("joined", 5*time.Second)
	if err != nil || ev.Name != "Ann" || ev.Avatar != "" {
		t.Fatalf("bob sees %+v %v; want Ann (the token's name), not the name ann asked for", ev, err)
	}
	if _, err := ann.Call(client.Request{Op: "whisper", To: bob.ID(), Data: "hi"}); err != nil {
		t.Fatal(err)
	}
	if ev, err := bob.Expect("message", 5*time.Second); err != nil || ev.Name != "Ann" {
		t.Fatalf("whisper %+v %v; want from Ann", ev, err)
	}
	var info conn.Info
	if code := api(t, n, "GET", "/api/conns/"+ann.ID(), nil, &info); code != http.StatusOK || info.User != "u-ann" {
		t.Fatalf("info %d %+v; want user u-ann", code, info)
	}
	if code := api(t, n, "POST", "/api/push", map[string]any{"user": "u-ann", "data": "to ann"}, nil); code != http.StatusOK {
		t.Fatalf("push to user: %d", code)
	}
	if ev, err := ann.Expect("message", 5*time.Second); err != nil || string(ev.Data) != `"to ann"` {
		t.Fatalf("push to the token's user: %+v %v", ev, err)
	}

	for _, tc := range []struct {
		c    *client.Client
		op   string
		room string
		code string
	}{
		{ann, "join", "team:red", ""},
		{ann, "join", "vip:gold", ""},
		{ann, "join", "elsewhere", "forbidden"},
		{ann, "members", "elsewhere", "forbidden"},
		{ann, "join", "vip:silver", "forbidden"},
		{bob, "join", "anything", ""},          // no rooms claim: every open room
		{bob, "join", "vip:gold", "forbidden"}, // but no join: token room
	} {
		ev, err := tc.c.Call(client.Request{Op: tc.op, Room: tc.room})
		switch {
		case tc.code == "" && err != nil:
			t.Errorf("%s %s: %v; want ok", tc.op, tc.room, err)
		case tc.code != "" && (err == nil || ev.Code != tc.code):
			t.Errorf("%s %s: %+v %v; want %s", tc.op, tc.room, ev, err, tc.code)
		}
	}
}

// TestRefreshExtendsAndExpiryCloses: a connection whose token expires
// without a refresh is closed token_expired at the exp; one that
// refreshes first stays past it; a refresh with another user's token or
// a bad one is refused and changes nothing.
func TestRefreshExtendsAndExpiryCloses(t *testing.T) {
	n := startNode(t, tokenListeners(config.JWT{HMACSecret: testSecret}))
	key := []byte(testSecret)
	short := 2 * time.Second
	expiring := n.dialWS(t)
	if _, err := expiring.Authenticate(mint(t, key, "ann", "", nil, short)); err != nil {
		t.Fatal(err)
	}
	refreshed := n.dial(t, "tcp")
	ev, err := refreshed.Authenticate(mint(t, key, "bob", "", nil, short))
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Unix(ev.Expires, 0)
	if ev, err := refreshed.Call(client.Request{Op: "refresh", Token: mint(t, key, "eve", "", nil, time.Hour)}); err == nil || ev.Code != "unauthorized" {
		t.Fatalf("refresh as another user: %+v %v; want unauthorized", ev, err)
	}
	if ev, err := refreshed.Call(client.Request{Op: "refresh", Token: "garbage"}); err == nil || ev.Code != "unauthorized" {
		t.Fatalf("refresh with garbage: %+v %v; want unauthorized", ev, err)
	}
	ev, err = refreshed.Call(client.Request{Op: "refresh", Token: mint(t, key, "bob", "", nil, time.Hour)})
	if err != nil || ev.User != "bob" || time.Unix(ev.Expires, 0).Before(exp.Add(time.Minute)) {
		t.Fatalf("refresh: %+v %v; want ok until an hour from now", ev, err)
	}

	if r := n.closeReason(t, expiring.ID(), short+3*time.Second); r != conn.ReasonTokenExpired {
		t.Fatalf("closed %s; want token_expired", r)
	}
	var ce *client.CloseError
	if _, err := expiring.Expect("never", 5*time.Second); !errors.As(err, &ce) || ce.Code != 4007 {
		t.Fatalf("close %v; want 4007 token_expired", err)
	}
	if time.Now().Before(exp) {
		t.Fatalf("closed before the token's exp %s", exp)
	}
	// Past the old exp the refreshed connection still works.
	join(t, refreshed, "lobby", "bob")
}

// proxyBackend is a test authentication backend: the token says what it
// does ("allow:<user>", "deny", "slow", "fail"), and it records the
// requests it got.
type proxyBackend struct {
	*httptest.Server
	mu       sync.Mutex
	requests []auth.ProxyRequest
	release  chan struct{}
}

func startProxyBackend(t *testing.T) *proxyBackend {
	b := &proxyBackend{release: make(chan struct{})}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req auth.ProxyRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		b.mu.Lock()
		b.requests = append(b.requests, req)
		b.mu.Unlock()
		switch {
		case strings.HasPrefix(req.Token, "allow:"):
			user := strings.TrimPrefix(req.Token, "allow:")
			_ = json.NewEncoder(w).Encode(auth.ProxyAnswer{User: user, Name: strings.ToUpper(user), Rooms: []string{"lobby"}})
		case req.Token == "" && r.Header.Get("Content-Type") == "application/json" && len(req.Headers["Cookie"]) > 0:
			_ = json.NewEncoder(w).Encode(auth.ProxyAnswer{User: "cookie-user", Rooms: []string{"lobby"}})
		case req.Token == "deny":
			http.Error(w, "no", http.StatusForbidden)
		case req.Token == "slow":
			<-b.release
		default:
			http.Error(w, "backend bug", http.StatusInternalServerError)
		}
	}))
	t.Cleanup(func() { close(b.release); b.Close() })
	return b
}

// TestProxyAuthentication: a proxy listener asks its backend: an allowed
// connection gets the backend's user, name and rooms; a refusal closes
// it unauthorized; a backend that fails (500) or does not answer within
// auth.proxy.timeout is reported unavailable and the connection closes;
// on WebSocket the backend gets the upgrade's headers (a session cookie
// decides without a token); messages sent while the backend is asked
// are handled after its answer, in order.
func TestProxyAuthentication(t *testing.T) {
	b := startProxyBackend(t)
	n := startNode(t, func(c *config.Config) {
		wsListener("127.0.0.1:0")(c)
		for i := range c.Listeners {
			c.Listeners[i].Auth = config.Auth{Mode: config.AuthProxy, Timeout: config.Duration(10 * time.Second),
				Proxy: config.Proxy{URL: b.URL + "/auth", Timeout: config.Duration(300 * time.Millisecond)}}
		}
	})
	ann := n.dial(t, "tcp")
	if ann.Welcome.Auth != config.AuthProxy {
		t.Fatalf("welcome %+v; want auth proxy", ann.Welcome)
	}
	// auth and a join right behind it, without waiting for the answer.
	if err := ann.Send(client.Request{Op: "auth", ID: 1, Token: "allow:ann"}); err != nil {
		t.Fatal(err)
	}
	if err := ann.Send(client.Request{Op: "join", ID: 2, Room: "lobby"}); err != nil {
		t.Fatal(err)
	}
	if err := ann.Send(client.Request{Op: "join", ID: 3, Room: "elsewhere"}); err != nil {
		t.Fatal(err)
	}
	// The join's ok comes from the room, the refusal from the connection:
	// answers are matched by id.
	got := map[string]*client.Event{}
	for len(got) < 3 {
		ev, err := ann.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(ev.ID) > 0 {
			got[string(ev.ID)] = ev
		}
	}
	if ev := got["1"]; ev.Op != "ok" || ev.User != "ann" || ev.Name != "ANN" {
		t.Fatalf("auth: %+v; want ok for the backend's user ann named ANN", ev)
	}
	if ev := got["2"]; ev.Op != "ok" {
		t.Fatalf("join lobby sent before the backend answered: %+v; want ok", ev)
	}
	if ev := got["3"]; ev.Code != "forbidden" {
		t.Fatalf("join elsewhere: %+v; want forbidden (the backend's rooms)", ev)
	}

	for _, tc := range []struct{ token, code string }{
		{"deny", "unauthorized"}, {"fail", "unavailable"}, {"slow", "unavailable"},
	} {
		t.Run(tc.token, func(t *testing.T) {
			c := n.dial(t, "tcp")
			ev, err := c.Authenticate(tc.token)
			expectRefused(t, n, c, ev, err, tc.code)
		})
	}

	// A session cookie on the WebSocket upgrade, and an auth without a
	// token: the backend decides from the headers.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h := http.Header{"Cookie": {"session=s3cret"}}
	ws, err := client.DialWebSocketHeader(ctx, "ws://"+n.addr("ws")+"/ws", h)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if ev, err := ws.Authenticate(""); err != nil || ev.User != "cookie-user" {
		t.Fatalf("cookie auth: %+v %v", ev, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	last := b.requests[len(b.requests)-1]
	if last.Listener != "ws" || last.Conn != ws.ID() || !strings.HasPrefix(last.Remote, "127.0.0.1:") {
		t.Fatalf("the backend got %+v", last)
	}
}

// TestPublishNoneNamespace: in a publish: none namespace a member's send
// is forbidden while the server API's push reaches every member.
func TestPublishNoneNamespace(t *testing.T) {
	n := startNode(t, func(c *config.Config) {
		c.Rooms.Namespaces = []config.Namespace{{Prefix: "news", RoomOptions: config.RoomOptions{Join: config.JoinAnyone, Publish: config.PublishNone, Presence: true}}}
	})
	c := n.dial(t, "tcp")
	join(t, c, "news:today", "reader")
	if ev, err := c.Call(client.Request{Op: "send", Room: "news:today", Data: "spam"}); err == nil || ev.Code != "forbidden" {
		t.Fatalf("a member's send: %+v %v; want forbidden", ev, err)
	}
	if code := api(t, n, "POST", "/api/push", map[string]any{"room": "news:today", "data": "headline"}, nil); code != http.StatusOK {
		t.Fatalf("push: %d", code)
	}
	expectPush(t, c, "news:today", `"headline"`)
}

// TestFloodIsRateLimited: past limits.messages_per_second and its burst a
// client's messages are answered rate_limited (with their ids) and
// dropped; one that goes on is closed rate_limited; another client of
// the same listener is untouched.
func TestFloodIsRateLimited(t *testing.T) {
	n := startNode(t, func(c *config.Config) {
		c.Listeners[0].Limits.MessagesPerSecond, c.Listeners[0].Limits.Burst = 5, 10
	})
	bystander := n.dial(t, "tcp")
	join(t, bystander, "lobby", "calm")
	flooder := n.dial(t, "tcp")
	for i := 1; i <= 40; i++ {
		if err := flooder.Send(client.Request{Op: "ping", ID: int64(i)}); err != nil {
			break // closed under us: fine, counted below
		}
	}
	var pongs, limited int
	for {
		ev, err := flooder.Recv()
		if err != nil {
			break
		}
		switch {
		case ev.Op == "pong":
			pongs++
		case ev.Op == "error" && ev.Code == "rate_limited":
			limited++
			if len(ev.ID) == 0 {
				t.Errorf("rate_limited without the message's id: %+v", ev)
			}
		case ev.Op == "close":
			if ev.Reason != "rate_limited" {
				t.Errorf("closed %s; want rate_limited", ev.Reason)
			}
		}
	}
	// The burst of 10 (and what the rate refilled meanwhile) is
	// answered; 10 more are refused before the close.
	if pongs < 10 || pongs > 15 || limited != 10 {
		t.Fatalf("%d pongs, %d rate_limited; want the burst answered (10 to 15) and 10 refused", pongs, limited)
	}
	if r := n.closeReason(t, flooder.ID(), 5*time.Second); r != conn.ReasonRateLimited {
		t.Fatalf("closed %s; want rate_limited", r)
	}
	if rl := counterValue(t, n, `tether_rate_limited_total{listener="tcp"}`); rl != 11 {
		t.Fatalf("tether_rate_limited_total %v; want 11 (10 refused, 1 that closed)", rl)
	}
	say(t, bystander, "lobby", "still here")
}

// TestTokenCommand: `tether token` mints, from the configuration's
// secret, a token that the node takes: its user, name and rooms.
func TestTokenCommand(t *testing.T) {
	dir := t.TempDir()
	conf := "listeners:\n  - name: tcp\n    address: 127.0.0.1:0\n    auth:\n      mode: token\n      jwt: {hmac_secret: \"" + testSecret + "\"}\n"
	if err := os.WriteFile(filepath.Join(dir, "tether.yaml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := tether(t, dir, "token", "-c", "tether.yaml", "--user", "ann", "--name", "Ann", "--rooms", "lobby,team:*", "--ttl", "10m")
	if code != 0 {
		t.Fatalf("tether token: exit %d: %s", code, errOut)
	}
	n := startNode(t, tokenListeners(config.JWT{HMACSecret: testSecret}))
	c := n.dial(t, "tcp")
	ev, err := c.Authenticate(strings.TrimSpace(out))
	if err != nil || ev.User != "ann" || ev.Name != "Ann" || time.Until(time.Unix(ev.Expires, 0)) > 10*time.Minute {
		t.Fatalf("auth with the minted token: %+v %v", ev, err)
	}
	join(t, c, "team:blue", "ignored")
	if ev, err := c.Call(client.Request{Op: "join", Room: "elsewhere"}); err == nil || ev.Code != "forbidden" {
		t.Fatalf("join outside --rooms: %+v %v; want forbidden", ev, err)
	}
	if _, errOut, code := tether(t, dir, "token", "--user", "ann"); code == 0 || !strings.Contains(errOut, "no listener with auth.mode token") {
		t.Fatalf("without a token listener: exit %d: %s", code, errOut)
	}
}
