package node

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"golang.org/x/sys/unix"

	"tether/actors/chat"
	"tether/actors/conn"
	"tether/actors/listener"
	"tether/actors/relay"
	"tether/auth"
	"tether/clients/js"
	"tether/config"
	"tether/transport"
	"tether/web"
)

// boundListener is a listener's socket, bound before any actor starts so
// that a taken port fails the start.
type boundListener struct {
	cfg   config.Listener
	tcp   net.Listener          // tcp listeners
	ws    *transport.HTTPServer // websocket listeners
	addr  net.Addr
	cert  *transport.Certificate // with tls; Reload reads it again
	actor *listener.Actor
	pid   *actor.PID // the listener actor
}

// startListeners binds every TCP listener, spawns the listener actors
// under the node actor, then starts the WebSocket servers, which hand
// upgraded sockets to their listener actor.
func (n *Node) startListeners(opts Options) error {
	cfg := n.Config()
	actors := make([]*listener.Actor, 0, len(cfg.Listeners))
	budget := conn.NewBudget(int(cfg.Node.MaxPartialBytes), n.metrics.PartialBytes)
	sockets, err := n.nodeSockets(cfg)
	if err != nil {
		return err
	}
	for _, lc := range cfg.Listeners {
		b := &boundListener{cfg: lc}
		if lc.TLS.Enabled() {
			if b.cert, err = transport.LoadCertificate(lc.TLS); err != nil {
				return fmt.Errorf("listeners.%s.tls: %w", lc.Name, err)
			}
		}
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
			System: n.system, Config: lc, Listener: b.tcp, TLS: b.tlsConfig(), Sockets: sockets, Node: n.id,
			Registry: n.registry, Budget: budget, Metrics: n.metrics, Log: n.log, NewApp: app,
		})
		if err != nil {
			return err
		}
		b.actor = la
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
			pid, la := b.pid, b.actor
			ws, err := transport.ListenWebSocket(b.cfg.Address, transport.WebSocketOptions{
				Path: b.cfg.Path, AllowedOrigins: b.cfg.AllowedOrigins, HandshakeTimeout: b.cfg.HandshakeTimeout.D(),
				KeepHeaders: b.cfg.Auth.Mode == config.AuthProxy,
				Static:      staticHandler(b.cfg),
				Admission:   la.Admission(),
				Upgraded:    func(s *transport.Accepted) { la.Hand(n.system, pid, s) },
				TLS:         b.tlsConfig(),
				Log:         n.log.With().Str("listener", b.cfg.Name).Logger(),
			})
			if err != nil {
				return fmt.Errorf("listeners.%s.address %s: %w", b.cfg.Name, b.cfg.Address, err)
			}
			b.ws, b.addr = ws, ws.Addr()
		}
		n.log.Info().Str("listener", b.cfg.Name).Str("protocol", b.cfg.Protocol).Str("address", b.addr.String()).
			Str("app", b.cfg.App).Str("auth", b.cfg.Auth.Mode).Bool("tls", b.cert != nil).Msg("listening")
		if b.ws != nil && b.cfg.StaticDir == "" {
			n.log.Info().Str("listener", b.cfg.Name).Msg("chat page: " + pageURL(b.addr, b.cert != nil))
		}
	}
	return nil
}

// pageURL is where a browser on this machine finds the pages of a
// WebSocket listener bound to addr: a listener on every interface
// (0.0.0.0, ::) is reached on 127.0.0.1.
func pageURL(addr net.Addr, tls bool) string {
	scheme := "http"
	if tls {
		scheme = "https"
	}
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return scheme + "://" + addr.String() + "/"
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + "/"
}

// tlsConfig is the listener's TLS configuration, nil without tls.
func (b *boundListener) tlsConfig() *tls.Config {
	if b.cert == nil {
		return nil
	}
	return b.cert.ServerConfig()
}

