package node

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"tether/actors/conn"
	"tether/client"
	"tether/config"
	"tether/test/check"
)

// testConfig is a node on loopback with random ports everywhere.
func testConfig() *config.Config {
	cfg := config.Default()
	cfg.Node.Name = "t"
	cfg.NATS.Embedded.Port = -1
	cfg.NATS.Embedded.StoreDir = ""
	cfg.HTTP.Address = "127.0.0.1:0"
	cfg.Listeners = nil
	return cfg
}

func startNode(t *testing.T, cfg *config.Config) *Node {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	n, err := Start(Options{Config: cfg, Log: zerolog.New(zerolog.NewTestWriter(t)), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Shutdown(context.Background()) })
	return n
}

// tcpListener is a TCP listener "tcp" on a random loopback port.
func tcpListener() config.Listener {
	tcp := config.DefaultListener(config.ProtocolTCP)
	tcp.Name, tcp.Address = "tcp", "127.0.0.1:0"
	return tcp
}

// dial connects a client to n's listener "tcp".
func dial(t *testing.T, n *Node) *client.Client {
	t.Helper()
	c, err := client.DialTCP(context.Background(), n.Addr("tcp").String(), client.TCPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestNodeStartsAnswersOnNATSAndStops(t *testing.T) {
	n := startNode(t, testConfig())
	url := n.NATSURL()

	// Another client of the embedded server, with the node's credentials,
	// asks the node for its status.
	nc, err := nats.Connect(url, n.NATSOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	msg, err := nc.Request("tether.api.status", nil, 2*time.Second)
	if err != nil {
		t.Fatalf("status over NATS: %v", err)
	}
	var st Status
	if err := json.Unmarshal(msg.Data, &st); err != nil {
		t.Fatal(err)
	}
	if st.Node != n.ID() || !st.EmbeddedNATS || st.Version != "test" {
		t.Errorf("status over NATS: %+v", st)
	}

	// The admin server answers too.
	resp, err := http.Get(fmt.Sprintf("http://%s/healthz", n.HTTPAddr()))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("healthz: %s", resp.Status)
	}

	httpAddr := n.HTTPAddr().String()
	natsAddr := url[len("nats://"):]
	if err := n.Shutdown(context.Background()); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	// Everything the node listened on is closed once Shutdown returns.
	for _, addr := range []string{httpAddr, natsAddr} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts after shutdown", addr)
		}
	}
	if !nc.IsConnected() {
		return
	}
	check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		if nc.IsConnected() {
			return fmt.Errorf("client still connected to the embedded server")
		}
		return nil
	})
}

func TestNodeIDsDifferPerBoot(t *testing.T) {
	a, b := newNodeID("edge1"), newNodeID("edge1")
	if a == b || len(a) <= len("edge1-") || a[:6] != "edge1-" {
		t.Fatalf("node ids: %q %q", a, b)
	}
}

func TestAdminAPIRequiresToken(t *testing.T) {
	cfg := testConfig()
	cfg.HTTP.Token = "s3cret"
	n := startNode(t, cfg)
	base := fmt.Sprintf("http://%s", n.HTTPAddr())
	for _, c := range []struct {
		auth string
		want int
	}{{"", http.StatusUnauthorized}, {"Bearer wrong", http.StatusUnauthorized}, {"Bearer s3cret", http.StatusOK}} {
		req, _ := http.NewRequest(http.MethodGet, base+"/api/status", nil)
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("auth %q: got %s, want %d", c.auth, resp.Status, c.want)
		}
	}
	// /healthz is for load balancers: no token.
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("healthz with token set: %s", resp.Status)
	}
}

