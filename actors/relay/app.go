// Package relay is the application `relay`, GatewayWorker's model: the
// node keeps the connection and its liveness, and publishes what happens
// on it to NATS for business workers in any language, which answer by
// pushing to the connection.
//
// Events go to <prefix>.events.<listener>; workers subscribe in a queue
// group, so each event reaches one worker. The body is the client's frame,
// untouched; everything else is in headers:
//
//	Tether-Event   connect | message | close
//	Tether-Conn    the connection id
//	Tether-Node    the node holding it: answer on <prefix>.node.<node>
//	Tether-Remote  the client's address, ip:port
//	Tether-Reason  (close) the close reason
//
// A worker answers with a NATS request (or a plain publish) to
// <prefix>.node.<node> with headers Tether-Kind: deliver and Tether-Conn:
// <id>; the body is sent to the client as one frame. The reply is empty,
// or carries Tether-Reason: not_found. Kick and bind work the same way
// (Tether-Kind: kick, or bind with Tether-User), as does the admin API.
package relay

import (
	"tether/actors/cluster"
	"tether/actors/conn"
)

// Events of the relay.
const (
	EventConnect = "connect"
	EventMessage = "message"
	EventClose   = "close"
)

// App is the relay of one connection.
type App struct {
	bus     *cluster.Bus
	subject string
	remote  string
}

// New returns the conn.NewApp of a listener running relay.
func New(bus *cluster.Bus, listener string) conn.NewApp {
	subject := bus.Subjects.Events(listener)
	return func(c *conn.Actor) conn.App {
		return &App{bus: bus, subject: subject, remote: c.RemoteAddr()}
	}
}

func (a *App) publish(c *conn.Actor, event string, body []byte, reason string) {
	m := a.bus.Msg(a.subject, event, body)
	m.Header.Set(cluster.HeaderEvent, event)
	m.Header.Set(cluster.HeaderConn, c.ID())
	m.Header.Set(cluster.HeaderRemote, a.remote)
	if reason != "" {
		m.Header.Set(cluster.HeaderReason, reason)
	}
	a.bus.Publish(m) // nats.go copies the body before Publish returns
}

// Opened publishes connect.
func (a *App) Opened(c *conn.Actor) { a.publish(c, EventConnect, nil, "") }

// Frame publishes the client's frame as it is.
func (a *App) Frame(c *conn.Actor, data []byte) { a.publish(c, EventMessage, data, "") }

// Receive has nothing to handle: workers reach the connection through
// the cluster bridge, which hands it Deliver and Close.
func (a *App) Receive(*conn.Actor, any) {}

// Closing sends nothing: relay clients speak their own protocol, and the
// workers learn the reason from the close event.
func (a *App) Closing(*conn.Actor, conn.Reason) {}

// Closed publishes close with the reason.
func (a *App) Closed(c *conn.Actor, reason conn.Reason) {
	a.publish(c, EventClose, nil, reason.String())
}

// Describe adds nothing.
func (a *App) Describe(*conn.Info) {}
