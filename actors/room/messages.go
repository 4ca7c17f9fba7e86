package room

import (
	"encoding/json"

	"github.com/asynkron/protoactor-go/actor"

	"tether/actors/protocol"
)

// Join adds a connection to a room (or updates its name and avatar if it
// is in already). Send it to the Manager; the room answers the sender, the
// connection, with JoinReply.
type Join struct {
	Room   string
	Member protocol.Member
	PID    *actor.PID      // the member's connection actor, which the room watches
	Ref    json.RawMessage // the client's request id, returned in the reply
}

// JoinReply answers Join. Room is the room actor, for sends.
type JoinReply struct {
	Name string
	Room *actor.PID
	Ref  json.RawMessage
}

// Leave removes a connection from a room. Send it to the Manager; the
// answer is LeaveReply.
type Leave struct {
	Room string
	Conn string
	Ref  json.RawMessage
}

// LeaveReply answers Leave; Err is a protocol error code or "".
type LeaveReply struct {
	Room string
	Ref  json.RawMessage
	Err  string
}

// Send is a message from a member to everyone else in the room (and to
// the sender itself with Echo). Send it to the room actor.
type Send struct {
	From string // the sender's connection id
	Data json.RawMessage
	Echo bool
}

// Members asks for a room's member list. Send it to the Manager; the
// answer is MembersReply.
type Members struct {
	Room  string
	Ref   json.RawMessage
	Admin bool // asked by the admin API, not a client
}

// MembersReply answers Members; Err is a protocol error code or "".
type MembersReply struct {
	Room    string
	Members []protocol.Member
	Ref     json.RawMessage
	Err     string
}

// emptied tells the manager that a room has no member left. Joins counts
// the joins the room has handled, so the manager can tell whether one is
// still on its way.
type emptied struct {
	name  string
	pid   *actor.PID
	joins int
}

// Push delivers an encoded event (a message from the server) to a room's
// members on this node. Send it to the Manager; other nodes get it from
// the room's subject.
type Push struct {
	Room    string
	Payload []byte
}

// count tells the manager a room's local size, for List.
type count struct {
	name    string
	pid     *actor.PID
	members int
}

// List asks the manager for this node's rooms (the reply is []Local).
type List struct{}

// Local is one room with its members on this node.
type Local struct {
	Room    string `json:"room"`
	Members int    `json:"members"`
}

// flushPresence makes a large room send its pending presence diff.
type flushPresence struct{}

// Kinds of room events between nodes (the cluster package's wire names).
const (
	KindMessage = "message"
	KindJoined  = "joined"
	KindLeft    = "left"
	KindSync    = "sync"
	KindState   = "state"
	KindMembers = "members"
)

// Subscribe asks the cluster bridge to route the room's subject to PID;
// the bridge answers Subscribed once the subscription is in place. A room
// sends it with its first member, Unsubscribe when it stops.
type Subscribe struct {
	Room string
	PID  *actor.PID
}

// Subscribed tells a room that other nodes' events now reach it: it
// publishes a sync with its members (taken now, so no join is missed).
type Subscribed struct{}

// Unsubscribe ends a room's subscription, if PID still holds it (a new
// actor of the same room may have subscribed meanwhile).
type Unsubscribe struct {
	Room string
	PID  *actor.PID
}

// Remote is a room event from another node, decoded by the bridge.
type Remote struct {
	Kind    string // cluster.Kind*: message, joined, left, sync, state, members
	Node    string // the node that published it
	Body    []byte // the client-facing event (message, joined, left)
	Member  protocol.Member
	Reason  string
	Members []protocol.Member // sync, state: the node's members of the room
	Reply   string            // members: where to answer
}

// NodeDown tells a room that a node is gone, and with it its members:
// Reason is node_down for a node declared dead, server_shutdown for one
// that said goodbye.
type NodeDown struct{ Node, Reason string }

// Resync tells a room to ask every node for its members again (NATS came
// back, or a node thought dead spoke again).
type Resync struct{}

// resyncDone ends a resync's window: nodes that did not answer by then
// have no members left in the room.
type resyncDone struct{ gen int }