// TestNATSClosedForGoodConnectsAgain: whatever ends the node's NATS
// connection for good (here its own Close, the way nats.go closes it on a
// server error it does not reconnect from), the node connects again and
// subscribes again: /readyz turns back to 200, the other node's gathers
// hear it, and its admin API answers on NATS.
func TestNATSClosedForGoodConnectsAgain(t *testing.T) {
	cfg := testConfig()
	cfg.Cluster.HeartbeatInterval = config.Duration(100 * time.Millisecond)
	cfg.Cluster.DeadAfter = config.Duration(time.Second)
	cfg.NATS.ReconnectWait = config.Duration(50 * time.Millisecond)
	cfg.NATS.User, cfg.NATS.Password = "tether", "s3cret" // b connects to a's embedded server
	a := startNode(t, cfg)
	cfgB := testConfig()
	cfgB.Node.Name = "b"
	cfgB.NATS.URL = a.NATSURL()
	cfgB.NATS.User, cfgB.NATS.Password = cfg.NATS.User, cfg.NATS.Password
	cfgB.Cluster = cfg.Cluster
	b := startNode(t, cfgB)

	statsOf := func(n *Node) (int, error) {
		res, err := n.Call(context.Background(), "stats", &APIRequest{})
		if err != nil {
			return 0, err
		}
		return len(res.([]Stats)), nil
	}
	check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		if got, err := statsOf(b); got != 2 {
			return fmt.Errorf("b's stats cover %d nodes (%v)", got, err)
		}
		return nil
	})

	old := a.bus.Conn()
	old.Close()
	if !old.IsClosed() {
		t.Fatal("the connection is not closed")
	}
	check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		if a.bus.Conn() == old {
			return fmt.Errorf("still the closed connection")
		}
		if r := a.Readiness(); !r.Ready {
			return fmt.Errorf("not ready: %+v", r)
		}
		if got, err := statsOf(b); got != 2 {
			return fmt.Errorf("b's stats cover %d nodes (%v)", got, err)
		}
		if got, err := statsOf(a); got != 2 {
			return fmt.Errorf("a's stats cover %d nodes (%v)", got, err)
		}
		return nil
	})
	resp, err := http.Get(fmt.Sprintf("http://%s/readyz", a.HTTPAddr()))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("readyz after the new connection: %s", resp.Status)
	}
	// The admin API answers on the new connection: ask a's own subject
	// family through b's NATS server until a's node id answers.
	nc, err := nats.Connect(a.NATSURL(), a.NATSOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		var st Status
		for range 10 { // the queue group spreads requests over a and b
			msg, err := nc.Request("tether.api.status", nil, time.Second)
			if err != nil {
				return err
			}
			if json.Unmarshal(msg.Data, &st) == nil && st.Node == a.ID() && st.NATSState == "connected" {
				return nil
			}
		}
		return fmt.Errorf("a does not answer the admin API on NATS")
	})
}

// TestHistoryAfterNATSConnectionReplaced: when NATS closes the node's
// connection for good and the node makes a new one, rooms with history
// store and deliver again, on the new connection, without losing or
// repeating a message.
func TestHistoryAfterNATSConnectionReplaced(t *testing.T) {
	cfg := testConfig()
	cfg.NATS.ReconnectWait = config.Duration(50 * time.Millisecond)
	ns := config.Namespace{Prefix: "news", RoomOptions: config.DefaultRoomOptions()}
	ns.HistorySize = 100
	cfg.Rooms.Namespaces = append(cfg.Rooms.Namespaces, ns)
	cfg.Listeners = []config.Listener{tcpListener()}
	n := startNode(t, cfg)

	dialMember := func() *client.Client {
		c := dial(t, n)
		if _, err := c.Call(client.Request{Op: "join", Room: "news:a", Name: "x"}); err != nil {
			t.Fatal(err)
		}
		return c
	}
	sender, member := dialMember(), dialMember()
	send := func(i int) error {
		_, err := sender.Call(client.Request{Op: "send", Room: "news:a", Data: i})
		return err
	}
	expect := func(i int) {
		t.Helper()
		ev, err := member.Expect("message", 5*time.Second)
		if err != nil || string(ev.Data) != fmt.Sprint(i) {
			t.Fatalf("want message %d: %+v %v", i, ev, err)
		}
	}
	if err := send(0); err != nil {
		t.Fatal(err)
	}
	expect(0)

	old := n.bus.Conn()
	old.Close()
	check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		if n.bus.Conn() == old || !n.Readiness().Ready {
			return fmt.Errorf("no new connection yet")
		}
		return nil
	})
	// Sends made while the node connects again may be refused
	// (unavailable); once one is taken, every later one is delivered.
	check.For(t, 5*time.Second, 50*time.Millisecond, func() error { return send(1) })
	for i := 2; i < 5; i++ {
		if err := send(i); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i < 5; i++ {
		expect(i)
	}
	// A member joining now gets the history from the new connection.
	late := dialMember()
	ev, err := late.Call(client.Request{Op: "history", Room: "news:a", Limit: 10})
	if err != nil || len(ev.Messages) != 5 {
		t.Fatalf("history after the new connection: %+v %v", ev, err)
	}
}

