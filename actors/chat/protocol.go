package chat

import (
	"encoding/json"
	"time"
)

// Request is one client message (DESIGN.md section 5). Fields an op does
// not use are ignored.
type Request struct {
	Op     string          `json:"op"`
	ID     json.RawMessage `json:"id,omitempty"` // echoed verbatim in the reply
	Room   string          `json:"room,omitempty"`
	Name   string          `json:"name,omitempty"`
	Avatar string          `json:"avatar,omitempty"`
	To     string          `json:"to,omitempty"`
	Echo   bool            `json:"echo,omitempty"`
	Data   json.RawMessage `json:"data,omitempty"`
}

// Welcome is the first message a client gets.
type Welcome struct {
	Op        string    `json:"op"` // "welcome"
	Conn      string    `json:"conn"`
	Node      string    `json:"node"`
	Heartbeat Heartbeat `json:"heartbeat"`
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
	CodeBadRequest = "bad_request" // malformed JSON or a missing field
	CodeUnknownOp  = "unknown_op"
)

func msToInt(d time.Duration) int64 { return d.Milliseconds() }

// encode marshals a server message. The types above cannot fail to
// marshal; data fields are json.RawMessage that was valid when parsed.
func encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("chat: encode: " + err.Error())
	}
	return b
}
