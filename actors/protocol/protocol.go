// Package protocol is the chat protocol's wire format (DESIGN.md section
// 5): the JSON a client sends and every message a server sends. Each
// message is one JSON object: one WebSocket text message, or one framed
// packet on TCP.
package protocol

import (
	"encoding/json"
	"time"
)

// Request is one client message. Fields an op does not use are ignored.
type Request struct {
	Op     string          `json:"op"`
	ID     json.RawMessage `json:"id,omitempty"` // echoed verbatim in the reply
	Room   string          `json:"room,omitempty"`
	Name   string          `json:"name,omitempty"`
	Avatar string          `json:"avatar,omitempty"`
	To     string          `json:"to,omitempty"`
	Echo   bool            `json:"echo,omitempty"`
	Data   json.RawMessage `json:"data,omitempty"`
	Since  *Position       `json:"since,omitempty"` // join: resume after this position of a room with history
	Limit  int             `json:"limit,omitempty"` // history: how many of the last messages
	Token  string          `json:"token,omitempty"` // auth, refresh
}

// Position is a place in a room's history: the offset of a message, and
// the epoch of the history it belongs to (DESIGN.md section 10).
type Position struct {
	Offset uint64 `json:"offset"`
	Epoch  string `json:"epoch"`
}

// JoinOK answers the join of a room with history: the room's position
// now, and, for a join with since, whether every message after it was
// replayed before this answer (recovered), or why not.
type JoinOK struct {
	Op        string          `json:"op"` // "ok"
	ID        json.RawMessage `json:"id,omitempty"`
	Offset    uint64          `json:"offset,omitempty"`
	Epoch     string          `json:"epoch,omitempty"`
	Recovered *bool           `json:"recovered,omitempty"`
	Reason    string          `json:"reason,omitempty"` // epoch_changed, too_old, no_history
}

// Why a join with since did not recover.
const (
	ReasonEpochChanged = "epoch_changed" // the history was lost or reset since
	ReasonTooOld       = "too_old"       // messages after since are no longer kept
	ReasonNoHistory    = "no_history"    // the room keeps no history
)

// History answers the history request: the room's last messages, oldest
// first, each as its message event, and the room's position.
type History struct {
	Op       string            `json:"op"` // "history"
	ID       json.RawMessage   `json:"id,omitempty"`
	Room     string            `json:"room"`
	Messages []json.RawMessage `json:"messages"`
	Offset   uint64            `json:"offset"`
	Epoch    string            `json:"epoch"`
}

// Gap tells a member that the node missed some of a room's messages and
// could not get them back (NATS lost them): the member should join again
// with since, where the room has history.
type Gap struct {
	Op   string `json:"op"` // "gap"
	Room string `json:"room"`
}

// Welcome is the first message a client gets.
type Welcome struct {
	Op        string    `json:"op"` // "welcome"
	Conn      string    `json:"conn"`
	Node      string    `json:"node"`
	Heartbeat Heartbeat `json:"heartbeat"`
	// Auth is set when the listener authenticates its clients: "token"
	// or "proxy". Until the auth request is answered ok, the connection
	// may only auth and ping.
	Auth string `json:"auth,omitempty"`
}

// AuthOK answers auth and refresh: who the connection is now, and when
// that ends (Unix seconds; 0: never) unless refreshed.
type AuthOK struct {
	Op      string          `json:"op"` // "ok"
	ID      json.RawMessage `json:"id,omitempty"`
	User    string          `json:"user"`
	Name    string          `json:"name,omitempty"`
	Avatar  string          `json:"avatar,omitempty"`
	Expires int64           `json:"expires,omitempty"`
}

// Heartbeat tells the client the liveness rules in force, in milliseconds,
// so that it can send its own heartbeats in time.
type Heartbeat struct {
	IdleTimeoutMS        int64 `json:"idle_timeout_ms"`
	PingIntervalMS       int64 `json:"ping_interval_ms"`
	PingNotResponseLimit int   `json:"ping_not_response_limit"`
}

// Reply answers a request: pong, ok, or error.
type Reply struct {
	Op      string          `json:"op"`
	ID      json.RawMessage `json:"id,omitempty"`
	Code    string          `json:"code,omitempty"`
	Message string          `json:"message,omitempty"`
}

