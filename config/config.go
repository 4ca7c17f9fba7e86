// Package config is tether's typed configuration: every key a node reads,
// its default, and the rules that make a value valid.
//
// Configuration is layered: defaults, then one YAML file, then TETHER_*
// environment variables, then --set flags (see Load). Nothing else in
// tether reads files, flags or the environment for configuration: the rest
// of the code receives a validated *Config.
//
// Every key has a default (see Default and DefaultListener) and an entry in
// example.yaml, which a test loads and checks for completeness.
package config

import (
	"os"
	"strings"
	"time"
)

// Config is everything one tether node reads at start-up.
type Config struct {
	// Node names this process in the cluster.
	Node Node `yaml:"node"`
	// PIDFile is where `tether serve` writes its process id, and where
	// `tether stop|reload|status` look for it. The tether command takes a
	// relative path as relative to the configuration file's directory
	// (to the working directory when no file is given), so that the CLI
	// finds the node from any directory. Default "tether.pid".
	PIDFile string `yaml:"pid_file"`
	// Log sets the level and format of the node's log.
	Log Log `yaml:"log"`
	// HTTP is the admin server: /healthz, /metrics and /api.
	HTTP HTTP `yaml:"http"`
	// NATS is the bus between nodes: an external URL, or the embedded server.
	NATS NATS `yaml:"nats"`
	// Cluster sets how nodes learn that other nodes are alive.
	Cluster Cluster `yaml:"cluster"`
	// Rooms limits and tunes rooms.
	Rooms Rooms `yaml:"rooms"`
	// Listeners are the sockets clients connect to. Default: one TCP
	// listener "tcp" on 0.0.0.0:9501 with length-prefix framing and one
	// WebSocket listener "ws" on 0.0.0.0:9502 serving the chat page.
	// A file that lists listeners replaces both defaults; each listener
	// it lists starts from the defaults of its protocol (DefaultListener),
	// address included, and overrides what it names.
	Listeners []Listener `yaml:"listeners"`
	// Shutdown is how a node stops serving: how long a stop may take, and
	// how the node drains its connections (in batches, each client told
	// when and where to come back), for `tether stop` (SIGTERM) and
	// `tether drain`.
	Shutdown Shutdown `yaml:"shutdown"`

	// warnings are what Load found wrong but went on with.
	warnings []string
}

// Shutdown configures draining and stopping. The top-level key
// shutdown_timeout, from before this section, is read as
// shutdown.timeout (its environment variable, TETHER_SHUTDOWN_TIMEOUT,
// is the same).
type Shutdown struct {
	// Timeout bounds a stop (SIGTERM, tether stop): draining the
	// connections, telling every client, and letting their last bytes
	// leave; what is left then is closed and the node exits. Default 30s.
	Timeout Duration `yaml:"timeout"`
	// DrainBatch is how many connections a draining node closes (reason
	// server_shutdown, with a reconnect hint) every DrainInterval, so that
	// its clients do not all come back to the other nodes in the same
	// second. 0 closes them all at once. A stop whose batches would not
	// reach the last connection within three quarters of Timeout makes
	// them larger, so that every client is told before Timeout. Default
	// 1000.
	DrainBatch int `yaml:"drain_batch"`
	// DrainInterval is the time between two batches. Default 1s.
	DrainInterval Duration `yaml:"drain_interval"`
	// RetryDelay is the least time the reconnect hint asks a client to
	// wait before it comes back. Default 0s.
	RetryDelay Duration `yaml:"retry_delay"`
	// RetryJitter spreads the hint's delays: each client is told
	// RetryDelay plus a random part of RetryJitter, so that a batch does
	// not come back in one instant. Default 1s; 0 tells every client
	// RetryDelay.
	RetryJitter Duration `yaml:"retry_jitter"`
}

// Warnings are what Load found wrong but went on with (a TETHER_*
// variable that names no key), one line each, for the caller to log.
func (c *Config) Warnings() []string { return c.warnings }

