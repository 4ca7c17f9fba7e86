// Package node runs one tether node: the embedded or external NATS, the
// actor system with the root of the supervision tree, the listeners and
// the admin server. cmd/tether's `serve` is a thin wrapper around it, and
// tests start nodes in process with it.
package node

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"tether/actors/chat"
	"tether/actors/cluster"
	"tether/actors/conn"
	"tether/actors/room"
	"tether/config"
	"tether/history"
	"tether/transport"
)

// Options are what a node is built from.
type Options struct {
	// Config is the validated configuration.
	Config *config.Config
	// Log receives every line the node writes, the actor system's and the
	// embedded NATS server's included.
	Log zerolog.Logger
	// Version is reported by the status API.
	Version string
	// WrapApp, when set, wraps the application of every listener: tests
	// use it to make handling misbehave (panic) on demand.
	WrapApp func(listener string, app conn.NewApp) conn.NewApp
}

// Node is one running tether process.
type Node struct {
	id      string
	version string
	started time.Time
	log     zerolog.Logger

	mu  sync.Mutex // guards cfg against Reload
	cfg *config.Config

	ns        *server.Server // the embedded server, nil with an external URL
	natsURL   string
	natsAuth  []nats.Option // credentials and TLS, fixed at start as the embedded server's are
	system    *actor.ActorSystem
	root      *actor.PID                           // the node actor, root of the supervision tree
	admin     atomic.Pointer[transport.HTTPServer] // its handlers run before Start has stored it
	adminCert *transport.Certificate               // with http.tls; Reload reads it again
	apiSub    atomic.Pointer[nats.Subscription]
	metrics   *transport.Metrics
	registry  *conn.Registry
	listeners []*boundListener
	gate      *transport.AcceptGate // node.accepts_per_second
	chat      *chat.Deps
	bus       *cluster.Bus
	history   *history.Store
	bridge    atomic.Pointer[actor.PID] // read by the NATS reconnect handler
	rooms     *actor.PID

	stopping  atomic.Bool // set once Shutdown starts: NATS closing is ours then
	drain     atomic.Pointer[drainState]
	drainOnce sync.Once
	stopOnce  sync.Once
	stopErr   error
}

