package room

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"tether/actors/protocol"
)

// Manager is the rooms actor: it routes joins, leaves and member lists to
// rooms by name, spawns a room on its first join and stops it once it is
// empty.
type Manager struct {
	deps  *Deps
	rooms map[string]*entry
}

type entry struct {
	pid     *actor.PID
	handle  *Handle
	joins   int // joins forwarded to the room
	members int // its members on this node, as it last said
}

// gatherWindow is how long a members request for a room with no member
// here waits for the other nodes' answers.
const gatherWindow = 300 * time.Millisecond

// NewManager returns the props of the rooms actor. A panic in a room is
// logged and the room resumed: its members stay, the message is skipped.
func NewManager(deps *Deps) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &Manager{deps: deps, rooms: map[string]*entry{}}
	}, actor.WithSupervisor(actor.NewOneForOneStrategy(10, time.Minute, func(reason any) actor.Directive {
		deps.Log.Error().Str("panic", fmt.Sprint(reason)).Msg("room panicked; resumed")
		return actor.ResumeDirective
	})))
}

// Receive is the manager's mailbox handler.
func (m *Manager) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *Join:
		e, ok := m.rooms[msg.Room]
		if !ok {
			// A prefix, not a fixed name: the previous actor of a room of
			// that name may still be stopping.
			name, h := msg.Room, newHandle(m.deps.Backlog)
			h.PID = ctx.SpawnPrefix(actor.PropsFromProducer(func() actor.Actor { return newActor(name, m.deps, h) }), "room-"+name)
			e = &entry{pid: h.PID, handle: h}
			m.rooms[msg.Room] = e
		}
		e.joins++
		ctx.Forward(e.pid)
	case *Leave:
		if e, ok := m.rooms[msg.Room]; ok {
			ctx.Forward(e.pid)
		} else {
			ctx.Respond(&LeaveReply{Room: msg.Room, Ref: msg.Ref, Err: protocol.CodeNotInRoom})
		}
	case *History:
		if e, ok := m.rooms[msg.Room]; ok {
			ctx.Forward(e.pid)
		} else {
			ctx.Respond(&HistoryReply{History: protocol.History{ID: msg.Ref}, Err: protocol.CodeNotInRoom})
		}
	case *Members:
		if !m.deps.Rooms.Options(msg.Room).Presence {
			ctx.Respond(&MembersReply{Room: msg.Room, Ref: msg.Ref, Err: protocol.CodeForbidden})
			return
		}
		if e, ok := m.rooms[msg.Room]; ok {
			ctx.Forward(e.pid) // the room's view covers every node
			return
		}
		// No member here, so no view: ask the nodes that have members,
		// off this actor, and answer the asker when they have.
		system, asker, cluster := ctx.ActorSystem(), ctx.Sender(), m.deps.Cluster
		go func() {
			reply := &MembersReply{Room: msg.Room, Members: []protocol.Member{}, Ref: msg.Ref}
			defer func() { // a panic becomes an error answer, not a crash
				if v := recover(); v != nil {
					m.deps.Log.Error().Str("panic", fmt.Sprint(v)).Str("room", msg.Room).Msg("members gather panicked")
					reply.Err = protocol.CodeUnavailable
				}
				system.Root.Send(asker, reply)
			}()
			ms, err := cluster.GatherMembers(context.Background(), msg.Admin, msg.Room, gatherWindow)
			if err != nil {
				reply.Err = protocol.CodeUnavailable
				return
			}
			reply.Members = ms
		}()
	case *Stats:
		// Counts, no identities: answered whatever the room's presence.
		if e, ok := m.rooms[msg.Room]; ok {
			ctx.Forward(e.pid)
		} else {
			ctx.Respond(&StatsReply{Room: msg.Room})
		}
	case *Push:
		reply := &PushReply{}
		if e, ok := m.rooms[msg.Room]; ok && !e.handle.TrySend(ctx.ActorSystem(), msg) {
			reply.Err = protocol.CodeBusy
		}
		ctx.Respond(reply)
	case *count:
		if e, ok := m.rooms[msg.name]; ok && e.pid.Equal(msg.pid) {
			e.members = msg.members
		}
	case *List:
		out := make([]Local, 0, len(m.rooms))
		for _, name := range slices.Sorted(maps.Keys(m.rooms)) {
			out = append(out, Local{Room: name, Members: m.rooms[name].members})
		}
		ctx.Respond(out)
	case *emptied:
		// Stop the room only if no join is on its way to it: every join
		// goes through here, so equal counts mean none is.
		if e, ok := m.rooms[msg.name]; ok && e.pid.Equal(msg.pid) && e.joins == msg.joins {
			delete(m.rooms, msg.name)
			ctx.Poison(e.pid) // after what is queued for it (members requests)
		}
	}
}
