// Package chat is the application `chat`: the client protocol of
// DESIGN.md section 5 on a connection actor. It answers requests, keeps
// the connection's rooms, and talks to the room actors; it runs inside the
// connection actor and never blocks it: every question to another actor
// is a message whose answer comes back through Receive.
//
// Concurrency rules (guarded by this package's tests, test/room_test.go
// and test/auth_test.go):
//   - App is touched only inside its connection actor; what is asked
//     elsewhere (another node, a proxy backend) comes back as a message.
//   - Sends made before their join is answered wait for it and go to the
//     room in order; when the join is refused, fails or is left first,
//     they are answered not_in_room.
//   - A connection has at most MaxInFlight questions crossing the
//     cluster; its whispers to other nodes are asked one at a time, in
//     the order sent.
//   - Until authenticated, what a client sends while the proxy backend is
//     asked waits (at most maxWaiting) and is handled in order after the
//     answer; a refresh for the same user replaces the deadline.
package chat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"tether/actors/cluster"
	"tether/actors/conn"
	"tether/actors/protocol"
	"tether/actors/room"
	"tether/auth"
	"tether/config"
)

// Deps are what the chat application needs from its node.
type Deps struct {
	Rooms    *actor.PID // the room manager
	Registry *conn.Registry
	MaxRooms int           // rooms.max_per_connection
	Bus      *cluster.Bus  // whispers to connections of other nodes
	Options  *config.Rooms // the rooms' options, by namespace
}

// whisperDone is a whisper to another node's connection, and, once
// posted back to the actor, that node's answer.
type whisperDone struct {
	ref     json.RawMessage
	to      string
	payload []byte
	err     error
}

// MaxInFlight bounds one connection's questions in flight that may
// cross the cluster (members requests, whispers to other nodes): past it
// a request gets error busy at once. The node bounds them all together
// too (cluster.Bus), and without this one client asking fast enough would
// use up everyone's share.
const MaxInFlight = 8

// MaxPendingSends bounds one connection's sends to one room that the room
// has not handled yet: past it a send gets error busy. The room's whole
// backlog (rooms.max_backlog) is bounded too; this keeps one flooding
// client from taking all of it, so that the others' sends still flow.
const MaxPendingSends = 64

// joined is a room the connection is in.
type joined struct {
	room    *room.Handle // nil while the join is on its way
	history bool         // the room answers sends once they are stored
	pending atomic.Int32 // sends not handled by the room yet
	// early holds, in order, the sends made while the join was on its
	// way: a client may send right after its join, without waiting for
	// the ok, and may get the ok (which the room writes) before this
	// actor hears that the join is done. At most MaxPendingSends.
	early []*protocol.Request
}

// App is the chat application of one connection.
type App struct {
	deps         *Deps
	auth         *auth.Listener // nil: the listener does not authenticate
	name, avatar string         // the identity's, or from the latest join; whispers carry them
	rooms        map[string]*joined
	inflight     int            // members requests and remote whispers not answered yet
	whispers     []*whisperDone // remote whispers, the first one asked, the rest waiting

	// Authentication (auth.go), on a listener with auth only.
	who      *auth.Identity // nil until authenticated
	deadline *deadline      // the auth timeout, then the identity's expiry
	asking   bool           // the proxy backend is being asked
	waiting  [][]byte       // messages sent meanwhile, in order
	headers  http.Header    // the WebSocket upgrade's, for the backend, until authenticated
}

// New returns the conn.NewApp of listeners running chat; au is the
// listener's authentication, nil for none.
func New(deps *Deps, au *auth.Listener) conn.NewApp {
	return func(*conn.Actor) conn.App { return &App{deps: deps, auth: au} }
}

// Opened sends welcome with the connection id, the heartbeat rules and
// whether the client must authenticate.
func (a *App) Opened(c *conn.Actor) {
	s := c.Settings()
	w := &protocol.Welcome{
		Op: "welcome", Conn: c.ID(), Node: c.Node(),
		Heartbeat: protocol.Heartbeat{
			IdleTimeoutMS:        s.IdleTimeout.Milliseconds(),
			PingIntervalMS:       s.PingInterval.Milliseconds(),
			PingNotResponseLimit: s.PingLimit,
		},
	}
	if a.auth != nil {
		w.Auth = a.auth.Mode
	}
	c.Send(protocol.Encode(w))
	if a.auth != nil {
		a.authOpened(c)
	}
}

