// Package room is rooms: one actor per room that fans messages out to its
// members, and a manager that creates a room on its first join and stops
// it when its last member is gone.
//
// In a cluster a room also keeps a view of the members other nodes hold:
// it publishes its own joins, leaves and messages on the room's subject
// (the same bytes it delivers locally, so every node just hands them on),
// and a sync on start carries its members and asks the others for theirs.
// Each node's answer replaces that node's part of the view.
//
// The delivery path (DESIGN.md section 12): the room collects the events
// posted to it since its last batch, and writes each member once per
// batch: every event is encoded once (framing.Message builds one frame per
// wire format), each member's socket queue takes references to those
// frames, and one writev sends them. No mailbox post, actor activation or
// encoding per member. Under load a batch grows by itself (what arrives
// while the room writes is the next batch); limits.write_delay makes the
// sockets wait for more.
//
// Concurrency rules (guarded by this package's tests, test/room_test.go
// and test/cluster_test.go):
//   - A room's membership is touched only by the room actor.
//   - A room Watches each member's connection actor, so a member that ends
//     for any reason (close, heartbeat, panic, node shutdown) produces
//     exactly one left event, whose reason the room reads from the
//     registry (the connection writes it there before it stops). The
//     departure is handled after the member's own sends already in the
//     mailbox: they were accepted (ok), so they are delivered.
//   - The batch is written before any change of membership, so a member
//     gets exactly the events from its join to its leave.
//   - The backlog (Handle) is bounded: a send past it is refused busy.
package room

import (
	"context"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"tether/actors/conn"
	"tether/actors/protocol"
	"tether/config"
	"tether/framing"
	"tether/history"
	"tether/transport"
)

// Deps are what every room needs from its node.
type Deps struct {
	Node             string
	Registry         *conn.Registry
	Metrics          *transport.Metrics
	Log              zerolog.Logger
	AnnounceLimit    int           // above this size joins and leaves go out as presence diffs
	PresenceInterval time.Duration // the most often a presence diff goes out
	Bridge           *actor.PID    // the cluster bridge, which subscribes rooms
	Cluster          Cluster
	ResyncWindow     time.Duration // how long a resync waits for the nodes' answers
	Backlog          int           // rooms.max_backlog: messages posted to a room and not handled yet
	Rooms            *config.Rooms // the rooms' options, by namespace
	History          *history.Store
}

// Cluster is how a room reaches the other nodes (cluster.Bus).
type Cluster interface {
	// PublishRoom sends a room event to every other node with members;
	// a failure is counted by the cluster, and the room goes on.
	PublishRoom(room string, ev *Remote) error
	// ReplyMembers answers a members request from a node without members.
	ReplyMembers(reply string, members []protocol.Member)
	// GatherMembers asks the nodes with members of a room for them, for
	// the admin API or for a client (each has its own limit).
	GatherMembers(ctx context.Context, admin bool, room string, window time.Duration) ([]protocol.Member, error)
}

type member struct {
	protocol.Member
	pid    *actor.PID
	sock   *transport.Socket
	enc    *framing.Encoder
	joined int64 // Unix nanoseconds
}

// pendingJoin is a join waiting until the room is ready for it.
type pendingJoin struct {
	join   *Join
	sender *actor.PID
}

// Actor is one room.
type Actor struct {
	name   string
	deps   *Deps
	opts   *config.RoomOptions
	self   *actor.PID
	handle *Handle
	local  map[string]*member                    // conn id → member on this node
	byPID  map[string]string                     // member actor id → conn id, for Terminated
	remote map[string]map[string]protocol.Member // node id → conn id → member
	joins  int                                   // joins handled, for the manager's stop decision

	// viewed are the nodes whose list of members the room has had (a
	// sync or state), or whose members it dropped: what a node's first
	// list holds was there before this room's members came, and is news
	// to none of them.
	viewed map[string]bool

	// A resync's generation, and the nodes that answered it.
	resyncGen  int
	resyncSeen map[string]bool

	// Presence diff of a large room, sent at most every PresenceInterval;
	// one entry per connection, the latest news winning.
	pendingJoined, pendingLeft map[string]protocol.Member
	flushScheduled             bool

	batch      []event // collected since the last batch was written
	batchStart time.Time
	dirty      []*transport.Socket // the members a batch pushed to, reused

	// Joins wait until NATS has the room's subscription (so that no
	// peer's answer to the join's announcement is missed) and, in a room
	// with history, until the stored messages are loaded.
	subscribing, subscribed bool
	waiting                 []pendingJoin

	// The numbering of messages between nodes: this node's last, and
	// the last seen from each other node.
	pubSeq uint64
	seen   map[string]uint64

	hist *roomHistory // nil without history
}

