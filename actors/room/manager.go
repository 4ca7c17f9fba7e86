package room

import (
	"fmt"
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
	pid   *actor.PID
	joins int // joins forwarded to the room
}

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
			name := msg.Room
			e = &entry{pid: ctx.SpawnPrefix(actor.PropsFromProducer(func() actor.Actor { return newActor(name, m.deps) }), "room-"+name)}
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
	case *Members:
		if e, ok := m.rooms[msg.Room]; ok {
			ctx.Forward(e.pid)
		} else {
			ctx.Respond(&MembersReply{Room: msg.Room, Members: []protocol.Member{}, Ref: msg.Ref})
		}
	case *emptied:
		// Stop the room only if no join is on its way to it: every join
		// goes through here, so equal counts mean none is.
		if e, ok := m.rooms[msg.name]; ok && e.pid.Equal(msg.pid) && e.joins == msg.joins {
			delete(m.rooms, msg.name)
			ctx.Stop(e.pid)
		}
	}
}
