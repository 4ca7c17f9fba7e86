// Package listener is the listener actor: one per configured listener. It
// adopts accepted sockets (from its TCP accept loop, or from the WebSocket
// upgrade handler), enforces the connection limits, spawns one connection
// actor per socket as its child, and supervises them.
package listener

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"tether/actors/conn"
	"tether/actors/protocol"
	"tether/config"
	"tether/transport"
)

// accepted hands the listener an admitted socket to adopt (Hand sends it).
type accepted struct{ *transport.Accepted }

// Drain asks the listener to stop accepting and to close every connection
// with server_shutdown (and the reconnect hint Hint makes for each, when
// set). It answers the sender with Drained once the last one is gone.
type Drain struct{ Hint func() *conn.Hint }

// CloseBatch asks the listener to close up to Max of its connections not
// told yet (all of them when Max < 0) with server_shutdown and a hint
// each from Hint (nil: none). It answers Batched.
type CloseBatch struct {
	Max  int
	Hint func() *conn.Hint
}

// Batched answers CloseBatch: how many connections it told to go, and
// how many are left untold.
type Batched struct{ Closed, Left int }

// Drained answers Drain.
type Drained struct{ Listener string }

// Reload gives the listener its new configuration; heartbeat settings and
// limits reach live connections, framing and addresses do not change.
type Reload struct{ Config config.Listener }

// acceptPanicked reports a panic of the accept loop, which the actor
// restarts.
type acceptPanicked struct{ v any }

// Options build a listener actor.
type Options struct {
	System   *actor.ActorSystem
	Config   config.Listener
	Listener net.Listener // TCP: the bound socket to accept on; nil for WebSocket
	// TLS, on a TCP listener, makes its sockets TLS: each is handshaken
	// off the accept loop, then bridged (transport.HandshakeTLS).
	TLS      *tls.Config
	Sockets  *transport.NodeSockets
	Node     string
	Registry *conn.Registry
	Budget   *conn.Budget
	Metrics  *transport.Metrics
	Log      zerolog.Logger
	NewApp   conn.NewApp
}

// The panic budget of one connection: up to panicBudget panics within
// panicWindow are each resumed (the bad message is skipped); one more
// closes the connection with reason panic.
const (
	panicBudget = 3
	panicWindow = time.Minute
)

// Actor is a listener.
type Actor struct {
	opts     Options
	cfg      config.Listener
	settings *conn.Settings
	deps     *conn.Deps
	log      zerolog.Logger

	// connProps is one Props for every connection: protoactor calls the
	// producer synchronously inside SpawnNamed, so it hands over the actor
	// in spawning. One Props per listener instead of one per socket, and
	// the lock-free mailbox (an empty queue is one small node, not a ring
	// of ten slots), are what keep an idle connection within its memory
	// budget. Connections are never restarted, so the producer is never
	// called again.
	connProps *actor.Props
	spawning  *conn.Actor

	admission *transport.Admission
	inbox     *inbox
	count     int                 // connection actors alive
	told      map[string]struct{} // connections told to go by a batch (actor ids), until they stop
	drainer   *actor.PID
	stopping  bool

	// handshakes is the context of the TLS handshakes in progress,
	// cancelled once the listener drains or stops.
	handshakes     context.Context
	stopHandshakes context.CancelFunc
}

// inbox keeps the sockets handed to the listener actor until it adopts
// them: a listener that stops while some are on their way closes them, so
// no socket is lost in a stopped actor's mailbox (protoactor drops the
// messages queued for an actor once it has stopped).
type inbox struct {
	mu      sync.Mutex
	closed  bool
	pending map[*accepted]struct{}
}

// New prepares a listener actor.
func New(opts Options) (*Actor, error) {
	settings, err := conn.NewSettings(&opts.Config)
	if err != nil {
		return nil, err
	}
	log := opts.Log.With().Str("listener", opts.Config.Name).Logger()
	metrics := opts.Metrics.Listener(opts.Config.Name, opts.Config.Protocol)
	a := &Actor{
		opts: opts, cfg: opts.Config, settings: settings, log: log,
		deps: &conn.Deps{
			System: opts.System, Node: opts.Node, Registry: opts.Registry, Budget: opts.Budget, Log: log, NewApp: opts.NewApp,
			Metrics: metrics,
		},
		admission: transport.NewAdmission(opts.Sockets, opts.Config.Limits, metrics, log),
		inbox:     &inbox{pending: map[*accepted]struct{}{}},
		told:      map[string]struct{}{},
	}
	a.handshakes, a.stopHandshakes = context.WithCancel(context.Background())
	a.connProps = conn.Props(func() actor.Actor { return a.spawning })
	return a, nil
}