func newActor(name string, deps *Deps, handle *Handle) *Actor {
	r := &Actor{
		name: name, deps: deps, handle: handle, opts: deps.Rooms.Options(name),
		local: map[string]*member{}, byPID: map[string]string{}, remote: map[string]map[string]protocol.Member{},
		viewed: map[string]bool{}, seen: map[string]uint64{},
	}
	if deps.History != nil && deps.History.Has(name) {
		r.hist = &roomHistory{store: deps.History, size: deps.History.Size(name), epoch: deps.History.Epoch(name)}
	}
	return r
}

// Receive is the room's mailbox handler.
func (r *Actor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		r.self = ctx.Self()
		r.deps.Metrics.Rooms.Inc()
	case *writeBatch:
		r.write()
	case *Remote:
		r.handle.handled()
		r.remoteEvent(ctx, m)
	case *Subscribed:
		r.subscribed = true
		r.admit(ctx)
	case *stored:
		r.handle.handled()
		r.storedMessage(ctx, m.entry)
	case *loadTarget:
		r.loadTarget(ctx, m)
	case *loadTimeout:
		r.loadTimedOut(ctx)
	case *sendStored:
		r.sendStored(m)
	case *History:
		r.history(ctx, m)
	case *NodeDown:
		r.nodeDown(ctx, m.Node, m.Reason)
	case *Resync:
		if m.NewConnection && r.hist != nil {
			r.refollow(ctx)
		}
		r.resync(ctx)
	case *resyncDone:
		r.resyncEnded(ctx, m.gen)
	case *Join:
		r.joins++
		r.waiting = append(r.waiting, pendingJoin{join: m, sender: ctx.Sender()})
		r.admit(ctx)
	case *Leave:
		r.leave(ctx, m)
	case *Send:
		r.handle.handled()
		if m.Pending != nil {
			m.Pending.Add(-1)
		}
		r.send(ctx, m)
	case *Members:
		ctx.Respond(&MembersReply{Room: r.name, Members: r.members(), Ref: m.Ref})
	case *Stats:
		ctx.Respond(r.stats())
	case *Push:
		r.handle.handled()
		r.push(ctx, m)
	case *actor.Terminated:
		if id, ok := r.byPID[m.Who.Id]; ok {
			// Terminated overtakes the member's sends still in the
			// mailbox; its departure waits behind them.
			ctx.Send(r.self, &departed{conn: id})
		}
	case *departed:
		if _, ok := r.local[m.conn]; ok {
			// The connection wrote its reason to the registry before it
			// stopped; only after more closes than the registry keeps
			// is it gone, and then the room does not guess.
			reason := "disconnected"
			if info, ok := r.deps.Registry.ClosedInfo(m.conn); ok {
				reason = info.Reason.String()
			}
			r.remove(ctx, m.conn, reason)
		}
	case *flushPresence:
		r.flushScheduled = false
		r.flush(ctx)
	case *actor.Stopped:
		r.write()
		r.stopHistory()
		close(r.handle.gone)
		r.deps.Metrics.Rooms.Dec()
		r.deps.Metrics.RoomMembers.Sub(float64(len(r.local)))
		ctx.Send(r.deps.Bridge, &Unsubscribe{Room: r.name, PID: r.self})
	}
}