// Start builds a node and starts it: NATS first (everything between nodes
// and the admin API ride on it), then the actor tree, then the admin
// server. On error, whatever started is stopped again.
func Start(opts Options) (_ *Node, err error) {
	cfg := opts.Config
	n := &Node{
		id:      newNodeID(cfg.Node.Name),
		version: opts.Version,
		started: time.Now(),
		cfg:     cfg,
	}
	n.log = opts.Log.With().Str("node", n.id).Logger()
	setLogLevel(cfg.Log.Level)
	n.logWarnings(cfg)
	defer func() {
		if err != nil {
			_ = n.Shutdown(context.Background())
		}
	}()

	n.natsURL = cfg.NATS.URL
	creds := cfg.NATS
	if n.natsURL == "" {
		creds = transport.EmbeddedCredentials(cfg.NATS)
		if n.ns, err = transport.StartEmbeddedNATS(creds, cfg.Rooms.HasHistory(), cfg.Node.Name, n.log); err != nil {
			return nil, err
		}
		n.natsURL = n.ns.ClientURL()
		n.log.Info().Str("url", n.natsURL).Msg("embedded nats listening")
	}
	n.natsAuth = transport.NATSAuth(creds)
	n.metrics = transport.NewMetrics()
	n.bus = cluster.NewBus(n.id, cfg.NATS.SubjectPrefix, n.metrics)
	nc, err := n.connectNATS()
	if err != nil {
		return nil, err
	}
	n.bus.Attach(nc)
	// A JetStream cluster answers once its servers have elected a leader:
	// nodes of a cluster started one after the other wait for each other.
	ctx, cancel := context.WithTimeout(context.Background(), historyWait)
	defer cancel()
	memory := n.ns != nil && cfg.NATS.Embedded.StoreDir == ""
	n.history, err = history.Open(ctx, nc, history.Options{
		Prefix: cfg.NATS.SubjectPrefix, Rooms: &cfg.Rooms, Memory: memory, Replicas: cfg.NATS.Replicas(),
		Log: n.log,
	})
	if err != nil {
		return nil, fmt.Errorf("rooms: %w (NATS at %s)", err, n.NATSURL())
	}

	n.system = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(zerolog.NewSlogHandler(n.log.With().Str("component", "actor").Logger()))
	}))
	n.root, err = n.system.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return &nodeActor{} }), "node")
	if err != nil {
		return nil, fmt.Errorf("spawn node actor: %w", err)
	}
	n.registry = conn.NewRegistry()
	bridge, err := n.spawn(cluster.NewBridge(cluster.BridgeOptions{
		Bus: n.bus, Registry: n.registry, Log: n.log, Gather: n.gather, Describe: n.describe,
		HeartbeatInterval: cfg.Cluster.HeartbeatInterval.D(), DeadAfter: cfg.Cluster.DeadAfter.D(),
	}), "cluster")
	if err != nil {
		return nil, err
	}
	n.bridge.Store(bridge)
	n.registry.OnUser = func(user string, present bool) {
		if present {
			n.system.Root.Send(bridge, &cluster.WatchUser{User: user})
		} else {
			n.system.Root.Send(bridge, &cluster.UnwatchUser{User: user})
		}
	}
	n.rooms, err = n.spawn(room.NewManager(&room.Deps{
		Node: n.id, Registry: n.registry, Metrics: n.metrics, Log: n.log,
		AnnounceLimit: cfg.Rooms.AnnounceLimit, PresenceInterval: cfg.Rooms.PresenceInterval.D(),
		Bridge: bridge, Cluster: n.bus, ResyncWindow: 2 * cfg.Cluster.HeartbeatInterval.D(),
		Backlog: cfg.Rooms.MaxBacklog, Rooms: &cfg.Rooms, History: n.history,
	}), "rooms")
	if err != nil {
		return nil, err
	}
	n.chat = &chat.Deps{Rooms: n.rooms, Registry: n.registry, MaxRooms: cfg.Rooms.MaxPerConnection, Bus: n.bus, Options: &cfg.Rooms}
	if err := n.startListeners(opts); err != nil {
		return nil, err
	}

	if err := n.serveNATSAPI(); err != nil {
		return nil, err
	}
	if cfg.HTTP.Address != "" {
		var tlsConfig *tls.Config
		if cfg.HTTP.TLS.Enabled() {
			if n.adminCert, err = transport.LoadCertificate(cfg.HTTP.TLS); err != nil {
				return nil, fmt.Errorf("http.tls: %w", err)
			}
			tlsConfig = n.adminCert.ServerConfig()
		}
		var admin *transport.HTTPServer
		if admin, err = transport.ListenHTTP(cfg.HTTP.Address, n.adminHandler(), tlsConfig, n.log); err != nil {
			return nil, fmt.Errorf("http.address %s: %w", cfg.HTTP.Address, err)
		}
		n.admin.Store(admin)
		n.log.Info().Str("address", admin.Addr().String()).Bool("tls", tlsConfig != nil).Msg("admin http listening")
	}
	n.log.Info().Str("version", n.version).Msg("node started")
	return n, nil
}

// ID is the node id: its name plus a per-boot suffix.
func (n *Node) ID() string { return n.id }

// historyWait bounds how long a starting node waits for JetStream to keep
// the rooms' history.
const historyWait = time.Minute

// NATSURL is the client URL of the NATS the node uses, without
// credentials: the status API shows it.
func (n *Node) NATSURL() string { return transport.RedactURL(n.bus.Conn().ConnectedUrl()) }

// NATSOptions are the credentials and TLS options the node connects to
// NATS with: a client of the node's embedded server (a test, a tool in the
// same process) connects with NATSURL and them, as the node does.
func (n *Node) NATSOptions() []nats.Option { return slices.Clone(n.natsAuth) }