// Error codes of the error reply.
const (
	CodeBadRequest   = "bad_request"    // malformed JSON, a missing or invalid field
	CodeUnknownOp    = "unknown_op"     // an op the server does not know
	CodeNotInRoom    = "not_in_room"    // send or leave in a room the connection is not in
	CodeTooManyRooms = "too_many_rooms" // rooms.max_per_connection reached
	CodeNotFound     = "not_found"      // whisper to a connection that does not exist
	CodeUnavailable  = "unavailable"    // the cluster could not be asked (NATS away)
	CodeBusy         = "busy"           // too many of the connection's requests are in flight; retry later
	CodeForbidden    = "forbidden"      // the room's namespace or the token does not allow it (join, publish, presence)
	CodeUnauthorized = "unauthorized"   // not authenticated, or a token or backend refused it; the connection closes
	CodeRateLimited  = "rate_limited"   // past limits.messages_per_second; the message was dropped
)

// Member is one member of a room.
type Member struct {
	Conn   string `json:"conn"`
	Name   string `json:"name"`
	Avatar string `json:"avatar,omitempty"`
	Node   string `json:"node,omitempty"`
}

// Joined tells a room's members that someone joined.
type Joined struct {
	Op     string `json:"op"` // "joined"
	Room   string `json:"room"`
	Conn   string `json:"conn"`
	Name   string `json:"name"`
	Avatar string `json:"avatar,omitempty"`
}

// Left tells a room's members that someone left, and why: "left" for a
// leave, "node_down" when the member's node died, otherwise the close
// reason of the member's connection ("client_closed", "idle", ...).
type Left struct {
	Op     string `json:"op"` // "left"
	Room   string `json:"room"`
	Conn   string `json:"conn"`
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// Message is a room message, or a whisper (no room).
type Message struct {
	Op     string          `json:"op"` // "message"
	Room   string          `json:"room,omitempty"`
	From   string          `json:"from"`
	Name   string          `json:"name"`
	Avatar string          `json:"avatar,omitempty"`
	Data   json.RawMessage `json:"data"`
	Time   time.Time       `json:"time"`
}

// Members answers a members request: every member on every node.
type Members struct {
	Op      string          `json:"op"` // "members"
	ID      json.RawMessage `json:"id,omitempty"`
	Room    string          `json:"room"`
	Members []Member        `json:"members"`
}

// Presence is the periodic diff a large room sends instead of one joined
// or left per member (Phoenix Presence's way). Joined and Left list at
// most PresenceMaxEntries members each; the counts are always whole, and
// Truncated says that a list was cut (fetch members for the full list).
// Without the cap a join storm would cost every member the whole storm:
// O(N^2) bytes for a room of N.
type Presence struct {
	Op          string   `json:"op"` // "presence"
	Room        string   `json:"room"`
	Joined      []Member `json:"joined"`
	Left        []Member `json:"left"`
	JoinedCount int      `json:"joined_count"`
	LeftCount   int      `json:"left_count"`
	Truncated   bool     `json:"truncated,omitempty"`
}

// PresenceMaxEntries caps each list of a presence diff.
const PresenceMaxEntries = 100

// Close is the last message a TCP client gets when the server closes its
// connection, saying why (WebSocket clients get the close frame instead).
// A node that drains (server_shutdown) adds its reconnect hint: RetryMS,
// how long to wait before coming back, and URLs, the other nodes' public
// addresses of the same listener, to try first. On WebSocket the same
// JSON is the close frame's reason (1012), without URLs when they would
// not fit in its 123 bytes: then this message comes first, as the last
// text message.
type Close struct {
	Op      string   `json:"op"` // "close"
	Reason  string   `json:"reason"`
	RetryMS *int64   `json:"retry_ms,omitempty"`
	URLs    []string `json:"urls,omitempty"`
}

// Encode marshals a server message. The types above cannot fail to
// marshal: their data fields are json.RawMessage that was valid when
// parsed.
func Encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("protocol: encode: " + err.Error())
	}
	return b
}