// ready says whether joins can be answered: NATS has the room's
// subscription, and a room with history has loaded it.
func (r *Actor) ready() bool { return r.subscribed && (r.hist == nil || r.hist.loaded) }

// admit answers the joins that waited, once the room is ready; until then
// it makes it ready: it subscribes, and starts following its history.
func (r *Actor) admit(ctx actor.Context) {
	if len(r.waiting) == 0 {
		return
	}
	if !r.subscribing {
		// The room's first member on this node: from now on this node
		// wants the room's events, and the others' members.
		r.subscribing = true
		ctx.Send(r.deps.Bridge, &Subscribe{Room: r.name, Handle: r.handle})
	}
	if r.hist != nil && !r.hist.loaded {
		r.followHistory(ctx)
	}
	if !r.ready() {
		return
	}
	waiting := r.waiting
	r.waiting = nil
	for _, p := range waiting {
		r.join(ctx, p.join, p.sender)
	}
}

func (r *Actor) join(ctx actor.Context, m *Join, sender *actor.PID) {
	r.write() // the events so far are not the new member's
	r.answerJoin(m)
	ctx.Send(sender, &JoinReply{Name: r.name, Room: r.handle, History: r.hist != nil})
	if old, ok := r.local[m.Member.Conn]; ok {
		old.Member = m.Member // a rejoin updates name and avatar
		return
	}
	first := len(r.local) == 0
	r.local[m.Member.Conn] = &member{Member: m.Member, pid: m.PID, sock: m.Socket, enc: m.Encoder, joined: time.Now().UnixNano()}
	r.byPID[m.PID.Id] = m.Member.Conn
	r.deps.Metrics.RoomMembers.Inc()
	ctx.Send(ctx.Parent(), &count{name: r.name, pid: r.self, members: len(r.local)})
	ctx.Watch(m.PID)
	body := protocol.Encode(&protocol.Joined{
		Op: "joined", Room: r.name, Conn: m.Member.Conn, Name: m.Member.Name, Avatar: m.Member.Avatar,
	})
	r.deps.Cluster.PublishRoom(r.name, &Remote{Kind: KindJoined, Body: body, Member: m.Member})
	if first {
		// The room's first member here: ask the other nodes for theirs
		// (the subscription is in place, so their answers are heard).
		r.publishSync(KindSync)
	}
	r.announceJoined(ctx, m.Member, body, m.Member.Conn)
}

// answerJoin writes the client's ok into its socket, before anything the
// room sends it: in a room with history the messages after since first,
// and the room's position in the ok.
func (r *Actor) answerJoin(m *Join) {
	if r.hist != nil {
		r.hist.prune(r.opts.HistoryTTL.D())
		replay, ok := r.hist.recover(m.Since)
		ok.ID = m.Ref
		if m.Ref == nil && len(replay) == 0 {
			return
		}
		r.writeTo(m.Socket, m.Encoder, append(replay, protocol.Encode(ok))...)
		return
	}
	switch {
	case m.Ref == nil:
	case m.Since != nil: // nothing to recover from
		no := false
		r.writeTo(m.Socket, m.Encoder, protocol.Encode(&protocol.JoinOK{Op: "ok", ID: m.Ref, Recovered: &no, Reason: protocol.ReasonNoHistory}))
	default:
		r.writeTo(m.Socket, m.Encoder, protocol.Encode(&protocol.Reply{Op: "ok", ID: m.Ref}))
	}
}

// announceJoined tells the local members (but except) that m joined: one
// event, or a line in the next presence diff of a large room (or while a
// diff is pending, so that news keep their order).
func (r *Actor) announceJoined(ctx actor.Context, m protocol.Member, body []byte, except string) {
	if !r.opts.Presence {
		return
	}
	if r.diffing() {
		delete(r.pendingLeft, m.Conn)
		r.pendingJoined[m.Conn] = m
		r.schedule(ctx)
		return
	}
	r.deliver(ctx, body, except)
}

