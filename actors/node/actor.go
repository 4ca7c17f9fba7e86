package node

import (
	"github.com/asynkron/protoactor-go/actor"

	"tether/config"
)

// reload carries a new configuration down the tree.
type reload struct{ cfg *config.Config }

// nodeActor is the root of the supervision tree: it owns the listeners,
// the rooms and the cluster bridge, and stops them (children first) when
// the node stops.
type nodeActor struct {
	n *Node
}

func (a *nodeActor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *reload:
		for _, child := range ctx.Children() {
			ctx.Send(child, msg)
		}
	}
}
