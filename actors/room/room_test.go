package room_test

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"tether/actors/cluster"
	"tether/actors/conn"
	"tether/actors/protocol"
	"tether/actors/room"
	"tether/config"
	"tether/transport"
)

// These tests drive the rooms manager and its room actors with messages,
// as the chat application and the cluster bridge do, with real members:
// connection actors over loopback socket pairs, whose client ends the
// test reads. NATS (for the room's cluster side) is a real server in
// process. Each test guards one of the concurrency rules at the top of
// room.go.

type rooms struct {
	system   *actor.ActorSystem
	manager  *actor.PID
	registry *conn.Registry
	settings *conn.Settings
	deps     *conn.Deps
	seq      int
	natsURL  string
}

func newRooms(t *testing.T) *rooms { return newRoomsWith(t, 0) }

// newRoomsWith is newRooms whose cluster bridge gets each room's
// subscription only after delay (a slow NATS, or routes that take their
// time to carry the interest).
func newRoomsWith(t *testing.T, delay time.Duration) *rooms {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.NoEcho())
	if err != nil {
		t.Fatal(err)
	}
	system := actor.NewActorSystem()
	metrics := transport.NewMetrics()
	bus := cluster.NewBus("n", "tether", metrics)
	bus.Attach(nc)
	r := &rooms{system: system, registry: conn.NewRegistry(), natsURL: ns.ClientURL()}
	bridge := system.Root.Spawn(cluster.NewBridge(cluster.BridgeOptions{
		Bus: bus, Registry: r.registry, HeartbeatInterval: time.Second, DeadAfter: 5 * time.Second, Log: zerolog.Nop(),
	}))
	if delay > 0 {
		real := bridge
		bridge = system.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
			if m, ok := ctx.Message().(*room.Subscribe); ok {
				time.AfterFunc(delay, func() { system.Root.Send(real, m) })
				return
			}
			if _, ok := ctx.Message().(actor.SystemMessage); !ok {
				ctx.Forward(real)
			}
		}))
	}
	r.manager = system.Root.Spawn(room.NewManager(&room.Deps{
		Node: "n", Registry: r.registry, Metrics: metrics, Log: zerolog.Nop(),
		AnnounceLimit: 1000, PresenceInterval: time.Second, Bridge: bridge, Cluster: bus,
		ResyncWindow: time.Second, Backlog: 1000, Rooms: &config.Default().Rooms,
	}))
	lc := config.DefaultListener(config.ProtocolTCP)
	lc.Name = "tcp"
	if r.settings, err = conn.NewSettings(&lc); err != nil {
		t.Fatal(err)
	}
	r.deps = &conn.Deps{
		System: system, Node: "n", Registry: r.registry, Budget: conn.NewBudget(64<<20, metrics.PartialBytes),
		Metrics: metrics.Listener("tcp", "tcp"), Log: zerolog.Nop(),
		NewApp: func(*conn.Actor) conn.App { return quietApp{} },
	}
	t.Cleanup(func() {
		system.Shutdown()
		nc.Close()
		ns.Shutdown()
	})
	return r
}

// quietApp is an application that does nothing: the test speaks to the
// room itself.
type quietApp struct{}

func (quietApp) Opened(*conn.Actor)               {}
func (quietApp) Frame(*conn.Actor, []byte)        {}
func (quietApp) Limited(*conn.Actor, []byte)      {}
func (quietApp) Receive(*conn.Actor, any)         {}
func (quietApp) Closing(*conn.Actor, conn.Reason) {}
func (quietApp) Closed(*conn.Actor, conn.Reason)  {}
func (quietApp) Describe(*conn.Info)              {}

// member is a connection actor and the client's end of its socket.
type member struct {
	id     string
	pid    *actor.PID
	actor  *conn.Actor
	client net.Conn
	room   *room.Handle
}

