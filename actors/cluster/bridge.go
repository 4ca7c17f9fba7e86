package cluster

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"tether/actors/conn"
	"tether/actors/protocol"
	"tether/actors/room"
)

// NodeInfo is what a node says of itself in its heartbeats, and what the
// nodes API lists.
type NodeInfo struct {
	Node        string    `json:"node"`
	Started     time.Time `json:"started"`
	Connections int       `json:"connections"`
	LastSeen    time.Time `json:"last_seen"`
	Alive       bool      `json:"alive"`
}

// Gatherer answers a gather (the rooms, stats and a user's connections
// of the admin API) for this node; it runs on its own goroutine and may
// take its time.
type Gatherer func(what string) any

// BridgeOptions build the bridge actor.
type BridgeOptions struct {
	Bus               *Bus
	Registry          *conn.Registry
	HeartbeatInterval time.Duration
	DeadAfter         time.Duration
	Gather            Gatherer
	Log               zerolog.Logger
}

// Messages to the bridge.
type (
	// WatchUser and UnwatchUser follow the registry: a node subscribes to
	// a user's subject while it holds a connection bound to that user.
	WatchUser   struct{ User string }
	UnwatchUser struct{ User string }
	// Nodes asks for the cluster view (the reply is []NodeInfo).
	Nodes struct{}
	// Reconnected is posted by the NATS reconnect handler.
	Reconnected struct{}
	// Replaced says that NATS closed the connection for good and the bus
	// has a new one: every subscription is made again on it.
	Replaced struct{}

	// WorkerGone tells a relay connection that a message event it sent
	// while bound for the Binding-th time found no subscriber: that
	// worker is gone, and the event is lost.
	WorkerGone struct{ Binding int }

	clusterMsg struct{ m *nats.Msg }
	tick       struct{}
)

// IgnoreDeadLetterLogging: the connection may have closed meanwhile.
func (*WorkerGone) IgnoreDeadLetterLogging() {}

// Bridge is the cluster bridge actor: it owns the node's subscriptions
// and its view of which nodes are alive.
type Bridge struct {
	o      BridgeOptions
	log    zerolog.Logger
	system *actor.ActorSystem
	self   *actor.PID
	start  time.Time
	timer  *time.Timer

	fixed []*nats.Subscription          // node, all, cluster, relay notices
	rooms map[string]*roomSub           // room name → subscription
	users map[string]*nats.Subscription // user id → subscription
	nodes map[string]*NodeInfo          // other nodes by id
}

type roomSub struct {
	handle *room.Handle
	sub    *nats.Subscription
}

// NewBridge returns the props of the bridge actor.
func NewBridge(o BridgeOptions) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &Bridge{
			o: o, log: o.Log.With().Str("component", "cluster").Logger(),
			rooms: map[string]*roomSub{}, users: map[string]*nats.Subscription{}, nodes: map[string]*NodeInfo{},
		}
	})
}

// Receive is the bridge's mailbox handler.
func (b *Bridge) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		b.started(ctx)
	case *room.Subscribe:
		b.subscribeRoom(ctx, m)
	case *room.Unsubscribe:
		if rs, ok := b.rooms[m.Room]; ok && rs.handle.PID.Equal(m.PID) {
			_ = rs.sub.Unsubscribe()
			delete(b.rooms, m.Room)
		}
	case *WatchUser:
		b.watchUser(m.User)
	case *UnwatchUser:
		// Watch and Unwatch come from different goroutines and may cross:
		// the registry says whether the user still has a connection here.
		if sub, ok := b.users[m.User]; ok && len(b.o.Registry.User(m.User)) == 0 {
			_ = sub.Unsubscribe()
			delete(b.users, m.User)
		}
	case *clusterMsg:
		b.clusterEvent(ctx, m.m)
	case *tick:
		b.heartbeat()
		b.checkNodes(ctx)
		b.timer.Reset(b.o.HeartbeatInterval)
	case *Reconnected:
		gap, buffered, lost := b.o.Bus.reconnected()
		b.log.Warn().Str("gap", gap.Round(time.Millisecond).String()).Int("buffered", buffered).Int("lost", lost).
			Msg("nats outage over: resubscribed; rooms resync")
		b.heartbeat()
		b.resyncRooms(ctx)
	case *Replaced:
		gap, _, lost := b.o.Bus.reconnected()
		b.subscribeAll()
		b.log.Warn().Str("gap", gap.Round(time.Millisecond).String()).Int("lost", lost).
			Int("rooms", len(b.rooms)).Int("users", len(b.users)).Msg("new nats connection: subscribed again; rooms resync")
		b.heartbeat()
		for _, rs := range b.rooms {
			ctx.Send(rs.handle.PID, &room.Resync{NewConnection: true})
		}
	case *Nodes:
		ctx.Respond(b.view())
	case *actor.Stopping:
		b.stopped()
	}
}