// Frame handles one request. A bad request is answered with an error and
// never closes the connection.
func (a *App) Frame(c *conn.Actor, data []byte) {
	if a.asking && a.who == nil {
		a.wait(c, data)
		return
	}
	req, bad := protocol.DecodeRequest(data)
	if bad != nil {
		a.fail(c, bad.ID, bad.Code, bad.Message)
		return
	}
	if a.auth != nil && a.who == nil {
		a.unauthenticated(c, req)
		return
	}
	switch req.Op {
	case "ping":
		// Always answered, id or not: clients use it as their heartbeat.
		c.Send(protocol.Encode(&protocol.Reply{Op: "pong", ID: req.ID}))
	case "pong":
		// The answer to a server ping; receiving it was the point.
	case "auth":
		if a.auth == nil {
			a.fail(c, req.ID, protocol.CodeBadRequest, "listener "+c.Settings().Listener+" does not authenticate clients")
		} else {
			a.fail(c, req.ID, protocol.CodeBadRequest, "authenticated already; refresh extends it")
		}
	case "refresh":
		if a.auth == nil {
			a.fail(c, req.ID, protocol.CodeBadRequest, "listener "+c.Settings().Listener+" does not authenticate clients")
		} else if !a.asking {
			a.authenticate(c, req.ID, req.Token, true)
		} else {
			a.fail(c, req.ID, protocol.CodeBusy, "a refresh is being checked already")
		}
	case "join":
		a.join(c, req)
	case "leave":
		if a.checkRoom(c, req) {
			j := a.rooms[req.Room]
			a.refuseEarly(c, j, "left "+req.Room+" before its join was done")
			delete(a.rooms, req.Room)
			if j.room == nil {
				// The join is on its way: the room may not know the
				// member yet, and would answer not_in_room, then add it.
				// The leave is done here; the join, once done, is undone
				// (JoinReply).
				a.ok(c, req.ID)
				return
			}
			c.Context().Request(a.deps.Rooms, &room.Leave{Room: req.Room, Conn: c.ID(), Ref: req.ID})
		}
	case "send":
		a.send(c, req)
	case "whisper":
		a.whisper(c, req)
	case "members":
		if ok, why := a.mayJoin(req.Room); !ok {
			a.fail(c, req.ID, protocol.CodeForbidden, why)
			return
		}
		if a.busy(c, req) {
			return
		}
		a.inflight++
		c.Context().Request(a.deps.Rooms, &room.Members{Room: req.Room, Ref: req.ID})
	case "history":
		if a.checkRoom(c, req) {
			c.Context().Request(a.deps.Rooms, &room.History{Room: req.Room, Limit: req.Limit, Ref: req.ID})
		}
	}
}

// busy answers busy and returns true when the connection has MaxInFlight
// questions in flight already.
func (a *App) busy(c *conn.Actor, req *protocol.Request) bool {
	if a.inflight < MaxInFlight {
		return false
	}
	a.fail(c, req.ID, protocol.CodeBusy, fmt.Sprintf("%d requests in flight already; retry when one is answered", MaxInFlight))
	return true
}

func (a *App) join(c *conn.Actor, req *protocol.Request) {
	if _, in := a.rooms[req.Room]; !in && len(a.rooms) >= a.deps.MaxRooms {
		a.fail(c, req.ID, protocol.CodeTooManyRooms, "already in the most rooms a connection may join")
		return
	}
	if ok, why := a.mayJoin(req.Room); !ok {
		a.fail(c, req.ID, protocol.CodeForbidden, why)
		return
	}
	if a.who == nil { // without authentication, the client names itself
		a.name, a.avatar = req.Name, req.Avatar
		if a.name == "" {
			a.name = c.ID()
		}
	}
	if a.rooms == nil {
		a.rooms = map[string]*joined{}
	}
	if _, in := a.rooms[req.Room]; !in {
		a.rooms[req.Room] = &joined{} // joining
	}
	c.Context().Request(a.deps.Rooms, &room.Join{
		Room:   req.Room,
		Member: protocol.Member{Conn: c.ID(), Name: a.name, Avatar: a.avatar, Node: c.Node()},
		PID:    c.Context().Self(), Socket: c.Socket(), Encoder: c.Settings().Encoder, Ref: req.ID, Since: req.Since,
	})
}