// Name is the listener's name.
func (a *Actor) Name() string { return a.cfg.Name }

// Admission admits the listener's sockets at accept; the WebSocket server
// of a websocket listener uses it.
func (a *Actor) Admission() *transport.Admission { return a.admission }

// Hand gives the listener actor pid (this listener's) an admitted socket
// to adopt. It may be called from any goroutine; once the listener has
// stopped, the socket is closed here instead.
func (a *Actor) Hand(system *actor.ActorSystem, pid *actor.PID, s *transport.Accepted) {
	in := a.inbox
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		s.Close()
		return
	}
	m := &accepted{s}
	in.pending[m] = struct{}{}
	system.Root.Send(pid, m)
}

// take removes m from the inbox; false means the stopping listener
// closed it already.
func (in *inbox) take(m *accepted) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	_, ok := in.pending[m]
	delete(in.pending, m)
	return ok
}

// close closes every socket still on its way, and those handed later.
func (in *inbox) close() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.closed = true
	for m := range in.pending {
		m.Close()
	}
	clear(in.pending)
}

// Receive is the listener's mailbox handler.
func (a *Actor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		if a.opts.Listener != nil {
			go a.acceptLoop(ctx.ActorSystem(), ctx.Self())
		}
	case *accepted:
		if a.inbox.take(m) {
			a.adopt(ctx, m.Accepted)
		}
	case *acceptPanicked:
		a.log.Error().Str("panic", fmt.Sprint(m.v)).Msg("accept loop panicked; restarted")
		go a.acceptLoop(ctx.ActorSystem(), ctx.Self())
	case *actor.Terminated:
		a.count--
		delete(a.told, m.Who.Id)
		a.drained(ctx)
	case *CloseBatch:
		closed := a.closeUntold(ctx, m.Max, m.Hint)
		ctx.Respond(&Batched{Closed: closed, Left: a.count - len(a.told)})
	case *Drain:
		a.drainer = ctx.Sender()
		a.admission.Close()
		a.closeListener()
		a.stopHandshakes()
		a.closeUntold(ctx, -1, m.Hint)
		a.drained(ctx)
	case *Reload:
		// Heartbeat and limits change live; framing, socket options and
		// the address stay as they started.
		next := a.cfg
		next.Heartbeat, next.Limits = m.Config.Heartbeat, m.Config.Limits
		settings, err := conn.NewSettings(&next)
		if err != nil {
			a.log.Error().Err(err).Msg("reload rejected")
			return
		}
		a.cfg, a.settings = next, a.settings.Reloaded(settings)
		a.admission.SetLimits(next.Limits)
		for _, child := range ctx.Children() {
			ctx.Send(child, &conn.Reload{Settings: a.settings})
		}
	case *actor.Stopping:
		a.stopping = true
		a.admission.Close()
		a.closeListener()
		a.stopHandshakes()
	case *actor.Stopped:
		a.inbox.close()
	}
}

// closeUntold closes up to most connections (all when most < 0) that no
// batch told to go yet, each with server_shutdown and a hint from hint,
// and returns how many it told.
func (a *Actor) closeUntold(ctx actor.Context, most int, hint func() *conn.Hint) int {
	closed := 0
	for _, child := range ctx.Children() {
		if most >= 0 && closed >= most {
			break
		}
		if _, done := a.told[child.Id]; done {
			continue
		}
		a.told[child.Id] = struct{}{}
		m := &conn.Close{Reason: conn.ReasonServerShutdown}
		if hint != nil {
			m.Hint = hint()
		}
		ctx.Send(child, m)
		closed++
	}
	return closed
}

func (a *Actor) drained(ctx actor.Context) {
	if a.drainer != nil && a.count == 0 {
		ctx.Send(a.drainer, &Drained{Listener: a.cfg.Name})
		a.drainer = nil
	}
}

func (a *Actor) closeListener() {
	if a.opts.Listener != nil {
		_ = a.opts.Listener.Close()
	}
}