// connect spawns a connection actor over a loopback socket pair.
func (r *rooms) connect(t *testing.T) *member {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	r.seq++
	m := &member{id: fmt.Sprintf("n.%d", r.seq), client: client}
	if m.actor, err = conn.New(m.id, &transport.Accepted{Conn: server}, r.settings, r.deps); err != nil {
		t.Fatal(err)
	}
	m.pid = r.system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return m.actor }))
	return m
}

// join joins m to the room as the chat application does, and returns at
// once: the room's ok comes on m's socket.
func (r *rooms) join(t *testing.T, m *member, name string) *actor.Future {
	t.Helper()
	return r.system.Root.RequestFuture(r.manager, &room.Join{
		Room: name, Member: protocol.Member{Conn: m.id, Name: m.id, Node: "n"},
		PID: m.pid, Socket: m.actor.Socket(), Encoder: m.actor.Settings().Encoder, Ref: json.RawMessage(`1`),
	}, 5*time.Second)
}

// joined waits for the join's reply.
func joined(t *testing.T, m *member, f *actor.Future) {
	t.Helper()
	res, err := f.Result()
	if err != nil {
		t.Fatal(err)
	}
	m.room = res.(*room.JoinReply).Room
}

// send posts a send from m, as the chat application does.
func (r *rooms) send(t *testing.T, m *member, data string) {
	t.Helper()
	var pending atomic.Int32
	pending.Add(1)
	if !m.room.TrySend(r.system, &room.Send{From: m.id, Data: json.RawMessage(`"` + data + `"`), Pending: &pending}) {
		t.Fatal("busy")
	}
}

// event is what a member's client reads.
type event struct {
	Op, Conn, From, Reason string
	Data                   string
}

