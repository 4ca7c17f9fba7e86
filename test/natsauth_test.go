package test

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"tether/actors/node"
	"tether/client"
	"tether/config"
	"tether/test/check"
	"tether/test/testca"
)

// natsRefuses checks that a client of url with opts is refused with an
// authorization error.
func natsRefuses(t *testing.T, url, what string, opts ...nats.Option) {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err == nil {
		nc.Close()
		t.Errorf("%s: connected to %s", what, url)
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("%s: %v, want %v", what, err, nats.ErrAuthorization)
	}
}

// natsPassword is the password a node connects to NATS with.
func natsPassword(t *testing.T, n *testNode) string {
	t.Helper()
	var o nats.Options
	for _, f := range n.NATSOptions() {
		if err := f(&o); err != nil {
			t.Fatal(err)
		}
	}
	return o.Password
}

// TestEmbeddedNATSRequiresCredentials: with no credentials configured, the
// embedded server requires a password generated at each boot, which only
// its node knows: a client without credentials, or with wrong ones, is
// refused, so it can neither read the rooms' traffic nor call the admin
// API over NATS, while the node itself works (NATS connected, /readyz,
// the admin API over NATS for whoever has the node's credentials). The
// status API shows the NATS URL without them. Before, any local process
// connected.
func TestEmbeddedNATSRequiresCredentials(t *testing.T) {
	n := startNode(t, nil)
	url := n.NATSURL()
	natsRefuses(t, url, "no credentials")
	natsRefuses(t, url, "the generated password's user, a wrong password", nats.UserInfo("tether", "wrong"))
	natsRefuses(t, url, "a token", nats.Token("tether"))

	a, b := n.dial(t, "tcp"), n.dial(t, "tcp")
	join(t, a, "lobby", "ann")
	join(t, b, "lobby", "bob")
	say(t, a, "lobby", "hi")
	expectMessage(t, b, "lobby", a.ID(), "hi")
	if code := api(t, n, http.MethodGet, "/readyz", nil, nil); code != http.StatusOK {
		t.Errorf("readyz %d", code)
	}

	nc, err := nats.Connect(url, n.NATSOptions()...)
	if err != nil {
		t.Fatalf("with the node's credentials: %v", err)
	}
	defer nc.Close()
	msg, err := nc.Request("tether.api.status", nil, 5*time.Second)
	if err != nil {
		t.Fatalf("the admin API over NATS, with the node's credentials: %v", err)
	}
	password := natsPassword(t, n)
	if len(password) < 26 { // 26 base32 characters: 130 bits
		t.Errorf("generated password %q: want at least 128 bits", password)
	}
	var st node.Status
	if err := json.Unmarshal(msg.Data, &st); err != nil {
		t.Fatal(err)
	}
	if st.NATS != url || strings.Contains(string(msg.Data), password) {
		t.Errorf("status shows NATS %q, want %q and no password: %s", st.NATS, url, msg.Data)
	}
	if other := startNode(t, nil); natsPassword(t, other) == password {
		t.Errorf("two boots generated the same password")
	}
}