// acceptLoop accepts until the listener is closed. Running out of file
// descriptors is not fatal: it backs off and tries again, as net/http does.
// A panic restarts the loop through the actor (acceptPanicked).
func (a *Actor) acceptLoop(system *actor.ActorSystem, self *actor.PID) {
	defer func() {
		if v := recover(); v != nil {
			system.Root.Send(self, &acceptPanicked{v: v})
		}
	}()
	_ = a.admission.Serve(a.opts.Listener, a.log, func(c net.Conn, t transport.Ticket) {
		s := &transport.Accepted{Conn: c, Ticket: t}
		goOn := func() {
			if a.opts.TLS != nil {
				go a.handshake(system, self, s)
			} else {
				a.Hand(system, self, s)
			}
		}
		// At the node's accept rate: now, or from the gate once the
		// socket's turn comes.
		if a.admission.Pace(c.RemoteAddr(), s.Close, goOn) {
			goOn()
		}
	})
}

// tlsHandshakeTimeout bounds the TLS handshake of a TCP listener's
// socket. TCP listeners have no handshake_timeout key (it bounds the
// WebSocket upgrade): this is a fixed 10s, the default of that key. The
// authentication that may follow has its own timeout (auth.timeout).
const tlsHandshakeTimeout = 10 * time.Second

// handshake runs a TLS socket's handshake, in a goroutine of its own so
// that a slow client holds up no one, and hands the bridged socket to the
// listener. A failed handshake (a client that does not trust the
// certificate, a scanner) is logged at debug level only.
func (a *Actor) handshake(system *actor.ActorSystem, self *actor.PID, s *transport.Accepted) {
	ctx, cancel := context.WithTimeout(a.handshakes, tlsHandshakeTimeout)
	defer cancel()
	if err := transport.HandshakeTLS(ctx, s, a.opts.TLS); err != nil {
		a.log.Debug().Err(err).Str("remote", s.Conn.RemoteAddr().String()).Msg("tls handshake failed")
		s.Close()
		return
	}
	a.Hand(system, self, s)
}

// adopt spawns the connection actor of an admitted socket.
func (a *Actor) adopt(ctx actor.Context, s *transport.Accepted) {
	// A drain or a stop refuses at the admission first (Close), so this
	// also covers them.
	if why := a.admission.Refusing(); why != "" {
		s.Close() // admitted just before the drain began
		a.deps.Metrics.Rejected(why)
		return
	}
	if tcp := s.TCP(); tcp != nil {
		if err := transport.ApplySocketOptions(tcp, a.settings.Socket); err != nil {
			a.log.Warn().Err(err).Str("remote", s.Conn.RemoteAddr().String()).Msg("socket options not applied")
		}
	}
	id := protocol.NewConnID(a.opts.Node)
	c, err := conn.New(id, s, a.settings, a.deps)
	if err != nil {
		a.log.Error().Err(err).Msg("connection not adopted")
		s.Close()
		return
	}
	a.spawning = c
	// Named by the id's random part alone: the actor id is the process
	// registry's key, and every byte of it is kept per connection.
	_, err = ctx.SpawnNamed(a.connProps, id[len(a.opts.Node)+1:])
	a.spawning = nil
	if err != nil {
		a.log.Error().Err(err).Str("conn", id).Msg("spawn failed")
		c.Socket().Close() // the socket owns the descriptor and the ticket now
		return
	}
	a.count++
	a.log.Debug().Str("conn", id).Str("remote", c.RemoteAddr()).Msg("connection opened")
}

// HandleFailure is the supervision strategy of the listener's connections
// (protoactor calls it on the listener, which is the parent): a panic
// while handling one message of one connection is logged with the
// connection id and resumed, so the bad message is skipped and nothing
// else is touched; past the budget, that connection is closed with reason
// panic. No other connection notices either way.
func (a *Actor) HandleFailure(system *actor.ActorSystem, supervisor actor.Supervisor, child *actor.PID,
	rs *actor.RestartStatistics, reason any, message any) {
	rs.Fail()
	failures := rs.NumberOfFailures(panicWindow)
	a.deps.Metrics.Panics.Inc()
	a.log.Error().Str("conn", a.connID(child)).Str("panic", fmt.Sprint(reason)).Str("message", fmt.Sprintf("%T", message)).
		Int("failures", failures).Msg("connection panicked")
	supervisor.ResumeChildren(child)
	if failures > panicBudget {
		system.Root.Send(child, &conn.Close{Reason: conn.ReasonPanic})
	}
}

// connID is the connection id of a child, whose actor id ends in
// "/<the id's part after the node>".
func (a *Actor) connID(pid *actor.PID) string {
	return a.opts.Node + "." + pid.Id[strings.LastIndexByte(pid.Id, '/')+1:]
}
