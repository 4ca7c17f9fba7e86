package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/pprof"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"tether/actors/cluster"
	"tether/actors/conn"
	"tether/actors/protocol"
	"tether/actors/room"
	"tether/transport"
	"tether/web/admin"
)

// The admin API: the same operations over HTTP (token-protected, /api/...)
// and over NATS request/reply (<prefix>.api.<op>, answered by one node of
// a queue group). Every operation works cluster-wide: a node that does
// not hold a connection asks the one that does.
//
//	op       HTTP                              request body (NATS, and HTTP POST)
//	push     POST /api/push                    {"conn"|"user"|"room"|"all":true, "data": any, "count": bool}
//	kick     POST /api/kick                    {"conn"}
//	bind     POST /api/bind                    {"conn", "user"}
//	info     GET  /api/conns/{conn}            {"conn"}
//	conns    GET  /api/users/{user}/conns      {"user"}
//	room     GET  /api/rooms/{room}            {"room"}
//	members  GET  /api/rooms/{room}/members    {"room"}
//	rooms    GET  /api/rooms                   {}
//	nodes    GET  /api/nodes                   {}
//	stats    GET  /api/stats                   {}
//	status   GET  /api/status                  {}
//
// and, over HTTP only since it is this node's, drain: POST /api/drain
// starts draining the node (drain.go), GET /api/drain says how far it is.
//
// Answers are JSON; failures are {"error": code, "message": text} with an
// HTTP status (400 bad_request, 404 not_found, 503 unavailable).

// APIRequest is the body of every operation; each uses its own fields.
type APIRequest struct {
	Conn string          `json:"conn,omitempty"`
	User string          `json:"user,omitempty"`
	Room string          `json:"room,omitempty"`
	All  bool            `json:"all,omitempty"`
	Data json.RawMessage `json:"data,omitempty"`
	// Count asks push to answer how many connections it was addressed to
	// (PushReply): a question to every node, which pushes that do not
	// need the figure do not pay for.
	Count bool `json:"count,omitempty"`
}

// PushReply answers a push with count.
type PushReply struct {
	OK bool `json:"ok"`
	// Connections is how many connections of the cluster the push was
	// addressed to, counted as it was made: the connection, the user's
	// connections, the room's members or every connection, on every node
	// that answered within a second. Absent when it could not be
	// counted: Uncounted says why (the push was made).
	Connections *int   `json:"connections,omitempty"`
	Uncounted   string `json:"uncounted,omitempty"`
}

// APIError is a failed operation.
type APIError struct {
	Code    string `json:"error"`
	Message string `json:"message"`
}

func (e *APIError) Error() string { return e.Code + ": " + e.Message }

