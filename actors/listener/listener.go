// Package listener is the listener actor: one per configured listener. It
// adopts accepted sockets (from its TCP accept loop, or from the WebSocket
// upgrade handler), enforces the connection limits, spawns one connection
// actor per socket as its child, and supervises them.
package listener

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"tether/actors/conn"
	"tether/config"
	"tether/transport"
)

// Accepted hands the listener a socket to adopt. Preread holds bytes read
// past a WebSocket upgrade request (the start of the stream).
type Accepted struct {
	Conn    net.Conn
	Preread []byte
}

// Drain asks the listener to stop accepting and to close every connection
// with server_shutdown. It answers the sender with Drained once the last
// one is gone.
type Drain struct{}

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
	Config   config.Listener
	Listener net.Listener // TCP: the bound socket to accept on; nil for WebSocket
	Node     string
	Seq      *atomic.Uint64 // the node's connection sequence, shared by its listeners
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

	count   int
	perIP   map[string]int
	ipOf    map[string]string // child actor id → remote IP
	drainer *actor.PID

	rejectsUnlogged int
	lastRejectLog   time.Time
}

// New prepares a listener actor.
func New(opts Options) (*Actor, error) {
	settings, err := conn.NewSettings(&opts.Config)
	if err != nil {
		return nil, err
	}
	log := opts.Log.With().Str("listener", opts.Config.Name).Logger()
	a := &Actor{
		opts: opts, cfg: opts.Config, settings: settings, log: log,
		deps: &conn.Deps{
			Node: opts.Node, Registry: opts.Registry, Budget: opts.Budget, Log: log, NewApp: opts.NewApp,
			Metrics: opts.Metrics.Listener(opts.Config.Name, opts.Config.Protocol),
		},
		perIP: map[string]int{}, ipOf: map[string]string{},
	}
	a.connProps = actor.PropsFromProducer(func() actor.Actor { return a.spawning },
		actor.WithMailbox(actor.UnboundedLockfree()))
	return a, nil
}

// Name is the listener's name.
func (a *Actor) Name() string { return a.cfg.Name }

// Receive is the listener's mailbox handler.
func (a *Actor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		if a.opts.Listener != nil {
			go a.acceptLoop(ctx.ActorSystem(), ctx.Self())
		}
	case *Accepted:
		a.adopt(ctx, m)
	case *acceptPanicked:
		a.log.Error().Str("panic", fmt.Sprint(m.v)).Msg("accept loop panicked; restarted")
		go a.acceptLoop(ctx.ActorSystem(), ctx.Self())
	case *actor.Terminated:
		a.count--
		if ip, ok := a.ipOf[m.Who.Id]; ok {
			delete(a.ipOf, m.Who.Id)
			if a.perIP[ip]--; a.perIP[ip] <= 0 {
				delete(a.perIP, ip)
			}
		}
		a.drained(ctx)
	case *Drain:
		a.drainer = ctx.Sender()
		a.closeListener()
		for _, child := range ctx.Children() {
			ctx.Send(child, &conn.Close{Reason: conn.ReasonServerShutdown})
		}
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
		a.cfg, a.settings = next, settings
		for _, child := range ctx.Children() {
			ctx.Send(child, &conn.Reload{Settings: settings})
		}
	case *actor.Stopping:
		a.closeListener()
	}
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
	backoff := 5 * time.Millisecond
	for {
		c, err := a.opts.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			a.log.Error().Err(err).Dur("retry_in", backoff).Msg("accept failed")
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		system.Root.Send(self, &Accepted{Conn: c})
	}
}

// adopt applies the limits to a new socket and spawns its connection actor.
func (a *Actor) adopt(ctx actor.Context, m *Accepted) {
	metrics := a.deps.Metrics
	metrics.Accepts.Inc()
	ip, _, _ := net.SplitHostPort(m.Conn.RemoteAddr().String())
	lim := a.cfg.Limits
	switch {
	case a.drainer != nil:
		a.reject(m.Conn, "shutting_down")
		return
	case lim.MaxConnections > 0 && a.count >= lim.MaxConnections:
		a.reject(m.Conn, "max_connections")
		return
	case lim.MaxPerIP > 0 && a.perIP[ip] >= lim.MaxPerIP:
		a.reject(m.Conn, "max_per_ip")
		return
	}
	if tcp, ok := m.Conn.(*net.TCPConn); ok {
		if err := transport.ApplySocketOptions(tcp, a.settings.Socket); err != nil {
			a.log.Warn().Err(err).Str("remote", m.Conn.RemoteAddr().String()).Msg("socket options not applied")
		}
	}
	id := a.opts.Node + "." + strconv.FormatUint(a.opts.Seq.Add(1), 10)
	c, err := conn.New(id, m.Conn, a.settings, a.deps, m.Preread)
	if err != nil {
		a.log.Error().Err(err).Msg("connection not adopted")
		_ = m.Conn.Close()
		return
	}
	a.spawning = c
	pid, err := ctx.SpawnNamed(a.connProps, id)
	a.spawning = nil
	if err != nil {
		a.log.Error().Err(err).Str("conn", id).Msg("spawn failed")
		_ = m.Conn.Close()
		return
	}
	a.count++
	a.perIP[ip]++
	a.ipOf[pid.Id] = ip
	a.log.Debug().Str("conn", id).Str("remote", m.Conn.RemoteAddr().String()).Msg("connection opened")
}

// reject closes a socket at accept. Under a flood of rejects the log gets
// one line a second with the count, not one per socket.
func (a *Actor) reject(c net.Conn, why string) {
	_ = c.Close()
	a.deps.Metrics.Rejected(why)
	a.rejectsUnlogged++
	if time.Since(a.lastRejectLog) >= time.Second {
		a.log.Warn().Str("why", why).Str("remote", c.RemoteAddr().String()).Int("rejected", a.rejectsUnlogged).
			Int("connections", a.count).Msg("connection rejected")
		a.rejectsUnlogged, a.lastRejectLog = 0, time.Now()
	}
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
	a.log.Error().Str("conn", connID(child)).Str("panic", fmt.Sprint(reason)).Str("message", fmt.Sprintf("%T", message)).
		Int("failures", failures).Msg("connection panicked")
	supervisor.ResumeChildren(child)
	if failures > panicBudget {
		system.Root.Send(child, &conn.Close{Reason: conn.ReasonPanic})
	}
}

// connID is the connection id in a child's actor id ("node/<listener>/<conn id>").
func connID(pid *actor.PID) string {
	return pid.Id[strings.LastIndexByte(pid.Id, '/')+1:]
}