// TestStartFailureIsAnError: a node that cannot start (here its embedded
// NATS port is taken) returns the error at once, naming the key, and
// tears down what it had started, without panicking.
func TestStartFailureIsAnError(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := testConfig()
	cfg.NATS.Embedded.Port = taken.Addr().(*net.TCPAddr).Port
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	n, err := Start(Options{Config: cfg, Log: zerolog.New(zerolog.NewTestWriter(t)), Version: "test"})
	if err == nil {
		_ = n.Shutdown(context.Background())
		t.Fatal("started on a taken port")
	}
	if want := fmt.Sprintf("embedded nats: nats.embedded.port %d: cannot listen on 127.0.0.1:%[1]d", cfg.NATS.Embedded.Port); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the start failed after %s", took)
	}
}

// TestUserConnsAcrossNodes: GET /api/users/{user}/conns lists the info of
// a user's open connections on every node, and nothing of other
// connections; /api/stats says each node's NATS state.
func TestUserConnsAcrossNodes(t *testing.T) {
	cfg := testConfig()
	cfg.HTTP.Token = "s3cret"
	cfg.NATS.User, cfg.NATS.Password = "tether", "s3cret" // b connects to a's embedded server
	cfg.Listeners = []config.Listener{tcpListener()}
	a := startNode(t, cfg)
	cfgB := testConfig()
	cfgB.Node.Name = "b"
	cfgB.NATS.URL = a.NATSURL()
	cfgB.NATS.User, cfgB.NATS.Password = cfg.NATS.User, cfg.NATS.Password
	cfgB.Listeners = []config.Listener{tcpListener()}
	b := startNode(t, cfgB)

	call := func(method, path, body string, out any) int {
		t.Helper()
		req, _ := http.NewRequest(method, fmt.Sprintf("http://%s%s", a.HTTPAddr(), path), strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer s3cret")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if out != nil && resp.StatusCode == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
		}
		return resp.StatusCode
	}
	var stats []Stats
	check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		if code := call("GET", "/api/stats", "", &stats); code != http.StatusOK || len(stats) != 2 {
			return fmt.Errorf("a's stats: %d %+v", code, stats)
		}
		return nil
	})
	for _, s := range stats {
		if s.NATS != "connected" {
			t.Errorf("stats of %s: nats %q, want connected", s.Node, s.NATS)
		}
	}

	onA, onB, other := dial(t, a), dial(t, b), dial(t, a)
	for _, c := range []*client.Client{onA, onB} {
		if code := call("POST", "/api/bind", fmt.Sprintf(`{"conn":%q,"user":"u1"}`, c.ID()), nil); code != http.StatusOK {
			t.Fatalf("bind %s: %d", c.ID(), code)
		}
	}
	var infos []conn.Info
	if code := call("GET", "/api/users/u1/conns", "", &infos); code != http.StatusOK {
		t.Fatalf("u1's connections: %d", code)
	}
	got := map[string]string{}
	for _, info := range infos {
		if info.User != "u1" || info.Closed != nil {
			t.Errorf("u1's connections hold %+v", info)
		}
		got[info.ID] = info.Node
	}
	if want := map[string]string{onA.ID(): a.ID(), onB.ID(): b.ID()}; !maps.Equal(got, want) {
		t.Errorf("u1's connections: %v, want %v (not %s)", got, want, other.ID())
	}

	infos = nil
	if code := call("GET", "/api/users/nobody/conns", "", &infos); code != http.StatusOK || len(infos) != 0 {
		t.Errorf("a user without connections: %d %+v, want 200 and none", code, infos)
	}
	if code := call("GET", "/api/users/a.b/conns", "", nil); code != http.StatusBadRequest {
		t.Errorf("a user id with a dot: %d, want 400", code)
	}
}