func (e *APIError) status() int {
	switch e.Code {
	case protocol.CodeNotFound:
		return http.StatusNotFound
	case protocol.CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusBadRequest
}

func badRequest(format string, args ...any) *APIError {
	return &APIError{Code: protocol.CodeBadRequest, Message: fmt.Sprintf(format, args...)}
}

// Status is what a node says about itself.
type Status struct {
	Node         string           `json:"node"`
	Name         string           `json:"name"`
	Version      string           `json:"version"`
	PID          int              `json:"pid"`
	Started      time.Time        `json:"started"`
	NATS         string           `json:"nats"`
	NATSState    string           `json:"nats_state"` // connected, reconnecting, closed, ...
	EmbeddedNATS bool             `json:"embedded_nats"`
	HTTP         string           `json:"http,omitempty"`
	Listeners    []ListenerStatus `json:"listeners"`
}

// ListenerStatus is one listener in Status.
type ListenerStatus struct {
	Name     string `json:"name"`
	Protocol string `json:"protocol"`
	Address  string `json:"address"`
}

// Stats are one node's figures.
type Stats struct {
	Node        string `json:"node"`
	Connections int    `json:"connections"`
	Rooms       int    `json:"rooms"`
	NATSLost    int64  `json:"nats_lost"`
	NATS        string `json:"nats"` // the node's NATS connection state, as in Status
	Uptime      string `json:"uptime"`
}

// RoomInfo is one room of the cluster.
type RoomInfo struct {
	Room    string         `json:"room"`
	Members int            `json:"members"`
	Nodes   map[string]int `json:"nodes"` // members per node
}

// Status reports the node's identity and what it listens on.
func (n *Node) Status() Status {
	st := Status{
		Node: n.id, Name: n.Config().Node.Name, Version: n.version, PID: pid,
		Started: n.started, NATS: n.NATSURL(), NATSState: n.NATSState(), EmbeddedNATS: n.ns != nil,
		Listeners: []ListenerStatus{},
	}
	if a := n.HTTPAddr(); a != nil {
		st.HTTP = a.String()
	}
	for _, b := range n.listeners {
		if b.addr != nil {
			st.Listeners = append(st.Listeners, ListenerStatus{Name: b.cfg.Name, Protocol: b.cfg.Protocol, Address: b.addr.String()})
		}
	}
	return st
}

// Readiness is what /readyz says: whether a load balancer should send
// clients to this node.
type Readiness struct {
	Ready     bool   `json:"ready"`
	Node      string `json:"node"`
	NATS      string `json:"nats"`      // the NATS connection's state; ready needs connected
	Listeners int    `json:"listeners"` // listeners accepting; ready needs all of them
	Stopping  bool   `json:"stopping,omitempty"`
	Draining  bool   `json:"draining,omitempty"` // tether drain, or a stop: not ready from its first moment
}

// Readiness says whether the node serves: every listener accepts, NATS is
// connected (without it the node is cut off from the cluster), and it is
// not draining or shutting down. /healthz only says the process answers.
func (n *Node) Readiness() Readiness {
	r := Readiness{Node: n.id, NATS: n.NATSState(), Stopping: n.stopping.Load(), Draining: n.drain.Load() != nil}
	for _, b := range n.listeners {
		if b.addr != nil && b.pid != nil {
			r.Listeners++
		}
	}
	r.Ready = !r.Stopping && !r.Draining && r.NATS == "connected" && r.Listeners == len(n.listeners)
	return r
}

// apiTimeout bounds one operation.
const apiTimeout = 5 * time.Second

// gatherWindow is how long a cluster-wide listing waits for nodes that
// have not answered yet.
const gatherWindow = time.Second

// Call runs one admin operation.
func (n *Node) Call(ctx context.Context, op string, req *APIRequest) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	switch op {
	case "push":
		res, err := n.push(ctx, req)
		if err != nil || !req.Count {
			return res, err
		}
		reply := &PushReply{OK: true}
		if count, err := n.addressed(ctx, req); err != nil {
			reply.Uncounted = err.Error()
		} else {
			reply.Connections = &count
		}
		return reply, nil
	case "kick":
		return n.onConn(ctx, req, cluster.KindKick, func(e *conn.Entry) {
			n.system.Root.Send(e.PID, &conn.Close{Reason: conn.ReasonKicked})
		})
	case "bind":
		if err := protocol.CheckUser(req.User); err != nil {
			return nil, badRequest("%v", err)
		}
		return n.onConn(ctx, req, cluster.KindBind, func(*conn.Entry) { n.registry.Bind(req.Conn, req.User) })
	case "info":
		return n.info(ctx, req.Conn)
	case "conns":
		if err := protocol.CheckUser(req.User); err != nil {
			return nil, badRequest("%v", err)
		}
		return n.userConnsOfCluster(ctx, req.User)
	case "members":
		if err := protocol.CheckRoom(req.Room); err != nil {
			return nil, badRequest("%v", err)
		}
		res, err := n.system.Root.RequestFuture(n.rooms, &room.Members{Room: req.Room, Admin: true}, apiTimeout).Result()
		if err != nil {
			return nil, &APIError{Code: protocol.CodeUnavailable, Message: err.Error()}
		}
		if r := res.(*room.MembersReply); r.Err != "" {
			return nil, &APIError{Code: r.Err, Message: "the cluster could not be asked"}
		}
		return res.(*room.MembersReply).Members, nil
	case "room":
		if err := protocol.CheckRoom(req.Room); err != nil {
			return nil, badRequest("%v", err)
		}
		return n.roomOfCluster(ctx, req.Room)
	case "rooms":
		return n.roomsOfCluster(ctx)
	case "nodes":
		res, err := n.system.Root.RequestFuture(n.bridge.Load(), &cluster.Nodes{}, apiTimeout).Result()
		if err != nil {
			return nil, &APIError{Code: protocol.CodeUnavailable, Message: err.Error()}
		}
		return res, nil
	case "stats":
		return n.statsOfCluster(ctx)
	case "status":
		return n.Status(), nil
	}
	return nil, &APIError{Code: protocol.CodeUnknownOp, Message: "unknown operation " + op}
}

