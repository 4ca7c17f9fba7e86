package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"tether/config"
)

// commands is every command of tether, declared here and nowhere else:
// its usage, help, group, flags and the function that runs it. cobra
// turns each into a cobra.Command, the one place that speaks cobra. A
// command's function gets its flags parsed (call) and reads them by name.
var commands = []command{
	{
		name: "serve", group: groupNode, config: true, run: runServe,
		short: "run a node (with the embedded NATS unless nats.url is set)",
		long: `Run a node in the foreground: its listeners, its admin API at http.address,
and the embedded NATS unless nats.url is set. It writes its pid to pid_file,
which stop, reload and status read. SIGTERM or SIGINT stops it cleanly,
SIGHUP reloads the configuration file.`,
	},
	{
		name: "drain", group: groupNode, config: true, run: runDrain,
		short: "drain the node: /readyz false, new connections refused, its own closed in batches, each told when and where to come back",
		long: `Drain the node the configuration names, through its admin API (POST
/api/drain, with http.token): /readyz turns false at once, new connections
are refused, and the node closes its connections in batches of
shutdown.drain_batch every shutdown.drain_interval (reason server_shutdown,
WebSocket close 1012), telling each client when to come back and where (the
public_url of the other nodes' listener of the same name). The process
stays up, drained, until tether stop; a stop drains the same way first.

With --wait it waits until every connection has closed, saying how many are
left once per drain interval.`,
		flags: []flagDef{fl("wait", false, "wait until every connection has closed, saying how many are left")},
	},
	{
		name: "stop", group: groupNode, config: true, run: runStop,
		short: "stop the node named by the pid file (SIGTERM) and wait until it exits",
		long:  "Stop the node (SIGTERM) and wait until it has exited.\n\n" + findingTheNode,
	},
	{
		name: "reload", group: groupNode, config: true, run: runReload,
		short: "make the node re-read its configuration file (SIGHUP)",
		long: `Make the node re-read its configuration file (SIGHUP). The CLI reads the file
first and refuses one the node would reject.

` + findingTheNode,
	},
	{
		name: "status", group: groupNode, config: true, run: runStatus,
		short: "say whether the node runs and what it listens on (exit 0 running, 3 not running, 4 refused)",
		long: `Say whether the node runs and, from its admin API, what it listens on.

Exit status:
  0  running (and the admin API answered, or is not answering yet, or is off)
  1  the configuration cannot be read
  3  not running
  4  the admin API refused the CLI, so what runs is unknown: the node's
     http.token is not the one of the configuration the CLI reads (-c, or
     TETHER_HTTP_TOKEN)

` + findingTheNode,
	},
	{
		name: "version", run: runVersion,
		short: "print the version",
	},
	{
		name: "push", usage: "[--conn ID | --user UID | --room ROOM | --all] DATA", group: groupCluster,
		args: cobra.ExactArgs(1), config: true, run: runPush,
		short: "push DATA (JSON, or a string) to a connection, a user, a room or everyone, on any node",
		long: `Push DATA (JSON, or a string) to a connection, a user's connections, a room or
every connection of the cluster, through the admin API of the node the
configuration names, and say how many connections of the cluster it was
addressed to (those on nodes that answer within a second).`,
		flags: []flagDef{
			fl("conn", "", "connection id"),
			fl("user", "", "user id (connections bound with tether conn --bind)"),
			fl("room", "", "room"),
			fl("all", false, "every connection of the cluster"),
		},
		exclusive:   [][]string{{"conn", "user", "room", "all"}},
		oneRequired: [][]string{{"conn", "user", "room", "all"}},
	},
	{
		name: "conn", usage: "ID [--kick | --bind USER]", group: groupCluster,
		args: cobra.ExactArgs(1), config: true, run: runConn,
		short: "show a connection's info (any node's), kick it, or bind it to a user id",
		flags: []flagDef{
			fl("kick", false, "close the connection (reason kicked)"),
			fl("bind", "", "bind the connection to this user id"),
		},
		exclusive: [][]string{{"kick", "bind"}},
	},
	{
		name: "rooms", usage: "[ROOM]", group: groupCluster,
		args: cobra.MaximumNArgs(1), config: true, run: runRooms,
		short: "list the cluster's rooms, or one room's members on every node",
	},
	{
		name: "nodes", group: groupCluster, config: true, run: runNodes,
		short: "list the nodes of the cluster and whether they are alive",
	},
	{
		name: "token", usage: "--user U [--name N] [--rooms 'lobby,team:*'] [--ttl 1h]", group: groupTest,
		config: true, run: runToken,
		short: "mint a client token (JWT) that a token listener of the configuration accepts, for testing",
		long: `Mint a client token (JWT) for a token listener of the configuration, for
testing: signed with the listener's hmac_secret, or with --private-key when
the listener verifies RS256 or ES256 with a public key.`,
		flags: []flagDef{
			fl("user", "", "user id: the sub claim, bound to the connection"),
			fl("name", "", "the name rooms show (default: the user id)"),
			fl("avatar", "", "the avatar rooms show"),
			fl("rooms", "", "comma-separated glob patterns of the rooms it may join (default: no claim, the rooms anyone may join)"),
			fl("ttl", time.Hour, "how long it is valid (the exp claim); 0: no expiry"),
			fl("listener", "", "the token listener whose key signs (default: the only one)"),
			fl("private-key", "", "PEM RSA or P-256 private key, for a listener with public_key_file"),
		},
		required: []string{"user"},
	},
	{
		name: "bench", group: groupTest,
		short: "generate load against a running node and report figures for BENCHMARKS.md",
		long: `Generate load against a running node from worker processes (this binary,
each holding its clients on source addresses of its own, 127.x.y.z) and
report figures for BENCHMARKS.md. Where a figure is the server's (its RSS,
its CPU), the server is --pid, or else the node the configuration names
(found as stop finds it).`,
		subs: benchCommands,
	},
}