// announceLeft tells the local members that m left, and why.
func (r *Actor) announceLeft(ctx actor.Context, m protocol.Member, body []byte) {
	if !r.opts.Presence {
		return
	}
	if r.diffing() {
		delete(r.pendingJoined, m.Conn)
		r.pendingLeft[m.Conn] = m
		r.schedule(ctx)
		return
	}
	r.deliver(ctx, body, "")
}

// diffing says whether news go into the presence diff.
func (r *Actor) diffing() bool {
	if r.pendingJoined == nil {
		r.pendingJoined, r.pendingLeft = map[string]protocol.Member{}, map[string]protocol.Member{}
	}
	return r.large() || len(r.pendingJoined)+len(r.pendingLeft) > 0
}

func leftEvent(room string, m protocol.Member, reason string) []byte {
	return protocol.Encode(&protocol.Left{Op: "left", Room: room, Conn: m.Conn, Name: m.Name, Reason: reason})
}

func (r *Actor) leave(ctx actor.Context, m *Leave) {
	mem, ok := r.local[m.Conn]
	if !ok {
		ctx.Respond(&LeaveReply{Room: r.name, Ref: m.Ref, Err: protocol.CodeNotInRoom})
		return
	}
	ctx.Unwatch(mem.pid)
	ctx.Respond(&LeaveReply{Room: r.name, Ref: m.Ref})
	r.remove(ctx, m.Conn, "left")
}

// remove takes a local member out and tells everyone, once.
func (r *Actor) remove(ctx actor.Context, id, reason string) {
	r.write() // the member gets what was sent before it left
	mem := r.local[id]
	delete(r.local, id)
	delete(r.byPID, mem.pid.Id)
	r.deps.Metrics.RoomMembers.Dec()
	body := leftEvent(r.name, mem.Member, reason)
	r.deps.Cluster.PublishRoom(r.name, &Remote{Kind: KindLeft, Body: body, Member: mem.Member, Reason: reason})
	r.announceLeft(ctx, mem.Member, body)
	ctx.Send(ctx.Parent(), &count{name: r.name, pid: r.self, members: len(r.local)})
	if len(r.local) == 0 {
		ctx.Send(ctx.Parent(), &emptied{name: r.name, pid: r.self, joins: r.joins})
	}
}

func (r *Actor) send(ctx actor.Context, m *Send) {
	from, ok := r.local[m.From]
	if !ok {
		return // the chat app checks membership; a straggler after a leave is dropped
	}
	now := time.Now().UTC()
	payload := protocol.Encode(&protocol.Message{
		Op: "message", Room: r.name, From: m.From, Name: from.Name, Avatar: from.Avatar,
		Data: m.Data, Time: now,
	})
	if r.hist != nil {
		// Delivered when it comes back from the stream, in the one order
		// every node delivers the room's messages in.
		r.storeSend(ctx, m, payload)
		return
	}
	except := m.From
	if m.Echo {
		except = ""
	}
	r.deliver(ctx, payload, except)
	r.pubSeq++
	r.deps.Cluster.PublishRoom(r.name, &Remote{Kind: KindMessage, Body: payload, Seq: r.pubSeq, From: m.From, Time: now.UnixNano()})
}

// push delivers a message of the server's (the admin API's) to the
// local members of a room without history; a room with history gets it
// from its stream.
func (r *Actor) push(ctx actor.Context, p *Push) {
	if r.hist == nil {
		r.deliver(ctx, p.Payload, "")
	}
}

// localMembers lists this node's members, sorted by connection id.
func (r *Actor) localMembers() []protocol.Member {
	out := make([]protocol.Member, 0, len(r.local))
	for _, id := range slices.Sorted(maps.Keys(r.local)) {
		out = append(out, r.local[id].Member)
	}
	return out
}

// members lists every member on every node, sorted by connection id.
func (r *Actor) members() []protocol.Member {
	out := r.localMembers()
	for _, ms := range r.remote {
		for _, m := range ms {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b protocol.Member) int { return strings.Compare(a.Conn, b.Conn) })
	return out
}

func (r *Actor) size() int {
	n := len(r.local)
	for _, ms := range r.remote {
		n += len(ms)
	}
	return n
}

