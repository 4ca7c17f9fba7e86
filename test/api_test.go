package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"tether/actors/cluster"
	"tether/actors/node"
	"tether/actors/protocol"
	"tether/client"
	"tether/config"
	"tether/test/check"
)

// api calls a node's HTTP admin API, with the node's token when it has
// one, and decodes the answer into out.
func api(t *testing.T, n *testNode, method, path string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+n.HTTPAddr().String()+path, rd)
	if token := n.Config().HTTP.Token; token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, data)
		}
	}
	return resp.StatusCode
}

// expectPush waits for a pushed message (from the server: empty from).
func expectPush(t *testing.T, c *client.Client, room, data string) {
	t.Helper()
	ev, err := c.Expect("message", 5*time.Second)
	if err != nil || ev.From != "" || ev.Room != room || string(ev.Data) != data {
		t.Fatalf("%s: push %+v %v, want room %q data %s", c.ID(), ev, err, room, data)
	}
}

// TestAdminAPIAcrossNodes: node a's admin API acts on connections of node
// b as on its own: info, bind, push to a connection, a user, a room and
// everyone, kick; rooms, members, nodes and stats span the cluster.
func TestAdminAPIAcrossNodes(t *testing.T) {
	ns := startNATS(t, -1)
	nodes := startCluster(t, ns.ClientURL(), "a", "b")
	a, b := nodes[0], nodes[1]
	ca, cb := a.dial(t, "tcp"), b.dial(t, "tcp")
	join(t, ca, "r", "ca")
	join(t, cb, "r", "cb")

	var info map[string]any
	if code := api(t, a, "GET", "/api/conns/"+cb.ID(), nil, &info); code != 200 || info["node"] != b.ID() || info["id"] != cb.ID() {
		t.Fatalf("info of b's connection from a: %d %v", code, info)
	}

	for _, c := range []*client.Client{ca, cb} {
		if code := api(t, a, "POST", "/api/bind", node.APIRequest{Conn: c.ID(), User: "u1"}, nil); code != 200 {
			t.Fatalf("bind %s: %d", c.ID(), code)
		}
	}
	check.For(t, 5*time.Second, 20*time.Millisecond, func() error { // a and b subscribe to the user's subject
		if got := ns.GlobalAccount().Interest("tether.user.u1"); got != 2 {
			return fmt.Errorf("%d subscriptions to the user's subject, want 2", got)
		}
		return nil
	})
	api(t, a, "POST", "/api/push", node.APIRequest{User: "u1", Data: json.RawMessage(`"to u1"`)}, nil)
	expectPush(t, ca, "", `"to u1"`)
	expectPush(t, cb, "", `"to u1"`)
	if got := natsIn(t, b, "user"); got != 1 {
		t.Errorf("b received %v user pushes, want 1", got)
	}

	api(t, a, "POST", "/api/push", node.APIRequest{Conn: cb.ID(), Data: json.RawMessage(`{"n":1}`)}, nil)
	expectPush(t, cb, "", `{"n":1}`)
	api(t, a, "POST", "/api/push", node.APIRequest{Room: "r", Data: json.RawMessage(`"to r"`)}, nil)
	expectPush(t, ca, "r", `"to r"`)
	expectPush(t, cb, "r", `"to r"`)
	api(t, a, "POST", "/api/push", node.APIRequest{All: true, Data: json.RawMessage(`"to all"`)}, nil)
	expectPush(t, ca, "", `"to all"`)
	expectPush(t, cb, "", `"to all"`)

	// With count, a push says how many connections of the cluster it was
	// addressed to; without, it answers ok alone.
	for _, c := range []struct {
		req  node.APIRequest
		want int
	}{
		{node.APIRequest{Room: "r"}, 2},
		{node.APIRequest{Room: "nobody"}, 0},
		{node.APIRequest{User: "u1"}, 2},
		{node.APIRequest{User: "u2"}, 0},
		{node.APIRequest{All: true}, 2},
		{node.APIRequest{Conn: cb.ID()}, 1},
	} {
		c.req.Data, c.req.Count = json.RawMessage(`"counted"`), true
		var reply node.PushReply
		if code := api(t, a, "POST", "/api/push", c.req, &reply); code != 200 || !reply.OK || reply.Connections == nil || *reply.Connections != c.want {
			t.Errorf("push %+v: %d %+v, want %d connections", c.req, code, reply, c.want)
		}
	}
	// Delivered too: to ca by room r, user u1 and all; to cb by those and
	// its own, in whatever order the paths take.
	for c, n := range map[*client.Client]int{ca: 3, cb: 4} {
		for range n {
			if ev, err := c.Expect("message", 5*time.Second); err != nil || string(ev.Data) != `"counted"` {
				t.Fatalf("%s: counted push %+v %v", c.ID(), ev, err)
			}
		}
	}
	var plain map[string]any
	if api(t, a, "POST", "/api/push", node.APIRequest{Room: "nobody", Data: json.RawMessage(`1`)}, &plain); len(plain) != 1 || plain["ok"] != true {
		t.Errorf("push without count: %v", plain)
	}

	var rooms []node.RoomInfo
	if api(t, a, "GET", "/api/rooms", nil, &rooms); len(rooms) != 1 || rooms[0].Room != "r" || rooms[0].Members != 2 || len(rooms[0].Nodes) != 2 {
		t.Errorf("rooms: %+v", rooms)
	}
	var members []map[string]string
	if api(t, b, "GET", "/api/rooms/r/members", nil, &members); len(members) != 2 {
		t.Errorf("members: %+v", members)
	}
	var view []cluster.NodeInfo
	if api(t, a, "GET", "/api/nodes", nil, &view); len(view) != 2 || !view[0].Alive || !view[1].Alive {
		t.Errorf("nodes: %+v", view)
	}
	var stats []node.Stats
	if api(t, a, "GET", "/api/stats", nil, &stats); len(stats) != 2 {
		t.Errorf("stats: %+v", stats)
	}

	// The same API over NATS request/reply, from any NATS client.
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	msg, err := nc.Request("tether.api.info", []byte(fmt.Sprintf(`{"conn":%q}`, ca.ID())), 5*time.Second)
	if err != nil || !strings.Contains(string(msg.Data), `"node":"`+a.ID()+`"`) {
		t.Fatalf("info over NATS: %v %s", err, msg.Data)
	}

	// Errors name the problem.
	for _, c := range []struct {
		method, path string
		body         any
		want         int
	}{
		{"POST", "/api/push", node.APIRequest{Data: json.RawMessage(`1`)}, 400},
		{"POST", "/api/push", node.APIRequest{Conn: cb.ID()}, 400},
		{"GET", "/api/conns/" + b.ID() + ".99999", nil, 404},
		{"POST", "/api/kick", node.APIRequest{Conn: "nosuchnode-x.1"}, 404},
		{"POST", "/api/bind", node.APIRequest{Conn: cb.ID(), User: "a.b"}, 400},
		{"POST", "/api/push", node.APIRequest{User: "a b", Data: json.RawMessage(`1`)}, 400},
		{"POST", "/api/push", node.APIRequest{Room: "x>y", Data: json.RawMessage(`1`)}, 400},
		{"GET", "/api/rooms/a.b/members", nil, 400},
		{"GET", "/api/rooms/a.b", nil, 400},
	} {
		if code := api(t, a, c.method, c.path, c.body, nil); code != c.want {
			t.Errorf("%s %s %+v: %d, want %d", c.method, c.path, c.body, code, c.want)
		}
	}

	// Kick from a; b closes it with reason kicked.
	if code := api(t, a, "POST", "/api/kick", node.APIRequest{Conn: cb.ID()}, nil); code != 200 {
		t.Fatalf("kick: %d", code)
	}
	if r := b.closeReason(t, cb.ID(), 5*time.Second); r.String() != "kicked" {
		t.Errorf("kicked connection closed with %s", r)
	}
	if ev, err := ca.Expect("left", 5*time.Second); err != nil || ev.Conn != cb.ID() || ev.Reason != "kicked" {
		t.Errorf("left after kick: %+v %v", ev, err)
	}
}