func (m *member) read(t *testing.T) event {
	t.Helper()
	_ = m.client.SetReadDeadline(time.Now().Add(10 * time.Second))
	var hdr [4]byte
	if _, err := io.ReadFull(m.client, hdr[:]); err != nil {
		t.Fatalf("%s: %v", m.id, err)
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	if _, err := io.ReadFull(m.client, body); err != nil {
		t.Fatal(err)
	}
	var ev struct {
		Op, Conn, From, Reason string
		Data                   json.RawMessage
	}
	if err := json.Unmarshal(body, &ev); err != nil {
		t.Fatalf("%s: %q: %v", m.id, body, err)
	}
	var data string
	_ = json.Unmarshal(ev.Data, &data)
	return event{Op: ev.Op, Conn: ev.Conn, From: ev.From, Reason: ev.Reason, Data: data}
}

// messages reads until want messages have come, skipping other events.
func (m *member) messages(t *testing.T, want int) []string {
	t.Helper()
	var out []string
	for len(out) < want {
		if ev := m.read(t); ev.Op == "message" {
			out = append(out, ev.Data)
		}
	}
	return out
}

// TestMembersGetTheEventsFromTheirJoinToTheirLeave guards "the batch is
// written before any change of membership": a member that joins while
// messages flow gets its ok first, then a run of them without a hole up
// to the last; one that leaves gets a run from the first without a hole
// and nothing after its leave was handled.
func TestMembersGetTheEventsFromTheirJoinToTheirLeave(t *testing.T) {
	r := newRooms(t)
	sender, leaver, late := r.connect(t), r.connect(t), r.connect(t)
	joined(t, sender, r.join(t, sender, "lobby"))
	joined(t, leaver, r.join(t, leaver, "lobby"))
	const total = 300
	for i := range total {
		switch i {
		case 100:
			joined(t, late, r.join(t, late, "lobby"))
		case 200:
			res, err := r.system.Root.RequestFuture(r.manager, &room.Leave{Room: "lobby", Conn: leaver.id}, 5*time.Second).Result()
			if err != nil || res.(*room.LeaveReply).Err != "" {
				t.Fatalf("leave: %v %v", res, err)
			}
		}
		r.send(t, sender, fmt.Sprintf("m%03d", i))
	}

	// The late member: its ok, then m<first>..m299 without a hole.
	if ev := late.read(t); ev.Op != "ok" {
		t.Fatalf("the late member's first event is %+v, want its ok", ev)
	}
	var first int
	for {
		ev := late.read(t)
		if ev.Op != "message" {
			continue
		}
		if _, err := fmt.Sscanf(ev.Data, "m%d", &first); err != nil || first < 100 {
			t.Fatalf("the late member's first message is %+v; it joined before m100 was sent", ev)
		}
		break
	}
	for i, got := range late.messages(t, total-1-first) {
		if want := fmt.Sprintf("m%03d", first+1+i); got != want {
			t.Fatalf("the late member got %s, want %s", got, want)
		}
	}

	// The leaver: m000..m<last> without a hole, m199 at least, and nothing
	// once its leave was handled: the room wrote its batch before it took
	// the member out, so a frame written to the leaver's socket now comes
	// after every message the room sent it.
	leaver.actor.Socket().Write(packN(`{"op":"end"}`), false)
	if ev := leaver.read(t); ev.Op != "ok" {
		t.Fatalf("the leaver's first event is %+v", ev)
	}
	var got []string
	for ev := leaver.read(t); ev.Op != "end"; ev = leaver.read(t) {
		if ev.Op == "message" {
			got = append(got, ev.Data)
		}
	}
	if len(got) < 200 {
		t.Fatalf("the leaver got %d messages; it left after m199 was sent", len(got))
	}
	for i, d := range got {
		if want := fmt.Sprintf("m%03d", i); d != want {
			t.Fatalf("the leaver's message %d is %s, want %s", i, d, want)
		}
	}
}

// packN frames s as PHP's pack('N', strlen($s)) . $s.
func packN(s string) []byte { return append(binary.BigEndian.AppendUint32(nil, uint32(len(s))), s...) }

// TestDepartureAfterItsSends guards "the departure is handled after the
// member's own sends already in the mailbox": a sender posts 50 sends
// and its connection stops at once; the other member gets all 50, then
// one left.
func TestDepartureAfterItsSends(t *testing.T) {
	r := newRooms(t)
	watcher := r.connect(t)
	joined(t, watcher, r.join(t, watcher, "r"))
	for round := range 5 {
		sender := r.connect(t)
		joined(t, sender, r.join(t, sender, "r"))
		for i := range 50 {
			r.send(t, sender, fmt.Sprintf("%d-%d", round, i))
		}
		r.system.Root.Stop(sender.pid)
		var got []string
		for {
			ev := watcher.read(t)
			if ev.Op == "left" {
				if ev.Conn != sender.id {
					t.Fatalf("left of %s", ev.Conn)
				}
				break
			}
			if ev.Op == "message" {
				got = append(got, ev.Data)
			}
		}
		if len(got) != 50 {
			t.Fatalf("round %d: %d of the departed sender's 50 messages came before its left", round, len(got))
		}
		for i, d := range got {
			if d != fmt.Sprintf("%d-%d", round, i) {
				t.Fatalf("round %d: message %d is %s", round, i, d)
			}
		}
	}
}

// TestOneLeftWhateverTheEnd guards "a member that ends for any reason
// produces exactly one left event, whose reason the room reads from the
// registry": the client's FIN, a kick, the actor stopped.
func TestOneLeftWhateverTheEnd(t *testing.T) {
	r := newRooms(t)
	watcher := r.connect(t)
	joined(t, watcher, r.join(t, watcher, "r"))
	ends := []struct {
		reason string
		end    func(m *member)
	}{
		{"client_closed", func(m *member) { _ = m.client.(*net.TCPConn).CloseWrite() }},
		{"kicked", func(m *member) { r.system.Root.Send(m.pid, &conn.Close{Reason: conn.ReasonKicked}) }},
		{"server_shutdown", func(m *member) { r.system.Root.Stop(m.pid) }},
	}
	for _, e := range ends {
		m := r.connect(t)
		joined(t, m, r.join(t, m, "r"))
		e.end(m)
		for {
			ev := watcher.read(t)
			if ev.Op != "left" {
				continue
			}
			if ev.Conn != m.id || ev.Reason != e.reason {
				t.Fatalf("left %+v, want %s with %s", ev, m.id, e.reason)
			}
			break
		}
	}
	// No second left for any of them: the watcher hears of a new member's
	// join after all that.
	probe := r.connect(t)
	joined(t, probe, r.join(t, probe, "r"))
	for ev := watcher.read(t); ev.Op != "joined" || ev.Conn != probe.id; ev = watcher.read(t) {
		if ev.Op == "left" {
			t.Fatalf("a second left: %+v", ev)
		}
	}
}

// TestJoinAnsweredOnceSubscribed guards "only once NATS has the room's
// subscription does it answer its first joins and announce them": a peer
// that answers the announcement at once (another node's member greeting
// the newcomer) is heard, however slowly the subscription is made.
func TestJoinAnsweredOnceSubscribed(t *testing.T) {
	r := newRoomsWith(t, 300*time.Millisecond)
	peer, err := nats.Connect(r.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	// The peer node: on a member's joined, a greeting at once.
	if _, err := peer.Subscribe("tether.room.lobby", func(m *nats.Msg) {
		if m.Header.Get(cluster.HeaderKind) != room.KindJoined {
			return
		}
		g := nats.NewMsg("tether.room.lobby")
		g.Header.Set(cluster.HeaderKind, room.KindMessage)
		g.Header.Set(cluster.HeaderNode, "peer")
		g.Data = []byte(`{"op":"message","room":"lobby","from":"","data":"welcome"}`)
		_ = peer.PublishMsg(g)
	}); err != nil {
		t.Fatal(err)
	}
	if err := peer.Flush(); err != nil {
		t.Fatal(err)
	}
	m := r.connect(t)
	joined(t, m, r.join(t, m, "lobby"))
	if ev := m.read(t); ev.Op != "ok" {
		t.Fatalf("first event %+v", ev)
	}
	if got := m.messages(t, 1); got[0] != "welcome" {
		t.Fatalf("got %v", got)
	}
}

// stats asks the manager for a room's size.
func (r *rooms) stats(t *testing.T, name string) *room.StatsReply {
	t.Helper()
	res, err := r.system.Root.RequestFuture(r.manager, &room.Stats{Room: name}, 5*time.Second).Result()
	if err != nil {
		t.Fatal(err)
	}
	return res.(*room.StatsReply)
}

// TestStatsIsTheRoomsView: a room's size is its members here and what it
// knows of each other node's, which it drops only when told the node is
// down; a node whose members all left is no longer listed, and a room
// with no member here is not found.
func TestStatsIsTheRoomsView(t *testing.T) {
	r := newRooms(t)
	if s := r.stats(t, "lobby"); s.Found {
		t.Fatalf("a room without members: %+v", s)
	}
	a, b := r.connect(t), r.connect(t)
	joined(t, a, r.join(t, a, "lobby"))
	joined(t, b, r.join(t, b, "lobby"))
	// Other nodes' events, as the bridge posts them.
	for _, ev := range []*room.Remote{
		{Kind: room.KindState, Node: "p", Members: []protocol.Member{{Conn: "p.1", Node: "p"}, {Conn: "p.2", Node: "p"}}},
		{Kind: room.KindJoined, Node: "q", Member: protocol.Member{Conn: "q.1", Node: "q"}},
		{Kind: room.KindLeft, Node: "q", Member: protocol.Member{Conn: "q.1", Node: "q"}},
	} {
		if !a.room.Send(r.system, ev) {
			t.Fatal("the room stopped")
		}
	}
	want := func(members int, nodes map[string]int) {
		t.Helper()
		s := r.stats(t, "lobby")
		if !s.Found || s.Room != "lobby" || s.Members != members || !maps.Equal(s.Nodes, nodes) {
			t.Fatalf("stats %+v, want %d members, by node %v", s, members, nodes)
		}
	}
	want(4, map[string]int{"n": 2, "p": 2})
	r.system.Root.Send(a.room.PID, &room.NodeDown{Node: "p", Reason: "node_down"})
	want(2, map[string]int{"n": 2})
}
