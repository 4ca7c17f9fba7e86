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
	Room string
	Ref  json.RawMessage
}

// MembersReply answers Members.
type MembersReply struct {
	Room    string
	Members []protocol.Member
	Ref     json.RawMessage
}

// emptied tells the manager that a room has no member left. Joins counts
// the joins the room has handled, so the manager can tell whether one is
// still on its way.
type emptied struct {
	name  string
	pid   *actor.PID
	joins int
}

// flushPresence makes a large room send its pending presence diff.
type flushPresence struct{}