// benchCommands are tether bench's.
var benchCommands = []command{
	{
		name: "idle", config: true, run: runBenchIdle,
		short: "hold many idle TCP or WebSocket connections (heartbeats on) and report the server's RSS per connection",
		long: `Hold many idle TCP or WebSocket connections, each pinging every --heartbeat,
and report the server's resident memory per connection.

The server's RSS moves by itself (garbage collected, memory returned to the
system in the background, heaps that grow in steps), so one reading before
and one after can even give a negative growth. The figure before is the
lowest RSS over --baseline before connecting, the server at rest; the
figure after is the lowest over the last half of --settle with the
connections held, the steady state. When the growth is no more than what
the RSS moved by itself in either window, the figure per connection is
reported as not measurable with that many connections (with a bound): use
more connections.`,
		flags: []flagDef{
			fl("addr", "127.0.0.1:9501", "TCP listener (length-prefix framing; tls://host:port over TLS), or a WebSocket listener's ws:// or wss:// URL"),
			fl("ca", "", "PEM file of the CA to trust over TLS (default: the system's roots)"),
			fl("conns", 19000, "connections in all"),
			fl("procs", 4, "worker processes"),
			fl("pid", 0, "the server's process id, whose RSS is measured (default: the node the configuration names)"),
			fl("heartbeat", 20*time.Second, "each client sends a ping this often"),
			fl("baseline", 10*time.Second, "how long to watch the server's RSS at rest before connecting"),
			fl("settle", 30*time.Second, "how long to hold the connections before measuring"),
		},
	},
	{
		name: "room", config: true, run: runBenchRoom,
		short: "fan-out latency, throughput and CPU per delivery of one room of many WebSocket members",
		long: `Measure one room's fan-out: --members WebSocket clients in worker processes
join one room; the sender sends --messages at --rate, each carrying its send
time; every worker records, per message, when its last member had it. The
figure per message is the time from send until the last member of the whole
room had it. It also reports the server's CPU time per delivery, the server
being --pid or the node the configuration names.

With --floor it first runs the same clients and the same scenario against a
bare fan-out server in a process of its own, and reports every figure as a
ratio to that floor: on a shared, noisy machine only a ratio measured in the
same run means much.

With --history-room (a room of a namespace with history, kept at least
--messages long) it then runs the same scenario in that room, reports the
latency its history adds against the plain room of the same run, and the
time a client that missed every message of the run takes to get them all
back (a join with since).

With several --url (nodes of one cluster) the workers are spread over them
and the figures come per node: the sender's node shows local delivery, the
others delivery across NATS, in the same run.`,
		flags: []flagDef{
			fl("url", "ws://127.0.0.1:9502/ws", "WebSocket listener(s), comma separated: the workers are spread over them"),
			fl("send-url", "", "where the sender connects (default the first --url)"),
			fl("pid", 0, "the server's process id: report its CPU time per delivery (default: the node the configuration names)"),
			fl("floor", false, "also run against a bare fan-out server, and report ratios to it"),
			fl("members", 10000, "members in the room"),
			fl("procs", 4, "worker processes holding the members"),
			fl("messages", 500, "messages to send"),
			fl("rate", 50, "messages per second"),
			fl("size", 128, "bytes of data per message"),
			fl("room", "bench", "room name"),
			fl("history-room", "", "also run in this room with history (its namespace keeps at least --messages), and time the replay of the run's messages"),
			fl("pids", "", "the nodes' process ids, comma separated: server CPU summed over them, RSS of each (bench/cluster-90k)"),
			fl("metrics", "", "the nodes' admin servers (http://host:port), comma separated: NATS messages per room message"),
			fl("kill-pid", 0, "after the sends, SIGKILL this node, its members still joined, and time until they are gone from every other node"),
			fl("kill-url", "", "the WebSocket listener (one of --url) of the node --kill-pid kills"),
			fl("kill-wait", 2*time.Minute, "how long to wait for the killed node's members to be gone"),
			fl("out", "", "append the figures (with the cluster's, and the latency per message) to this JSON file (a list)"),
		},
	},
	{
		name: "connect", config: true, run: runBenchConnect,
		short: "WebSocket connects per second: a plain listener against a token listener (HS256 in the URL), in one run",
		long: `Measure how many WebSocket connections a node takes a second, plain and
authenticated, in one run: clients in worker processes dial, upgrade, read
the welcome (and, with a token in the URL, the auth ok) and close, as fast
as they can. The rounds alternate, so that a noisy machine slows both
alike. It also reports the server's CPU time per connect, the server being
--pid or the node the configuration names.`,
		flags: []flagDef{
			fl("url", "ws://127.0.0.1:9502/ws", "a WebSocket listener without authentication"),
			fl("auth-url", "", "a WebSocket listener with auth.mode token on the same node"),
			fl("secret", "", "the token listener's hmac_secret (tokens are minted per connection)"),
			fl("conns", 20000, "connections per measurement, in all"),
			fl("procs", 2, "worker processes"),
			fl("parallel", 32, "connects in flight per worker"),
			fl("rounds", 3, "rounds of plain then token"),
			fl("pid", 0, "the server's process id: report its CPU time per connect too (default: the node the configuration names)"),
		},
	},
	{
		name: "storm", config: true, run: runBenchStorm,
		short: "clients coming back to a node all at once against the same clients drained, in one run",
		long: `Measure what a node's clients coming back cost the node they come to: the node
the configuration names, B. For each of two arms the bench runs a node A of
its own (this binary's serve, with B's configuration and one listener,
--listener, on a port of its own, on B's NATS: B's nats.user and password,
or token, must be set), connects --conns WebSocket clients to A from worker
processes, and stops A: in the first arm all at once (shutdown.drain_batch
0, no jitter: the storm), in the second drained at --drain-rate a second
(batches every second, hints spread over a second). The clients are the Go
client's Reconnecting, knowing A's and B's URLs (--url); they honour A's
hints and come back to B.

Per arm it reports the time from A's stop until all are back on B (and
p50, p99), the peak of B's accept queue (tether_accept_queue, with
node.accepts_per_second) and of its listen socket's backlog (the kernel's
accept queue), B's CPU time meanwhile (B being --pid or the node the
configuration names), and the delivery latency of a probe room on B
(--probe-members members, a message every 1/--probe-rate s) meanwhile.`,
		flags: []flagDef{
			fl("url", "ws://127.0.0.1:9502/ws", "B's WebSocket listener, where the clients come back"),
			fl("listener", "ws", "the name of that listener in the configuration (A runs one like it)"),
			fl("pid", 0, "B's process id: report its CPU time (default: the node the configuration names)"),
			fl("conns", 19000, "clients in all"),
			fl("procs", 4, "worker processes"),
			fl("drain-rate", 1000, "the second arm's drain: connections a second"),
			fl("room", "", "a room every client joins (and joins again when back); empty: none"),
			fl("probe-members", 20, "members of the probe room on B"),
			fl("probe-rate", 50, "messages a second in the probe room"),
		},
	},
	{
		name: "peer", run: runBenchPeer,
		short: "tether against a Socket.IO 4 server in one run: idle RSS per connection, connects/s, room fan-out",
		long: `Measure tether against a Socket.IO 4 server (bench/peer/server.js) in one run,
with the same worker processes, the same clients' work and the same figures,
each with its ratio tether / Socket.IO: idle memory per connection (the
server process's RSS, made as bench idle makes it), connects per second and
the server's CPU per connect, and one room's fan-out (the server's CPU per
delivery, send to last member p50/p99, deliveries per second). The clients
speak Socket.IO through the bench's own client (bench/sio: Engine.IO v4 over
WebSocket).

Start tether (a WebSocket listener; --tether-pid its pid), and either start
the peer (node bench/peer/server.js; its pid) and give --peer and --peer-pid,
or give neither and the bench starts it (installing it with
bench/peer/install when needed). bench/run-peer does all of it and draws the
charts.

A progress line a second goes to stderr; at the end of each scenario a
summary table (tether, socket.io, ratio); with --out the results are appended
to JSON (with the raw series, for bench/charts.py) or CSV files.`,
		flags: []flagDef{
			fl("scenario", "idle,connect,room", "scenarios to run, comma separated: idle, connect, room"),
			fl("tether", "ws://127.0.0.1:9502/ws", "tether's WebSocket listener (chat app)"),
			fl("tether-pid", 0, "tether's process id"),
			fl("peer", "", "the Socket.IO server, http://host:port (default: start node bench/peer/server.js)"),
			fl("peer-pid", 0, "the Socket.IO server's process id (required with --peer)"),
			fl("peer-dir", "bench/peer", "where bench/peer is (server.js, install, node_modules)"),
			fl("procs", 2, "worker processes"),
			fl("conns", 2000, "idle: connections held"),
			fl("baseline", 5*time.Second, "idle: how long to watch each server's RSS at rest before connecting"),
			fl("settle", 20*time.Second, "idle: how long to hold them before measuring (the lowest RSS of its last half counts)"),
			fl("connects", 4000, "connect: connections per round, in all"),
			fl("parallel", 32, "connect: connects in flight per worker"),
			fl("rounds", 2, "connect: rounds of tether then the peer"),
			fl("members", 1000, "room: members"),
			fl("messages", 200, "room: messages sent"),
			fl("rate", 20, "room: messages per second"),
			fl("size", 128, "room: bytes of data per message"),
			fl("out", "", "append the results to these files, comma separated: JSON (a list of results, with the raw series) or, ending in .csv, CSV rows"),
		},
		required: []string{"tether-pid"},
	},
	{
		name: "echo", config: true, run: runBenchEcho,
		short: "framed ping/pong round trips per second over TCP: tether against a bare Go server, in one run",
		long: `Measure request and answer over TCP with the length framing (4-byte big-endian
length, then the body: tether's N, body_offset 4): every client sends a chat
ping of --size bytes and waits for its pong, over and over, for --duration;
then the same clients do the same against a bare Go server of the bench's
(bench echo-server, in a process of its own: the same framing, one JSON
decode and one write(2) per message, a goroutine per connection). Reports
round trips a second, the server's CPU per message and the round trip's
p50/p99, with tether / bare. The server is --pid, or the node the
configuration names.`,
		flags: []flagDef{
			fl("addr", "127.0.0.1:9501", "tether's TCP listener (chat app, framing length N, body_offset 4)"),
			fl("pid", 0, "tether's process id: report its CPU per message (default: the node the configuration names)"),
			fl("bare", "", "a running bare echo server (default: start `tether bench echo-server`)"),
			fl("bare-pid", 0, "its process id"),
			fl("conns", 200, "connections, each with one request in flight"),
			fl("procs", 2, "worker processes"),
			fl("size", 128, "bytes of each ping frame's body"),
			fl("duration", 5*time.Second, "how long each side is measured"),
			fl("ramp", 3*time.Second, "time the workers have to connect before the clock starts"),
			fl("rounds", 1, "rounds of tether then the bare server"),
			fl("out", "", "append the results to these files, comma separated: JSON (a list of results, with the raw series) or, ending in .csv, CSV rows"),
		},
	},
	{
		name: "echo-server", hidden: true, run: runBenchEchoServer,
		short: "the bare framed ping/pong server the echo bench compares tether with",
		flags: []flagDef{fl("addr", "127.0.0.1:0", "where to listen")},
	},
	{
		name: "floor", hidden: true, run: runBenchFloor,
		short: "the bare fan-out server the room bench compares tether with",
		flags: []flagDef{fl("addr", "127.0.0.1:0", "where to listen")},
	},
	{
		// What a bench parent runs in each worker process; the flags are
		// the parent's business, not the user's.
		name: "worker", hidden: true,
		short: "a bench worker process",
		subs: []command{
			{
				name: "idle", run: runIdleWorker, short: "hold idle clients",
				flags: []flagDef{fl("addr", "", ""), fl("ca", "", ""), fl("conns", 0, ""), fl("worker", 0, ""), fl("heartbeat", 20*time.Second, "")},
			},
			{
				name: "room", run: runRoomWorker, short: "hold members of the room bench",
				flags: []flagDef{fl("url", "", ""), fl("room", "", ""), fl("members", 0, ""), fl("messages", 0, ""), fl("worker", 0, "")},
			},
			{
				name: "storm", run: runStormWorker, short: "hold clients of the storm bench",
				flags: []flagDef{fl("urls", "", ""), fl("conns", 0, ""), fl("room", "", ""), fl("worker", 0, "")},
			},
			{
				name: "connect", run: runConnectWorker, short: "connect and close clients",
				flags: []flagDef{fl("url", "", ""), fl("secret", "", ""), fl("conns", 0, ""), fl("parallel", 32, ""), fl("worker", 0, "")},
			},
			{
				name: "sio-idle", run: runSioIdleWorker, short: "hold idle Socket.IO clients",
				flags: []flagDef{fl("url", "", ""), fl("conns", 0, ""), fl("worker", 0, "")},
			},
			{
				name: "sio-room", run: runSioRoomWorker, short: "hold Socket.IO members of the room bench",
				flags: []flagDef{fl("url", "", ""), fl("room", "", ""), fl("members", 0, ""), fl("messages", 0, ""), fl("worker", 0, "")},
			},
			{
				name: "echo", run: runEchoWorker, short: "ping and wait for the pong, over and over",
				flags: []flagDef{fl("addr", "", ""), fl("conns", 0, ""), fl("size", 128, ""), fl("start", "", ""), fl("duration", 5*time.Second, ""), fl("worker", 0, "")},
			},
		},
	},
}