// TestAdminCLI runs tether push, conn, rooms and nodes against a node.
func TestAdminCLI(t *testing.T) {
	ns := startNATS(t, -1)
	nodes := startCluster(t, ns.ClientURL(), "a", "b")
	a, b := nodes[0], nodes[1]
	cb := b.dial(t, "tcp")
	join(t, cb, "lobby", "cb")
	dir := t.TempDir()
	set := []string{"--set", "http.address=" + a.HTTPAddr().String()}
	run := func(args ...string) string {
		t.Helper()
		out, stderr, code := tether(t, dir, append(args, set...)...)
		if code != 0 {
			t.Fatalf("tether %v: %d %s", args, code, stderr)
		}
		return out
	}
	if out := run("nodes"); strings.Count(out, "true") != 2 || !strings.Contains(out, b.ID()) {
		t.Errorf("tether nodes:\n%s", out)
	}
	check.For(t, 5*time.Second, 50*time.Millisecond, func() error {
		if out := run("rooms"); !strings.Contains(out, "lobby") {
			return fmt.Errorf("tether rooms:\n%s", out)
		}
		return nil
	})
	if out := run("rooms", "lobby"); !strings.Contains(out, cb.ID()) {
		t.Errorf("tether rooms lobby:\n%s", out)
	}
	if out := run("conn", cb.ID()); !strings.Contains(out, `"node": "`+b.ID()+`"`) {
		t.Errorf("tether conn:\n%s", out)
	}
	if out := run("push", "--room", "lobby", "hello everyone"); out != "pushed to 1 connection\n" {
		t.Errorf("push to lobby: %q", out)
	}
	expectPush(t, cb, "lobby", `"hello everyone"`)
	if out := run("push", "--room", "nobody", "hello?"); out != "pushed to 0 connections\n" {
		t.Errorf("push to an empty room: %q", out)
	}
	if out := run("push", "--all", "all of you"); out != "pushed to 1 connection\n" {
		t.Errorf("push to all: %q", out)
	}
	expectPush(t, cb, "", `"all of you"`)
	run("push", "--conn", cb.ID(), `{"k":true}`)
	expectPush(t, cb, "", `{"k":true}`)
	run("conn", cb.ID(), "--kick")
	if r := b.closeReason(t, cb.ID(), 5*time.Second); r.String() != "kicked" {
		t.Errorf("reason %s", r)
	}
	// A closed connection of a live node, this one's (a) or another's (b),
	// is not found; a connection of a node gone is its node's absence.
	ca := a.dial(t, "tcp")
	ca.Close()
	if r := a.closeReason(t, ca.ID(), 5*time.Second); r.String() != "client_closed" {
		t.Errorf("reason %s", r)
	}
	for _, c := range []struct {
		id, want string
	}{
		{ca.ID(), "not_found: connection " + ca.ID() + " not found: closed, or never opened (its node " + a.ID() + " is alive)"},
		{cb.ID(), "not_found: connection " + cb.ID() + " not found: closed, or never opened (its node " + b.ID() + " is alive)"},
		{"gone-x7k2m9qa.65201wJI8ST2WWSQ", "not_found: connection gone-x7k2m9qa.65201wJI8ST2WWSQ: its node gone-x7k2m9qa is not in the cluster"},
	} {
		for _, args := range [][]string{{"push", "--conn", c.id, "x"}, {"conn", c.id, "--kick"}, {"conn", c.id, "--bind", "u1"}} {
			if _, stderr, code := tether(t, dir, append(args, set...)...); code != 1 || !strings.Contains(stderr, c.want) {
				t.Errorf("%v: %d %s, want %q", args, code, stderr, c.want)
			}
		}
	}
}

