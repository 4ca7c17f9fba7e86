package cluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"tether/actors/chat"
	"tether/actors/cluster"
	"tether/actors/conn"
	"tether/actors/protocol"
	"tether/actors/room"
	"tether/client"
	"tether/config"
	"tether/test/check"
	"tether/test/nodetest"
	"tether/transport"
)

// These tests run the bridge of node n as a node does (nodetest), with
// rooms, and chat on a TCP listener for members: the test's clients. The
// test plays another node, m, on NATS with a Bus of its own. Each test
// guards one rule of bridge.go.

// chatNode is node n with a chat listener.
type chatNode struct {
	*nodetest.Node
	addr string
}

func start(t *testing.T, o nodetest.Options) *chatNode {
	t.Helper()
	n := nodetest.Start(t, o)
	rooms := config.Default().Rooms
	deps := &chat.Deps{Rooms: n.Rooms(&rooms, nil), Registry: n.Registry, MaxRooms: 10, Bus: n.Bus, Options: &rooms}
	return &chatNode{Node: n, addr: n.Listen(t, "tcp", chat.New(deps, nil))}
}

// join dials a client into room.
func (n *chatNode) join(t *testing.T, room string) *client.Client {
	t.Helper()
	c := nodetest.Dial(t, n.addr)
	if _, err := c.Call(client.Request{Op: "join", Room: room}); err != nil {
		t.Fatal(err)
	}
	return c
}

// subscribed is a condition: NATS has want subscriptions on subject
// exactly.
func (n *chatNode) subscribed(t *testing.T, subject string, want int) func() error {
	return func() error {
		sz, err := n.NATS.Subsz(&server.SubszOptions{Subscriptions: true, Test: subject})
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for _, s := range sz.Subs {
			if s.Subject == subject {
				got++
			}
		}
		if got != want {
			return fmt.Errorf("%d subscriptions on %s, want %d", got, subject, want)
		}
		return nil
	}
}

// alive is the bridge's view: the nodes it knows, and whether alive.
func (n *chatNode) alive(t *testing.T) map[string]bool {
	t.Helper()
	res, err := n.System.Root.RequestFuture(n.Bridge, &cluster.Nodes{}, 5*time.Second).Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, info := range res.([]cluster.NodeInfo) {
		out[info.Node] = info.Alive
	}
	return out
}

// peer is node m, played by the test on NATS.
func (n *chatNode) peer() *cluster.Bus {
	b := cluster.NewBus("m", "tether", transport.NewMetrics())
	b.Attach(n.Peer)
	return b
}

// beat publishes a heartbeat of m.
func beat(m *cluster.Bus) error {
	body, _ := json.Marshal(&cluster.NodeInfo{Node: m.Node})
	return m.Publish(m.Msg("tether.cluster", cluster.KindHeartbeat, body))
}

// beating makes m beat every interval until stop is called (or the test
// ends).
func beating(t *testing.T, m *cluster.Bus, interval time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			if err := beat(m); err != nil {
				t.Error(err)
				return
			}
			select {
			case <-tick.C:
			case <-done:
				return
			}
		}
	})
	stop = sync.OnceFunc(func() { close(done); wg.Wait() })
	t.Cleanup(stop)
	return stop
}

// state publishes m's members of room name, as m answers a sync.
func state(t *testing.T, m *cluster.Bus, name string, conns ...string) {
	t.Helper()
	members := []protocol.Member{}
	for _, id := range conns {
		members = append(members, protocol.Member{Conn: id, Name: id, Node: m.Node})
	}
	if err := m.PublishRoom(name, &room.Remote{Kind: room.KindState, Members: members}); err != nil {
		t.Fatal(err)
	}
}

// presence reads c's events until want joined and left events have come,
// as "joined <conn>" and "left <conn> <reason>".
// hasMembers waits until the room's member list on c's node holds
// conns. Another node's first member list is the room as found, not
// news: it is told to members by no joined (README, protocol), so the
// tests look at the list.
func hasMembers(t *testing.T, c *client.Client, room string, conns ...string) {
	t.Helper()
	check.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		ev, err := c.Call(client.Request{Op: "members", Room: room})
		if err != nil {
			return err
		}
		got := map[string]bool{}
		for _, m := range ev.Members {
			got[m.Conn] = true
		}
		for _, want := range conns {
			if !got[want] {
				return fmt.Errorf("members %+v; want %s among them", ev.Members, want)
			}
		}
		return nil
	})
}