// push delivers data, as a message event from the server (empty from),
// to a connection, a user's connections, a room, or everyone.
func (n *Node) push(ctx context.Context, req *APIRequest) (any, error) {
	if req.Data == nil {
		return nil, badRequest("push needs data")
	}
	if !utf8.Valid(req.Data) {
		// A browser drops a WebSocket whose text frame is not UTF-8.
		return nil, badRequest("data is not valid UTF-8")
	}
	payload := protocol.Encode(&protocol.Message{Op: "message", Room: req.Room, Data: req.Data, Time: time.Now().UTC()})
	d := &conn.Deliver{Payload: payload}
	switch {
	case req.Conn != "":
		if err := protocol.CheckConn(req.Conn); err != nil {
			return nil, badRequest("%v", err)
		}
		if e := n.registry.Get(req.Conn); e != nil {
			n.system.Root.Send(e.PID, d)
			return ok, nil
		}
		if protocol.NodeOf(req.Conn) == n.id {
			return nil, connNotFound(req.Conn)
		}
		return ok, n.remoteConn(req.Conn, n.bus.Deliver(ctx, cluster.Admin, req.Conn, payload))
	case req.User != "":
		if err := protocol.CheckUser(req.User); err != nil {
			return nil, badRequest("%v", err)
		}
		for _, e := range n.registry.User(req.User) {
			n.system.Root.Send(e.PID, d)
		}
		return ok, n.published(n.bus.Publish(n.bus.Msg(n.bus.Subjects.User(req.User), cluster.KindDeliver, payload)))
	case req.Room != "":
		if err := protocol.CheckRoom(req.Room); err != nil {
			return nil, badRequest("%v", err)
		}
		if n.history.Has(req.Room) {
			// Into the room's stream: every node with members delivers it
			// from there, with its offset, and keeps it in the history.
			return ok, n.remote(n.history.Store(ctx, req.Room, payload))
		}
		res, err := n.system.Root.RequestFuture(n.rooms, &room.Push{Room: req.Room, Payload: payload}, apiTimeout).Result()
		if err != nil {
			return nil, &APIError{Code: protocol.CodeUnavailable, Message: err.Error()}
		}
		if code := res.(*room.PushReply).Err; code != "" {
			return nil, &APIError{Code: code, Message: "room " + req.Room + " has too many messages waiting; retry later"}
		}
		return ok, n.published(n.bus.PublishRoom(req.Room, &room.Remote{Kind: room.KindMessage, Body: payload}))
	case req.All:
		n.registry.Each(func(_ string, e *conn.Entry) { n.system.Root.Send(e.PID, d) })
		return ok, n.published(n.bus.Publish(n.bus.Msg(n.bus.Subjects.All(), cluster.KindDeliver, payload)))
	}
	return nil, badRequest("push needs conn, user, room or all")
}

// addressed counts the connections of the cluster a push was addressed
// to.
func (n *Node) addressed(ctx context.Context, req *APIRequest) (int, error) {
	switch {
	case req.Conn != "":
		return 1, nil // its node took it
	case req.Room != "":
		replies, err := n.bus.Gather(ctx, "rooms", n.alivePeers(), gatherWindow)
		count := n.localRooms()[req.Room]
		for _, body := range replies {
			var nr nodeRooms
			if json.Unmarshal(body, &nr) == nil {
				count += nr.Rooms[req.Room]
			}
		}
		return count, err
	case req.User != "":
		replies, err := n.bus.Gather(ctx, userGather+req.User, n.alivePeers(), gatherWindow)
		count := len(n.registry.User(req.User))
		for _, body := range replies {
			var c int
			if json.Unmarshal(body, &c) == nil {
				count += c
			}
		}
		return count, err
	}
	replies, err := n.bus.Gather(ctx, "stats", n.alivePeers(), gatherWindow)
	count := n.registry.Len()
	for _, body := range replies {
		var s Stats
		if json.Unmarshal(body, &s) == nil {
			count += s.Connections
		}
	}
	return count, err
}

// published reports a failed publication: this node's connections got
// the push, the other nodes' did not.
func (n *Node) published(err error) error {
	if err != nil {
		return &APIError{Code: protocol.CodeUnavailable, Message: "delivered on this node only: " + err.Error()}
	}
	return nil
}

var ok = map[string]bool{"ok": true}

