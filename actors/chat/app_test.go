package chat

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"tether/actors/cluster"
	"tether/auth"
	"tether/client"
	"tether/config"
	"tether/history"
	"tether/test/check"
	"tether/test/nodetest"
)

// These tests run chat as a node does: a TCP listener whose connections
// run it, with the rooms manager, the cluster bridge and a nats-server in
// process (nodetest). The test's clients speak the protocol over loopback
// with tether's Go client; where another node must answer, the test plays
// it on NATS. Each test guards one promise of app.go or auth.go.

// node is a node whose TCP listener runs chat.
type node struct {
	*nodetest.Node
	addr string
}

// start runs chat with au (nil: no authentication) on a node whose
// connections may join two rooms each; rooms in namespace "staff" may be
// joined only with a token, and those in "kept" keep history.
func start(t *testing.T, au *auth.Listener) *node {
	t.Helper()
	n := nodetest.Start(t, nodetest.Options{JetStream: true})
	rooms := config.Default().Rooms
	staff := config.Namespace{Prefix: "staff", RoomOptions: config.DefaultRoomOptions()}
	staff.Join = config.JoinToken
	kept := config.Namespace{Prefix: "kept", RoomOptions: config.DefaultRoomOptions()}
	kept.HistorySize = 10
	rooms.Namespaces = append(rooms.Namespaces, staff, kept)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store, err := history.Open(ctx, n.Bus.Conn(), history.Options{Prefix: "tether", Rooms: &rooms, Memory: true, Replicas: 1, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	deps := &Deps{Rooms: n.Rooms(&rooms, store), Registry: n.Registry, MaxRooms: 2, Bus: n.Bus, Options: &rooms}
	return &node{Node: n, addr: n.Listen(t, "tcp", New(deps, au))}
}

// dial connects a client and reads its welcome.
func (n *node) dial(t *testing.T) *client.Client { return nodetest.Dial(t, n.addr) }

// open fails the test if connection id closes within d.
func (n *node) open(t *testing.T, id string, d time.Duration) {
	t.Helper()
	check.Never(t, d, 10*time.Millisecond, func() error {
		if info, ok := n.Registry.ClosedInfo(id); ok {
			return fmt.Errorf("%s closed: %s", id, info.Reason)
		}
		return nil
	})
}

// write sends the requests, each one frame, in one write: the connection
// reads them together and handles them one after the other.
func write(t *testing.T, c *client.Client, requests ...string) {
	t.Helper()
	var b []byte
	for _, r := range requests {
		b = binary.BigEndian.AppendUint32(b, uint32(len(r)))
		b = append(b, r...)
	}
	if _, err := c.Conn().Write(b); err != nil {
		t.Fatal(err)
	}
}

// recv returns the client's next event.
func recv(t *testing.T, c *client.Client) *client.Event {
	t.Helper()
	_ = c.Conn().SetReadDeadline(time.Now().Add(5 * time.Second))
	ev, err := c.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// answer says what an event answers: "<id> ok", "<id> error <code>", or
// its op for an event with no id.
func answer(ev *client.Event) string {
	s := ev.Op
	if ev.Op == "error" {
		s += " " + ev.Code
	}
	if ev.ID != nil {
		s = string(ev.ID) + " " + s
	}
	return s
}

// TestWelcome guards Opened: the first frame is the welcome, with the
// connection's id (the one the node registered), the node, the
// listener's heartbeat rules, and no auth on a listener without it.
func TestWelcome(t *testing.T) {
	n := start(t, nil)
	c := n.dial(t)
	w := c.Welcome
	if n.Registry.Get(w.Conn) == nil || w.Node != "n" || w.Auth != "" {
		t.Fatalf("welcome %+v: want a registered connection of node n, no auth", w)
	}
	want := client.Heartbeat{IdleTimeoutMS: 60000, PingNotResponseLimit: 2} // DefaultListener's, TCP: no pings
	if w.Heartbeat == nil || *w.Heartbeat != want {
		t.Fatalf("welcome heartbeat %+v, want %+v", w.Heartbeat, want)
	}
}

// TestBadRequestsAreAnsweredAndTheConnectionStays guards Frame: a
// request it cannot take is answered with an error (with its id when it
// has one) and never closes the connection.
func TestBadRequestsAreAnsweredAndTheConnectionStays(t *testing.T) {
	n := start(t, nil)
	c := n.dial(t)
	write(t, c,
		`not json`,
		`{"op":"dance","id":2}`,
		`{"op":"join","id":3}`,
		`{"op":"send","id":4,"room":"lobby","data":1}`,
		`{"op":"leave","id":5,"room":"lobby"}`,
		`{"op":"auth","id":6,"token":"x"}`,
		`{"op":"refresh","id":7,"token":"x"}`,
		`{"op":"join","id":8,"room":"a"}`,
		`{"op":"join","id":9,"room":"b"}`,
		`{"op":"join","id":10,"room":"c"}`,
		`{"op":"join","id":11,"room":"a","name":"again"}`, // in a already: not a third room
		`{"op":"whisper","id":12,"to":"n.gone","data":1}`,
		`{"op":"ping","id":13}`,
	)
	want := []string{
		"error bad_request", "2 error unknown_op", "3 error bad_request", "4 error not_in_room",
		"5 error not_in_room", "6 error bad_request", "7 error bad_request", "8 ok", "9 ok",
		"10 error too_many_rooms", "11 ok", "12 error not_found", "13 pong",
	}
	var got []string
	for len(got) < len(want) {
		got = append(got, answer(recv(t, c)))
	}
	// The joins' oks come from the rooms, the rest from the connection:
	// their order is each one's own.
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("answers %q, want %q", got, want)
	}
	n.open(t, c.ID(), 100*time.Millisecond)
}

// TestSendsWaitForTheirJoin guards joined.early: sends made before the
// join is answered (in the same write even) wait for it and go to the
// room in order; when the join is refused or fails, or the room is left
// before it is done, they are answered not_in_room.
func TestSendsWaitForTheirJoin(t *testing.T) {
	n := start(t, nil)
	c := n.dial(t)
	write(t, c,
		`{"op":"join","id":1,"room":"lobby"}`,
		`{"op":"send","id":2,"room":"lobby","data":2,"echo":true}`,
		`{"op":"send","id":3,"room":"lobby","data":3,"echo":true}`,
		`{"op":"send","id":4,"room":"lobby","data":4,"echo":true}`,
		`{"op":"join","id":5,"room":"staff:a"}`,
		`{"op":"send","id":6,"room":"staff:a","data":6}`,
		`{"op":"join","id":7,"room":"b"}`,
		`{"op":"send","id":8,"room":"b","data":8}`,
		`{"op":"leave","id":9,"room":"b"}`,
	)
	var oks, echoes []string
	others := map[string]string{}
	for len(oks) < 4 || len(echoes) < 3 || len(others) < 5 {
		switch ev := recv(t, c); {
		case ev.Op == "message":
			echoes = append(echoes, string(ev.Data))
		case slices.Contains([]string{"1", "2", "3", "4"}, string(ev.ID)):
			oks = append(oks, answer(ev))
		default:
			others[string(ev.ID)] = answer(ev)
		}
	}
	// The room writes the join's ok and the echoes, the connection the
	// sends' oks: each in order, in no order between them.
	if !slices.Equal(oks, []string{"1 ok", "2 ok", "3 ok", "4 ok"}) || !slices.Equal(echoes, []string{"2", "3", "4"}) {
		t.Fatalf("lobby: answers %q and echoes %q; want 1 to 4 ok, and 2, 3, 4", oks, echoes)
	}
	for id, want := range map[string]string{"5": "5 error forbidden", "6": "6 error not_in_room", "8": "8 error not_in_room"} {
		if others[id] != want {
			t.Errorf("answer %q, want %q", others[id], want)
		}
	}

	// A room whose history is gone cannot be joined: the room fails the
	// join, after the sends that waited for it.
	js, err := jetstream.New(n.Peer)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(context.Background(), "tether_HIST_kept"); err != nil {
		t.Fatal(err)
	}
	write(t, c,
		`{"op":"join","id":10,"room":"kept:a"}`,
		`{"op":"send","id":11,"room":"kept:a","data":11}`,
		`{"op":"send","id":12,"room":"kept:a","data":12}`,
	)
	var got []string
	for len(got) < 3 {
		got = append(got, answer(recv(t, c)))
	}
	if want := []string{"10 error unavailable", "11 error not_in_room", "12 error not_in_room"}; !slices.Equal(got, want) {
		t.Fatalf("a join that fails: %q, want %q", got, want)
	}
}

// TestMembersRequestsInFlightAreBounded guards MaxInFlight: members
// requests that ask the cluster (rooms with no member here) are answered
// up to MaxInFlight at a time; past it, busy at once.
func TestMembersRequestsInFlightAreBounded(t *testing.T) {
	n := start(t, nil)
	c := n.dial(t)
	const asks = 3 * MaxInFlight
	var requests []string
	for i := range asks {
		requests = append(requests, fmt.Sprintf(`{"op":"members","id":%d,"room":"nobody-%d"}`, i, i))
	}
	write(t, c, requests...)
	count := map[string]int{}
	for range asks {
		ev := recv(t, c)
		count[ev.Op+" "+ev.Code]++
	}
	if count["members "] != MaxInFlight || count["error busy"] != asks-MaxInFlight {
		t.Fatalf("answers %v; want %d members and the rest busy", count, MaxInFlight)
	}
}

// TestWhispersReachTheirConnection guards whisper: to a connection of
// this node it is delivered as a message from the sender; to another
// node's it is asked of that node, whose refusal, or absence, is
// not_found.
func TestWhispersReachTheirConnection(t *testing.T) {
	n := start(t, nil)
	a, b := n.dial(t), n.dial(t)
	if _, err := a.Call(client.Request{Op: "whisper", To: b.ID(), Data: "hi"}); err != nil {
		t.Fatal(err)
	}
	if ev := recv(t, b); ev.Op != "message" || ev.From != a.ID() || string(ev.Data) != `"hi"` {
		t.Fatalf("%s got %+v; want the whisper from %s", b.ID(), ev, a.ID())
	}

	n.Other(t, "o", "o.here")
	for to, code := range map[string]string{"o.here": "", "o.gone": "not_found", "z.nobody": "not_found"} {
		if ev, _ := a.Call(client.Request{Op: "whisper", To: to, Data: "hi"}); ev == nil || ev.Code != code {
			t.Errorf("whisper to %s: %+v; want code %q", to, ev, code)
		}
	}
}

// TestWhispersToAnotherNodeGoOneAtATime guards App.whispers: whispers to
// other nodes' connections are asked one at a time, in the order sent
// (two asked at once could overtake each other), and count against
// MaxInFlight while they wait.
func TestWhispersToAnotherNodeGoOneAtATime(t *testing.T) {
	n := start(t, nil)
	c := n.dial(t)
	sub, err := n.Peer.SubscribeSync("tether.node.o")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Peer.Flush(); err != nil {
		t.Fatal(err)
	}
	var requests []string
	for i := 1; i <= MaxInFlight+1; i++ {
		requests = append(requests, fmt.Sprintf(`{"op":"whisper","id":%d,"to":"o.x","data":%d}`, i, i))
	}
	write(t, c, requests...)
	if got, want := answer(recv(t, c)), fmt.Sprintf("%d error busy", MaxInFlight+1); got != want {
		t.Fatalf("first answer %q, want %q", got, want)
	}
	for i := 1; i <= MaxInFlight; i++ {
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var whisper client.Event
		if err := json.Unmarshal(m.Data, &whisper); err != nil || string(whisper.Data) != fmt.Sprint(i) || m.Header.Get(cluster.HeaderConn) != "o.x" {
			t.Fatalf("asked %q for %s; want whisper %d to o.x", m.Data, m.Header.Get(cluster.HeaderConn), i)
		}
		check.Never(t, 50*time.Millisecond, 5*time.Millisecond, func() error {
			if n, _, _ := sub.Pending(); n > 0 {
				return fmt.Errorf("whisper %d asked before %d was answered", i+1, i)
			}
			return nil
		})
		if err := m.Respond(nil); err != nil {
			t.Fatal(err)
		}
		if got, want := answer(recv(t, c)), fmt.Sprintf("%d ok", i); got != want {
			t.Fatalf("answer %q, want %q", got, want)
		}
	}
}

// TestALeaveBeforeItsJoinIsDone guards a leave sent right behind its
// join, before the room answered it: the leave is answered ok, and the
// connection ends up out of the room (the room's join, once done, is
// undone), so it gets none of the room's messages and is no member.
func TestALeaveBeforeItsJoinIsDone(t *testing.T) {
	n := start(t, nil)
	c := n.dial(t)
	write(t, c, `{"op":"join","id":1,"room":"r"}`, `{"op":"leave","id":2,"room":"r"}`)
	got := map[string]string{}
	for len(got) < 2 {
		if ev := recv(t, c); ev.ID != nil {
			got[string(ev.ID)] = answer(ev)
		}
	}
	if got["2"] != "2 ok" {
		t.Fatalf("the leave: %q; want ok", got["2"])
	}
	other := n.dial(t)
	write(t, other, `{"op":"join","id":1,"room":"r"}`)
	if a := answer(recv(t, other)); a != "1 ok" {
		t.Fatalf("other's join: %s", a)
	}
	check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		ev, err := other.Call(client.Request{Op: "members", Room: "r"})
		if err != nil {
			return err
		}
		if len(ev.Members) != 1 || ev.Members[0].Conn != other.ID() {
			return fmt.Errorf("members %+v; want only %s", ev.Members, other.ID())
		}
		return nil
	})
	write(t, other, `{"op":"send","id":3,"room":"r","data":"after the leave"}`)
	write(t, c, `{"op":"join","id":4,"room":"elsewhere"}`)
	for {
		ev := recv(t, c)
		if ev.Op == "message" {
			t.Fatalf("the connection that left got %s", ev.Data)
		}
		if string(ev.ID) == "4" {
			break
		}
	}
}