func (b *Bridge) started(ctx actor.Context) {
	b.system, b.self, b.start = ctx.ActorSystem(), ctx.Self(), time.Now()
	b.subscribeFixed()
	b.heartbeat()
	system, self := b.system, b.self
	b.timer = time.AfterFunc(b.o.HeartbeatInterval, func() { system.Root.Send(self, &tick{}) })
}

// subscribeFixed subscribes to the node's own subjects: its node subject,
// the broadcast, the cluster subject and its relay connections' notices.
func (b *Bridge) subscribeFixed() {
	bus, system, self := b.o.Bus, b.system, b.self
	b.fixed = b.fixed[:0]
	subscribe := func(subject string, h nats.MsgHandler) {
		sub, err := bus.Conn().Subscribe(subject, Safe(b.log, h))
		if err != nil {
			b.log.Error().Err(err).Str("subject", subject).Msg("subscribe failed")
			return
		}
		b.fixed = append(b.fixed, sub)
	}
	subscribe(bus.Subjects.Node(bus.Node), b.nodeRequest)
	subscribe(bus.Subjects.All(), func(m *nats.Msg) {
		bus.metrics.NATSIn.WithLabelValues("all").Inc()
		d := &conn.Deliver{Payload: m.Data}
		b.o.Registry.Each(func(_ string, e *conn.Entry) { system.Root.Send(e.PID, d) })
	})
	subscribe(bus.Subjects.Cluster(), func(m *nats.Msg) { system.Root.Send(self, &clusterMsg{m: m}) })
	subscribe(bus.Subjects.relayNotices(bus.Node), b.relayNotice)
}

// relayNotice hands NATS's no-responders status about a relay
// connection's message event to that connection, which the subject names
// with its binding (Subjects.Relay). Anything else there (a worker
// answering an event, which it need not do) is ignored.
func (b *Bridge) relayNotice(m *nats.Msg) {
	if m.Header.Get("Status") != "503" { // nats.go's header for a status line
		return
	}
	b.o.Bus.metrics.NATSIn.WithLabelValues("worker_gone").Inc()
	id, binding, ok := b.o.Bus.Subjects.parseRelay(m.Subject)
	if !ok {
		return
	}
	if e := b.o.Registry.Get(id); e != nil {
		b.system.Root.Send(e.PID, &WorkerGone{Binding: binding})
	}
}

// subscribeAll makes every subscription again on the bus's connection:
// the node's own, each room's and each user's.
func (b *Bridge) subscribeAll() {
	b.subscribeFixed()
	for name, rs := range b.rooms {
		sub, err := b.roomSubscription(name, rs.handle)
		if err != nil {
			b.log.Error().Err(err).Str("room", name).Msg("room subscribe failed")
			delete(b.rooms, name)
			continue
		}
		rs.sub = sub
	}
	for user := range b.users {
		delete(b.users, user)
		b.watchUser(user)
	}
}

// subscribeRoom routes a room's subject straight to the room actor (no
// hop through the bridge), then tells the room, which publishes its sync.
func (b *Bridge) subscribeRoom(ctx actor.Context, m *room.Subscribe) {
	if old, ok := b.rooms[m.Room]; ok { // a previous actor of the room, stopping
		_ = old.sub.Unsubscribe()
	}
	sub, err := b.roomSubscription(m.Room, m.Handle)
	if err != nil {
		// The room goes on without the cluster rather than never
		// answering its joins.
		b.log.Error().Err(err).Str("room", m.Room).Msg("room subscribe failed")
		ctx.Send(m.Handle.PID, &room.Subscribed{})
		return
	}
	b.rooms[m.Room] = &roomSub{handle: m.Handle, sub: sub}
	// The room answers its first joins, and announces them, only once the
	// server has the subscription: a peer answering the announcement at
	// once must be heard. Through NATS routes too, since the server sends
	// its interest to the other servers before anything it publishes
	// after. Off the bridge: a flush waits for the server.
	nc, system, pid, log := b.o.Bus.Conn(), b.system, m.Handle.PID, b.log
	Go(func() {
		if err := nc.FlushTimeout(subscribeFlush); err != nil {
			log.Debug().Err(err).Str("room", m.Room).Msg("room subscription not confirmed (NATS away); it is made on reconnect")
		}
		system.Root.Send(pid, &room.Subscribed{})
	}, func(v any) { system.Root.Send(pid, &room.Subscribed{}) })
}