func (a *App) send(c *conn.Actor, req *protocol.Request) {
	if !a.checkRoom(c, req) {
		return
	}
	j := a.rooms[req.Room]
	if j.room == nil {
		if len(j.early) >= MaxPendingSends {
			a.fail(c, req.ID, protocol.CodeBusy, fmt.Sprintf("%d sends wait for the join of %s already; retry when it is answered", MaxPendingSends, req.Room))
			return
		}
		j.early = append(j.early, req) // req is the connection's own: DecodeRequest copies out of the frame
		return
	}
	a.sendTo(c, j, req)
}

// sendTo sends req to the room of j, which the connection has joined.
func (a *App) sendTo(c *conn.Actor, j *joined, req *protocol.Request) {
	if a.deps.Options.Options(req.Room).Publish == config.PublishNone {
		a.fail(c, req.ID, protocol.CodeForbidden, "only the server sends to "+req.Room)
		return
	}
	if j.pending.Add(1) > MaxPendingSends {
		j.pending.Add(-1)
		a.fail(c, req.ID, protocol.CodeBusy, fmt.Sprintf("%d sends to %s not handled yet; retry later", MaxPendingSends, req.Room))
		return
	}
	send := &room.Send{From: c.ID(), Data: req.Data, Echo: req.Echo, Pending: &j.pending}
	if j.history {
		send.Ref = req.ID // the room answers once the message is stored
	}
	if !j.room.TrySend(c.Context().ActorSystem(), send) {
		j.pending.Add(-1)
		a.fail(c, req.ID, protocol.CodeBusy, "room "+req.Room+" has too many messages waiting; retry later")
		return
	}
	if !j.history {
		a.ok(c, req.ID)
	}
}

func (a *App) whisper(c *conn.Actor, req *protocol.Request) {
	name := a.name
	if name == "" {
		name = c.ID()
	}
	payload := protocol.Encode(&protocol.Message{
		Op: "message", From: c.ID(), Name: name, Avatar: a.avatar, Data: req.Data, Time: time.Now().UTC(),
	})
	if target := a.deps.Registry.Get(req.To); target != nil {
		c.Context().Send(target.PID, &conn.Deliver{Payload: payload})
		a.ok(c, req.ID)
		return
	}
	if protocol.NodeOf(req.To) == c.Node() { // ours, and gone
		a.fail(c, req.ID, protocol.CodeNotFound, "no connection "+req.To)
		return
	}
	// Another node's: ask it, on NATS, off this actor; the answer comes
	// back as a message. One at a time, in the order they were sent: two
	// asked at once could overtake each other.
	if a.busy(c, req) {
		return
	}
	a.inflight++
	a.whispers = append(a.whispers, &whisperDone{ref: req.ID, to: req.To, payload: payload})
	if len(a.whispers) == 1 {
		a.whisperNext(c)
	}
}

// whisperNext asks the node of the first queued whisper's target.
func (a *App) whisperNext(c *conn.Actor) {
	w := a.whispers[0]
	system, self, bus := c.Context().ActorSystem(), c.Context().Self(), a.deps.Bus
	cluster.Go(func() {
		w.err = bus.Deliver(context.Background(), cluster.Clients, w.to, w.payload)
		system.Root.Send(self, w)
	}, func(v any) { w.err = fmt.Errorf("panic: %v", v); system.Root.Send(self, w) })
}

// refuseEarly answers not_in_room to the sends that waited for a join
// that will not be done.
func (a *App) refuseEarly(c *conn.Actor, j *joined, why string) {
	for _, req := range j.early {
		a.fail(c, req.ID, protocol.CodeNotInRoom, why)
	}
	j.early = nil
}

// checkRoom answers not_in_room and returns false when the connection is
// not in req.Room.
func (a *App) checkRoom(c *conn.Actor, req *protocol.Request) bool {
	if _, in := a.rooms[req.Room]; !in {
		a.fail(c, req.ID, protocol.CodeNotInRoom, "not in room "+req.Room)
		return false
	}
	return true
}