// onConn runs local on a connection of this node, or asks its node.
func (n *Node) onConn(ctx context.Context, req *APIRequest, kind string, local func(*conn.Entry)) (any, error) {
	if err := protocol.CheckConn(req.Conn); err != nil {
		return nil, badRequest("%v", err)
	}
	if e := n.registry.Get(req.Conn); e != nil {
		local(e)
		return ok, nil
	}
	if protocol.NodeOf(req.Conn) == n.id {
		// Not asked over NATS: the bus does not hear its own requests,
		// and NATS would answer that no node holds the subject.
		return nil, connNotFound(req.Conn)
	}
	m := n.bus.Msg(n.bus.Subjects.Node(protocol.NodeOf(req.Conn)), kind, nil)
	m.Header.Set(cluster.HeaderConn, req.Conn)
	m.Header.Set(cluster.HeaderUser, req.User)
	_, err := n.bus.Request(ctx, cluster.Admin, m)
	return ok, n.remoteConn(req.Conn, err)
}

// connNotFound answers for a connection its node, alive, does not hold.
func connNotFound(id string) *APIError {
	return &APIError{Code: protocol.CodeNotFound, Message: "connection " + id + " not found: closed, or never opened (its node " + protocol.NodeOf(id) + " is alive)"}
}

// remoteConn is remote for an operation on connection id of another
// node: a refusal or silence says which of the connection and its node
// is not there.
func (n *Node) remoteConn(id string, err error) error {
	var refused *cluster.ReplyError
	switch {
	case errors.As(err, &refused) && refused.Code == protocol.CodeNotFound:
		return connNotFound(id)
	case errors.Is(err, cluster.ErrNoNode):
		return &APIError{Code: protocol.CodeNotFound, Message: "connection " + id + ": its node " + protocol.NodeOf(id) + " is not in the cluster"}
	}
	return n.remote(err)
}

func (n *Node) info(ctx context.Context, id string) (any, error) {
	if err := protocol.CheckConn(id); err != nil {
		return nil, badRequest("%v", err)
	}
	if protocol.NodeOf(id) == n.id {
		if info, found := n.ConnInfo(id); found {
			return info, nil
		}
		return nil, connNotFound(id)
	}
	m := n.bus.Msg(n.bus.Subjects.Node(protocol.NodeOf(id)), cluster.KindInfo, nil)
	m.Header.Set(cluster.HeaderConn, id)
	body, err := n.bus.Request(ctx, cluster.Admin, m)
	if err != nil {
		return nil, n.remoteConn(id, err)
	}
	var info conn.Info
	if err := json.Unmarshal(body, &info); err != nil {
		return nil, &APIError{Code: protocol.CodeUnavailable, Message: err.Error()}
	}
	return &info, nil
}

// remote turns another node's refusal or silence into an API error.
func (n *Node) remote(err error) error {
	var refused *cluster.ReplyError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &refused):
		return &APIError{Code: refused.Code, Message: "refused by the connection's node"}
	case errors.Is(err, cluster.ErrNoNode):
		return &APIError{Code: protocol.CodeNotFound, Message: err.Error()}
	case errors.Is(err, cluster.ErrBusy):
		return &APIError{Code: protocol.CodeUnavailable, Message: err.Error()}
	}
	return &APIError{Code: protocol.CodeUnavailable, Message: err.Error()}
}

// nodeRooms is one node's answer to the rooms gather.
type nodeRooms struct {
	Node  string         `json:"node"`
	Rooms map[string]int `json:"rooms"` // room → members on the node
}

// gatherConns is the gather of a user's connections: the prefix, then
// the user id (which CheckUser keeps free of spaces).
const gatherConns = "conns "

// gather answers the other nodes' gathers (the bridge's Gatherer).
func (n *Node) gather(what string) any {
	switch what {
	case "rooms":
		return nodeRooms{Node: n.id, Rooms: n.localRooms()}
	case "stats":
		return n.stats()
	}
	if user, found := strings.CutPrefix(what, gatherConns); found {
		return n.userConns(user)
	}
	if user, found := strings.CutPrefix(what, userGather); found {
		return len(n.registry.User(user))
	}
	return nil
}

// userGather asks each node for its count of a user's connections (the
// user id follows).
const userGather = "user:"

func (n *Node) localRooms() map[string]int {
	out := map[string]int{}
	res, err := n.system.Root.RequestFuture(n.rooms, &room.List{}, apiTimeout).Result()
	if err != nil {
		return out
	}
	for _, l := range res.([]room.Local) {
		out[l.Room] = l.Members
	}
	return out
}

func (n *Node) stats() Stats {
	return Stats{
		Node: n.id, Connections: n.registry.Len(), Rooms: len(n.localRooms()),
		NATSLost: n.bus.Lost(), NATS: n.NATSState(), Uptime: time.Since(n.started).Round(time.Second).String(),
	}
}

