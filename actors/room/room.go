// Package room is rooms: one actor per room that fans messages out to its
// members, and a manager that creates a room on its first join and stops
// it when its last member is gone.
//
// Concurrency rules (guarded by test/room_test.go):
//   - A room's membership is touched only by the room actor.
//   - A room Watches each member's connection actor, so a member that ends
//     for any reason (close, heartbeat, panic, node shutdown) produces
//     exactly one left event, whose reason the room reads from the
//     registry (the connection writes it there before it stops).
//   - Every event is encoded once per fan-out; all members receive the
//     same immutable conn.Deliver.
package room

import (
	"maps"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"tether/actors/conn"
	"tether/actors/protocol"
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
}

type member struct {
	protocol.Member
	pid *actor.PID
}

// Actor is one room.
type Actor struct {
	name  string
	deps  *Deps
	self  *actor.PID
	local map[string]*member // conn id → member on this node
	byPID map[string]string  // member actor id → conn id, for Terminated
	joins int                // joins handled, for the manager's stop decision

	// Presence diff of a large room, sent at most every PresenceInterval.
	pendingJoined, pendingLeft []protocol.Member
	flushScheduled             bool
}

func newActor(name string, deps *Deps) *Actor {
	return &Actor{name: name, deps: deps, local: map[string]*member{}, byPID: map[string]string{}}
}

// Receive is the room's mailbox handler.
func (r *Actor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		r.self = ctx.Self()
		r.deps.Metrics.Rooms.Inc()
	case *Join:
		r.join(ctx, m)
	case *Leave:
		r.leave(ctx, m)
	case *Send:
		r.send(ctx, m)
	case *Members:
		ctx.Respond(&MembersReply{Room: r.name, Members: r.members(), Ref: m.Ref})
	case *actor.Terminated:
		if id, ok := r.byPID[m.Who.Id]; ok {
			reason := "client_closed"
			if info, ok := r.deps.Registry.ClosedInfo(id); ok {
				reason = info.Reason.String()
			}
			r.remove(ctx, id, reason)
		}
	case *flushPresence:
		r.flushScheduled = false
		r.flush(ctx)
	case *actor.Stopped:
		r.deps.Metrics.Rooms.Dec()
		r.deps.Metrics.RoomMembers.Sub(float64(len(r.local)))
	}
}

func (r *Actor) join(ctx actor.Context, m *Join) {
	r.joins++
	ctx.Respond(&JoinReply{Name: r.name, Room: r.self, Ref: m.Ref})
	if old, ok := r.local[m.Member.Conn]; ok {
		old.Member = m.Member // a rejoin updates name and avatar
		return
	}
	r.local[m.Member.Conn] = &member{Member: m.Member, pid: m.PID}
	r.byPID[m.PID.Id] = m.Member.Conn
	r.deps.Metrics.RoomMembers.Inc()
	ctx.Watch(m.PID)
	if r.large() {
		r.pendingJoined = append(r.pendingJoined, m.Member)
		r.schedule(ctx)
		return
	}
	r.deliver(ctx, protocol.Encode(&protocol.Joined{
		Op: "joined", Room: r.name, Conn: m.Member.Conn, Name: m.Member.Name, Avatar: m.Member.Avatar,
	}), m.Member.Conn)
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

// remove takes a member out and tells the others, once.
func (r *Actor) remove(ctx actor.Context, id, reason string) {
	mem := r.local[id]
	delete(r.local, id)
	delete(r.byPID, mem.pid.Id)
	r.deps.Metrics.RoomMembers.Dec()
	if r.large() || len(r.pendingJoined)+len(r.pendingLeft) > 0 {
		r.pendingLeft = append(r.pendingLeft, mem.Member)
		r.schedule(ctx)
	} else {
		r.deliver(ctx, protocol.Encode(&protocol.Left{
			Op: "left", Room: r.name, Conn: id, Name: mem.Name, Reason: reason,
		}), "")
	}
	if len(r.local) == 0 {
		ctx.Send(ctx.Parent(), &emptied{name: r.name, pid: r.self, joins: r.joins})
	}
}

func (r *Actor) send(ctx actor.Context, m *Send) {
	from, ok := r.local[m.From]
	if !ok {
		return // the chat app checks membership; a straggler after a leave is dropped
	}
	start := time.Now()
	payload := protocol.Encode(&protocol.Message{
		Op: "message", Room: r.name, From: m.From, Name: from.Name, Avatar: from.Avatar,
		Data: m.Data, Time: start.UTC(),
	})
	except := m.From
	if m.Echo {
		except = ""
	}
	r.deliver(ctx, payload, except)
	r.deps.Metrics.Delivery.Observe(time.Since(start).Seconds())
}

// deliver hands one encoded event to every local member but except.
func (r *Actor) deliver(ctx actor.Context, payload []byte, except string) {
	d := &conn.Deliver{Payload: payload}
	for id, mem := range r.local {
		if id != except {
			ctx.Send(mem.pid, d)
		}
	}
}

func (r *Actor) members() []protocol.Member {
	out := make([]protocol.Member, 0, len(r.local))
	for _, id := range slices.Sorted(maps.Keys(r.local)) {
		out = append(out, r.local[id].Member)
	}
	return out
}

func (r *Actor) large() bool { return len(r.local) > r.deps.AnnounceLimit }

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
	r.pendingJoined, r.pendingLeft = nil, nil
	r.deliver(ctx, protocol.Encode(p), "")
}

// capped is the first PresenceMaxEntries members, never nil (JSON []).
func capped(ms []protocol.Member) []protocol.Member {
	if len(ms) > protocol.PresenceMaxEntries {
		return ms[:protocol.PresenceMaxEntries]
	}
	if ms == nil {
		return []protocol.Member{}
	}
	return ms
}
