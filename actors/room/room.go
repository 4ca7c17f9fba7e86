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
	"tether/framing"
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
	pid  *actor.PID
	sock *transport.Socket
	enc  *framing.Encoder
}

// event is one message of the batch being collected, for every member
// but except.
type event struct {
	msg    *framing.Message
	except string
}

// Actor is one room.
type Actor struct {
	name   string
	deps   *Deps
	self   *actor.PID
	handle *Handle
	local  map[string]*member                    // conn id → member on this node
	byPID  map[string]string                     // member actor id → conn id, for Terminated
	remote map[string]map[string]protocol.Member // node id → conn id → member
	joins  int                                   // joins handled, for the manager's stop decision

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
}

func newActor(name string, deps *Deps, handle *Handle) *Actor {
	return &Actor{
		name: name, deps: deps, handle: handle,
		local: map[string]*member{}, byPID: map[string]string{}, remote: map[string]map[string]protocol.Member{},
	}
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
		if len(r.local) > 0 {
			r.deps.Cluster.PublishRoom(r.name, &Remote{Kind: KindSync, Members: r.localMembers()})
		}
	case *NodeDown:
		r.nodeDown(ctx, m.Node, m.Reason)
	case *Resync:
		r.resync(ctx)
	case *resyncDone:
		r.resyncEnded(ctx, m.gen)
	case *Join:
		r.join(ctx, m)
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
	case *Push:
		r.handle.handled()
		r.deliver(ctx, m.Payload, "")
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
		close(r.handle.gone)
		r.deps.Metrics.Rooms.Dec()
		r.deps.Metrics.RoomMembers.Sub(float64(len(r.local)))
		ctx.Send(r.deps.Bridge, &Unsubscribe{Room: r.name, PID: r.self})
	}
}

func (r *Actor) join(ctx actor.Context, m *Join) {
	r.joins++
	r.write() // the events so far are not the new member's
	if m.Ref != nil {
		r.writeTo(m.Socket, m.Encoder, protocol.Encode(&protocol.Reply{Op: "ok", ID: m.Ref}))
	}
	ctx.Respond(&JoinReply{Name: r.name, Room: r.handle})
	if old, ok := r.local[m.Member.Conn]; ok {
		old.Member = m.Member // a rejoin updates name and avatar
		return
	}
	first := len(r.local) == 0
	r.local[m.Member.Conn] = &member{Member: m.Member, pid: m.PID, sock: m.Socket, enc: m.Encoder}
	r.byPID[m.PID.Id] = m.Member.Conn
	r.deps.Metrics.RoomMembers.Inc()
	ctx.Send(ctx.Parent(), &count{name: r.name, pid: r.self, members: len(r.local)})
	ctx.Watch(m.PID)
	if first {
		// The room's first member on this node: from now on this node
		// wants the room's events, and the others' members.
		ctx.Send(r.deps.Bridge, &Subscribe{Room: r.name, Handle: r.handle})
	}
	body := protocol.Encode(&protocol.Joined{
		Op: "joined", Room: r.name, Conn: m.Member.Conn, Name: m.Member.Name, Avatar: m.Member.Avatar,
	})
	r.deps.Cluster.PublishRoom(r.name, &Remote{Kind: KindJoined, Body: body, Member: m.Member})
	r.announceJoined(ctx, m.Member, body, m.Member.Conn)
}

// announceJoined tells the local members (but except) that m joined: one
// event, or a line in the next presence diff of a large room (or while a
// diff is pending, so that news keep their order).
func (r *Actor) announceJoined(ctx actor.Context, m protocol.Member, body []byte, except string) {
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
	payload := protocol.Encode(&protocol.Message{
		Op: "message", Room: r.name, From: m.From, Name: from.Name, Avatar: from.Avatar,
		Data: m.Data, Time: time.Now().UTC(),
	})
	except := m.From
	if m.Echo {
		except = ""
	}
	r.deliver(ctx, payload, except)
	r.deps.Cluster.PublishRoom(r.name, &Remote{Kind: KindMessage, Body: payload})
}

// deliver adds one encoded event, for every local member but except, to
// the batch; the batch is written once what is in the mailbox now has
// been handled.
func (r *Actor) deliver(ctx actor.Context, payload []byte, except string) {
	if len(r.local) == 0 || (len(r.local) == 1 && r.local[except] != nil) {
		return
	}
	if len(r.batch) == 0 {
		r.batchStart = time.Now()
		ctx.Send(r.self, writeBatchMsg)
	}
	r.batch = append(r.batch, event{msg: framing.NewMessage(payload), except: except})
}

var writeBatchMsg = &writeBatch{}

// write writes the batch: to each member, its events (every one but those
// it sent itself), framed once per wire format, in one writev.
func (r *Actor) write() {
	if len(r.batch) == 0 {
		return
	}
	for id, m := range r.local {
		pushed := false
		for _, ev := range r.batch {
			if ev.except == id {
				continue
			}
			frame, err := ev.msg.Frame(m.enc)
			if err != nil {
				r.deps.Log.Warn().Err(err).Str("room", r.name).Str("conn", id).Msg("event not sent: cannot be framed")
				continue
			}
			pushed = m.sock.Push(frame, false) || pushed
		}
		if pushed {
			r.dirty = append(r.dirty, m.sock)
		}
	}
	transport.FlushAll(r.dirty)
	r.deps.Metrics.Delivery.Observe(time.Since(r.batchStart).Seconds())
	clear(r.batch)
	r.batch = r.batch[:0]
	clear(r.dirty)
	r.dirty = r.dirty[:0]
}

// writeTo writes one event to one socket at once (the join's ok).
func (r *Actor) writeTo(sock *transport.Socket, enc *framing.Encoder, payload []byte) {
	frame, err := enc.AppendMessage(nil, payload)
	if err == nil {
		sock.Write(frame, false)
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

func (r *Actor) large() bool { return r.size() > r.deps.AnnounceLimit }

// remoteEvent applies another node's event to the view and tells the
// local members.
func (r *Actor) remoteEvent(ctx actor.Context, ev *Remote) {
	switch ev.Kind {
	case KindMessage:
		r.deliver(ctx, ev.Body, "")
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
		r.replace(ctx, ev.Node, ev.Members)
		if len(r.local) > 0 {
			r.deps.Cluster.PublishRoom(r.name, &Remote{Kind: KindState, Members: r.localMembers()})
		}
	case KindState:
		r.replace(ctx, ev.Node, ev.Members)
	case KindMembers:
		r.deps.Cluster.ReplyMembers(ev.Reply, r.localMembers())
	}
}

// replace sets a node's members of the room to ms and announces the
// difference: joined for new ones, left for those gone (while this node
// did not hear of it).
func (r *Actor) replace(ctx actor.Context, node string, ms []protocol.Member) {
	if r.resyncSeen != nil {
		r.resyncSeen[node] = true
	}
	old := r.remote[node]
	next := make(map[string]protocol.Member, len(ms))
	for _, m := range ms {
		next[m.Conn] = m
		if _, known := old[m.Conn]; !known {
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
}

// resync asks every node for its members again. Nodes that do not answer
// within the window have none left: their members get a left.
func (r *Actor) resync(ctx actor.Context) {
	if len(r.local) == 0 {
		return
	}
	r.resyncGen++
	r.resyncSeen = map[string]bool{}
	r.deps.Cluster.PublishRoom(r.name, &Remote{Kind: KindSync, Members: r.localMembers()})
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