// findingTheNode is how stop, reload and status find the node, for their
// help.
const findingTheNode = `The node is the process pid_file names; a relative pid_file is relative to
the configuration file's directory (to the working directory without one).
Without a live pid file, the node is the one whose admin API answers at
http.address, when that address is on this machine.`

// The groups of tether --help.
const (
	groupNode    = "node"
	groupCluster = "cluster"
	groupTest    = "test"
)

var groups = []*cobra.Group{
	{ID: groupNode, Title: "Run and control a node:"},
	{ID: groupCluster, Title: "Ask the cluster, through the admin API of the node the configuration names:"},
	{ID: groupTest, Title: "Test and measure:"},
}

// command declares one command.
type command struct {
	name  string // as typed
	usage string // what follows the name in the usage line, if not just flags
	short string // one line, for the list of commands
	long  string // the command's own help (default: short)
	group string // its heading in the list of its parent's commands ("": the rest)

	args   cobra.PositionalArgs // default: none
	config bool                 // it reads the configuration: -c/--config and --set (configFlags)
	flags  []flagDef            // its own flags

	exclusive   [][]string // flags of which at most one may be given
	oneRequired [][]string // flags of which at least one must be given
	required    []string   // flags that must be given

	hidden bool
	run    func(*call) error // nil: a command that only holds subs
	subs   []command
}