// stats counts the room's members by node, as size does. A room with no
// member here (its joins still waiting, or it is stopping) is not
// following the others: it answers not found rather than a stale view.
func (r *Actor) stats() *StatsReply {
	if len(r.local) == 0 {
		return &StatsReply{Room: r.name}
	}
	reply := &StatsReply{Room: r.name, Members: r.size(), Nodes: map[string]int{r.deps.Node: len(r.local)}, Found: true}
	for node, ms := range r.remote {
		if len(ms) > 0 { // all its members left one by one: none there
			reply.Nodes[node] = len(ms)
		}
	}
	return reply
}

func (r *Actor) large() bool { return r.size() > r.deps.AnnounceLimit }

// remoteEvent applies another node's event to the view and tells the
// local members.
func (r *Actor) remoteEvent(ctx actor.Context, ev *Remote) {
	switch ev.Kind {
	case KindMessage:
		if r.hist != nil {
			return // its messages come from its stream
		}
		if ev.From != "" {
			if _, known := r.remote[ev.Node][ev.From]; !known {
				// Not a member here: its node was thought dead (its
				// members left) and has not synced yet. Its members'
				// messages come again once they have joined again.
				r.deps.Metrics.RoomDropped.Inc()
				return
			}
		}
		if !r.inSequence(ctx, ev.Node, ev.Seq, false) {
			return
		}
		r.deliverSent(ctx, ev.Body, "", ev.Time)
	case KindJoined:
		ms := r.remote[ev.Node]
		if ms == nil {
			ms = map[string]protocol.Member{}
			r.remote[ev.Node] = ms
		}
		_, known := ms[ev.Member.Conn]
		ms[ev.Member.Conn] = ev.Member
		if !known {
			r.announceJoined(ctx, ev.Member, ev.Body, "")
		}
	case KindLeft:
		if _, known := r.remote[ev.Node][ev.Member.Conn]; known {
			delete(r.remote[ev.Node], ev.Member.Conn)
			r.announceLeft(ctx, ev.Member, ev.Body)
		}
	case KindSync:
		// A node (re)joins the room: take its members, give ours.
		r.inSequence(ctx, ev.Node, ev.Seq, true)
		r.replace(ctx, ev.Node, ev.Members)
		if len(r.local) > 0 {
			r.publishSync(KindState)
		}
	case KindState:
		r.inSequence(ctx, ev.Node, ev.Seq, true)
		r.replace(ctx, ev.Node, ev.Members)
	case KindMembers:
		r.deps.Cluster.ReplyMembers(ev.Reply, r.localMembers())
	}
}

// publishSync publishes this node's members of the room (sync asks the
// others for theirs, state answers) and the number of its last message.
func (r *Actor) publishSync(kind string) {
	r.deps.Cluster.PublishRoom(r.name, &Remote{Kind: kind, Members: r.localMembers(), Seq: r.pubSeq})
}

// inSequence checks the number of a node's message (or, for a sync or
// state, of its last one): a number seen already is a duplicate (false);
// one past a number skipped means messages of that node were lost on the
// way (NATS away, or this node's subscription not yet back): the members
// are told (gap), and it is counted. The first number from a node is
// where this node starts.
func (r *Actor) inSequence(ctx actor.Context, node string, seq uint64, last bool) bool {
	if seq == 0 {
		return true // a node that numbers nothing (the admin API's pushes)
	}
	prev, known := r.seen[node]
	switch {
	case known && seq <= prev && !last:
		return false
	case known && seq > prev+1, known && last && seq > prev:
		r.gap(ctx)
	}
	r.seen[node] = max(prev, seq)
	return true
}

// gap tells the local members that the room lost messages on the way.
func (r *Actor) gap(ctx actor.Context) {
	r.deps.Metrics.RoomGaps.Inc()
	r.deliver(ctx, protocol.Encode(&protocol.Gap{Op: "gap", Room: r.name}), "")
}