// reloadCertificates reads the certificates of the listeners and of the
// admin server again (SIGHUP): new connections get the new ones, open
// ones stay. Files that do not load keep the certificate in use. Turning
// tls on or off takes a restart, as changing an address does.
func (n *Node) reloadCertificates(cfg *config.Config) {
	reload := func(key string, cert *transport.Certificate, files config.TLS) {
		switch {
		case (cert != nil) != files.Enabled():
			n.log.Warn().Str("key", key).Msg("tls turned on or off: takes a restart; serving as before")
		case cert == nil:
		default:
			if err := cert.Reload(files); err != nil {
				n.log.Error().Err(err).Str("key", key).Msg("certificate not reloaded; keeping the one in use")
				return
			}
			n.log.Info().Str("key", key).Str("cert_file", files.CertFile).Msg("certificate reloaded")
		}
	}
	for _, b := range n.listeners {
		if lc := cfg.Listener(b.cfg.Name); lc != nil {
			reload("listeners."+lc.Name+".tls", b.cert, lc.TLS)
			if lc.Auth != b.cfg.Auth {
				// A connection's authentication is its listener's at
				// accept; keys and modes are read once, at start.
				n.log.Warn().Str("key", "listeners."+lc.Name+".auth").Msg("auth changed: takes a restart; authenticating as before")
			}
		}
	}
	if n.admin.Load() != nil {
		reload("http.tls", n.adminCert, cfg.HTTP.TLS)
	}
}

// nodeSockets is the node's cap on the sockets of all its listeners
// together: node.max_connections, or, when 0, the process's descriptor
// limit minus node.descriptor_reserve, so that clients can never take the
// descriptors the admin server, NATS and files need (at the limit, those
// failed with "too many open files": the node went deaf). A TLS
// connection holds three descriptors (the TCP socket and its bridge's
// pair): with any TLS listener, a derived cap is a third of those
// descriptors, for every listener alike.
func (n *Node) nodeSockets(cfg *config.Config) (*transport.NodeSockets, error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return nil, fmt.Errorf("descriptor limit: %w", err)
	}
	limit, reserve := int(min(rl.Cur, 1<<30)), cfg.Node.DescriptorReserve
	max := cfg.Node.MaxConnections
	per := 1 // descriptors a connection holds
	if slices.ContainsFunc(cfg.Listeners, func(l config.Listener) bool { return l.TLS.Enabled() }) {
		per = 3
	}
	switch {
	case max == 0 && limit-reserve < per:
		return nil, fmt.Errorf("node.descriptor_reserve: %d leaves no descriptor for connections (the descriptor limit is %d)", reserve, limit)
	case max == 0:
		max = (limit - reserve) / per
	case max*per > limit-reserve:
		n.log.Warn().Int("max_connections", max).Int("descriptors_each", per).Int("descriptor_limit", limit).Int("descriptor_reserve", reserve).
			Msg("node.max_connections leaves fewer descriptors than node.descriptor_reserve: at the cap the admin server and NATS may fail to accept")
	}
	n.log.Info().Int("max_connections", max).Int("descriptor_limit", limit).Msg("connections capped")
	sockets := transport.NewNodeSockets(max)
	n.gate = transport.NewAcceptGate(cfg.Node.AcceptsPerSecond, cfg.Node.AcceptQueue, n.metrics)
	sockets.Gate = n.gate
	return sockets, nil
}

// newApp returns the application a listener runs on its connections.
func (n *Node) newApp(lc config.Listener, opts Options) (conn.NewApp, error) {
	var app conn.NewApp
	switch lc.App {
	case config.AppChat:
		au, err := auth.New(lc.Auth)
		if err != nil {
			return nil, fmt.Errorf("listeners.%s.auth: %w", lc.Name, err)
		}
		app = chat.New(n.chat, au)
	case config.AppRelay:
		app = relay.New(n.bus, n.metrics, lc.Name)
	default:
		return nil, fmt.Errorf("listeners.%s.app: %q is not available in this build", lc.Name, lc.App)
	}
	if opts.WrapApp != nil {
		app = opts.WrapApp(lc.Name, app)
	}
	return app, nil
}

// staticHandler serves a WebSocket listener's other paths: /tether.js,
// the JavaScript client embedded in the binary, and everything else from
// its static_dir, or the embedded chat page. The embedded client wins
// over a tether.js in static_dir: /tether.js is always the client of
// this binary's protocol (a page that wants another copy serves it at
// another path).
func staticHandler(lc config.Listener) http.Handler {
	files := http.FileServerFS(web.FS())
	if lc.StaticDir != "" {
		files = http.FileServer(http.Dir(lc.StaticDir))
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /tether.js", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, js.FS, "tether.js")
	})
	mux.Handle("/", files)
	return mux
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