// Node identifies this process.
type Node struct {
	// Name is the node's stable name. Default: the first label of the host
	// name. The node id adds a per-boot suffix (name-xxxxxx), so connection
	// ids of a restarted node never collide with the old ones. At most 64
	// letters, digits, - and _.
	Name string `yaml:"name"`
	// MaxConnections bounds the sockets of all listeners together,
	// WebSocket handshakes in progress and closing sockets included: one
	// more is closed at accept (counted as a reject, max_connections).
	// 0 (the default) derives it from the process's descriptor limit
	// (RLIMIT_NOFILE) minus DescriptorReserve, so that the admin server,
	// NATS and files always have descriptors left.
	MaxConnections int `yaml:"max_connections"`
	// DescriptorReserve is how many descriptors a derived MaxConnections
	// leaves for everything but client sockets. Default 256.
	DescriptorReserve int `yaml:"descriptor_reserve"`
	// MaxPartialBytes bounds the bytes of unfinished inbound frames all
	// connections of the node hold together (each at most its listener's
	// framing.max_frame). Past it, the connections holding the most are
	// closed with reason memory_limit until the rest fits. Default 64MiB.
	MaxPartialBytes Size `yaml:"max_partial_bytes"`
	// AcceptsPerSecond bounds the new connections the node takes per
	// second, all listeners together (in steps of a tenth of it at most),
	// so that a reconnect storm costs the connections already open
	// little: sockets past the rate wait in a queue for their turn. 0 (the
	// default): no limit.
	AcceptsPerSecond int `yaml:"accepts_per_second"`
	// AcceptQueue is how many sockets may wait for their turn under
	// AcceptsPerSecond; one more is closed at accept (counted as a
	// reject, accept_queue). A socket waits at most about
	// AcceptQueue/AcceptsPerSecond seconds. Default 1000.
	AcceptQueue int `yaml:"accept_queue"`
}

// Log configures zerolog.
type Log struct {
	// Level is one of debug, info, warn, error. Default info. Changes on
	// reload.
	Level string `yaml:"level"`
	// Format is auto, json or console. auto (the default) writes console
	// lines when stderr is a terminal and JSON otherwise.
	Format string `yaml:"format"`
}

// HTTP configures the admin server.
type HTTP struct {
	// Address is host:port of the admin server. Default 127.0.0.1:9600.
	// An empty address turns the admin server off.
	Address string `yaml:"address"`
	// Token, when set, must be sent as "Authorization: Bearer <token>" on
	// /api. It is required when Address is not a loopback address.
	// Default "".
	Token string `yaml:"token"`
	// Pprof mounts net/http/pprof under /debug/pprof. Default false.
	Pprof bool `yaml:"pprof"`
	// TLS serves the admin server over HTTPS when set.
	TLS TLS `yaml:"tls"`
}

// TLS is a certificate and its key, PEM files, read at start and again on
// SIGHUP (tether reload): a renewed certificate is used for new
// connections without dropping the ones that are open. Both empty (the
// default): no TLS.
type TLS struct {
	// CertFile is the certificate chain, leaf first. Default "".
	CertFile string `yaml:"cert_file"`
	// KeyFile is the certificate's private key. Default "".
	KeyFile string `yaml:"key_file"`
}

// Enabled says whether TLS is configured.
func (t *TLS) Enabled() bool { return t.CertFile != "" }

// NATS configures the connection to NATS and the embedded server.
type NATS struct {
	// URL of the NATS server(s) to use, comma separated. Empty (the
	// default) starts the embedded server and connects to it.
	URL string `yaml:"url"`
	// Embedded configures the in-process nats-server used when URL is empty.
	Embedded Embedded `yaml:"embedded"`
	// SubjectPrefix is the first token of every subject tether uses.
	// Default "tether".
	SubjectPrefix string `yaml:"subject_prefix"`
	// ReconnectWait is the pause between reconnect attempts. Default 500ms.
	ReconnectWait Duration `yaml:"reconnect_wait"`
	// ReconnectBuffer is how much the client buffers while disconnected
	// before publications fail (and are counted as lost). Default 8MiB.
	ReconnectBuffer Size `yaml:"reconnect_buffer"`
	// User and Password authenticate tether to NATS. With the embedded
	// server they are what it requires of every client (tether's own
	// connection, relay workers, the admin API over NATS) and of the
	// routes between embedded servers; when neither they nor Token are
	// set, the embedded server requires a password generated at each
	// boot, which only this node knows. Required (or Token) when the
	// embedded server listens off loopback or has routes. Default "".
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	// Token authenticates tether to NATS instead of User and Password.
	// Routes between embedded servers, which take a user and a password
	// only, authenticate as user "tether" with the token as password.
	// Default "".
	Token string `yaml:"token"`
	// CredentialsFile is a NATS .creds file (a user JWT and its nkey
	// seed) for an external NATS. Default "".
	CredentialsFile string `yaml:"credentials_file"`
	// TLS is how tether connects to an external NATS over TLS.
	TLS NATSTLS `yaml:"tls"`
	// HistoryReplicas is how many NATS servers keep each stream of the
	// rooms' history (JetStream replicas, 1 to 5): with 3, history
	// survives the loss of any one server. 0 (the default) picks: 3 when
	// the embedded server has two or more routes (a cluster of three or
	// more), else 1. With an external NATS cluster, set it.
	HistoryReplicas int `yaml:"history_replicas"`
}