// userConns is the info of this node's live connections bound to user.
func (n *Node) userConns(user string) []*conn.Info {
	out := []*conn.Info{}
	for _, e := range n.registry.User(user) {
		res, err := n.system.Root.RequestFuture(e.PID, &conn.InfoRequest{}, infoTimeout).Result()
		if info, ok := res.(*conn.Info); ok && err == nil { // else it closed meanwhile
			out = append(out, info)
		}
	}
	return out
}

// userConnsOfCluster is the info of a user's live connections on every
// node, oldest first.
func (n *Node) userConnsOfCluster(ctx context.Context, user string) (any, error) {
	replies, err := n.bus.Gather(ctx, gatherConns+user, n.alivePeers(), gatherWindow)
	if err != nil {
		return nil, &APIError{Code: protocol.CodeUnavailable, Message: err.Error()}
	}
	out := n.userConns(user)
	for _, body := range replies {
		var infos []*conn.Info
		if json.Unmarshal(body, &infos) == nil {
			out = append(out, infos...)
		}
	}
	slices.SortFunc(out, func(a, b *conn.Info) int { return a.Connected.Compare(b.Connected) })
	return out, nil
}

// alivePeers is how many other nodes are alive: a gather can stop once
// they have all answered.
func (n *Node) alivePeers() int {
	res, err := n.system.Root.RequestFuture(n.bridge.Load(), &cluster.Nodes{}, apiTimeout).Result()
	if err != nil {
		return 0
	}
	alive := 0
	for _, info := range res.([]cluster.NodeInfo)[1:] { // [0] is this node
		if info.Alive {
			alive++
		}
	}
	return alive
}

func (n *Node) roomsOfCluster(ctx context.Context) ([]*RoomInfo, error) {
	replies, err := n.bus.Gather(ctx, "rooms", n.alivePeers(), gatherWindow)
	if err != nil {
		return nil, &APIError{Code: protocol.CodeUnavailable, Message: err.Error()}
	}
	rooms := map[string]*RoomInfo{}
	add := func(nr nodeRooms) {
		for name, members := range nr.Rooms {
			r := rooms[name]
			if r == nil {
				r = &RoomInfo{Room: name, Nodes: map[string]int{}}
				rooms[name] = r
			}
			r.Members += members
			r.Nodes[nr.Node] = members
		}
	}
	add(nodeRooms{Node: n.id, Rooms: n.localRooms()})
	for _, body := range replies {
		var nr nodeRooms
		if json.Unmarshal(body, &nr) == nil {
			add(nr)
		}
	}
	out := make([]*RoomInfo, 0, len(rooms))
	for _, name := range slices.Sorted(maps.Keys(rooms)) {
		out = append(out, rooms[name])
	}
	return out, nil
}

// roomOfCluster is one room's size as its room actor on this node sees
// it: the nodes' members until they leave or the cluster declares their
// node dead. roomsOfCluster cannot tell that: a dead node just stops
// answering it. A room without a member here has no such view; then the
// nodes that answer say.
func (n *Node) roomOfCluster(ctx context.Context, name string) (*RoomInfo, error) {
	res, err := n.system.Root.RequestFuture(n.rooms, &room.Stats{Room: name}, apiTimeout).Result()
	if err != nil {
		return nil, &APIError{Code: protocol.CodeUnavailable, Message: err.Error()}
	}
	if s := res.(*room.StatsReply); s.Found {
		return &RoomInfo{Room: s.Room, Members: s.Members, Nodes: s.Nodes}, nil
	}
	rooms, err := n.roomsOfCluster(ctx)
	if err != nil {
		return nil, err
	}
	for _, r := range rooms {
		if r.Room == name {
			return r, nil
		}
	}
	return &RoomInfo{Room: name, Nodes: map[string]int{}}, nil
}

func (n *Node) statsOfCluster(ctx context.Context) (any, error) {
	replies, err := n.bus.Gather(ctx, "stats", n.alivePeers(), gatherWindow)
	if err != nil {
		return nil, &APIError{Code: protocol.CodeUnavailable, Message: err.Error()}
	}
	out := []Stats{n.stats()}
	for _, body := range replies {
		var s Stats
		if json.Unmarshal(body, &s) == nil {
			out = append(out, s)
		}
	}
	return out, nil
}

// infoTimeout bounds asking a connection actor for its info.
const infoTimeout = 2 * time.Second