// subscribeFlush bounds waiting for NATS to confirm a room's subscription.
const subscribeFlush = 2 * time.Second

// roomSubscription hands the room's events to the room. While its backlog
// is full the subscription's goroutine waits, and what comes meanwhile
// waits in nats.go's pending queue, bounded the same way (as many
// messages as the backlog, and roomPendingBytes): past it nats.go drops
// and reports a slow consumer, which the bus counts.
func (b *Bridge) roomSubscription(name string, h *room.Handle) (*nats.Subscription, error) {
	system, metrics, log := b.system, b.o.Bus.metrics, b.log
	sub, err := b.o.Bus.Conn().Subscribe(b.o.Bus.Subjects.Room(name), Safe(log, func(msg *nats.Msg) {
		ev, err := decodeRoom(msg)
		if err != nil {
			log.Warn().Err(err).Str("subject", msg.Subject).Msg("bad room event")
			return
		}
		metrics.NATSIn.WithLabelValues(ev.Kind).Inc()
		h.Send(system, ev)
	}))
	if err != nil {
		return nil, err
	}
	return sub, sub.SetPendingLimits(h.Backlog(), roomPendingBytes)
}

// roomPendingBytes bounds the bytes of a room's events waiting in nats.go
// for the room's backlog to have room.
const roomPendingBytes = 16 << 20

func (b *Bridge) watchUser(user string) {
	if _, ok := b.users[user]; ok {
		return
	}
	bus, system, registry := b.o.Bus, b.system, b.o.Registry
	sub, err := bus.Conn().Subscribe(bus.Subjects.User(user), Safe(b.log, func(m *nats.Msg) {
		bus.metrics.NATSIn.WithLabelValues("user").Inc()
		d := &conn.Deliver{Payload: m.Data}
		for _, e := range registry.User(user) {
			system.Root.Send(e.PID, d)
		}
	}))
	if err != nil {
		b.log.Error().Err(err).Str("user", user).Msg("user subscribe failed")
		return
	}
	b.users[user] = sub
}

// nodeRequest answers what other nodes ask of this node's connections.
// It runs on the subscription's goroutine; the registry is safe there.
func (b *Bridge) nodeRequest(m *nats.Msg) {
	kind := m.Header.Get(HeaderKind)
	b.o.Bus.metrics.NATSIn.WithLabelValues(kind).Inc()
	id := m.Header.Get(HeaderConn)
	e := b.o.Registry.Get(id)
	reply := func(body []byte, code string) {
		if m.Reply == "" {
			return
		}
		r := nats.NewMsg(m.Reply)
		if code != "" {
			r.Header.Set(HeaderReason, code)
		}
		r.Data = body
		_ = m.RespondMsg(r)
	}
	switch kind {
	case KindDeliver:
		if e == nil {
			reply(nil, "not_found")
			return
		}
		b.system.Root.Send(e.PID, &conn.Deliver{Payload: m.Data})
		reply(nil, "")
	case KindKick:
		if e == nil {
			reply(nil, "not_found")
			return
		}
		b.system.Root.Send(e.PID, &conn.Close{Reason: conn.ReasonKicked})
		reply(nil, "")
	case KindBind:
		if protocol.CheckUser(m.Header.Get(HeaderUser)) != nil {
			reply(nil, protocol.CodeBadRequest)
			return
		}
		if !b.o.Registry.Bind(id, m.Header.Get(HeaderUser)) {
			reply(nil, "not_found")
			return
		}
		reply(nil, "")
	case KindInfo:
		if e != nil {
			if res, err := b.system.Root.RequestFuture(e.PID, &conn.InfoRequest{}, requestTimeout).Result(); err == nil {
				body, _ := json.Marshal(res)
				reply(body, "")
				return
			}
		}
		if info, ok := b.o.Registry.ClosedInfo(id); ok {
			body, _ := json.Marshal(info)
			reply(body, "")
			return
		}
		reply(nil, "not_found")
	}
}

// heartbeat tells the cluster this node is alive.
func (b *Bridge) heartbeat() {
	body, _ := json.Marshal(&NodeInfo{Node: b.o.Bus.Node, Started: b.start, Connections: b.o.Registry.Len()})
	b.o.Bus.Publish(b.o.Bus.Msg(b.o.Bus.Subjects.Cluster(), KindHeartbeat, body))
}