func presence(t *testing.T, c *client.Client, want int) []string {
	t.Helper()
	var out []string
	_ = c.Conn().SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(out) < want {
		ev, err := c.Recv()
		if err != nil {
			t.Fatalf("after %q: %v", out, err)
		}
		switch ev.Op {
		case "joined":
			out = append(out, "joined "+ev.Conn)
		case "left":
			out = append(out, "left "+ev.Conn+" "+ev.Reason)
		}
	}
	return out
}

// TestARoomIsSubscribedWhileItHasMembersHere guards interest-based
// subscriptions: a node subscribes to a room's subject once, with its
// first local member (not once per member), keeps it while it has one,
// and ends it with the last; when the room's actor is replaced (the last
// member left, and another joined) the subscription is the new actor's,
// one, and brings it the other nodes' events, whatever the old actor
// says on its way out.
func TestARoomIsSubscribedWhileItHasMembersHere(t *testing.T) {
	n := start(t, nodetest.Options{})
	subscriptions := func(want int) func() error { return n.subscribed(t, "tether.room.lobby", want) }
	if err := subscriptions(0)(); err != nil {
		t.Fatal(err)
	}
	a := n.join(t, "lobby")
	if err := subscriptions(1)(); err != nil { // NATS had it before the join's ok
		t.Fatal(err)
	}
	b := n.join(t, "lobby")
	check.Never(t, 50*time.Millisecond, 5*time.Millisecond, subscriptions(1))
	if _, err := a.Call(client.Request{Op: "leave", Room: "lobby"}); err != nil {
		t.Fatal(err)
	}
	check.Never(t, 50*time.Millisecond, 5*time.Millisecond, subscriptions(1))
	if _, err := b.Call(client.Request{Op: "leave", Room: "lobby"}); err != nil {
		t.Fatal(err)
	}
	check.For(t, 5*time.Second, time.Millisecond, subscriptions(0))

	// Each leave stops the room's actor, each join makes a new one.
	c := nodetest.Dial(t, n.addr)
	for range 20 {
		if _, err := c.Call(client.Request{Op: "join", Room: "lobby"}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Call(client.Request{Op: "leave", Room: "lobby"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Call(client.Request{Op: "join", Room: "lobby"}); err != nil {
		t.Fatal(err)
	}
	check.For(t, 5*time.Second, time.Millisecond, subscriptions(1))
	// The Unsubscribe of an actor of the room that has stopped, which
	// may come after its successor's Subscribe, leaves that one alone.
	n.System.Root.Send(n.Bridge, &room.Unsubscribe{Room: "lobby", PID: actor.NewPID(n.System.Address(), "room-lobby-gone")})
	check.Never(t, 100*time.Millisecond, 5*time.Millisecond, subscriptions(1))
	state(t, n.peer(), "lobby", "m.1")
	hasMembers(t, c, "lobby", "m.1")
}

// TestASilentNodeIsDeclaredDead guards checkNodes: a node that heartbeats
// is alive; silent for dead_after, it is declared dead, and every room
// drops its members with one left (node_down) each.
func TestASilentNodeIsDeclaredDead(t *testing.T) {
	const interval, deadAfter = 50 * time.Millisecond, 300 * time.Millisecond
	n := start(t, nodetest.Options{Heartbeat: interval, DeadAfter: deadAfter})
	m := n.peer()
	stop := beating(t, m, interval)
	check.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		if !n.alive(t)["m"] {
			return errors.New("m is not alive yet")
		}
		return nil
	})
	c := n.join(t, "lobby")
	state(t, m, "lobby", "m.1", "m.2")
	hasMembers(t, c, "lobby", "m.1", "m.2")
	check.Never(t, 2*deadAfter, 10*time.Millisecond, func() error {
		if !n.alive(t)["m"] {
			return errors.New("m declared dead while it heartbeats")
		}
		return nil
	})

	stop()
	silent := time.Now()
	if got := presence(t, c, 2); !slices.Equal(got, []string{"left m.1 node_down", "left m.2 node_down"}) {
		t.Fatalf("got %q, want m.1 and m.2 left node_down", got)
	}
	// The last heartbeat went at most an interval before the stop.
	if took := time.Since(silent); took < deadAfter-interval {
		t.Fatalf("declared dead %s after the heartbeats stopped; dead_after is %s", took, deadAfter)
	}
	if alive, known := n.alive(t)["m"]; alive || !known {
		t.Fatalf("m: alive %v, known %v; want known dead", alive, known)
	}
	// The checks go on at every heartbeat; none declares m dead again.
	_ = c.Conn().SetReadDeadline(time.Now().Add(4 * interval))
	var timeout net.Error
	if ev, err := c.Recv(); !errors.As(err, &timeout) || !timeout.Timeout() {
		t.Fatalf("after the lefts: %+v %v; want nothing", ev, err)
	}
	if downs := nodetest.Count(n.Metrics.NodesDown); downs != 1 {
		t.Fatalf("%v nodes declared dead, want 1", downs)
	}
}

// TestANodeThatSpeaksUpIsResynced guards the heartbeat's resync: the
// first heartbeat of a node, and one from a node declared dead, make
// every room publish a sync, which that node answers with its members;
// the heartbeats of a node alive and known make none.
func TestANodeThatSpeaksUpIsResynced(t *testing.T) {
	const interval, deadAfter = 50 * time.Millisecond, 300 * time.Millisecond
	n := start(t, nodetest.Options{Heartbeat: interval, DeadAfter: deadAfter})
	m := n.peer()
	var syncs atomic.Int32 // n's, on the room's subject
	sub, err := n.Peer.Subscribe("tether.room.lobby", func(msg *nats.Msg) {
		if msg.Header.Get(cluster.HeaderKind) == room.KindSync && msg.Header.Get(cluster.HeaderNode) == "n" {
			syncs.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := n.Peer.Flush(); err != nil {
		t.Fatal(err)
	}
	synced := func(want int32) func() error {
		return func() error {
			if got := syncs.Load(); got != want {
				return fmt.Errorf("%d syncs, want %d", got, want)
			}
			return nil
		}
	}
	c := n.join(t, "lobby")
	check.For(t, 5*time.Second, time.Millisecond, synced(1)) // the room's first member here

	stop := beating(t, m, interval)
	check.For(t, 5*time.Second, time.Millisecond, synced(2))
	state(t, m, "lobby", "m.1")
	hasMembers(t, c, "lobby", "m.1")
	check.Never(t, 4*interval, 5*time.Millisecond, synced(2))
	stop()
	if got := presence(t, c, 1); !slices.Equal(got, []string{"left m.1 node_down"}) {
		t.Fatalf("got %q, want m.1 left node_down", got)
	}

	beating(t, m, interval)
	check.For(t, 5*time.Second, time.Millisecond, synced(3))
	state(t, m, "lobby", "m.1")
	if got := presence(t, c, 1); !slices.Equal(got, []string{"joined m.1"}) {
		t.Fatalf("got %q, want m.1 joined again", got)
	}
}

// TestAGoodbyeDropsTheNodesMembersAtOnce guards the goodbye: a node that
// says it stops has its members dropped at once, with the reason
// server_shutdown, without waiting for dead_after.
func TestAGoodbyeDropsTheNodesMembersAtOnce(t *testing.T) {
	n := start(t, nodetest.Options{DeadAfter: time.Minute})
	m := n.peer()
	c := n.join(t, "lobby")
	if err := beat(m); err != nil {
		t.Fatal(err)
	}
	state(t, m, "lobby", "m.1")
	hasMembers(t, c, "lobby", "m.1")
	if err := m.Publish(m.Msg("tether.cluster", cluster.KindGoodbye, nil)); err != nil {
		t.Fatal(err)
	}
	if got := presence(t, c, 1); !slices.Equal(got, []string{"left m.1 server_shutdown"}) {
		t.Fatalf("got %q, want m.1 left server_shutdown", got)
	}
	if alive, known := n.alive(t)["m"]; alive || !known {
		t.Fatalf("m: alive %v, known %v; want known, gone", alive, known)
	}
}

// TestOtherNodesReachThisNodesConnections guards nodeRequest and the
// broadcast: on the node's subject another node delivers to a
// connection, asks for its info, and kicks it, and is answered not_found
// for a connection the node does not have; what is published to all
// reaches every connection.
func TestOtherNodesReachThisNodesConnections(t *testing.T) {
	n := start(t, nodetest.Options{})
	m := n.peer()
	a, b := nodetest.Dial(t, n.addr), nodetest.Dial(t, n.addr)
	ask := func(kind, id string, body []byte) ([]byte, error) {
		msg := m.Msg("tether.node.n", kind, body)
		msg.Header.Set(cluster.HeaderConn, id)
		return m.Request(context.Background(), cluster.Admin, msg)
	}
	if _, err := ask(cluster.KindDeliver, a.ID(), []byte(`{"op":"message","data":"hi"}`)); err != nil {
		t.Fatal(err)
	}
	if ev, err := a.Expect("message", 5*time.Second); err != nil || string(ev.Data) != `"hi"` {
		t.Fatalf("delivered: %+v %v", ev, err)
	}
	info, err := ask(cluster.KindInfo, a.ID(), nil)
	var got struct{ ID, Listener string }
	if err != nil || json.Unmarshal(info, &got) != nil || got.ID != a.ID() || got.Listener != "tcp" {
		t.Fatalf("info: %s %v; want %s's", info, err, a.ID())
	}
	var refused *cluster.ReplyError
	for _, kind := range []string{cluster.KindDeliver, cluster.KindKick, cluster.KindInfo} {
		if _, err := ask(kind, "n.nobody", nil); !errors.As(err, &refused) || refused.Code != "not_found" {
			t.Errorf("%s for n.nobody: %v, want not_found", kind, err)
		}
	}
	if err := m.Publish(m.Msg("tether.all", cluster.KindDeliver, []byte(`{"op":"message","data":"all"}`))); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{a, b} {
		if ev, err := c.Expect("message", 5*time.Second); err != nil || string(ev.Data) != `"all"` {
			t.Fatalf("%s got %+v %v, want the broadcast", c.ID(), ev, err)
		}
	}
	if _, err := ask(cluster.KindKick, a.ID(), nil); err != nil {
		t.Fatal(err)
	}
	if r := n.Closed(t, a.ID()); r != conn.ReasonKicked {
		t.Fatalf("closed %s, want kicked", r)
	}
}

// TestAUserIsSubscribedWhileItHasConnectionsHere guards WatchUser and
// UnwatchUser: once a connection is bound to a user (bind, on the node's
// subject), the node subscribes to the user's subject, once, and what is
// published there reaches each of the user's connections; with the
// user's last connection gone, and only then, the subscription ends.
func TestAUserIsSubscribedWhileItHasConnectionsHere(t *testing.T) {
	n := start(t, nodetest.Options{})
	m := n.peer()
	const subject = "tether.user.ann"
	users := func(want int) func() error { return n.subscribed(t, subject, want) }
	a, b := nodetest.Dial(t, n.addr), nodetest.Dial(t, n.addr)
	for _, c := range []*client.Client{a, b} {
		msg := m.Msg("tether.node.n", cluster.KindBind, nil)
		msg.Header.Set(cluster.HeaderConn, c.ID())
		msg.Header.Set(cluster.HeaderUser, "ann")
		if _, err := m.Request(context.Background(), cluster.Admin, msg); err != nil {
			t.Fatal(err)
		}
	}
	check.For(t, 5*time.Second, time.Millisecond, users(1))
	// Watch and unwatch may cross: an unwatch while ann has connections
	// here, and a second watch, change nothing.
	for _, msg := range []any{&cluster.UnwatchUser{User: "ann"}, &cluster.WatchUser{User: "ann"}} {
		n.System.Root.Send(n.Bridge, msg)
		check.Never(t, 50*time.Millisecond, 5*time.Millisecond, users(1))
	}
	if err := m.Publish(m.Msg(subject, cluster.KindDeliver, []byte(`{"op":"message","data":"ann"}`))); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{a, b} {
		if ev, err := c.Expect("message", 5*time.Second); err != nil || string(ev.Data) != `"ann"` {
			t.Fatalf("%s got %+v %v, want the user's message", c.ID(), ev, err)
		}
	}
	a.Close()
	n.Closed(t, a.ID())
	check.Never(t, 50*time.Millisecond, 5*time.Millisecond, users(1))
	b.Close()
	check.For(t, 5*time.Second, time.Millisecond, users(0))
}