// quietRooms adds the namespace quiet: rooms without presence, whose
// members list is forbidden.
func quietRooms(c *config.Config) {
	o := config.DefaultRoomOptions()
	o.Presence = false
	c.Rooms.Namespaces = append(c.Rooms.Namespaces, config.Namespace{Prefix: "quiet", RoomOptions: o})
}

// roomSizeIs checks a node's GET /api/rooms/{room}: the room's members
// over the cluster, and by node.
func roomSizeIs(t *testing.T, n *testNode, room string, members int, nodes map[string]int) error {
	t.Helper()
	var got node.RoomInfo
	if code := api(t, n, "GET", "/api/rooms/"+room, nil, &got); code != 200 || got.Room != room || got.Members != members || !maps.Equal(got.Nodes, nodes) {
		return fmt.Errorf("%s: GET /api/rooms/%s: %d %+v, want %d members, by node %v", n.ID(), room, code, got, members, nodes)
	}
	return nil
}

// TestRoomSizeAPI: GET /api/rooms/{room} answers a room's size, over the
// cluster and by node, on a node with members (its room's view) as on
// one without (the nodes' counts); in a room without presence too, whose
// members list is refused. Over NATS the same, and a room nobody is in
// has no member on no node.
func TestRoomSizeAPI(t *testing.T) {
	ns := startNATS(t, -1)
	nodes := startClusterWith(t, ns.ClientURL(), quietRooms, "a", "b", "c")
	a, b, c := nodes[0], nodes[1], nodes[2] // c has no member
	ca, cb1, cb2 := a.dial(t, "tcp"), b.dial(t, "tcp"), b.dial(t, "tcp")
	for _, room := range []string{"r", "quiet:r"} {
		for _, m := range []*client.Client{ca, cb1, cb2} {
			join(t, m, room, m.ID())
		}
		for _, n := range nodes {
			check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
				return roomSizeIs(t, n, room, 3, map[string]int{a.ID(): 1, b.ID(): 2})
			})
		}
	}
	if code := api(t, c, "GET", "/api/rooms/quiet:r/members", nil, nil); code != 400 {
		t.Errorf("members of a room without presence: %d, want 400", code)
	}

	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, q := range []struct{ op, room, want string }{
		{"room", "quiet:r", fmt.Sprintf(`{"room":"quiet:r","members":3,"nodes":{%q:1,%q:2}}`, a.ID(), b.ID())},
		{"room", "nobody", `{"room":"nobody","members":0,"nodes":{}}`},
		{"members", "quiet:r", `{"error":"forbidden",`},
	} {
		msg, err := nc.Request("tether.api."+q.op, []byte(fmt.Sprintf(`{"room":%q}`, q.room)), 5*time.Second)
		if err != nil || !strings.HasPrefix(string(msg.Data), q.want) {
			t.Errorf("%s %s over NATS: %v %s, want %s", q.op, q.room, err, msg.Data, q.want)
		}
	}
}