func (b *Bridge) clusterEvent(ctx actor.Context, m *nats.Msg) {
	node, kind := m.Header.Get(HeaderNode), m.Header.Get(HeaderKind)
	b.o.Bus.metrics.NATSIn.WithLabelValues(kind).Inc()
	switch kind {
	case KindHeartbeat:
		var info NodeInfo
		if json.Unmarshal(m.Data, &info) != nil || node == b.o.Bus.Node {
			return
		}
		old, known := b.nodes[node]
		info.LastSeen, info.Alive = time.Now(), true
		b.nodes[node] = &info
		b.countAlive()
		switch {
		case !known:
			// A new node, or one forgotten after a long silence (a
			// partition of more than 10 x dead_after): either way its
			// members of our rooms are not in our views yet.
			b.log.Info().Str("peer", node).Msg("node joined the cluster; rooms resync")
			b.resyncRooms(ctx)
		case !old.Alive:
			// Declared dead, yet alive: its members were dropped here, so
			// every room asks for them again.
			b.log.Warn().Str("peer", node).Msg("node thought dead is back; rooms resync")
			b.resyncRooms(ctx)
		}
	case KindGoodbye:
		// A node stopping cleanly has closed its connections, all with
		// server_shutdown, and published their leaves before this; but
		// those come on the room subjects, through other goroutines of
		// nats.go, and some may still be on their way: the members this
		// drops left for the same reason.
		if info, ok := b.nodes[node]; ok && info.Alive {
			b.log.Info().Str("peer", node).Msg("node left the cluster")
			b.down(ctx, node, "server_shutdown")
		}
	case KindGather:
		if m.Reply != "" && b.o.Gather != nil {
			what, log := string(m.Data), b.log
			Go(func() {
				body, _ := json.Marshal(b.o.Gather(what))
				_ = m.Respond(body)
			}, func(v any) { log.Error().Str("panic", fmt.Sprint(v)).Str("gather", what).Msg("gather panicked") })
		}
	}
}

// checkNodes declares dead the nodes silent for DeadAfter: every room
// drops their members, with one left (node_down) each. No ghosts.
func (b *Bridge) checkNodes(ctx actor.Context) {
	for _, id := range slices.Sorted(maps.Keys(b.nodes)) {
		info := b.nodes[id]
		silent := time.Since(info.LastSeen)
		if info.Alive && silent > b.o.DeadAfter {
			b.log.Warn().Str("peer", id).Str("silent", silent.Round(time.Millisecond).String()).Msg("node declared dead")
			b.o.Bus.metrics.NodesDown.Inc()
			b.down(ctx, id, "node_down")
		}
		if !info.Alive && silent > 10*b.o.DeadAfter {
			delete(b.nodes, id) // long gone: forget it
		}
	}
}

func (b *Bridge) down(ctx actor.Context, node, reason string) {
	b.nodes[node].Alive = false
	b.countAlive()
	for _, rs := range b.rooms {
		ctx.Send(rs.handle.PID, &room.NodeDown{Node: node, Reason: reason})
	}
}

func (b *Bridge) resyncRooms(ctx actor.Context) {
	for _, rs := range b.rooms {
		ctx.Send(rs.handle.PID, &room.Resync{})
	}
}

func (b *Bridge) countAlive() {
	n := 0
	for _, info := range b.nodes {
		if info.Alive {
			n++
		}
	}
	b.o.Bus.metrics.NodesAlive.Set(float64(n))
}

// view lists this node and the others it knows of.
func (b *Bridge) view() []NodeInfo {
	out := []NodeInfo{{Node: b.o.Bus.Node, Started: b.start, Connections: b.o.Registry.Len(), LastSeen: time.Now(), Alive: true}}
	for _, id := range slices.Sorted(maps.Keys(b.nodes)) {
		out = append(out, *b.nodes[id])
	}
	return out
}

// stopped says goodbye, so the others drop this node at once instead of
// after DeadAfter, and ends every subscription.
func (b *Bridge) stopped() {
	if b.timer != nil {
		b.timer.Stop()
	}
	b.o.Bus.Publish(b.o.Bus.Msg(b.o.Bus.Subjects.Cluster(), KindGoodbye, nil))
	for _, sub := range b.fixed {
		_ = sub.Unsubscribe()
	}
	for _, rs := range b.rooms {
		_ = rs.sub.Unsubscribe()
	}
	for _, sub := range b.users {
		_ = sub.Unsubscribe()
	}
}
