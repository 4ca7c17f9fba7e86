// Package relay is the application `relay`, GatewayWorker's model: the
// node keeps the connection and its liveness, and hands what happens on
// it to business workers in any language over NATS, which answer by
// pushing to the connection.
//
// Each event is a NATS message whose body is the client's frame,
// untouched (empty for connect and close); everything else is in
// headers:
//
//	Tether-Event   connect | message | close
//	Tether-Conn    the connection id
//	Tether-Node    the node holding it: answer on <prefix>.node.<node>
//	Tether-Remote  the client's address, ip:port
//	Tether-Reason  (close) the close reason
//
// # One worker per connection, in order
//
// This package's tests and test/relay_test.go guard what follows.
//
// A queue group picks a member per message, so a connection's events
// published to the group would reach different workers and be handled
// out of order. As GatewayWorker keeps a client on one BusinessWorker,
// the node binds each connection to one worker:
//
//  1. On open it sends connect as a request on <prefix>.events.<listener>,
//     where the workers subscribe in a queue group. The worker that takes
//     the connection answers with header Tether-Worker: a subject of its
//     own, subscribed without a queue group, where it takes that
//     connection's further events (relayworker uses
//     <prefix>.worker.<name>-<random>). It must be ready for them before
//     it answers: they come at once.
//  2. Every message event and the close go to that subject, published by
//     the connection's actor one after the other. NATS keeps one
//     publisher's messages to one subject in order and one subscription
//     hands them over in order, so a worker that handles its
//     subscription's messages one at a time handles each connection's
//     events in order, after its connect.
//  3. Until a worker takes the connection, its frames wait, in order, and
//     go to the worker as soon as one does. If none answers (none
//     listens, none within 2 seconds, NATS away), the node logs a warning
//     for the connection, counts it in tether_relay_unbound_total and
//     offers the connection again after 100ms, doubling up to 2s, for as
//     long as it lives. A frame past the wait's bounds (MaxWaitingFrames,
//     MaxWaitingBytes, MaxListenerWaitingBytes) is dropped, counted in
//     tether_relay_dropped_total and logged once per connection; so are
//     the frames still waiting when the connection closes. The
//     connection is not closed, so that a restart of every worker does
//     not also disconnect every client; the price is a gap in what the
//     worker gets, bounded, counted and logged. (GatewayWorker's gateway
//     closes a client it has no worker for, at once, without waiting.)
//     A worker that answers a connect after the 2 seconds is not the
//     connection's worker, and gets nothing more for it. A connection
//     that never had a worker sends no close.
//  4. A worker's end is noticed with the first event sent to it after:
//     each message event carries a reply subject of the node's,
//     <prefix>.relay.<conn>.<n> (n counts the connection's workers), and
//     when nobody subscribes to the worker's subject any more, NATS
//     itself answers there at once with a no-responders status. The node
//     counts the event in tether_relay_dropped_total and offers the
//     connection again: the next worker gets a connect for a connection
//     that was open already. Workers need not answer events; answers are
//     ignored.
//
// Point 4 costs nothing while the worker lives: no acknowledgement, no
// round trip or goroutine per event, no probe per idle connection. The
// price is at-most-once delivery, as with GatewayWorker: events a worker
// took but had not handled when it ended are lost, and so are the events
// sent to its subject between the end of its subscription and the notice
// (a round trip's worth, each counted), and its connections' closes.
// The warnings of a listener (no worker took a connection, frames
// dropped, a worker gone) each go out at most once a WarnEvery: when
// every worker restarts, thousands of connections would say the same at
// once. Each says how many of its kind were held back since the last.
//
// Acknowledging each event would make delivery at-least-once at the cost
// of a round trip per event, and a periodic probe would notice later and
// cost traffic for every idle connection. NATS answers no-responders only
// when it knows that nobody listens: on one server or a cluster of routed
// servers, not always across a supercluster's gateways, so keep the
// workers on the nodes' NATS cluster.
//
// A worker answers the client with a NATS request (or a plain publish) to
// <prefix>.node.<node> with headers Tether-Kind: deliver and Tether-Conn:
// <id>; the body is sent to the client as one frame. The reply is empty,
// or carries Tether-Reason: not_found. Kick and bind work the same way
// (Tether-Kind: kick, or bind with Tether-User), as does the admin API.
package relay

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"tether/actors/cluster"
	"tether/actors/conn"
	"tether/transport"
)

// Events of the relay.
const (
	EventConnect = "connect"
	EventMessage = "message"
	EventClose   = "close"
)

// Bounds of the frames that wait for a worker: past any of them a frame
// is dropped. A worker normally answers within a round trip, so frames
// wait long only while no worker answers; the listener's bound keeps
// what many clients can make the node hold meanwhile.
const (
	MaxWaitingFrames        = 64       // per connection
	MaxWaitingBytes         = 1 << 20  // per connection
	MaxListenerWaitingBytes = 64 << 20 // all the listener's connections together
)