// flagDef declares one flag. The type of its default is the flag's:
// string, bool, int, time.Duration, or []string (a repeatable flag).
type flagDef struct {
	name  string
	short string // one letter, or ""
	value any
	usage string
}

func fl(name string, value any, usage string) flagDef {
	return flagDef{name: name, value: value, usage: usage}
}

// configFlags are the flags of every command that reads the
// configuration.
var configFlags = []flagDef{
	{name: "config", short: "c", value: "", usage: "configuration file (default $TETHER_CONFIG; none: built-in defaults)"},
	{name: "set", value: []string(nil), usage: "override one key, e.g. --set log.level=debug (repeatable)"},
}

// rootCommand is tether with every command of the table.
func rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "tether",
		Short:         "tether holds many TCP and WebSocket connections open and fans messages out to rooms",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cobra.EnableCommandSorting = false // the table's order: serve before stop
	root.AddGroup(groups...)
	for _, c := range commands {
		root.AddCommand(c.cobra())
	}
	return root
}

// cobra is the cobra.Command of c and its subs.
func (c *command) cobra() *cobra.Command {
	use := c.name
	if c.usage != "" {
		use += " " + c.usage
	}
	long := c.long
	if long == "" {
		long = c.short
	}
	cc := &cobra.Command{Use: use, Short: c.short, Long: long, GroupID: c.group, Hidden: c.hidden, Args: c.args}
	if cc.Args == nil && len(c.subs) == 0 {
		cc.Args = cobra.NoArgs
	}
	defs := c.flags
	if c.config {
		defs = append(append([]flagDef(nil), configFlags...), defs...)
	}
	for _, d := range defs {
		d.add(cc.Flags())
	}
	for _, names := range c.exclusive {
		cc.MarkFlagsMutuallyExclusive(names...)
	}
	for _, names := range c.oneRequired {
		cc.MarkFlagsOneRequired(names...)
	}
	for _, name := range c.required {
		if err := cc.MarkFlagRequired(name); err != nil {
			panic(fmt.Sprintf("tether %s: required flag: %v", c.name, err))
		}
	}
	if c.run != nil {
		run := c.run
		cc.RunE = func(cmd *cobra.Command, args []string) error {
			return run(&call{cmd: cmd, args: args, out: cmd.OutOrStdout()})
		}
	}
	for i := range c.subs {
		cc.AddCommand(c.subs[i].cobra())
	}
	return cc
}