// TestEmbeddedNATSConfiguredCredentials: with nats.user and nats.password,
// or nats.token, the embedded server requires those: the example relay
// worker, given them in its NATS URL (nats://user:password@host:port, or
// nats://token@host:port), takes the node's relay connections, and a
// client with other credentials is refused.
func TestEmbeddedNATSConfiguredCredentials(t *testing.T) {
	cases := []struct {
		name  string
		creds func(*config.NATS)
		user  *url.Userinfo // in the worker's URL
		wrong nats.Option
	}{
		{"user and password", func(n *config.NATS) { n.User, n.Password = "relay", "p@ss:w/rd" },
			url.UserPassword("relay", "p@ss:w/rd"), nats.UserInfo("relay", "p@ss")},
		{"token", func(n *config.NATS) { n.Token = "t0ken" }, url.User("t0ken"), nats.Token("t0k")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := startNode(t, func(cfg *config.Config) {
				c.creds(&cfg.NATS)
				cfg.Listeners[0].App = config.AppRelay
				cfg.Listeners[0].Name = "game"
			})
			natsRefuses(t, n.NATSURL(), "no credentials")
			natsRefuses(t, n.NATSURL(), "wrong credentials", c.wrong)

			u, err := url.Parse(n.NATSURL())
			if err != nil {
				t.Fatal(err)
			}
			u.User = c.user
			startProcess(t, buildExample(t, "relayworker"), "-nats", u.String(), "-listener", "game", "-name", "w1")
			conn, err := net.Dial("tcp", n.addr("game"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.Write(packN("hello")); err != nil {
				t.Fatal(err)
			}
			if answer, err := readPackN(conn, 10*time.Second); answer != "w1: hello" || err != nil {
				t.Fatalf("the worker's answer: %q %v", answer, err)
			}
		})
	}
}

// TestEmbeddedNATSClusterWithCredentials: three nodes whose embedded
// servers are joined by routes, with configured credentials, which tether
// adds to the route URLs: a room message crosses from one node to the
// other two, a whisper to one of them. A nats-server routing to them without the credentials is
// refused (the node's server logs the failed authentication), while one
// with them in its route URL joins.
func TestEmbeddedNATSClusterWithCredentials(t *testing.T) {
	ports := []int{freePort(t), freePort(t), freePort(t)}
	var nodes []*testNode
	for i, name := range []string{"a", "b", "c"} {
		nodes = append(nodes, startNode(t, func(c *config.Config) {
			c.Node.Name = name
			clusterTiming(c)
			routed(ports, i)(c)
		}))
	}
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		for _, n := range nodes {
			if got := gaugeValue(t, n, "tether_cluster_nodes_alive"); got != 2 {
				return fmt.Errorf("%s sees %v other nodes", n.ID(), got)
			}
		}
		return nil
	})
	var clients []*client.Client
	for i, n := range nodes {
		c := n.dial(t, "tcp")
		join(t, c, "lobby", fmt.Sprintf("u%d", i))
		clients = append(clients, c)
	}
	// Each node knows the others' members once their joins crossed.
	check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		res, err := clients[0].Call(client.Request{Op: "members", Room: "lobby"})
		if err != nil || len(res.Members) != 3 {
			return fmt.Errorf("members seen from a: %+v %v", res, err)
		}
		return nil
	})
	say(t, clients[0], "lobby", "over routes")
	for _, c := range clients[1:] {
		expectMessage(t, c, "lobby", clients[0].ID(), "over routes")
	}
	if _, err := clients[0].Call(client.Request{Op: "whisper", To: clients[2].ID(), Data: "whispered"}); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, clients[2], "", clients[0].ID(), "whispered")

	route := func(user *url.Userinfo) *server.Server {
		u := &url.URL{Scheme: "nats-route", User: user, Host: fmt.Sprintf("127.0.0.1:%d", ports[0])}
		return runNATS(t, &server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
			Cluster: server.ClusterOpts{Name: "tether-test", Host: "127.0.0.1", Port: -1},
			Routes:  []*url.URL{u}})
	}
	stranger := route(nil)
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if len(nodes[0].logLines(`"component":"nats-server"`, "rid:", "authentication error")) == 0 {
			return errors.New("node a's server has not refused the route without credentials")
		}
		return nil
	})
	if got := stranger.NumRoutes(); got != 0 {
		t.Errorf("the server without credentials has %d routes", got)
	}
	member := route(url.UserPassword("tether", "s3cret"))
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := member.NumRoutes(); got == 0 {
			return errors.New("the server with the credentials has no route")
		}
		return nil
	})
}

