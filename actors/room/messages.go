package room

import (
	"encoding/json"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"

	"tether/actors/protocol"
	"tether/framing"
	"tether/history"
	"tether/transport"
)

// Join adds a connection to a room (or updates its name and avatar if it
// is in already). Send it to the Manager. The room writes the client's ok
// (Ref) into its socket itself, before any of the room's messages, and
// answers the sender, the connection actor, with JoinReply.
type Join struct {
	Room    string
	Member  protocol.Member
	PID     *actor.PID        // the member's connection actor, which the room watches
	Socket  *transport.Socket // where the room writes the member's messages
	Encoder *framing.Encoder  // the member's wire format
	Ref     json.RawMessage   // the client's request id: the room answers ok
	// Since asks a room with history for every message after this
	// position, before the ok (DESIGN.md section 10).
	Since *protocol.Position
}

// JoinReply answers Join: the room, for sends. History says that the room
// keeps history: it answers the sends itself, once they are stored.
type JoinReply struct {
	Name    string
	Room    *Handle
	History bool
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
// the sender itself with Echo). Send it to the room with its Handle's
// TrySend.
type Send struct {
	From string // the sender's connection id
	Data json.RawMessage
	Echo bool
	// Pending counts the sender's sends to the room not handled yet; the
	// room takes one off each it handles. A sender bounds its own share of
	// the backlog with it, so that one flooding client cannot take it all.
	Pending *atomic.Int32
	// Ref is the client's request id, for a room with history: the room
	// answers ok once the message is stored, and a send retried with the
	// same id on the same connection is stored once.
	Ref json.RawMessage
}

// History asks a room for its last messages (the history request of a
// member). Send it to the Manager; the answer is HistoryReply.
type History struct {
	Room  string
	Limit int
	Ref   json.RawMessage
}

// HistoryReply answers History; Err is a protocol error code or "".
type HistoryReply struct {
	History protocol.History
	Err     string
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

// Stats asks for a room's size as the room sees it: its members here and
// on each other node, counts only (the admin API's room). A node's
// members stay counted until they leave or the cluster declares the node
// dead, the moment the room's members are told. Send it to the Manager;
// the answer is StatsReply.
type Stats struct{ Room string }

// StatsReply answers Stats. Found is false when the room has no member
// on this node, and so no view of the others: the asker counts another
// way. Nodes holds the nodes with members only.
type StatsReply struct {
	Room    string
	Members int
	Nodes   map[string]int // node id → members there
	Found   bool
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
// members on this node. Ask the Manager; it answers an error code, "" or
// busy (the room's backlog is full). Other nodes get it from the room's
// subject.
type Push struct {
	Room    string
	Payload []byte
}

// PushReply answers Push.
type PushReply struct{ Err string }

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

// Subscribe asks the cluster bridge to route the room's subject to the
// room (through its Handle, waiting while its backlog is full); the
// bridge answers Subscribed once the subscription is in place. A room
// sends it with its first member, Unsubscribe when it stops.
type Subscribe struct {
	Room   string
	Handle *Handle
}

// Subscribed tells a room that other nodes' events now reach it (NATS has
// its subscription, flushed): only now does it answer its first joins and
// announce them, so a peer answering at once is heard. It publishes a
// sync with its members (taken now, so no join is missed).
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
	// Seq numbers the messages a node publishes to a room (1, 2, ...);
	// sync and state carry the last one. A receiver that sees a number
	// skipped knows it missed messages (a gap), one it has seen is a
	// duplicate.
	Seq uint64
	// From is the member that sent a message; "" for the server's pushes.
	From string
	// Time is when a message was sent (Unix nanoseconds): members that
	// joined after it do not get it, however late it arrives.
	Time int64
}

// NodeDown tells a room that a node is gone, and with it its members:
// Reason is node_down for a node declared dead, server_shutdown for one
// that said goodbye.
type NodeDown struct{ Node, Reason string }

// Resync tells a room to ask every node for its members again (NATS came
// back, or a node thought dead spoke again). NewConnection says that the
// node's NATS connection is a new one (NATS closed the old for good): a
// room with history follows its stream again, on the new one.
type Resync struct{ NewConnection bool }

// resyncDone ends a resync's window: nodes that did not answer by then
// have no members left in the room.
type resyncDone struct{ gen int }

// writeBatch makes the room write the messages it has collected since
// the last batch: to each member, in one write.
type writeBatch struct{}

// stored is a message of a room with history, from its stream, in the
// stream's order.
type stored struct{ entry *history.Entry }

// loadTarget is the offset of a history room's newest stored message when
// it began following its stream: the room's history is loaded once it
// has got that far.
type loadTarget struct {
	last uint64
	err  error
}

// loadTimeout fails the joins that waited too long for a room's history.
type loadTimeout struct{}

// sendStored is JetStream's answer to the store of a member's message.
type sendStored struct {
	from string
	ref  json.RawMessage
	err  error
}

// What a room posts to itself from timers and goroutines may come after
// it stopped: that is no news.
func (*resyncDone) IgnoreDeadLetterLogging()    {}
func (*flushPresence) IgnoreDeadLetterLogging() {}
func (*loadTarget) IgnoreDeadLetterLogging()    {}
func (*loadTimeout) IgnoreDeadLetterLogging()   {}
func (*sendStored) IgnoreDeadLetterLogging()    {}

// departed takes a member out whose connection actor has stopped. The
// room posts it to itself on the Terminated (a system message, which
// overtakes user messages): it comes after the member's own sends still
// in the mailbox, so none is dropped.
type departed struct{ conn string }

// Handle addresses a room and bounds its backlog: the messages posted to
// it and not handled yet (sends, other nodes' events, pushes), each of
// which holds a slot until the room has handled it. A client's send past
// the bound is refused (busy): a flood is the flooder's problem, not the
// node's memory. NATS's deliveries wait for a slot instead, so a busy room
// pushes back on its subscription (whose own bound, nats.go's pending
// limits, then drops and counts). Safe for concurrent use.
type Handle struct {
	PID   *actor.PID
	slots chan struct{}
	gone  chan struct{} // closed once the room has stopped
}

func newHandle(backlog int) *Handle {
	return &Handle{slots: make(chan struct{}, backlog), gone: make(chan struct{})}
}

// TrySend posts m (a Send, a Remote, a Push) if the backlog has room.
func (h *Handle) TrySend(system *actor.ActorSystem, m any) bool {
	select {
	case h.slots <- struct{}{}:
		system.Root.Send(h.PID, m)
		return true
	default:
		return false
	}
}

// Send posts m, waiting while the backlog is full; false once the room
// has stopped.
func (h *Handle) Send(system *actor.ActorSystem, m any) bool {
	select {
	case h.slots <- struct{}{}:
		system.Root.Send(h.PID, m)
		return true
	case <-h.gone:
		return false
	}
}

// Backlog is the most messages the room may have waiting.
func (h *Handle) Backlog() int { return cap(h.slots) }

// handled frees the slot of one handled message.
func (h *Handle) handled() {
	select {
	case <-h.slots:
	default:
	}
}