// replace sets a node's members of the room to ms and announces the
// difference: joined for new ones, left for those gone (while this node
// did not hear of it). The first list of a node is the room as this
// node's members found it, not news: joined and left tell a member what
// changed after its join, on one node as across nodes (members answers
// who is there), so the members it holds that this node did not know of
// are not announced.
func (r *Actor) replace(ctx actor.Context, node string, ms []protocol.Member) {
	if r.resyncSeen != nil {
		r.resyncSeen[node] = true
	}
	news := r.viewed[node]
	r.viewed[node] = true
	old := r.remote[node]
	next := make(map[string]protocol.Member, len(ms))
	for _, m := range ms {
		next[m.Conn] = m
		if _, known := old[m.Conn]; !known && news {
			r.announceJoined(ctx, m, protocol.Encode(&protocol.Joined{
				Op: "joined", Room: r.name, Conn: m.Conn, Name: m.Name, Avatar: m.Avatar,
			}), "")
		}
	}
	for id, m := range old {
		if _, still := next[id]; !still {
			r.announceLeft(ctx, m, leftEvent(r.name, m, "left"))
		}
	}
	if len(next) == 0 {
		delete(r.remote, node)
	} else {
		r.remote[node] = next
	}
}

// nodeDown drops a gone node's members: each gets one left, with the
// reason.
func (r *Actor) nodeDown(ctx actor.Context, node, reason string) {
	for _, id := range slices.Sorted(maps.Keys(r.remote[node])) {
		m := r.remote[node][id]
		r.announceLeft(ctx, m, leftEvent(r.name, m, reason))
	}
	delete(r.remote, node)
	delete(r.seen, node) // what it sends until it syncs again is dropped, not missed
	// Its members, when it is back, are news: they were told left.
	r.viewed[node] = true
}

// resync asks every node for its members again. Nodes that do not answer
// within the window have none left: their members get a left.
func (r *Actor) resync(ctx actor.Context) {
	if len(r.local) == 0 {
		return
	}
	r.resyncGen++
	r.resyncSeen = map[string]bool{}
	r.publishSync(KindSync)
	system, self, gen := ctx.ActorSystem(), r.self, r.resyncGen
	time.AfterFunc(r.deps.ResyncWindow, func() { system.Root.Send(self, &resyncDone{gen: gen}) })
}

func (r *Actor) resyncEnded(ctx actor.Context, gen int) {
	if gen != r.resyncGen || r.resyncSeen == nil {
		return
	}
	for _, node := range slices.Sorted(maps.Keys(r.remote)) {
		if !r.resyncSeen[node] {
			r.replace(ctx, node, nil)
		}
	}
	r.resyncSeen = nil
}

// schedule arranges for the presence diff to go out.
func (r *Actor) schedule(ctx actor.Context) {
	if r.flushScheduled {
		return
	}
	r.flushScheduled = true
	system, self := ctx.ActorSystem(), r.self
	time.AfterFunc(r.deps.PresenceInterval, func() { system.Root.Send(self, &flushPresence{}) })
}

func (r *Actor) flush(ctx actor.Context) {
	if len(r.pendingJoined)+len(r.pendingLeft) == 0 {
		return
	}
	p := &protocol.Presence{
		Op: "presence", Room: r.name,
		Joined: capped(r.pendingJoined), Left: capped(r.pendingLeft),
		JoinedCount: len(r.pendingJoined), LeftCount: len(r.pendingLeft),
	}
	p.Truncated = len(p.Joined) < p.JoinedCount || len(p.Left) < p.LeftCount
	clear(r.pendingJoined)
	clear(r.pendingLeft)
	r.deliver(ctx, protocol.Encode(p), "")
}

// capped lists at most PresenceMaxEntries members, by connection id.
func capped(ms map[string]protocol.Member) []protocol.Member {
	out := make([]protocol.Member, 0, min(len(ms), protocol.PresenceMaxEntries))
	for _, id := range slices.Sorted(maps.Keys(ms)) {
		if len(out) == protocol.PresenceMaxEntries {
			break
		}
		out = append(out, ms[id])
	}
	return out
}
