// Package nodetest runs, for an actor package's tests, the parts of a node
// its actors work with, started and wired as actors/node does: the
// embedded nats-server and the node's connection to it, the cluster bus
// and bridge, the rooms manager, and TCP listeners whose connections run
// an App. Tests drive them over real sockets and a real NATS; nothing is
// mocked. Everything stops when the test ends.
package nodetest

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"tether/actors/cluster"
	"tether/actors/conn"
	"tether/actors/listener"
	"tether/actors/room"
	"tether/client"
	"tether/config"
	"tether/history"
	"tether/test/check"
	"tether/transport"
)

// ID is the node's id: its connections' ids are "n.<random>".
const ID = "n"

// Node is the parts of node ID that a test runs on.
type Node struct {
	System   *actor.ActorSystem
	Registry *conn.Registry
	Metrics  *transport.Metrics
	Bus      *cluster.Bus
	Bridge   *actor.PID
	NATS     *server.Server // the embedded nats-server
	Peer     *nats.Conn     // another client of it: the test plays other nodes, and workers, with it
}

// Options are what differs between tests.
type Options struct {
	JetStream bool          // the nats-server runs JetStream (rooms with history)
	Heartbeat time.Duration // the bridge's heartbeat interval; 0: 1s
	DeadAfter time.Duration // when the bridge declares a silent node dead; 0: 5s
}

// Start starts the nats-server, connects the node and the peer to it, and
// spawns the cluster bridge, which the registry tells of its users; it
// returns once NATS has the bridge's subscriptions.
func Start(t testing.TB, o Options) *Node {
	t.Helper()
	cfg := config.Default().NATS
	cfg.Embedded.Port = -1
	cfg = transport.EmbeddedCredentials(cfg)
	ns, err := transport.StartEmbeddedNATS(cfg, o.JetStream, ID, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := transport.ConnectNATS(ns.ClientURL(), ID, cfg, transport.NATSAuth(cfg), zerolog.Nop(), transport.NATSEvents{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	peer, err := nats.Connect(ns.ClientURL(), transport.NATSAuth(cfg)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(peer.Close)

	n := &Node{
		System:   actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) })),
		Registry: conn.NewRegistry(), Metrics: transport.NewMetrics(), NATS: ns, Peer: peer,
	}
	t.Cleanup(n.System.Shutdown)
	n.Bus = cluster.NewBus(ID, "tether", n.Metrics)
	n.Bus.Attach(nc)
	n.Bridge = n.System.Root.Spawn(cluster.NewBridge(cluster.BridgeOptions{
		Bus: n.Bus, Registry: n.Registry, HeartbeatInterval: cmp.Or(o.Heartbeat, time.Second), DeadAfter: cmp.Or(o.DeadAfter, 5*time.Second),
		Log: zerolog.Nop(),
	}))
	n.Registry.OnUser = func(user string, present bool) {
		if present {
			n.System.Root.Send(n.Bridge, &cluster.WatchUser{User: user})
		} else {
			n.System.Root.Send(n.Bridge, &cluster.UnwatchUser{User: user})
		}
	}
	// Once the bridge answers it has started, and subscribed to the
	// node's subjects; once the flush is answered NATS has them.
	if _, err := n.System.Root.RequestFuture(n.Bridge, &cluster.Nodes{}, 5*time.Second).Result(); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return n
}

// Rooms spawns the rooms manager, with rooms' options, and store for the
// rooms with history (nil: none).
func (n *Node) Rooms(rooms *config.Rooms, store *history.Store) *actor.PID {
	return n.System.Root.Spawn(room.NewManager(&room.Deps{
		Node: ID, Registry: n.Registry, Metrics: n.Metrics, Log: zerolog.Nop(), AnnounceLimit: 100,
		PresenceInterval: time.Second, Bridge: n.Bridge, Cluster: n.Bus, ResyncWindow: time.Second, Backlog: 1000,
		Rooms: rooms, History: store,
	}))
}

// Listen serves a TCP listener named name, with the default settings, on
// a free loopback port; its connections run newApp. It returns the
// address.
func (n *Node) Listen(t testing.TB, name string, newApp conn.NewApp) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lc := config.DefaultListener(config.ProtocolTCP)
	lc.Name = name
	l, err := listener.New(listener.Options{
		System: n.System, Config: lc, Listener: ln, Sockets: transport.NewNodeSockets(100), Node: ID, Registry: n.Registry,
		Budget: conn.NewBudget(1<<20, n.Metrics.PartialBytes), Metrics: n.Metrics, Log: zerolog.Nop(), NewApp: newApp,
	})
	if err != nil {
		t.Fatal(err)
	}
	pid := n.System.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return l }))
	t.Cleanup(func() { _ = n.System.Root.PoisonFuture(pid).Wait() }) // closes the socket and every connection
	return ln.Addr().String()
}

// Dial connects tether's Go client to a chat listener at addr, and reads
// its welcome.
func Dial(t testing.TB, addr string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.DialTCP(ctx, addr, client.TCPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Closed waits for connection id to close, and returns why.
func (n *Node) Closed(t testing.TB, id string) conn.Reason {
	t.Helper()
	var reason conn.Reason
	check.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		info, ok := n.Registry.ClosedInfo(id)
		if !ok {
			return errors.New(id + " is still open")
		}
		reason = info.Reason
		return nil
	})
	return reason
}

// Other plays another node on NATS, one that holds the connections
// known: it answers each question on its node subject (deliver, kick,
// info...), not_found for a connection it does not hold. It returns the
// questions it got so far, in order.
func (n *Node) Other(t testing.TB, node string, known ...string) (asked func() []*nats.Msg) {
	t.Helper()
	var mu sync.Mutex
	var got []*nats.Msg
	sub, err := n.Peer.Subscribe("tether.node."+node, func(m *nats.Msg) {
		mu.Lock()
		got = append(got, m)
		mu.Unlock()
		r := nats.NewMsg(m.Reply)
		if !slices.Contains(known, m.Header.Get(cluster.HeaderConn)) {
			r.Header.Set(cluster.HeaderReason, "not_found")
		}
		_ = m.RespondMsg(r)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := n.Peer.Flush(); err != nil {
		t.Fatal(err)
	}
	return func() []*nats.Msg {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// Count reads a counter of the node's metrics.
func Count(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}
