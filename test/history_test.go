package test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"tether/actors/node"
	"tether/client"
	"tether/config"
	"tether/history"
	"tether/test/check"
)

// withHistory gives rooms news:* a history of size messages.
func withHistory(size int) func(*config.Config) {
	return func(c *config.Config) {
		ns := config.Namespace{Prefix: "news", RoomOptions: config.DefaultRoomOptions()}
		ns.HistorySize = size
		c.Rooms.Namespaces = append(c.Rooms.Namespaces, ns)
	}
}

// data is a message event's data as a string.
func data(ev *client.Event) string {
	var s string
	_ = json.Unmarshal(ev.Data, &s)
	return s
}

// sayN sends messages "<prefix><i>" for i in [from, to).
func sayN(t *testing.T, c *client.Client, room, prefix string, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		say(t, c, room, fmt.Sprintf("%s%d", prefix, i))
	}
}

// expectN reads messages until it has the ones "<prefix><i>" for i in
// [from, to), in order, and fails on anything else.
func expectN(t *testing.T, c *client.Client, prefix string, from, to int) []*client.Event {
	t.Helper()
	var out []*client.Event
	for i := from; i < to; i++ {
		ev, err := c.Expect("message", 5*time.Second)
		if err != nil {
			t.Fatalf("%s: message %s%d: %v", c.ID(), prefix, i, err)
		}
		if want := fmt.Sprintf("%s%d", prefix, i); data(ev) != want {
			t.Fatalf("%s: got %q, want %q", c.ID(), data(ev), want)
		}
		out = append(out, ev)
	}
	return out
}

// TestHistoryRecovers: in a room with history every message has an
// offset and the epoch; a client that comes back joins with since and
// gets what it missed, in order, before its ok (recovered); a position in
// another epoch, or older than the history, recovers nothing and says
// why; history answers the last messages.
func TestHistoryRecovers(t *testing.T) {
	n := startNode(t, withHistory(10))
	sender, away := n.dial(t, "tcp"), n.dial(t, "tcp")
	join(t, sender, "news:eu", "sam")
	ok, err := away.Call(client.Request{Op: "join", Room: "news:eu", Name: "ann"})
	if err != nil || ok.Epoch == "" {
		t.Fatalf("join of a room with history: %+v %v, want its epoch", ok, err)
	}
	epoch := ok.Epoch

	sayN(t, sender, "news:eu", "m", 0, 3)
	got := expectN(t, away, "m", 0, 3)
	for i, ev := range got {
		if ev.Epoch != epoch || ev.Offset == 0 || (i > 0 && ev.Offset <= got[i-1].Offset) {
			t.Fatalf("message %d: offset %d epoch %q", i, ev.Offset, ev.Epoch)
		}
	}
	since := away.Position("news:eu")
	if since == nil || since.Offset != got[2].Offset {
		t.Fatalf("position %+v, want the last message's offset %d", since, got[2].Offset)
	}
	away.Close()

	sayN(t, sender, "news:eu", "m", 3, 8) // missed
	back := n.dial(t, "tcp")
	ok, err = back.Call(client.Request{Op: "join", Room: "news:eu", Name: "ann", Since: since})
	if err != nil || ok.Recovered == nil || !*ok.Recovered {
		t.Fatalf("join with since: %+v %v, want recovered", ok, err)
	}
	// The missed ones came before the ok: Call kept them for Recv.
	replayed := 0
	for _, ev := range back.Pending() {
		if ev.Op == "message" {
			replayed++
		}
	}
	if replayed != 5 {
		t.Fatalf("%d messages replayed before the ok, want 5", replayed)
	}
	expectN(t, back, "m", 3, 8)
	sayN(t, sender, "news:eu", "m", 8, 9) // and live ones after
	expectN(t, back, "m", 8, 9)

	// A position of another history, and one pushed out of it.
	for _, c := range []struct {
		since  client.Position
		reason string
	}{
		{client.Position{Offset: since.Offset, Epoch: "other"}, "epoch_changed"},
		{client.Position{Offset: got[0].Offset, Epoch: epoch}, ""},
	} {
		if c.reason == "" { // push m0 out: 10 kept
			sayN(t, sender, "news:eu", "x", 0, 10)
			// An ok says the message is stored; once a member has it the
			// room here has it too.
			expectN(t, back, "x", 0, 10)
			c.reason = "too_old"
		}
		late := n.dial(t, "tcp")
		ok, err := late.Call(client.Request{Op: "join", Room: "news:eu", Name: "late", Since: &c.since})
		if err != nil || ok.Recovered == nil || *ok.Recovered || ok.Reason != c.reason {
			t.Fatalf("since %+v: %+v %v, want not recovered: %s", c.since, ok, err, c.reason)
		}
		if len(late.Pending()) != 0 {
			t.Fatalf("since %+v: %d events replayed; no partial recovery", c.since, len(late.Pending()))
		}
	}

	h, err := back.Call(client.Request{Op: "history", Room: "news:eu", Limit: 3})
	if err != nil || len(h.Messages) != 3 || h.Epoch != epoch {
		t.Fatalf("history: %+v %v", h, err)
	}
	var last struct{ Data string }
	_ = json.Unmarshal(h.Messages[2], &last)
	if last.Data != "x9" {
		t.Fatalf("history's last message is %s", h.Messages[2])
	}
	// Rooms without history say so.
	join(t, back, "lobby", "ann")
	if ev, err := back.Call(client.Request{Op: "history", Room: "lobby"}); err == nil || ev.Code != "forbidden" {
		t.Fatalf("history of a room without: %+v %v", ev, err)
	}
}

