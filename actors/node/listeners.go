package node

import (
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"tether/actors/chat"
	"tether/actors/conn"
	"tether/actors/listener"
	"tether/actors/relay"
	"tether/config"
	"tether/transport"
	"tether/web"
)

// boundListener is a listener's socket, bound before any actor starts so
// that a taken port fails the start.
type boundListener struct {
	cfg  config.Listener
	tcp  net.Listener          // tcp listeners
	ws   *transport.HTTPServer // websocket listeners
	addr net.Addr
	pid  *actor.PID // the listener actor
}

// startListeners binds every TCP listener, spawns the listener actors
// under the node actor, then starts the WebSocket servers, which hand
// upgraded sockets to their listener actor.
func (n *Node) startListeners(opts Options) error {
	cfg := n.Config()
	actors := make([]*listener.Actor, 0, len(cfg.Listeners))
	budget := conn.NewBudget(int(cfg.Node.MaxPartialBytes), n.metrics.PartialBytes)
	for _, lc := range cfg.Listeners {
		b := &boundListener{cfg: lc}
		if lc.Protocol == config.ProtocolTCP {
			ln, err := transport.ListenTCP(lc.Address)
			if err != nil {
				return fmt.Errorf("listeners.%s.address %s: %w", lc.Name, lc.Address, err)
			}
			b.tcp, b.addr = ln, ln.Addr()
		}
		n.listeners = append(n.listeners, b)
		app, err := n.newApp(lc, opts)
		if err != nil {
			return err
		}
		la, err := listener.New(listener.Options{
			Config: lc, Listener: b.tcp, Node: n.id, Seq: &n.seq,
			Registry: n.registry, Budget: budget, Metrics: n.metrics, Log: n.log, NewApp: app,
		})
		if err != nil {
			return err
		}
		actors = append(actors, la)
	}
	res, err := n.system.Root.RequestFuture(n.root, &spawnListeners{listeners: actors}, spawnTimeout).Result()
	if err != nil {
		return fmt.Errorf("spawn listeners: %w", err)
	}
	if err, ok := res.(error); ok {
		return err
	}
	pids := res.(map[string]*actor.PID)
	for _, b := range n.listeners {
		b.pid = pids[b.cfg.Name]
		if b.cfg.Protocol == config.ProtocolWebSocket {
			pid := b.pid
			ws, err := transport.ListenWebSocket(b.cfg.Address, transport.WebSocketOptions{
				Path: b.cfg.Path, AllowedOrigins: b.cfg.AllowedOrigins, HandshakeTimeout: b.cfg.HandshakeTimeout.D(),
				Static: staticHandler(b.cfg),
				Upgraded: func(c net.Conn, preread []byte) {
					n.system.Root.Send(pid, &listener.Accepted{Conn: c, Preread: preread})
				},
				Log: n.log.With().Str("listener", b.cfg.Name).Logger(),
			})
			if err != nil {
				return fmt.Errorf("listeners.%s.address %s: %w", b.cfg.Name, b.cfg.Address, err)
			}
			b.ws, b.addr = ws, ws.Addr()
		}
		n.log.Info().Str("listener", b.cfg.Name).Str("protocol", b.cfg.Protocol).Str("address", b.addr.String()).
			Str("app", b.cfg.App).Msg("listening")
	}
	return nil
}

// newApp returns the application a listener runs on its connections.
func (n *Node) newApp(lc config.Listener, opts Options) (conn.NewApp, error) {
	var app conn.NewApp
	switch lc.App {
	case config.AppChat:
		app = chat.New(n.chat)
	case config.AppRelay:
		app = relay.New(n.bus, lc.Name)
	default:
		return nil, fmt.Errorf("listeners.%s.app: %q is not available in this build", lc.Name, lc.App)
	}
	if opts.WrapApp != nil {
		app = opts.WrapApp(lc.Name, app)
	}
	return app, nil
}

// staticHandler serves a WebSocket listener's other paths: its static_dir,
// or the embedded chat page.
func staticHandler(lc config.Listener) http.Handler {
	if lc.StaticDir != "" {
		return http.FileServer(http.Dir(lc.StaticDir))
	}
	return http.FileServerFS(web.FS())
}

// Addr is the bound address of the named listener (useful with port 0),
// or nil.
func (n *Node) Addr(name string) net.Addr {
	for _, b := range n.listeners {
		if b.cfg.Name == name {
			return b.addr
		}
	}
	return nil
}

// spawnTimeout bounds waiting for the node actor to spawn the listeners;
// it only waits on a mailbox, never on the network.
const spawnTimeout = 10 * time.Second