// TestRoomSizeAPIAfterNodeDeath: node b, a process of its own, is killed
// without a goodbye. The surviving nodes' GET /api/rooms/{room} counts b's
// members until the cluster declares b dead and the rooms drop them, and
// not after. GET /api/rooms cannot tell that moment: it sums the counts
// of the nodes that answer, and a dead node just stops answering.
func TestRoomSizeAPIAfterNodeDeath(t *testing.T) {
	const deadAfter = 3 * time.Second // long enough to ask before it
	ns := startNATS(t, -1)
	nodes := startClusterWith(t, ns.ClientURL(), func(c *config.Config) {
		quietRooms(c)
		c.Cluster.DeadAfter = config.Duration(deadAfter)
	}, "a", "c")
	a, c := nodes[0], nodes[1]
	join(t, a.dial(t, "tcp"), "quiet:r", "ma")
	join(t, c.dial(t, "tcp"), "quiet:r", "mc")

	b := startClusterProcess(t, "b", ns.ClientURL(), "rooms: {namespaces: [{prefix: quiet, presence: false}]}\n")
	var bID string
	for i := range 2 {
		cb := dialRetry(t, b.tcpAddr)
		join(t, cb, "quiet:r", fmt.Sprintf("mb%d", i))
		bID = protocol.NodeOf(cb.ID())
	}
	for _, n := range nodes {
		check.For(t, 5*time.Second, 50*time.Millisecond, func() error {
			return roomSizeIs(t, n, "quiet:r", 4, map[string]int{a.ID(): 1, c.ID(): 1, bID: 2})
		})
	}

	killed := time.Now()
	b.kill()
	if err := roomSizeIs(t, a, "quiet:r", 4, map[string]int{a.ID(): 1, c.ID(): 1, bID: 2}); err != nil && time.Since(killed) < deadAfter {
		t.Errorf("b not yet declared dead: %v", err)
	}
	// dead_after, a heartbeat check's period, and slack for a loaded
	// machine.
	for _, n := range nodes {
		check.For(t, deadAfter+5*time.Second, 50*time.Millisecond, func() error {
			return roomSizeIs(t, n, "quiet:r", 2, map[string]int{a.ID(): 1, c.ID(): 1})
		})
	}
}
