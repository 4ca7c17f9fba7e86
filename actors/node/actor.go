package node

import (
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	"tether/actors/conn"
	"tether/actors/listener"
	"tether/config"
)

// reload carries a new configuration down the tree.
type reload struct{ cfg *config.Config }

// spawnListeners asks the node actor to spawn the listener actors as its
// children; the reply maps listener names to their PIDs.
type spawnListeners struct{ listeners []*listener.Actor }

// spawnChild asks the node actor to spawn a child (the rooms, the
// cluster bridge); the reply is its PID or an error.
type spawnChild struct {
	props *actor.Props
	name  string
}

// drain asks the node actor to drain every listener, with the reconnect
// hints of their clients; it answers drained once they all have.
type drain struct {
	hints map[string]func() *conn.Hint
}

type drained struct{}

// nodeActor is the root of the supervision tree: it owns the listeners
// (and, with them, every connection), the rooms and the cluster bridge,
// and stops them children first when the node stops.
type nodeActor struct {
	listeners map[string]*actor.PID
	drainer   *actor.PID
	pending   int
}

func (a *nodeActor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *spawnChild:
		pid, err := ctx.SpawnNamed(msg.props, msg.name)
		if err != nil {
			ctx.Respond(fmt.Errorf("spawn %s: %w", msg.name, err))
			return
		}
		ctx.Respond(pid)
	case *spawnListeners:
		a.listeners = map[string]*actor.PID{}
		for _, l := range msg.listeners {
			name := l.Name()
			pid, err := ctx.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return l }), name)
			if err != nil {
				ctx.Respond(fmt.Errorf("spawn listener %s: %w", name, err))
				return
			}
			a.listeners[name] = pid
		}
		ctx.Respond(a.listeners)
	case *reload:
		for name, pid := range a.listeners {
			if l := msg.cfg.Listener(name); l != nil {
				ctx.Send(pid, &listener.Reload{Config: *l})
			}
		}
	case *drain:
		a.drainer, a.pending = ctx.Sender(), len(a.listeners)
		for name, pid := range a.listeners {
			ctx.Request(pid, &listener.Drain{Hint: msg.hints[name]})
		}
		a.maybeDrained(ctx)
	case *listener.Drained:
		a.pending--
		a.maybeDrained(ctx)
	}
}

func (a *nodeActor) maybeDrained(ctx actor.Context) {
	if a.drainer != nil && a.pending <= 0 {
		ctx.Send(a.drainer, &drained{})
		a.drainer = nil
	}
}