// ConnInfo returns the info of one of this node's connections, live or
// recently closed (then with its close reason).
func (n *Node) ConnInfo(id string) (*conn.Info, bool) {
	if e := n.registry.Get(id); e != nil {
		res, err := n.system.Root.RequestFuture(e.PID, &conn.InfoRequest{}, infoTimeout).Result()
		if info, ok := res.(*conn.Info); ok && err == nil {
			return info, true
		}
		// It closed meanwhile: the registry has its final info.
	}
	return n.registry.ClosedInfo(id)
}

// apiQueue is the queue group of the NATS admin API: one node answers
// each request.
const apiQueue = "tether-api"

// serveNATSAPI answers <prefix>.api.<op> on the bus's connection.
func (n *Node) serveNATSAPI() error {
	prefix := n.Config().NATS.SubjectPrefix + ".api."
	sub, err := n.bus.Conn().QueueSubscribe(prefix+"*", apiQueue, cluster.Safe(n.log, func(m *nats.Msg) {
		op := strings.TrimPrefix(m.Subject, prefix)
		req := &APIRequest{}
		var res any
		var err error
		if len(m.Data) > 0 && json.Unmarshal(m.Data, req) != nil {
			err = badRequest("body is not a JSON request")
		} else {
			res, err = n.Call(context.Background(), op, req)
		}
		body, _ := json.Marshal(answer(res, err))
		if rerr := m.Respond(body); rerr != nil {
			n.log.Warn().Err(rerr).Str("subject", m.Subject).Msg("api reply failed")
		}
	}))
	if err != nil {
		return err
	}
	n.apiSub.Store(sub)
	return nil
}

// answer is the JSON of a result or an error.
func answer(res any, err error) any {
	if err == nil {
		return res
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return ae
	}
	return &APIError{Code: protocol.CodeUnavailable, Message: err.Error()}
}

func (n *Node) adminHandler() http.Handler {
	api := http.NewServeMux()
	handle := func(pattern, op string, fromPath func(r *http.Request, req *APIRequest)) {
		api.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			req := &APIRequest{}
			if r.Method == http.MethodPost {
				body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
				if err != nil || json.Unmarshal(body, req) != nil {
					writeJSON(w, http.StatusBadRequest, badRequest("body is not a JSON request"))
					return
				}
			}
			if fromPath != nil {
				fromPath(r, req)
			}
			res, err := n.Call(r.Context(), op, req)
			if err != nil {
				ae, _ := answer(nil, err).(*APIError)
				writeJSON(w, ae.status(), ae)
				return
			}
			writeJSON(w, http.StatusOK, res)
		})
	}
	handle("POST /api/push", "push", nil)
	handle("POST /api/kick", "kick", nil)
	handle("POST /api/bind", "bind", nil)
	handle("GET /api/conns/{conn}", "info", func(r *http.Request, req *APIRequest) { req.Conn = r.PathValue("conn") })
	handle("GET /api/users/{user}/conns", "conns", func(r *http.Request, req *APIRequest) { req.User = r.PathValue("user") })
	handle("GET /api/rooms/{room}", "room", func(r *http.Request, req *APIRequest) { req.Room = r.PathValue("room") })
	handle("GET /api/rooms/{room}/members", "members", func(r *http.Request, req *APIRequest) { req.Room = r.PathValue("room") })
	handle("GET /api/rooms", "rooms", nil)
	handle("GET /api/nodes", "nodes", nil)
	handle("GET /api/stats", "stats", nil)
	handle("GET /api/status", "status", nil)
	// Draining is this node's, not the cluster's: HTTP only (over NATS
	// any node of the queue group would answer).
	api.HandleFunc("POST /api/drain", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, n.Drain()) })
	api.HandleFunc("GET /api/drain", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, n.DrainStatus()) })

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "node": n.id})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		r := n.Readiness()
		code := http.StatusOK
		if !r.Ready {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, r)
	})
	mux.Handle("GET /metrics", n.metrics.Handler())
	mux.Handle("/api/", transport.RequireToken(n.Config().HTTP.Token, api))
	// The admin UI's files are public; its API calls carry the token.
	mux.Handle("GET /ui/", http.StripPrefix("/ui", admin.Handler()))
	if n.Config().HTTP.Pprof {
		prof := http.NewServeMux()
		prof.HandleFunc("/debug/pprof/", pprof.Index)
		prof.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		prof.HandleFunc("/debug/pprof/profile", pprof.Profile)
		prof.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		prof.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.Handle("/debug/pprof/", transport.RequireToken(n.Config().HTTP.Token, prof))
	}
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