// Limited answers a message past the listener's rate limit: it was
// dropped.
func (a *App) Limited(c *conn.Actor, data []byte) {
	var req struct {
		ID json.RawMessage `json:"id"`
	}
	_ = json.Unmarshal(data, &req) // an id if it has one; the error is answered anyway
	a.fail(c, req.ID, protocol.CodeRateLimited, fmt.Sprintf("past this listener's rate (%s): this message was dropped", c.Settings().Rate))
}

// Receive takes the rooms' answers and turns them into replies.
func (a *App) Receive(c *conn.Actor, msg any) {
	switch m := msg.(type) {
	case *proxyAnswered:
		a.authenticated(c, m)
	case *deadline:
		a.deadlinePassed(c, m)
	case *room.JoinReply: // the room wrote the client's ok, or its error
		j, in := a.rooms[m.Name]
		switch {
		case !in: // left meanwhile; the leave answered its early sends
			if m.Room != nil { // and the room took the member: take it out
				c.Context().Request(a.deps.Rooms, &room.Leave{Room: m.Name, Conn: c.ID()})
			}
		case m.Room == nil: // the join failed
			delete(a.rooms, m.Name)
			a.refuseEarly(c, j, "the join of "+m.Name+" failed")
		default:
			j.room, j.history = m.Room, m.History
			early := j.early
			j.early = nil
			for _, req := range early {
				a.sendTo(c, j, req)
			}
		}
	case *room.HistoryReply:
		if m.Err != "" {
			why := "not in room " + m.History.Room
			if m.Err == protocol.CodeForbidden {
				why = "this room keeps no history"
			}
			a.fail(c, m.History.ID, m.Err, why)
			return
		}
		c.Send(protocol.Encode(&m.History))
	case *room.LeaveReply:
		if m.Err != "" {
			a.fail(c, m.Ref, m.Err, "not in room "+m.Room)
			return
		}
		a.ok(c, m.Ref)
	case *room.MembersReply:
		a.inflight--
		switch m.Err {
		case "":
		case protocol.CodeForbidden:
			a.fail(c, m.Ref, m.Err, "room "+m.Room+" shows no members (presence is off)")
			return
		default:
			a.fail(c, m.Ref, m.Err, "the cluster could not be asked for the members of "+m.Room)
			return
		}
		c.Send(protocol.Encode(&protocol.Members{Op: "members", ID: m.Ref, Room: m.Room, Members: m.Members}))
	case *whisperDone:
		a.inflight--
		a.whispers = a.whispers[1:]
		if len(a.whispers) > 0 {
			a.whisperNext(c)
		}
		var refused *cluster.ReplyError
		switch {
		case m.err == nil:
			a.ok(c, m.ref)
		case errors.As(m.err, &refused) && refused.Code == protocol.CodeNotFound, errors.Is(m.err, cluster.ErrNoNode):
			a.fail(c, m.ref, protocol.CodeNotFound, "no connection "+m.to)
		default:
			a.fail(c, m.ref, protocol.CodeUnavailable, "the cluster did not answer: "+m.err.Error())
		}
	}
}

// Closing tells a TCP client why the server closes it, as the last frame:
// {"op":"close","reason":"idle"}, with the reconnect hint of a draining
// node ({"op":"close","reason":"server_shutdown","retry_ms":800,"urls":[...]}).
// A WebSocket client gets it as its last text message when the hint does
// not fit in the close frame.
func (a *App) Closing(c *conn.Actor, _ conn.Reason) {
	c.Send(c.CloseMessage())
}

// Closed stops the authentication deadline; the rooms need nothing:
// every room the connection was in watches it and emits the left event
// with the close reason.
func (a *App) Closed(*conn.Actor, conn.Reason) { a.stopDeadline() }

// Describe adds the connection's rooms to its info.
func (a *App) Describe(info *conn.Info) {
	if len(a.rooms) > 0 {
		info.Rooms = slices.Sorted(maps.Keys(a.rooms))
	}
}

// ok answers a request that carried an id.
func (a *App) ok(c *conn.Actor, id json.RawMessage) {
	if id != nil {
		c.Send(protocol.Encode(&protocol.Reply{Op: "ok", ID: id}))
	}
}

// fail answers with an error, id or not: errors are always answered.
func (a *App) fail(c *conn.Actor, id json.RawMessage, code, message string) {
	c.Send(protocol.Encode(&protocol.Reply{Op: "error", ID: id, Code: code, Message: message}))
}