// WarnEvery is the most often a listener logs a warning of one kind.
const WarnEvery = 10 * time.Second

// The wait before offering a connection again after no worker took it:
// firstRetry, doubling up to maxRetry.
const (
	firstRetry = 100 * time.Millisecond
	maxRetry   = 2 * time.Second
)

// listener is what the connections of one relay listener share.
type listener struct {
	bus     *cluster.Bus
	events  string // where workers take connects
	unbound prometheus.Counter
	dropped prometheus.Counter
	waiting atomic.Int64 // bytes of frames waiting for a worker, every connection's

	// Its warnings, by kind, at most once a WarnEvery.
	noWorkerLog, droppedLog, goneLog *transport.LogEvery
}

// hold counts n more bytes waiting, or returns false when that would go
// past MaxListenerWaitingBytes.
func (l *listener) hold(n int) bool {
	if l.waiting.Add(int64(n)) > MaxListenerWaitingBytes {
		l.waiting.Add(-int64(n))
		return false
	}
	return true
}

// App is the relay of one connection.
type App struct {
	l      *listener
	remote string

	worker       string        // the subject of the connection's worker; "" while it has none
	binding      int           // how many workers the connection has had: the end of its reply subject
	offer        chan *offered // the connect in flight; nil when none is
	retry        *time.Timer   // the next connect, while waiting after no worker took the last
	backoff      time.Duration // that wait
	waiting      [][]byte      // frames waiting for a worker, in order
	waitingBytes int
	warned       bool // the lack of a worker is logged, and not yet its end
	dropping     bool // a dropped frame of the connection is logged
}

// offered is the answer to a connect: the subject of the worker that took
// the connection, or why none did.
type offered struct {
	worker string
	err    error
}

// retryConnect says that the wait after a connect no worker took is over.
type retryConnect struct{}

// Both may reach a connection that closed meanwhile.
func (*offered) IgnoreDeadLetterLogging()      {}
func (*retryConnect) IgnoreDeadLetterLogging() {}

var retryMsg = &retryConnect{}

// New returns the conn.NewApp of the relay listener name.
func New(bus *cluster.Bus, metrics *transport.Metrics, name string) conn.NewApp {
	l := &listener{
		bus: bus, events: bus.Subjects.Events(name),
		unbound:     metrics.RelayUnbound.WithLabelValues(name),
		dropped:     metrics.RelayDropped.WithLabelValues(name),
		noWorkerLog: transport.NewLogEvery(WarnEvery),
		droppedLog:  transport.NewLogEvery(WarnEvery),
		goneLog:     transport.NewLogEvery(WarnEvery),
	}
	return func(c *conn.Actor) conn.App {
		return &App{l: l, remote: c.RemoteAddr()}
	}
}

// event builds one of the connection's events.
func (a *App) event(c *conn.Actor, subject, event string, body []byte) *nats.Msg {
	m := a.l.bus.Msg(subject, event, body)
	m.Header.Set(cluster.HeaderEvent, event)
	m.Header.Set(cluster.HeaderConn, c.ID())
	m.Header.Set(cluster.HeaderRemote, a.remote)
	return m
}

// Opened offers the connection to the workers.
func (a *App) Opened(c *conn.Actor) { a.connect(c) }

// connect sends connect as a request to the workers, off the actor: the
// answer comes back as a message. It is left in a.offer too, for Closed.
func (a *App) connect(c *conn.Actor) {
	m := a.event(c, a.l.events, EventConnect, nil)
	offer := make(chan *offered, 1)
	a.offer = offer
	system, self, bus := c.Context().ActorSystem(), c.Context().Self(), a.l.bus
	done := func(o *offered) {
		offer <- o
		system.Root.Send(self, o)
	}
	cluster.Go(func() {
		worker, err := bus.Offer(context.Background(), m)
		done(&offered{worker: worker, err: err})
	}, func(v any) { done(&offered{err: fmt.Errorf("panic: %v", v)}) })
}

// Frame sends the client's frame, as it is, to the connection's worker;
// while it has none, the frame waits.
func (a *App) Frame(c *conn.Actor, data []byte) {
	if a.worker != "" {
		a.send(c, data)
		return
	}
	if len(a.waiting) >= MaxWaitingFrames || a.waitingBytes+len(data) > MaxWaitingBytes || !a.l.hold(len(data)) {
		a.l.dropped.Inc()
		if !a.dropping {
			if held, ok := a.l.droppedLog.Allow(); ok {
				a.dropping = true
				c.Log().Warn().Int("waiting", len(a.waiting)).Int("waiting_bytes", a.waitingBytes).Int("held_back", held).
					Msg("relay frames dropped: too many wait for a worker (logged once per connection)")
			}
		}
		return
	}
	a.waiting = append(a.waiting, bytes.Clone(data))
	a.waitingBytes += len(data)
}