// connectNATS makes the node's connection to NATS. nats.go reconnects it
// by itself through outages; where it gives up for good, natsClosed
// makes a new one.
func (n *Node) connectNATS() (*nats.Conn, error) {
	return transport.ConnectNATS(n.natsURL, "tether "+n.id, n.Config().NATS, n.natsAuth, n.log, transport.NATSEvents{
		Disconnected: n.bus.Disconnected,
		Reconnected: func() {
			if pid := n.bridge.Load(); pid != nil {
				n.system.Root.Send(pid, &cluster.Reconnected{})
			}
		},
		Closed: n.natsClosed,
	})
}

// natsClosed runs when NATS closed the node's connection for good. The
// node never runs without NATS while it serves: it connects again, with
// the reconnect wait between attempts, and every subscription is made
// again on the new connection (the bridge's, and the admin API's).
func (n *Node) natsClosed(nc *nats.Conn, err error) {
	if n.stopping.Load() || nc != n.bus.Conn() {
		return // closed by the node: stopping, or one it did not take
	}
	n.bus.Disconnected(err)
	n.log.Error().Err(err).Msg("nats closed the connection for good; connecting again")
	cluster.Go(func() {
		wait := max(n.Config().NATS.ReconnectWait.D(), 10*time.Millisecond)
		for !n.stopping.Load() {
			nc, err := n.connectNATS()
			if err != nil {
				n.log.Warn().Err(err).Str("retry_in", wait.String()).Msg("nats connect failed")
				time.Sleep(wait)
				continue
			}
			if n.stopping.Load() {
				nc.Close()
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err = n.history.Attach(ctx, nc)
			cancel()
			if err != nil {
				nc.Close() // not the bus's: natsClosed leaves it
				n.log.Warn().Err(err).Str("retry_in", wait.String()).Msg("rooms' history not reachable on the new nats connection")
				time.Sleep(wait)
				continue
			}
			n.bus.Attach(nc)
			if err := n.serveNATSAPI(); err != nil {
				n.log.Error().Err(err).Msg("admin api subscribe failed")
			}
			n.system.Root.Send(n.bridge.Load(), &cluster.Replaced{})
			return
		}
	}, func(v any) { n.log.Error().Str("panic", fmt.Sprint(v)).Msg("nats connect loop panicked") })
}

// NATSState is the state of the node's NATS connection: connected,
// reconnecting, closed, ...
func (n *Node) NATSState() string {
	return strings.ToLower(n.bus.Conn().Status().String())
}

// HTTPAddr is the admin server's address, or nil when it is off.
func (n *Node) HTTPAddr() net.Addr {
	admin := n.admin.Load()
	if admin == nil {
		return nil
	}
	return admin.Addr()
}

// Config returns the configuration in force (it changes on Reload).
func (n *Node) Config() *config.Config {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cfg
}

// Reload applies what can change while connections stay open: the log
// level and the TLS certificates now; heartbeat settings and limits reach
// live connections through the actor tree.
func (n *Node) Reload(cfg *config.Config) {
	n.mu.Lock()
	n.cfg = cfg
	n.mu.Unlock()
	setLogLevel(cfg.Log.Level)
	n.logWarnings(cfg)
	n.reloadCertificates(cfg)
	if n.gate != nil {
		n.gate.SetLimits(cfg.Node.AcceptsPerSecond, cfg.Node.AcceptQueue)
	}
	n.system.Root.Send(n.root, &reload{cfg: cfg})
	n.log.Info().Str("log_level", cfg.Log.Level).Msg("configuration reloaded")
}

// logWarnings logs what loading cfg found wrong but went on with.
func (n *Node) logWarnings(cfg *config.Config) {
	for _, w := range cfg.Warnings() {
		n.log.Warn().Msg(w)
	}
}

// Shutdown stops the node: the admin server, then the actor tree (which
// tells clients and drains), then NATS. It returns when all of it is
// down or ctx ends. Calling it again returns the first call's result.
func (n *Node) Shutdown(ctx context.Context) error {
	n.stopping.Store(true)
	n.stopOnce.Do(func() {
		n.log.Info().Msg("shutting down")
		n.stopErr = n.stop(ctx)
		n.log.Info().Err(n.stopErr).Msg("node stopped")
	})
	return n.stopErr
}

func (n *Node) stop(ctx context.Context) error {
	var errs []error
	// Drain first (drain.go): /readyz false and new sockets refused at
	// once, the connections told to go in batches; the admin server
	// answers meanwhile.
	n.stopDrain(ctx, deadline(ctx, n.Config().Shutdown.Timeout.D()))
	// Then stop taking new work: the admin API and WebSocket upgrades.
	// Requests in flight get a second, not the whole deadline.
	httpCtx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if admin := n.admin.Load(); admin != nil {
		errs = append(errs, admin.Shutdown(httpCtx))
	}
	for _, l := range n.listeners {
		if l.ws != nil { // upgraded sockets are the actors', not the server's
			errs = append(errs, l.ws.Shutdown(httpCtx))
		}
	}
	if n.root != nil && n.listeners != nil {
		// Tell every client and let queues drain, within the deadline;
		// whatever is left is closed hard when the tree stops.
		wait := time.Until(deadline(ctx, n.Config().Shutdown.Timeout.D()))
		if err := n.system.Root.RequestFuture(n.root, &drain{hints: n.hints(n.Config().Shutdown, n.drain.Load())}, max(wait, time.Millisecond)).Wait(); err != nil {
			n.log.Warn().Err(err).Msg("drain did not finish in time; closing the rest")
		}
	}
	if n.root != nil {
		// In order: the connections (with their listeners), then the rooms,
		// which publish the last leaves, then the bridge, which says
		// goodbye; a goodbye first would make the other nodes report
		// node_down instead of the members' own close reasons.
		var order []*actor.PID
		for _, b := range n.listeners {
			if b.pid != nil {
				order = append(order, b.pid)
			}
		}
		order = append(order, n.rooms, n.bridge.Load(), n.root)
		for _, pid := range order {
			if pid == nil {
				continue
			}
			if err := n.system.Root.PoisonFuture(pid).Wait(); err != nil {
				errs = append(errs, fmt.Errorf("stop %s: %w", pid.Id, err))
			}
		}
	}
	n.drainStopped()
	if n.gate != nil {
		n.gate.Close() // what still waits for its turn
	}
	if n.system != nil {
		n.system.Shutdown()
	}
	if sub := n.apiSub.Load(); sub != nil {
		if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			errs = append(errs, err)
		}
	}
	var nc *nats.Conn
	if n.bus != nil { // nil when Start failed before it made one
		nc = n.bus.Conn()
	}
	if nc != nil {
		// Drain flushes what the node published last (leaves, goodbye)
		// before closing.
		closed := make(chan struct{})
		nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
		if err := nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			errs = append(errs, err)
		} else if err == nil {
			select {
			case <-closed:
			case <-ctx.Done():
			}
		}
	}
	if n.ns != nil {
		n.ns.Shutdown()
		n.ns.WaitForShutdown()
	}
	return errors.Join(errs...)
}

// spawn makes props a child of the node actor.
func (n *Node) spawn(props *actor.Props, name string) (*actor.PID, error) {
	res, err := n.system.Root.RequestFuture(n.root, &spawnChild{props: props, name: name}, spawnTimeout).Result()
	if err != nil {
		return nil, fmt.Errorf("spawn %s: %w", name, err)
	}
	if err, ok := res.(error); ok {
		return nil, err
	}
	return res.(*actor.PID), nil
}

// deadline is ctx's deadline, or fallback from now.
func deadline(ctx context.Context, fallback time.Duration) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(fallback)
}

// newNodeID appends a random per-boot suffix to name, so that connection
// ids (which start with the node id) are never reused by a restarted node.
func newNodeID(name string) string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return name + "-" + strings.ToLower(base32.StdEncoding.EncodeToString(b[:]))
}

// setLogLevel sets zerolog's global level, which reload changes without
// rebuilding every logger that actors hold.
func setLogLevel(level string) {
	l, err := zerolog.ParseLevel(level)
	if err != nil {
		l = zerolog.InfoLevel // Validate allows only parseable levels
	}
	zerolog.SetGlobalLevel(l)
}

// pid is the process id reported by the status API.
var pid = os.Getpid()