func (d flagDef) add(fs *pflag.FlagSet) {
	switch v := d.value.(type) {
	case string:
		fs.StringP(d.name, d.short, v, d.usage)
	case bool:
		fs.BoolP(d.name, d.short, v, d.usage)
	case int:
		fs.IntP(d.name, d.short, v, d.usage)
	case time.Duration:
		fs.DurationP(d.name, d.short, v, d.usage)
	case []string:
		fs.StringArrayP(d.name, d.short, v, d.usage)
	default:
		panic(fmt.Sprintf("flag --%s: no flag type for a default of type %T", d.name, d.value))
	}
}

// call is one run of a command: its flags, parsed, and its arguments.
// Reading a flag the command does not declare, or as another type, is
// a bug in the table: it panics.
type call struct {
	cmd  *cobra.Command
	args []string
	out  io.Writer
}

func (c *call) ctx() context.Context { return c.cmd.Context() }

func (c *call) String(name string) string { return get(c, name, c.cmd.Flags().GetString) }
func (c *call) Bool(name string) bool     { return get(c, name, c.cmd.Flags().GetBool) }
func (c *call) Int(name string) int       { return get(c, name, c.cmd.Flags().GetInt) }
func (c *call) Duration(name string) time.Duration {
	return get(c, name, c.cmd.Flags().GetDuration)
}
func (c *call) Strings(name string) []string { return get(c, name, c.cmd.Flags().GetStringArray) }

func get[T any](c *call, name string, read func(string) (T, error)) T {
	v, err := read(name)
	if err != nil {
		panic(fmt.Sprintf("%s: flag --%s: %v", c.cmd.CommandPath(), name, err))
	}
	return v
}

// config reads the configuration the command's -c/--config and --set
// name: defaults, file, TETHER_* environment, --set flags.
func (c *call) config() (*config.Config, error) {
	return loadConfig(c.String("config"), c.Strings("set"))
}

// loadConfig reads the configuration from file ($TETHER_CONFIG when
// empty) and sets. A relative pid_file is made relative to the file's
// directory, so that the node and the CLI find the same pid file from
// any working directory.
func loadConfig(file string, sets []string) (*config.Config, error) {
	if file == "" {
		file = os.Getenv(config.EnvPrefix + "CONFIG")
	}
	cfg, err := config.Load(file, os.Environ(), sets)
	if err != nil {
		return nil, err
	}
	if file != "" && cfg.PIDFile != "" && !filepath.IsAbs(cfg.PIDFile) {
		cfg.PIDFile = filepath.Join(filepath.Dir(file), cfg.PIDFile)
	}
	return cfg, nil
}