// TestHistoryRoomHasOneOrder: two senders on two nodes send into a room
// with history at once; members on both nodes get the messages in the
// same order, the stream's.
func TestHistoryRoomHasOneOrder(t *testing.T) {
	ns := startJetStreamNATS(t, -1, "")
	var nodes []*testNode
	for _, name := range []string{"a", "b"} {
		nodes = append(nodes, startNode(t, func(c *config.Config) {
			c.Node.Name = name
			c.NATS.URL = ns.ClientURL()
			clusterTiming(c)
			withHistory(1000)(c)
		}))
	}
	a, b := nodes[0], nodes[1]
	sa, sb, ma, mb := a.dial(t, "tcp"), b.dial(t, "tcp"), a.dial(t, "tcp"), b.dial(t, "tcp")
	for _, c := range []*client.Client{sa, sb, ma, mb} {
		join(t, c, "news:x", c.ID())
	}
	const each = 100
	done := make(chan error, 2)
	for _, s := range []*client.Client{sa, sb} {
		go func() {
			for i := range each {
				if _, err := s.Call(client.Request{Op: "send", Room: "news:x", Data: fmt.Sprintf("%s-%d", s.ID(), i)}); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	order := func(c *client.Client) []string {
		var out []string
		var last uint64
		for len(out) < 2*each {
			ev, err := c.Expect("message", 10*time.Second)
			if err != nil {
				t.Fatalf("%s after %d: %v", c.ID(), len(out), err)
			}
			if ev.Offset <= last {
				t.Fatalf("%s: offset %d after %d", c.ID(), ev.Offset, last)
			}
			last = ev.Offset
			out = append(out, data(ev))
		}
		return out
	}
	oa, ob := order(ma), order(mb)
	for i := range oa {
		if oa[i] != ob[i] {
			t.Fatalf("message %d: %s on a, %s on b", i, oa[i], ob[i])
		}
	}
}

// TestHistorySurvivesRestart: a single tether serve with the default
// store (nats.embedded.store_dir, in its working directory) keeps a
// room's history across a restart: a client that comes back after it
// recovers what it missed, and history answers the messages from before.
func TestHistorySurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	conf := fmt.Sprintf(`
log: {format: json}
http: {address: ""}
nats: {embedded: {port: -1}}
rooms: {namespaces: [{prefix: news, history_size: 100}]}
listeners:
  - {name: tcp, address: %q}
`, tcpAddr)
	p := startServeProcessIn(t, dir, conf, tcpAddr)
	sender, reader := dialRetry(t, tcpAddr), dialRetry(t, tcpAddr)
	join(t, sender, "news:eu", "sam")
	join(t, reader, "news:eu", "rita")
	sayN(t, sender, "news:eu", "before", 0, 5)
	expectN(t, reader, "before", 0, 2)
	since := reader.Position("news:eu") // read 2 of 5
	p.stop(t)

	startServeProcessIn(t, dir, conf, tcpAddr)
	back := dialRetry(t, tcpAddr)
	ok, err := back.Call(client.Request{Op: "join", Room: "news:eu", Name: "rita", Since: since})
	if err != nil || ok.Recovered == nil || !*ok.Recovered || ok.Epoch != since.Epoch {
		t.Fatalf("join with since after the restart: %+v %v, want recovered in epoch %s", ok, err, since.Epoch)
	}
	expectN(t, back, "before", 2, 5)
	h, err := back.Call(client.Request{Op: "history", Room: "news:eu"})
	if err != nil || len(h.Messages) != 5 {
		t.Fatalf("history after the restart: %+v %v", h, err)
	}
}

// TestHistoryNeedsJetStream: a node whose NATS has no JetStream while a
// namespace keeps history does not start, and says why and what to do.
func TestHistoryNeedsJetStream(t *testing.T) {
	ns := startNATS(t, -1) // no JetStream
	cfg := nodeConfig()
	cfg.NATS.URL = ns.ClientURL()
	withHistory(10)(cfg)
	n, err := node.Start(node.Options{Config: cfg, Log: zerolog.Nop(), Version: "test"})
	if err == nil {
		_ = n.Shutdown(context.Background())
		t.Fatal("started without JetStream")
	}
	if !errors.Is(err, history.ErrNoJetStream) || !strings.Contains(err.Error(), "-js") || !strings.Contains(err.Error(), ns.ClientURL()) {
		t.Errorf("error %q: want it to say JetStream is missing, where, and what to do", err)
	}
}

// TestHistorySurvivesLosingANode: three tether serve processes, started in
// one working directory, whose embedded NATS servers form a cluster, keep
// a room's history in JetStream with three replicas (what
// nats.history_replicas picks there). The node a message was sent through,
// and its NATS server, is SIGKILLed: a client that read some of the
// messages moves to another node, recovers the rest with since, and the
// room goes on.
func TestHistorySurvivesLosingANode(t *testing.T) {
	dir := t.TempDir()
	type ports struct{ nats, route, tcp int }
	ps := make([]ports, 3)
	for i := range ps {
		ps[i] = ports{freePort(t), freePort(t), freePort(t)}
	}
	procs := make([]*serveProcess, 3)
	addrs := make([]string, 3)
	for i := range procs {
		var routes []string
		for j := range ps {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ps[j].route))
			}
		}
		addrs[i] = fmt.Sprintf("127.0.0.1:%d", ps[i].tcp)
		conf := fmt.Sprintf(`
node: {name: n%d}
pid_file: n%d.pid
log: {format: json}
http: {address: ""}
nats:
  user: tether
  password: s3cret
  embedded: {port: %d, cluster: {name: t, port: %d, routes: [%s]}}
cluster: {heartbeat_interval: 200ms, dead_after: 2s}
rooms: {namespaces: [{prefix: news, history_size: 100}]}
listeners:
  - {name: tcp, address: %q}
`, i+1, i+1, ps[i].nats, ps[i].route, strings.Join(routes, ", "), addrs[i])
		path := filepath.Join(dir, fmt.Sprintf("n%d.yaml", i+1))
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		procs[i] = startServeProcessFile(t, dir, path, addrs[i])
	}
	sender, reader := dialRetry(t, addrs[1]), dialRetry(t, addrs[2])
	join(t, reader, "news:eu", "rita")
	join(t, sender, "news:eu", "sam")
	sayN(t, sender, "news:eu", "m", 0, 5)
	expectN(t, reader, "m", 0, 2)
	since := reader.Position("news:eu")

	procs[1].kill() // n2, where the messages came in: no goodbye
	// The reader moves to n1. While JetStream elects new leaders for what
	// n2's server led, the join may be answered unavailable: try again.
	var moved *client.Client
	check.For(t, 20*time.Second, 200*time.Millisecond, func() error {
		c := dialRetry(t, addrs[0])
		ok, err := c.Call(client.Request{Op: "join", Room: "news:eu", Name: "rita", Since: since})
		if err != nil {
			c.Close()
			return err
		}
		if ok.Recovered == nil || !*ok.Recovered {
			t.Fatalf("join with since on n1: %+v, want recovered", ok)
		}
		moved = c
		return nil
	})
	expectN(t, moved, "m", 2, 5)
	// The room goes on, from n3 to n1, stored with two servers of three.
	sender = dialRetry(t, addrs[2])
	join(t, sender, "news:eu", "sam")
	sayN(t, sender, "news:eu", "m", 5, 8)
	expectN(t, moved, "m", 5, 8)
	h, err := moved.Call(client.Request{Op: "history", Room: "news:eu"})
	if err != nil || len(h.Messages) != 8 {
		t.Fatalf("history: %d messages, %v; want 8", len(h.Messages), err)
	}
}