// TestExternalNATSCredentials: a node connects to an external nats-server
// that requires a user and password, or a token, with nats.user and
// nats.password, nats.token, or credentials in nats.url; without them, or
// with wrong ones, its start fails at once with the authorization error,
// naming the keys. The status API shows the URL without credentials.
func TestExternalNATSCredentials(t *testing.T) {
	cases := []struct {
		name   string
		server func(*server.Options)
		right  func(n *config.NATS, url string)
		wrong  func(n *config.NATS, url string)
	}{
		{"user and password",
			func(o *server.Options) { o.Username, o.Password = "tether", "s3cret" },
			func(n *config.NATS, url string) { n.URL, n.User, n.Password = url, "tether", "s3cret" },
			func(n *config.NATS, url string) { n.URL, n.User, n.Password = url, "tether", "wrong" }},
		{"token",
			func(o *server.Options) { o.Authorization = "s3cret" },
			func(n *config.NATS, url string) { n.URL, n.Token = url, "s3cret" },
			func(n *config.NATS, url string) { n.URL, n.Token = url, "wrong" }},
		{"user and password in the URL",
			func(o *server.Options) { o.Username, o.Password = "tether", "s3cret" },
			func(n *config.NATS, url string) { n.URL = strings.Replace(url, "nats://", "nats://tether:s3cret@", 1) },
			func(n *config.NATS, url string) { n.URL = strings.Replace(url, "nats://", "nats://tether:wrong@", 1) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := &server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true}
			c.server(opts)
			ns := runNATS(t, opts)
			for _, creds := range []func(*config.NATS, string){func(n *config.NATS, url string) { n.URL = url }, c.wrong} {
				cfg := nodeConfig()
				creds(&cfg.NATS, ns.ClientURL())
				start := time.Now()
				n, err := node.Start(node.Options{Config: cfg, Log: zerolog.Nop()})
				if err == nil {
					_ = n.Shutdown(t.Context())
					t.Fatalf("started with NATS URL %s, user %q, token %q", cfg.NATS.URL, cfg.NATS.User, cfg.NATS.Token)
				}
				if !errors.Is(err, nats.ErrAuthorization) || !strings.Contains(err.Error(), "nats.user and nats.password, nats.token") ||
					strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "wrong") {
					t.Errorf("start: %v; want the authorization error, naming the keys, without credentials", err)
				}
				if took := time.Since(start); took > 5*time.Second {
					t.Errorf("the start failed after %s", took)
				}
			}
			n := startNode(t, func(cfg *config.Config) { c.right(&cfg.NATS, ns.ClientURL()) })
			if code := api(t, n, http.MethodGet, "/readyz", nil, nil); code != http.StatusOK {
				t.Errorf("readyz %d", code)
			}
			var st node.Status
			if code := api(t, n, http.MethodGet, "/api/status", nil, &st); code != http.StatusOK || st.NATS != ns.ClientURL() {
				t.Errorf("status %d shows NATS %q, want %q", code, st.NATS, ns.ClientURL())
			}
		})
	}
}

// TestExternalNATSOverTLS: with nats.tls, a node connects to a nats-server
// that speaks TLS only and requires a client certificate: it trusts the
// server's certificate through ca_file and presents the one of cert_file
// and key_file; without the client certificate, or without the CA, its
// start fails.
func TestExternalNATSOverTLS(t *testing.T) {
	ca := testca.New(t)
	serverFile, serverKey := ca.Issue(t, 2)
	clientFile, clientKey := ca.Issue(t, 3)
	serverCert, err := tls.LoadX509KeyPair(serverFile, serverKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := ca.Pool()
	ns := runNATS(t, &server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true, TLSVerify: true,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientCAs: pool,
			ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}})
	if !strings.HasPrefix(ns.ClientURL(), "tls://") {
		t.Fatalf("the server does not require TLS: %s", ns.ClientURL())
	}
	full := config.NATSTLS{CAFile: ca.File, CertFile: clientFile, KeyFile: clientKey}
	for _, c := range []struct {
		name string
		tls  config.NATSTLS
		want string
	}{
		{"no client certificate", config.NATSTLS{CAFile: full.CAFile}, "tls"}, // the server closes the handshake
		{"no CA", config.NATSTLS{CertFile: full.CertFile, KeyFile: full.KeyFile}, "certificate signed by unknown authority"},
	} {
		cfg := nodeConfig()
		cfg.NATS.URL, cfg.NATS.TLS = ns.ClientURL(), c.tls
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		n, err := node.Start(node.Options{Config: cfg, Log: zerolog.Nop()})
		if err == nil {
			_ = n.Shutdown(t.Context())
			t.Fatalf("%s: started", c.name)
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	n := startNode(t, func(cfg *config.Config) { cfg.NATS.URL, cfg.NATS.TLS = ns.ClientURL(), full })
	if code := api(t, n, http.MethodGet, "/readyz", nil, nil); code != http.StatusOK {
		t.Errorf("readyz %d", code)
	}
}