// send publishes a message event to the connection's worker, with the
// reply subject where NATS says so if the worker is gone. nats.go copies
// the body before Publish returns.
func (a *App) send(c *conn.Actor, body []byte) {
	m := a.event(c, a.worker, EventMessage, body)
	m.Reply = a.l.bus.Subjects.Relay(c.ID(), a.binding)
	a.l.bus.Publish(m)
}

// Limited drops a message past the listener's rate limit: the relay
// protocol has no error reply; tether_rate_limited_total counts it.
func (a *App) Limited(*conn.Actor, []byte) {}

// Receive takes the answer to a connect, the end of the wait before the
// next, and NATS's notice that the worker is gone. Workers reach the
// connection through the cluster bridge, which hands it Deliver and
// Close.
func (a *App) Receive(c *conn.Actor, msg any) {
	switch m := msg.(type) {
	case *offered:
		a.offer = nil
		if m.err != nil {
			a.unbound(c, m.err)
			return
		}
		a.bind(c, m.worker)
	case *retryConnect:
		a.retry = nil
		a.connect(c)
	case *cluster.WorkerGone:
		a.l.dropped.Inc()
		if m.Binding == a.binding && a.worker != "" { // not about an earlier worker
			if held, ok := a.l.goneLog.Allow(); ok {
				c.Log().Warn().Str("worker", a.worker).Int("held_back", held).Msg("relay worker gone: offering the connection again")
			}
			a.worker = ""
			a.connect(c)
		}
	}
}

// bind makes worker the connection's worker and sends it the frames
// that waited.
func (a *App) bind(c *conn.Actor, worker string) {
	a.worker, a.backoff = worker, 0
	a.binding++
	if a.warned {
		a.warned = false
		c.Log().Info().Str("worker", worker).Int("waited", len(a.waiting)).Msg("relay connection has a worker")
	}
	for _, f := range a.waiting {
		a.send(c, f)
	}
	a.release()
}

// unbound counts and logs a connect no worker took, and offers the
// connection again after the backoff.
func (a *App) unbound(c *conn.Actor, err error) {
	a.l.unbound.Inc()
	if !a.warned {
		if held, ok := a.l.noWorkerLog.Allow(); ok {
			a.warned = true
			c.Log().Warn().Err(err).Int("waiting", len(a.waiting)).Int("held_back", held).
				Msg("no relay worker took the connection: its frames wait, and it is offered again until one does")
		}
	}
	a.backoff = min(max(2*a.backoff, firstRetry), maxRetry)
	system, self := c.Context().ActorSystem(), c.Context().Self()
	a.retry = time.AfterFunc(a.backoff, func() { system.Root.Send(self, retryMsg) })
}

// release lets go of the waiting frames.
func (a *App) release() {
	a.l.waiting.Add(-int64(a.waitingBytes))
	a.waiting, a.waitingBytes = nil, 0
}

// Closing sends nothing: relay clients speak their own protocol, and the
// workers learn the reason from the close event.
func (a *App) Closing(*conn.Actor, conn.Reason) {}

// Closed sends close, with the reason, to the connection's worker. With
// the connect still out, the worker that answers it gets the waiting
// frames first; without a worker the frames are dropped, counted and
// logged (a client that connects, sends and closes at once, with no
// worker, would otherwise leave no trace in the log).
func (a *App) Closed(c *conn.Actor, reason conn.Reason) {
	if a.retry != nil {
		a.retry.Stop()
	}
	switch {
	case a.worker != "":
		a.close(c, reason)
	case a.offer != nil:
		// The actor is done with a: this goroutine takes it over.
		offer, log := a.offer, c.Log()
		cluster.Go(func() {
			if o := <-offer; o.err == nil {
				a.bind(c, o.worker)
				a.close(c, reason)
				return
			}
			a.drop(log, reason)
		}, func(v any) { log.Error().Str("panic", fmt.Sprint(v)).Msg("relay close panicked") })
	default:
		a.drop(c.Log(), reason)
	}
}

// close publishes the close event to the connection's worker.
func (a *App) close(c *conn.Actor, reason conn.Reason) {
	m := a.event(c, a.worker, EventClose, nil)
	m.Header.Set(cluster.HeaderReason, reason.String())
	a.l.bus.Publish(m)
}

// drop counts and logs the waiting frames of a connection that closed
// without a worker, and lets go of them.
func (a *App) drop(log *zerolog.Logger, reason conn.Reason) {
	if len(a.waiting) > 0 {
		a.l.dropped.Add(float64(len(a.waiting)))
		if held, ok := a.l.droppedLog.Allow(); ok {
			log.Warn().Int("frames", len(a.waiting)).Int("bytes", a.waitingBytes).Str("reason", reason.String()).Int("held_back", held).
				Msg("relay connection closed before a worker took it: its frames are dropped")
		}
	}
	a.release()
}

// Describe adds nothing.
func (a *App) Describe(*conn.Info) {}