// Replicas is the number of replicas of the history streams that
// HistoryReplicas asks for.
func (n *NATS) Replicas() int {
	switch {
	case n.HistoryReplicas > 0:
		return n.HistoryReplicas
	case n.URL == "" && len(n.Embedded.Cluster.Routes) >= 2:
		return 3
	default:
		return 1
	}
}

// NATSTLS configures TLS to an external NATS server. A tls:// URL, or any
// of these set, turns it on.
type NATSTLS struct {
	// CAFile is the PEM file of the certificate authorities to trust;
	// empty trusts the system's. Default "".
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a client certificate, for a server that
	// asks for one. Default "".
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Embedded configures the in-process nats-server.
type Embedded struct {
	// Host the embedded server listens on. Default 127.0.0.1. Any other
	// than a loopback address takes clients from other machines, and
	// requires nats.user and nats.password, or nats.token.
	Host string `yaml:"host"`
	// Port for clients; -1 picks a free port. Default 4222.
	Port int `yaml:"port"`
	// StoreDir is where the embedded server's JetStream keeps the rooms'
	// history, so that it survives a restart: in StoreDir/<node.name>, so
	// that nodes started in one directory keep stores of their own.
	// Default "tether-data" (relative to the working directory). Empty
	// keeps it in memory.
	StoreDir string `yaml:"store_dir"`
	// Cluster joins embedded servers of several nodes by routes.
	Cluster EmbeddedCluster `yaml:"cluster"`
}

// EmbeddedCluster configures NATS routes between embedded servers. Routes
// require nats.user and nats.password, or nats.token: the same on every
// node, since each server requires them of the others' routes as of its
// clients.
type EmbeddedCluster struct {
	// Name of the NATS cluster; every server of one cluster uses the same
	// name. Default "" (no cluster); required when Port is set.
	Name string `yaml:"name"`
	// Host the route listener binds. Default 127.0.0.1.
	Host string `yaml:"host"`
	// Port for routes from other servers; 0 (the default) turns routes off,
	// -1 picks a free port.
	Port int `yaml:"port"`
	// Routes are nats-route://host:port URLs of the other servers; tether
	// adds the credentials to those that carry none. Default none.
	Routes []string `yaml:"routes"`
}

// Cluster tunes node liveness across the cluster.
type Cluster struct {
	// HeartbeatInterval is how often a node announces itself on the
	// cluster subject. Default 1s.
	HeartbeatInterval Duration `yaml:"heartbeat_interval"`
	// DeadAfter is how long a node may stay silent before the others
	// declare it dead and emit left (node_down) for its members. It must
	// be at least twice HeartbeatInterval. Default 5s.
	DeadAfter Duration `yaml:"dead_after"`
}

// Rooms limits rooms and tunes presence in large ones.
type Rooms struct {
	// MaxPerConnection is how many rooms one connection may be in.
	// Default 32.
	MaxPerConnection int `yaml:"max_per_connection"`
	// AnnounceLimit is the room size above which joins and leaves are no
	// longer announced one by one but as a periodic presence diff.
	// Default 1000.
	AnnounceLimit int `yaml:"announce_limit"`
	// PresenceInterval is the most often a large room sends its presence
	// diff. Default 1s.
	PresenceInterval Duration `yaml:"presence_interval"`
	// MaxBacklog bounds the messages waiting for a room (its members'
	// sends, other nodes' events, pushes): a send past it is answered
	// error busy, and other nodes' events wait in NATS's buffer, bounded
	// the same way. A room's memory is at most this many messages (each
	// at most max_frame). Default 1000.
	MaxBacklog int `yaml:"max_backlog"`
	// Default holds the options of rooms without a namespace (no ':' in
	// their name).
	Default RoomOptions `yaml:"default"`
	// Namespaces hold the options of rooms named <prefix>:<rest>, by
	// prefix. A room whose prefix no namespace names takes Default.
	// Default none.
	Namespaces []Namespace `yaml:"namespaces"`
}

// RoomOptions are the options of the rooms of one namespace
// (DESIGN.md section 10).
type RoomOptions struct {
	// HistorySize is how many of a room's last messages NATS JetStream
	// keeps, for a client coming back to get what it missed (join with
	// since) and for the history request. 0 (the default): no history.
	HistorySize int `yaml:"history_size"`
	// HistoryTTL is how long a message stays in the history; 0 (the
	// default) keeps it until HistorySize newer ones push it out.
	HistoryTTL Duration `yaml:"history_ttl"`
	// Join is who may join: anyone (the default), or token (a token whose
	// rooms claim matches; until the listener authenticates clients,
	// nobody).
	Join string `yaml:"join"`
	// Publish is who may send: members (the default), or none (only the
	// server, through the admin API).
	Publish string `yaml:"publish"`
	// Presence turns the joined, left and presence events and the members
	// request on (the default) or off.
	Presence bool `yaml:"presence"`
}

// Namespace is the options of the rooms whose names start <prefix>:.
type Namespace struct {
	// Prefix is the part of the room names before their first ':'.
	// Letters, digits, - and _. Required.
	Prefix      string `yaml:"prefix"`
	RoomOptions `yaml:",inline"`
}

// Who may join and publish (RoomOptions).
const (
	JoinAnyone     = "anyone"
	JoinToken      = "token"
	PublishMembers = "members"
	PublishNone    = "none"
)

// DefaultRoomOptions are the options of a namespace that sets none.
func DefaultRoomOptions() RoomOptions {
	return RoomOptions{Join: JoinAnyone, Publish: PublishMembers, Presence: true}
}

// Options returns the options of room: its namespace's, or Default's.
func (r *Rooms) Options(room string) *RoomOptions {
	if prefix, _, ok := strings.Cut(room, ":"); ok {
		for i := range r.Namespaces {
			if r.Namespaces[i].Prefix == prefix {
				return &r.Namespaces[i].RoomOptions
			}
		}
	}
	return &r.Default
}

// HasHistory says whether any namespace keeps history.
func (r *Rooms) HasHistory() bool {
	if r.Default.HistorySize > 0 {
		return true
	}
	for _, ns := range r.Namespaces {
		if ns.HistorySize > 0 {
			return true
		}
	}
	return false
}

// Protocols a listener speaks.
const (
	ProtocolTCP       = "tcp"
	ProtocolWebSocket = "websocket"
)

// Applications a listener runs on its connections.
const (
	AppChat  = "chat"
	AppRelay = "relay"
)

// Framing types.
const (
	FramingLength    = "length"
	FramingEOF       = "eof"
	FramingWebSocket = "websocket"
)

// What to do when a connection's outbound queue is full.
const (
	OnFullClose = "close"
	OnFullDrop  = "drop"
)

// Listener is one socket clients connect to.
type Listener struct {
	// Name identifies the listener in logs, metrics, connection info and
	// relay subjects (tether.events.<name>). Letters, digits, - and _.
	// Required.
	Name string `yaml:"name"`
	// Protocol is tcp or websocket. Default tcp.
	Protocol string `yaml:"protocol"`
	// Address is host:port to listen on. Default: its protocol's,
	// 0.0.0.0:9501 (tcp) or 0.0.0.0:9502 (websocket), like every other
	// key a listener leaves out; two listeners of one protocol need an
	// address each.
	Address string `yaml:"address"`
	// Path is the URL path of the WebSocket upgrade. Default /ws.
	// WebSocket only.
	Path string `yaml:"path"`
	// StaticDir is a directory served over HTTP on the WebSocket listener
	// (Swoole's document_root). Empty (the default) serves the chat page
	// embedded in the binary. Either way /tether.js is the JavaScript
	// client embedded in the binary. WebSocket only.
	StaticDir string `yaml:"static_dir"`
	// AllowedOrigins lists the Origin header values allowed to upgrade; "*"
	// (the default) allows any. WebSocket only.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// HandshakeTimeout bounds the time from accept until the WebSocket
	// upgrade is done (slowloris guard). Default 10s. WebSocket only.
	HandshakeTimeout Duration `yaml:"handshake_timeout"`
	// App is the application run on each connection: chat (rooms, the
	// client protocol) or relay (events to NATS workers). Default chat.
	App string `yaml:"app"`
	// Framing cuts the byte stream into messages.
	Framing Framing `yaml:"framing"`
	// TCPKeepalive sets the kernel's keepalive probes on accepted sockets.
	TCPKeepalive TCPKeepalive `yaml:"tcp_keepalive"`
	// TCPUserTimeout sets TCP_USER_TIMEOUT: data unacknowledged this long
	// closes the socket (reason user_timeout). 0 (the default) leaves the
	// kernel's behaviour.
	TCPUserTimeout Duration `yaml:"tcp_user_timeout"`
	// Heartbeat sets the application-level liveness checks.
	Heartbeat Heartbeat `yaml:"heartbeat"`
	// Limits bounds connections and their outbound queues.
	Limits Limits `yaml:"limits"`
	// TLS makes the listener speak TLS: TCP over TLS, or wss:// (and
	// https:// for its static files) on websocket listeners.
	TLS TLS `yaml:"tls"`
	// Auth is how the listener's clients prove who they are.
	Auth Auth `yaml:"auth"`
	// PublicURL is where clients reach this listener from outside:
	// ws://host:port/path or wss://... on a websocket listener, host:port
	// on a tcp one. The node announces it to the cluster in its
	// heartbeats, and a draining node's reconnect hint lists the public
	// URLs of the other nodes' listeners of the same name. Empty (the
	// default): not announced.
	PublicURL string `yaml:"public_url"`
}

// Auth modes.
const (
	AuthNone  = "none"
	AuthToken = "token"
	AuthProxy = "proxy"
)

// Auth is how a listener authenticates its clients (DESIGN.md section
// 11). It applies to the chat application.
type Auth struct {
	// Mode is none (the default: anyone connects, names are what clients
	// say), token (a JWT, verified with JWT's key) or proxy (the node asks
	// Proxy.URL).
	Mode string `yaml:"mode"`
	// JWT is the key tokens are verified with (mode token).
	JWT JWT `yaml:"jwt"`
	// Proxy is the backend that authenticates connections (mode proxy).
	Proxy Proxy `yaml:"proxy"`
	// Timeout is how long a connection may stay unauthenticated before it
	// is closed (reason unauthorized). Default 10s.
	Timeout Duration `yaml:"timeout"`
}

// JWT is the key of a token listener. Exactly one is set, and it fixes
// the algorithm: an HMAC secret accepts HS256 only; a public key accepts
// RS256 (RSA) or ES256 (P-256) only.
type JWT struct {
	// HMACSecret is the HS256 secret, at least 32 bytes. Default "".
	HMACSecret string `yaml:"hmac_secret"`
	// PublicKeyFile is a PEM file with an RSA or a P-256 public key.
	// Default "".
	PublicKeyFile string `yaml:"public_key_file"`
}

// Proxy is the backend a proxy listener asks (DESIGN.md section 11).
type Proxy struct {
	// URL receives a POST per connection to authenticate. Required in
	// mode proxy.
	URL string `yaml:"url"`
	// Timeout bounds the backend's answer. Default 5s.
	Timeout Duration `yaml:"timeout"`
}

// Framing configures how a stream is cut into messages (Swoole's
// open_length_check / open_eof_split options).
type Framing struct {
	// Type is length or eof on tcp listeners, websocket on websocket
	// listeners. Default length (tcp), websocket (websocket).
	Type string `yaml:"type"`
	// EOF is the delimiter of eof framing, 1 to 8 bytes (Swoole's
	// package_eof). Default "\r\n".
	EOF string `yaml:"eof"`
	// LengthType is the PHP pack code of the length field: c C s S n N l L
	// v V (Swoole's package_length_type). Default N.
	LengthType string `yaml:"length_type"`
	// LengthOffset is where the length field starts (Swoole's
	// package_length_offset). Default 0.
	LengthOffset int `yaml:"length_offset"`
	// BodyOffset is where the body starts; the length counts the body
	// only, so a packet is BodyOffset+length bytes (Swoole's
	// package_body_offset). Default 4.
	BodyOffset int `yaml:"body_offset"`
	// MaxFrame is the largest frame accepted; a larger one closes the
	// connection with frame_too_large (Swoole's package_max_length).
	// Default 64KiB, Centrifugo's default too: chat messages are small,
	// and every connection may hold up to this much of an unfinished
	// frame (bounded node-wide by node.max_partial_bytes).
	MaxFrame Size `yaml:"max_frame"`
}

// TCPKeepalive sets SO_KEEPALIVE and its timers on accepted sockets. A
// peer that stops answering is closed by the kernel after
// Idle + Interval*Count (reason keepalive).
type TCPKeepalive struct {
	// Enabled turns SO_KEEPALIVE on. Default true.
	Enabled bool `yaml:"enabled"`
	// Idle is TCP_KEEPIDLE: silence before the first probe. Default 60s.
	Idle Duration `yaml:"idle"`
	// Interval is TCP_KEEPINTVL: time between probes. Default 30s.
	Interval Duration `yaml:"interval"`
	// Count is TCP_KEEPCNT: unanswered probes before the kernel gives up.
	// Default 3.
	Count int `yaml:"count"`
}

// Heartbeat is the application-level liveness of a connection: Swoole's
// heartbeat_idle_time/heartbeat_check_interval and Workerman's
// pingInterval/pingNotResponseLimit/pingData. A duration of 0 turns its
// mode off. Changes apply to live connections on reload.
type Heartbeat struct {
	// IdleTimeout closes a connection that sent nothing for this long
	// (reason idle). Default 60s.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// CheckInterval is the granularity of the idle check: a connection's
	// deadline is rounded up to a multiple of it, so a silent connection
	// closes within IdleTimeout+CheckInterval and the timers of many
	// connections fire together. 0 checks at the exact deadline.
	// Default 5s.
	CheckInterval Duration `yaml:"check_interval"`
	// PingInterval sends PingData to a connection that sent nothing for
	// this long. Default 0 (off) on tcp, 25s on websocket.
	PingInterval Duration `yaml:"ping_interval"`
	// PingNotResponseLimit closes a connection (reason no_pong) after this
	// many ping intervals with nothing received; 0 pings but never
	// closes. Default 2.
	PingNotResponseLimit int `yaml:"ping_not_response_limit"`
	// PingData is the ping sent: one frame on tcp, the payload of a
	// WebSocket ping control frame on websocket (at most 125 bytes there).
	// Empty sends no pings and only expects the client's own heartbeats.
	// Default {"op":"ping"}.
	PingData string `yaml:"ping_data"`
}

// Limits bounds a listener's connections.
type Limits struct {
	// MaxConnections is the most connections this listener holds,
	// WebSocket handshakes in progress included; one more is closed at
	// accept, logged and counted. 0 (the default): no limit of its own,
	// node.max_connections bounds all listeners together.
	MaxConnections int `yaml:"max_connections"`
	// MaxPerIP is the most connections from one remote IP, handshakes
	// included; 0 (the default) is unlimited. Set by a reload, it counts
	// the connections made from then on.
	MaxPerIP int `yaml:"max_per_ip"`
	// OutboundQueue is the most bytes queued for one connection that the
	// kernel has not taken yet. A message that finds the queue empty is
	// always taken, so the bound is this plus one message. Default 1MiB.
	OutboundQueue Size `yaml:"outbound_queue"`
	// WriteTimeout is how long a write may wait for the peer to take
	// bytes before the connection is closed (reason write_timeout).
	// Default 5s.
	WriteTimeout Duration `yaml:"write_timeout"`
	// OnFull is what a full outbound queue does: close (the default,
	// reason slow_consumer) or drop (drop the newest message, counted).
	OnFull string `yaml:"on_full"`
	// WriteDelay makes a connection write what is queued for it on rounds
	// of this delay instead of at once: what piles up meanwhile goes out
	// in one system call, trading latency for CPU at high rates (1ms to
	// 10ms). Default 0: write at once (a fan-out still writes each member
	// once per batch of messages).
	WriteDelay Duration `yaml:"write_delay"`
	// MessagesPerSecond is how many messages a connection may send per
	// second on average, with bursts of up to Burst: past them a message
	// is refused (error rate_limited), and a connection that goes on
	// until Burst more were refused is closed (reason rate_limited).
	// 0 (the default): no limit.
	MessagesPerSecond int `yaml:"messages_per_second"`
	// Burst is how many messages a connection may send at once above its
	// rate. Default 0: twice MessagesPerSecond, at least 1.
	Burst int `yaml:"burst"`
	// AcceptsPerIPPerSecond is how many connections one remote IP may
	// open per second (bursts of as many); more are closed at accept
	// (counted as a reject, accept_rate). 0 (the default): no limit.
	AcceptsPerIPPerSecond int `yaml:"accepts_per_ip_per_second"`
}

// Default returns the configuration a node runs with when no file is given.
func Default() *Config {
	return &Config{
		Node:    Node{Name: defaultNodeName(), DescriptorReserve: 256, MaxPartialBytes: 64 << 20, AcceptQueue: 1000},
		PIDFile: "tether.pid",
		Log:     Log{Level: "info", Format: "auto"},
		HTTP:    HTTP{Address: "127.0.0.1:9600"},
		NATS: NATS{
			Embedded:        Embedded{Host: "127.0.0.1", Port: 4222, StoreDir: "tether-data", Cluster: EmbeddedCluster{Host: "127.0.0.1"}},
			SubjectPrefix:   "tether",
			ReconnectWait:   Duration(500 * time.Millisecond),
			ReconnectBuffer: 8 << 20,
		},
		Cluster: Cluster{HeartbeatInterval: Duration(time.Second), DeadAfter: Duration(5 * time.Second)},
		Rooms: Rooms{MaxPerConnection: 32, AnnounceLimit: 1000, PresenceInterval: Duration(time.Second), MaxBacklog: 1000,
			Default: DefaultRoomOptions()},
		Listeners: []Listener{
			withName(DefaultListener(ProtocolTCP), "tcp"),
			withName(DefaultListener(ProtocolWebSocket), "ws"),
		},
		Shutdown: Shutdown{
			Timeout: Duration(30 * time.Second), DrainBatch: 1000, DrainInterval: Duration(time.Second),
			RetryJitter: Duration(time.Second),
		},
	}
}

// Default addresses of listeners, by protocol.
const (
	DefaultTCPAddress       = "0.0.0.0:9501"
	DefaultWebSocketAddress = "0.0.0.0:9502"
)

// DefaultListener returns the defaults of a listener of the given
// protocol, its address included; a listener in a file starts from these
// and overrides what it names.
func DefaultListener(protocol string) Listener {
	l := Listener{
		Protocol: ProtocolTCP,
		Address:  DefaultTCPAddress,
		App:      AppChat,
		Framing: Framing{
			Type: FramingLength, EOF: "\r\n", LengthType: "N",
			LengthOffset: 0, BodyOffset: 4, MaxFrame: 64 << 10,
		},
		TCPKeepalive: TCPKeepalive{Enabled: true, Idle: Duration(60 * time.Second), Interval: Duration(30 * time.Second), Count: 3},
		Heartbeat: Heartbeat{
			IdleTimeout: Duration(60 * time.Second), CheckInterval: Duration(5 * time.Second),
			PingNotResponseLimit: 2, PingData: `{"op":"ping"}`,
		},
		Limits: Limits{
			OutboundQueue: 1 << 20,
			WriteTimeout:  Duration(5 * time.Second), OnFull: OnFullClose,
		},
		Auth: Auth{Mode: AuthNone, Timeout: Duration(10 * time.Second), Proxy: Proxy{Timeout: Duration(5 * time.Second)}},
	}
	if protocol == ProtocolWebSocket {
		l.Protocol = ProtocolWebSocket
		l.Address = DefaultWebSocketAddress
		l.Path = "/ws"
		l.AllowedOrigins = []string{"*"}
		l.HandshakeTimeout = Duration(10 * time.Second)
		l.Framing.Type = FramingWebSocket
		l.Heartbeat.PingInterval = Duration(25 * time.Second)
	}
	return l
}

// Listener returns the listener with the given name, or nil.
func (c *Config) Listener(name string) *Listener {
	for i := range c.Listeners {
		if c.Listeners[i].Name == name {
			return &c.Listeners[i]
		}
	}
	return nil
}

func withName(l Listener, name string) Listener {
	l.Name = name
	return l
}

// defaultNodeName is the first label of the host name, cleaned to the
// characters a NATS subject token and a connection id allow.
func defaultNodeName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		return "tether"
	}
	host, _, _ = strings.Cut(host, ".")
	name := strings.Map(func(r rune) rune {
		if isNameRune(r) {
			return r
		}
		return '-'
	}, strings.ToLower(host))
	if name == "" {
		return "tether"
	}
	return name
}

func isNameRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_'
}
