// Package chat is the application `chat`: the client protocol of
// DESIGN.md section 5 on top of a connection actor.
package chat

import (
	"encoding/json"

	"tether/actors/conn"
)

// App is the chat application of one connection.
type App struct{}

// New returns the conn.NewApp of listeners running chat.
func New() conn.NewApp {
	return func(*conn.Actor) conn.App { return &App{} }
}

// Opened sends welcome with the connection id and the heartbeat rules.
func (a *App) Opened(c *conn.Actor) {
	s := c.Settings()
	c.Send(encode(&Welcome{
		Op: "welcome", Conn: c.ID(), Node: c.Node(),
		Heartbeat: Heartbeat{
			IdleTimeoutMS:        msToInt(s.IdleTimeout),
			PingIntervalMS:       msToInt(s.PingInterval),
			PingNotResponseLimit: s.PingLimit,
		},
	}))
}

// Frame handles one request. A bad request is answered with an error and
// never closes the connection.
func (a *App) Frame(c *conn.Actor, data []byte) {
	var req Request
	if err := json.Unmarshal(data, &req); err != nil {
		c.Send(encode(&Reply{Op: "error", Code: CodeBadRequest, Message: "invalid JSON: " + err.Error()}))
		return
	}
	switch req.Op {
	case "ping":
		// Always answered, id or not: clients use it as their heartbeat.
		c.Send(encode(&Reply{Op: "pong", ID: req.ID}))
	case "pong":
		// The answer to a server ping; receiving it was the point.
	case "":
		c.Send(encode(&Reply{Op: "error", ID: req.ID, Code: CodeBadRequest, Message: "missing op"}))
	default:
		c.Send(encode(&Reply{Op: "error", ID: req.ID, Code: CodeUnknownOp, Message: "unknown op " + req.Op}))
	}
}

// Receive handles messages for the application from other actors.
func (a *App) Receive(*conn.Actor, any) {}

// Closed runs when the connection has closed.
func (a *App) Closed(*conn.Actor, conn.Reason) {}

// Describe adds nothing yet: rooms and user ids come with rooms.
func (a *App) Describe(*conn.Info) {}
