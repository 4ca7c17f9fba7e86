package config

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"tether/test/testca"
)

func TestDefaultsAreValid(t *testing.T) {
	cfg, err := Load("", nil, nil)
	if err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if len(cfg.Listeners) != 2 || cfg.Listener("tcp") == nil || cfg.Listener("ws") == nil {
		t.Fatalf("want default listeners tcp and ws, got %+v", cfg.Listeners)
	}
	ws := cfg.Listener("ws")
	if ws.Protocol != ProtocolWebSocket || ws.Framing.Type != FramingWebSocket || ws.Heartbeat.PingInterval.D() != 25*time.Second {
		t.Errorf("ws listener defaults wrong: %+v", ws)
	}
	if tcp := cfg.Listener("tcp"); tcp.Framing.LengthType != "N" || tcp.Framing.BodyOffset != 4 || tcp.Framing.MaxFrame != 64<<10 {
		t.Errorf("tcp framing defaults wrong: %+v", tcp.Framing)
	}
	if cfg.NATS.URL != "" || cfg.NATS.Embedded.Port != 4222 {
		t.Errorf("want embedded NATS on 4222 by default, got %+v", cfg.NATS)
	}
}

func TestExampleLoadsAndMatchesDefaults(t *testing.T) {
	cfg, err := Load("example.yaml", nil, nil)
	if err != nil {
		t.Fatalf("example.yaml: %v", err)
	}
	def := Default()
	def.Node.Name = "edge1" // the example names its node
	if !reflect.DeepEqual(cfg, def) {
		t.Errorf("example.yaml drifted from the defaults:\nexample  %+v\ndefaults %+v", cfg, def)
	}
}

// TestExampleDocumentsEveryKey keeps example.yaml complete: every key of
// Config must be written in it (listener keys in at least one listener).
func TestExampleDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	written := map[string]bool{}
	var walk func(n *yaml.Node, key string)
	walk = func(n *yaml.Node, key string) {
		switch n.Kind {
		case yaml.DocumentNode:
			walk(n.Content[0], key)
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := joinKey(key, n.Content[i].Value)
				written[k] = true
				walk(n.Content[i+1], k)
			}
		case yaml.SequenceNode:
			if key == "listeners" {
				for _, item := range n.Content {
					walk(item, "listeners.*")
				}
			}
		}
	}
	walk(&doc, "")
	cfg := Default()
	for _, k := range cfg.Keys() {
		for _, l := range cfg.Listeners {
			k = strings.Replace(k, "listeners."+l.Name+".", "listeners.*.", 1)
		}
		if !written[k] {
			t.Errorf("example.yaml does not document %s", k)
		}
	}
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tether.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestFileOverridesDefaultsAndListenersStartFromTheirProtocol(t *testing.T) {
	path := writeFile(t, `
node: {name: n1}
log: {level: debug}
listeners:
  - name: game
    address: 127.0.0.1:7000
    framing: {type: eof, eof: "\n"}
  - {name: browser, protocol: websocket, address: 127.0.0.1:7001}
`)
	cfg, err := Load(path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Node.Name != "n1" || cfg.Log.Level != "debug" || cfg.Log.Format != "auto" {
		t.Errorf("file values or untouched defaults wrong: %+v %+v", cfg.Node, cfg.Log)
	}
	if len(cfg.Listeners) != 2 {
		t.Fatalf("a file's listeners replace the defaults; got %d", len(cfg.Listeners))
	}
	game := cfg.Listener("game")
	if game.Protocol != ProtocolTCP || game.Framing.Type != FramingEOF || game.Framing.EOF != "\n" || game.Framing.MaxFrame != 64<<10 {
		t.Errorf("game: %+v", game)
	}
	if game.Heartbeat.IdleTimeout.D() != time.Minute || game.Heartbeat.PingInterval != 0 {
		t.Errorf("game heartbeat should keep tcp defaults: %+v", game.Heartbeat)
	}
	br := cfg.Listener("browser")
	if br.Path != "/ws" || br.Framing.Type != FramingWebSocket || br.Heartbeat.PingInterval.D() != 25*time.Second {
		t.Errorf("browser should start from websocket defaults: %+v", br)
	}
}

func TestPrecedenceFileEnvSet(t *testing.T) {
	path := writeFile(t, "log: {level: warn}\nshutdown_timeout: 3s\nhttp: {address: 127.0.0.1:9700}\n")
	env := []string{
		"HOME=/root", // not ours: ignored
		"TETHER_CONFIG=" + path,
		"TETHER_LOG_LEVEL=error",
		"TETHER_HTTP_ADDRESS=127.0.0.1:9800",
		"TETHER_LISTENERS_TCP_HEARTBEAT_IDLE_TIMEOUT=7s",
		"TETHER_LISTENERS_WS_ALLOWED_ORIGINS=https://a.example, https://b.example",
	}
	cfg, err := Load(path, env, []string{"log.level=debug", "listeners.tcp.framing.max_frame=64KiB"})
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"set beats env beats file", cfg.Log.Level, "debug"},
		{"env beats file", cfg.HTTP.Address, "127.0.0.1:9800"},
		{"file beats default, under the key's old name", cfg.Shutdown.Timeout.D(), 3 * time.Second},
		{"env duration", cfg.Listener("tcp").Heartbeat.IdleTimeout.D(), 7 * time.Second},
		{"env list", cfg.Listener("ws").AllowedOrigins, []string{"https://a.example", "https://b.example"}},
		{"set size", cfg.Listener("tcp").Framing.MaxFrame, Size(64 << 10)},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

// TestListenerStartsFromItsProtocolsDefaultsAddressIncluded: a file that
// lists one listener and changes one key of it gets the rest from the
// protocol's defaults, the address too (it failed with
// `listeners.tcp.address: "" is not host:port`). Two listeners of one
// protocol without an address would share it: that names the key.
func TestListenerStartsFromItsProtocolsDefaultsAddressIncluded(t *testing.T) {
	cfg, err := Load(writeFile(t, "listeners: [{name: tcp, heartbeat: {idle_timeout: 30s}}, {name: page, protocol: websocket}]\n"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tcp, page := cfg.Listener("tcp"), cfg.Listener("page")
	if tcp.Address != "0.0.0.0:9501" || tcp.Heartbeat.IdleTimeout.D() != 30*time.Second || tcp.Framing.Type != FramingLength {
		t.Errorf("tcp: address %q, heartbeat %+v, framing %+v", tcp.Address, tcp.Heartbeat, tcp.Framing)
	}
	if page.Address != "0.0.0.0:9502" || page.Path != "/ws" {
		t.Errorf("page: address %q, path %q", page.Address, page.Path)
	}
	_, err = Load(writeFile(t, "listeners: [{name: a}, {name: b}]\n"), nil, nil)
	if err == nil || !strings.Contains(err.Error(), "listeners.b.address: 0.0.0.0:9501 is also the address of listener a") {
		t.Errorf("two tcp listeners without an address: %v", err)
	}
}

// TestUnrelatedEnvironmentIsAWarning: a TETHER_* variable that names no
// key (TETHER_HOME of a wrapper script) does not stop the node: Load goes
// on and says so in Warnings, naming the closest key when the variable
// looks like a typo of one. A key's bad value stays an error.
func TestUnrelatedEnvironmentIsAWarning(t *testing.T) {
	cfg, err := Load("", []string{"TETHER_HOME=/opt/tether", "TETHER_LOG_LEVLE=debug", "TETHER_LOG_FORMAT=json"}, nil)
	if err != nil {
		t.Fatalf("an unrelated TETHER_* variable stopped Load: %v", err)
	}
	want := []string{
		"environment TETHER_HOME: not a configuration key; ignored",
		"environment TETHER_LOG_LEVLE: no such key, ignored; did you mean TETHER_LOG_LEVEL?",
	}
	if !reflect.DeepEqual(cfg.Warnings(), want) {
		t.Errorf("warnings %q, want %q", cfg.Warnings(), want)
	}
	if cfg.Log.Level != "info" || cfg.Log.Format != "json" {
		t.Errorf("log %+v: the typo must change nothing, the real key must apply", cfg.Log)
	}
	if cfg, err := Load("", []string{"TETHER_LOG_LEVEL=debug"}, nil); err != nil || len(cfg.Warnings()) != 0 {
		t.Errorf("a known key: %v, warnings %q", err, cfg.Warnings())
	}
	// Warnings are no key: a file cannot set them, and Keys does not list them.
	if _, err := Parse([]byte(`"": [x]` + "\n")); err == nil || !strings.Contains(err.Error(), "unknown key") {
		t.Errorf("an empty key: %v", err)
	}
	if slices.Contains(cfg.Keys(), "") {
		t.Errorf("Keys lists an empty key")
	}
}

func TestLoadErrorsNameTheKey(t *testing.T) {
	cases := []struct {
		name, file string
		env, sets  []string
		want       string
	}{
		{name: "unknown top-level key", file: "lgo: {level: info}\n", want: "line 1: lgo: unknown key; did you mean log?"},
		{name: "unknown nested key", file: "listeners:\n  - name: tcp\n    address: :1\n    heartbeat: {idle_timout: 5s}\n",
			want: "line 4: listeners.tcp.heartbeat.idle_timout: unknown key; did you mean idle_timeout?"},
		{name: "unknown key far from any", file: "zzzzzzzz: 1\n", want: "zzzzzzzz: unknown key (known: node, pid_file"},
		{name: "duplicate key", file: "log: {level: info}\nlog: {level: debug}\n", want: "log: duplicate key"},
		{name: "negative duration", file: "listeners:\n  - {name: t, address: ':1', heartbeat: {idle_timeout: -5s}}\n",
			want: "listeners.t.heartbeat.idle_timeout: must not be negative, got -5s"},
		{name: "bad duration", file: "shutdown_timeout: soon\n", want: `shutdown_timeout: not a duration: "soon"`},
		{name: "bad size", file: "listeners:\n  - {name: t, address: ':1', framing: {max_frame: lots}}\n", want: `listeners.t.framing.max_frame: not a size: "lots"`},
		{name: "unknown framing type", file: "listeners:\n  - {name: t, address: ':1', framing: {type: lenght}}\n",
			want: `listeners.t.framing.type: unknown value "lenght" (allowed: length, eof)`},
		{name: "wrong type", file: "rooms: {announce_limit: many}\n", want: `rooms.announce_limit: want a whole number, got "many"`},
		{name: "mapping where value expected", file: "log: {level: {x: 1}}\n", want: "log.level: want a single value, got a mapping"},
		{name: "bad env value", env: []string{"TETHER_ROOMS_ANNOUNCE_LIMIT=x"}, want: `environment TETHER_ROOMS_ANNOUNCE_LIMIT: rooms.announce_limit: want a whole number, got "x"`},
		{name: "unknown set key", sets: []string{"log.levle=debug"}, want: "--set log.levle: no such key; did you mean level?"},
		{name: "set without value", sets: []string{"log.level"}, want: `--set "log.level": want key=value`},
		{name: "set unknown listener", sets: []string{"listeners.nope.address=:1"}, want: `listeners.nope.address: no listener named "nope"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := ""
			if c.file != "" {
				path = writeFile(t, c.file)
			}
			_, err := Load(path, c.env, c.sets)
			if err == nil {
				t.Fatalf("want error containing %q, got none", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not contain %q", err, c.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("one bad key should give one line, got %q", err)
			}
		})
	}
}

// TestValidateEveryRule breaks one key at a time, starting from valid
// defaults, and checks that exactly that key is named.
func TestValidateEveryRule(t *testing.T) {
	file := writeFile(t, "a file that exists")
	external := func(c *Config) { c.NATS.URL = "nats://n:4222" }
	cases := []struct {
		key  string
		mod  func(c *Config)
		want string
	}{
		{"node.name", func(c *Config) { c.Node.Name = "" }, "required"},
		{"node.name", func(c *Config) { c.Node.Name = "a.b" }, "only letters, digits, - and _"},
		{"log.level", func(c *Config) { c.Log.Level = "loud" }, "allowed: debug, info, warn, error"},
		{"log.format", func(c *Config) { c.Log.Format = "xml" }, "allowed: auto, json, console"},
		{"http.address", func(c *Config) { c.HTTP.Address = "nope" }, "not host:port"},
		{"http.token", func(c *Config) { c.HTTP.Address = "0.0.0.0:9600" }, "required when http.address is not a loopback"},
		{"nats.url", func(c *Config) { c.NATS.URL = "http://x:1" }, "not a NATS URL"},
		{"nats.embedded.host", func(c *Config) { c.NATS.Embedded.Host = "" }, "required when nats.url is empty"},
		{"nats.embedded.port", func(c *Config) { c.NATS.Embedded.Port = 70000 }, "must be a port"},
		{"nats.embedded.cluster.port", func(c *Config) { c.NATS.Embedded.Cluster.Port = -2; c.NATS.Token = "t" }, "must be a port"},
		{"nats.embedded.cluster.name", func(c *Config) { c.NATS.Embedded.Cluster.Port = 6222; c.NATS.Token = "t" }, "required when"},
		{"nats.embedded.cluster.routes", func(c *Config) {
			c.NATS.Embedded.Cluster = EmbeddedCluster{Name: "c", Port: -1, Routes: []string{"http://x"}}
			c.NATS.Token = "t"
		}, "not a route URL"},
		{"nats.embedded.cluster.port", func(c *Config) { c.NATS.Embedded.Cluster.Routes = []string{"nats-route://h:1"} }, "required (or -1) when routes are set"},
		{"nats.subject_prefix", func(c *Config) { c.NATS.SubjectPrefix = "a.*" }, "not a NATS subject prefix"},
		{"nats.reconnect_wait", func(c *Config) { c.NATS.ReconnectWait = -1 }, "must not be negative"},
		{"nats.reconnect_buffer", func(c *Config) { c.NATS.ReconnectBuffer = -1 }, "must not be negative"},
		{"nats.history_replicas", func(c *Config) { c.NATS.HistoryReplicas = 6 }, "must be 0 (pick) to 5"},
		{"nats.user", func(c *Config) { c.NATS.Embedded.Host = "0.0.0.0" }, "required (or nats.token) when nats.embedded.host is not a loopback address (0.0.0.0)"},
		{"nats.user", func(c *Config) { c.NATS.Embedded.Host = "10.0.0.1"; c.NATS.Password = "p" }, "required when nats.password is set"},
		{"nats.user", func(c *Config) {
			c.NATS.Embedded.Cluster = EmbeddedCluster{Name: "c", Host: "127.0.0.1", Port: 6222, Routes: []string{"nats-route://127.0.0.1:6223"}}
		}, "required (or nats.token) when the embedded server has routes"},
		{"nats.user", func(c *Config) { c.NATS.Embedded.Cluster = EmbeddedCluster{Name: "c", Port: -1} }, "when the embedded server has routes"},
		{"nats.password", func(c *Config) { c.NATS.User = "u" }, "required with nats.user"},
		{"nats.user", func(c *Config) { c.NATS.Password = "p" }, "required when nats.password is set"},
		{"nats.token", func(c *Config) { c.NATS.User, c.NATS.Password, c.NATS.Token = "u", "p", "t" }, "conflicts with nats.user: NATS takes one of"},
		{"nats.credentials_file", func(c *Config) { external(c); c.NATS.Token, c.NATS.CredentialsFile = "t", file }, "conflicts with nats.token"},
		{"nats.credentials_file", func(c *Config) {
			external(c)
			c.NATS.User, c.NATS.Password, c.NATS.Token, c.NATS.CredentialsFile = "u", "p", "t", file
		}, "conflicts with nats.user and nats.token"},
		{"nats.credentials_file", func(c *Config) { c.NATS.CredentialsFile = file }, "applies to an external NATS (nats.url) only"},
		{"nats.credentials_file", func(c *Config) { external(c); c.NATS.CredentialsFile = "/no/such.creds" }, "no such file"},
		{"nats.tls.ca_file", func(c *Config) { c.NATS.TLS.CAFile = file }, "applies to an external NATS (nats.url) only"},
		{"nats.tls.ca_file", func(c *Config) { external(c); c.NATS.TLS.CAFile = "/no/such.pem" }, "no such file"},
		{"nats.tls.ca_file", func(c *Config) { external(c); c.NATS.TLS.CAFile = t.TempDir() }, "is not a file"},
		{"nats.tls.key_file", func(c *Config) { external(c); c.NATS.TLS.CertFile = file }, "required when nats.tls.cert_file is set"},
		{"nats.tls.cert_file", func(c *Config) { external(c); c.NATS.TLS.KeyFile = file }, "required when nats.tls.key_file is set"},
		{"cluster.heartbeat_interval", func(c *Config) { c.Cluster.HeartbeatInterval = 0 }, "must be positive"},
		{"cluster.dead_after", func(c *Config) { c.Cluster.DeadAfter = c.Cluster.HeartbeatInterval }, "at least twice"},
		{"rooms.max_per_connection", func(c *Config) { c.Rooms.MaxPerConnection = 0 }, "at least 1"},
		{"rooms.announce_limit", func(c *Config) { c.Rooms.AnnounceLimit = 0 }, "at least 1"},
		{"rooms.presence_interval", func(c *Config) { c.Rooms.PresenceInterval = 0 }, "must be positive"},
		{"shutdown.timeout", func(c *Config) { c.Shutdown.Timeout = -1 }, "must not be negative"},
		{"shutdown.drain_batch", func(c *Config) { c.Shutdown.DrainBatch = -1 }, "at least 0"},
		{"shutdown.drain_interval", func(c *Config) { c.Shutdown.DrainInterval = 0 }, "must be positive"},
		{"shutdown.retry_jitter", func(c *Config) { c.Shutdown.RetryJitter = -1 }, "must not be negative"},
		{"node.accepts_per_second", func(c *Config) { c.Node.AcceptsPerSecond = -1 }, "at least 0"},
		{"node.accept_queue", func(c *Config) { c.Node.AcceptQueue = -1 }, "at least 0"},
		{"listeners.ws.public_url", func(c *Config) { c.Listener("ws").PublicURL = "http://x:1/ws" }, "not a WebSocket URL"},
		{"listeners.tcp.public_url", func(c *Config) { c.Listener("tcp").PublicURL = "ws://x:1" }, "not host:port"},
		{"listeners[1].name", func(c *Config) { c.Listeners[1].Name = "" }, "required"},
		{"listeners.ws.name", func(c *Config) { c.Listeners[1].Name = "tcp"; c.Listeners[1].Name = "ws"; c.Listeners[0].Name = "ws" }, "two listeners are named"},
		{"listeners.ws.address", func(c *Config) { c.Listeners[1].Address = c.Listeners[0].Address }, "also the address of listener tcp"},
		{"listeners.tcp.address", func(c *Config) { c.Listeners[0].Address = "host:port" }, "no valid port"},
		{"listeners.tcp.protocol", func(c *Config) { c.Listeners[0].Protocol = "udp" }, "allowed: tcp, websocket"},
		{"listeners.tcp.app", func(c *Config) { c.Listeners[0].App = "game" }, "allowed: chat, relay"},
		{"listeners.tcp.path", func(c *Config) { c.Listeners[0].Path = "/ws" }, "applies to websocket listeners only"},
		{"listeners.ws.path", func(c *Config) { c.Listeners[1].Path = "ws" }, "must start with /"},
		{"listeners.ws.static_dir", func(c *Config) { c.Listeners[1].StaticDir = "/no/such/dir" }, "not a directory"},
		{"listeners.ws.allowed_origins", func(c *Config) { c.Listeners[1].AllowedOrigins = []string{"example.com"} }, "not an origin"},
		{"listeners.ws.auth.mode", func(c *Config) { c.Listeners[1].Auth.Mode = "jwt" }, "unknown value"},
		{"listeners.ws.auth.jwt", func(c *Config) { c.Listeners[1].Auth.Mode = AuthToken }, "needs hmac_secret"},
		{"listeners.ws.auth.jwt.hmac_secret", func(c *Config) {
			c.Listeners[1].Auth.Mode, c.Listeners[1].Auth.JWT.HMACSecret = AuthToken, "short"
		}, "at least 32 bytes"},
		{"listeners.ws.auth.jwt", func(c *Config) {
			c.Listeners[1].Auth.Mode = AuthToken
			c.Listeners[1].Auth.JWT = JWT{HMACSecret: strings.Repeat("s", 32), PublicKeyFile: "key.pem"}
		}, "the key fixes the algorithm"},
		{"listeners.ws.auth.jwt.public_key_file", func(c *Config) {
			c.Listeners[1].Auth.Mode, c.Listeners[1].Auth.JWT.PublicKeyFile = AuthToken, "/nonexistent.pem"
		}, "no such file"},
		{"listeners.ws.auth.proxy.url", func(c *Config) { c.Listeners[1].Auth.Mode = AuthProxy }, "not an http://"},
		{"listeners.ws.auth.mode", func(c *Config) {
			c.Listeners[1].App, c.Listeners[1].Auth.Mode, c.Listeners[1].Auth.Proxy.URL = AppRelay, AuthProxy, "http://127.0.0.1:1/auth"
		}, "needs app chat"},
		{"listeners.tcp.limits.messages_per_second", func(c *Config) { c.Listeners[0].Limits.MessagesPerSecond = -1 }, "at least 0"},
		{"listeners.ws.handshake_timeout", func(c *Config) { c.Listeners[1].HandshakeTimeout = -1 }, "must not be negative"},
		{"listeners.ws.framing.type", func(c *Config) { c.Listeners[1].Framing.Type = "length" }, "allowed: websocket"},
		{"listeners.tcp.framing.max_frame", func(c *Config) { c.Listeners[0].Framing.MaxFrame = 0 }, "between 1 and 1GiB"},
		{"listeners.tcp.framing.eof", func(c *Config) { c.Listeners[0].Framing.Type = "eof"; c.Listeners[0].Framing.EOF = "123456789" }, "1 to 8 bytes"},
		{"listeners.tcp.framing.length_type", func(c *Config) { c.Listeners[0].Framing.LengthType = "q" }, "allowed: c C s S n N l L v V"},
		{"listeners.tcp.framing.length_offset", func(c *Config) { c.Listeners[0].Framing.LengthOffset = -1 }, "must not be negative"},
		{"listeners.tcp.framing.body_offset", func(c *Config) { c.Listeners[0].Framing.BodyOffset = 2 }, "at least length_offset + 4"},
		{"listeners.tcp.framing.max_frame", func(c *Config) { c.Listeners[0].Framing.MaxFrame = 4 }, "larger than body_offset"},
		{"listeners.tcp.tcp_keepalive.idle", func(c *Config) { c.Listeners[0].TCPKeepalive.Idle = Duration(1500 * time.Millisecond) }, "whole number of seconds"},
		{"listeners.tcp.tcp_keepalive.interval", func(c *Config) { c.Listeners[0].TCPKeepalive.Interval = 0 }, "at least 1s"},
		{"listeners.tcp.tcp_keepalive.count", func(c *Config) { c.Listeners[0].TCPKeepalive.Count = 0 }, "between 1 and 127"},
		{"listeners.tcp.tcp_user_timeout", func(c *Config) { c.Listeners[0].TCPUserTimeout = -1 }, "must not be negative"},
		{"listeners.tcp.heartbeat.idle_timeout", func(c *Config) { c.Listeners[0].Heartbeat.IdleTimeout = -1 }, "must not be negative"},
		{"listeners.tcp.heartbeat.check_interval", func(c *Config) { c.Listeners[0].Heartbeat.CheckInterval = -1 }, "must not be negative"},
		{"listeners.tcp.heartbeat.ping_interval", func(c *Config) { c.Listeners[0].Heartbeat.PingInterval = -1 }, "must not be negative"},
		{"listeners.tcp.heartbeat.ping_not_response_limit", func(c *Config) { c.Listeners[0].Heartbeat.PingNotResponseLimit = -1 }, "at least 0"},
		{"listeners.ws.heartbeat.ping_data", func(c *Config) { c.Listeners[1].Heartbeat.PingData = strings.Repeat("x", 126) }, "at most 125 bytes"},
		{"listeners.tcp.limits.max_connections", func(c *Config) { c.Listeners[0].Limits.MaxConnections = -1 }, "at least 0"},
		{"node.max_connections", func(c *Config) { c.Node.MaxConnections = -1 }, "at least 0"},
		{"node.descriptor_reserve", func(c *Config) { c.Node.DescriptorReserve = 3 }, "at least 16"},
		{"node.max_partial_bytes", func(c *Config) { c.Node.MaxPartialBytes = 1000 }, "at least 64KiB"},
		{"node.name", func(c *Config) { c.Node.Name = strings.Repeat("n", 65) }, "at most 64"},
		{"listeners.tcp.limits.max_per_ip", func(c *Config) { c.Listeners[0].Limits.MaxPerIP = -1 }, "at least 0"},
		{"listeners.tcp.limits.accepts_per_ip_per_second", func(c *Config) { c.Listeners[0].Limits.AcceptsPerIPPerSecond = -1 }, "at least 0"},
		{"listeners.tcp.limits.outbound_queue", func(c *Config) { c.Listeners[0].Limits.OutboundQueue = 10 }, "at least 1KiB"},
		{"listeners.tcp.limits.write_timeout", func(c *Config) { c.Listeners[0].Limits.WriteTimeout = -1 }, "must not be negative"},
		{"listeners.tcp.limits.on_full", func(c *Config) { c.Listeners[0].Limits.OnFull = "block" }, "allowed: close, drop"},
	}
	for _, c := range cases {
		t.Run(c.key+"/"+c.want, func(t *testing.T) {
			cfg := Default()
			c.mod(cfg)
			err := cfg.Validate()
			if err == nil {
				t.Fatalf("want an error on %s", c.key)
			}
			want := c.key + ": "
			if !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %q, want %q...%q", err, want, c.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("one bad key, want one error; got %q", err)
			}
		})
	}
}

// TestValidateNATSCredentials: the ways of authenticating to NATS that
// validate, each alone.
func TestValidateNATSCredentials(t *testing.T) {
	file := writeFile(t, "a file that exists")
	cases := []struct {
		name string
		mod  func(c *NATS)
	}{
		{"embedded, loopback, none configured (a generated password)", func(*NATS) {}},
		{"embedded off loopback with user and password", func(n *NATS) { n.Embedded.Host, n.User, n.Password = "0.0.0.0", "u", "p" }},
		{"embedded off loopback with a token", func(n *NATS) { n.Embedded.Host, n.Token = "0.0.0.0", "t" }},
		{"embedded with routes and user and password", func(n *NATS) {
			n.User, n.Password = "u", "p"
			n.Embedded.Cluster = EmbeddedCluster{Name: "c", Port: -1, Routes: []string{"nats-route://127.0.0.1:6223"}}
		}},
		{"embedded with routes and a token", func(n *NATS) {
			n.Token = "t"
			n.Embedded.Cluster = EmbeddedCluster{Name: "c", Port: -1, Routes: []string{"nats-route://127.0.0.1:6223"}}
		}},
		{"external with a user without a password", func(n *NATS) { n.URL, n.User = "nats://n:4222", "u" }},
		{"external with a credentials file and TLS", func(n *NATS) {
			n.URL, n.CredentialsFile = "tls://n:4222", file
			n.TLS = NATSTLS{CAFile: file, CertFile: file, KeyFile: file}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := Default()
			c.mod(&cfg.NATS)
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestValidateReportsEveryBadKey(t *testing.T) {
	cfg := Default()
	cfg.Log.Level = "loud"
	cfg.Listeners[0].Limits.OnFull = "block"
	err := cfg.Validate()
	if err == nil || strings.Count(err.Error(), "\n") != 1 {
		t.Fatalf("want two lines, got %v", err)
	}
}

func TestUnits(t *testing.T) {
	durations := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"10s", 10 * time.Second, true}, {"250ms", 250 * time.Millisecond, true}, {"1m30s", 90 * time.Second, true},
		{"0", 0, true}, {"-5s", -5 * time.Second, true}, {"10", 0, false}, {"soon", 0, false},
	}
	for _, c := range durations {
		var d Duration
		err := d.UnmarshalText([]byte(c.in))
		if (err == nil) != c.ok || (c.ok && d.D() != c.want) {
			t.Errorf("Duration %q: got %v, %v", c.in, d, err)
		}
	}
	sizes := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"2MiB", 2 << 20, true}, {"64KiB", 64 << 10, true}, {"1GiB", 1 << 30, true}, {"1000", 1000, true},
		{"5KB", 5000, true}, {"3MB", 3e6, true}, {"7B", 7, true}, {" 1 MiB ", 1 << 20, true},
		{"MiB", 0, false}, {"1.5MiB", 0, false}, {"1TiB", 0, false}, {"99999999999GiB", 0, false},
	}
	for _, c := range sizes {
		var s Size
		err := s.UnmarshalText([]byte(c.in))
		if (err == nil) != c.ok || (c.ok && int64(s) != c.want) {
			t.Errorf("Size %q: got %d, %v", c.in, s, err)
		}
	}
	if got := Size(2 << 20).String(); got != "2MiB" {
		t.Errorf("Size string: %s", got)
	}
	if got := Size(1000).String(); got != "1000" {
		t.Errorf("Size string: %s", got)
	}
}

func TestKeysAndEnvNames(t *testing.T) {
	cfg := Default()
	keys := cfg.Keys()
	for _, want := range []string{"log.level", "nats.embedded.cluster.routes", "listeners.tcp.heartbeat.idle_timeout", "listeners.ws.allowed_origins"} {
		found := false
		for _, k := range keys {
			found = found || k == want
		}
		if !found {
			t.Errorf("Keys() lacks %s", want)
		}
	}
	for _, k := range keys {
		if err := cfg.Set(k, "x"); err != nil && strings.Contains(err.Error(), "no such key") {
			t.Errorf("Set does not accept its own key %s: %v", k, err)
		}
	}
	if got := EnvName("listeners.ws-public.heartbeat.idle_timeout"); got != "TETHER_LISTENERS_WS_PUBLIC_HEARTBEAT_IDLE_TIMEOUT" {
		t.Errorf("EnvName: %s", got)
	}
}

// TestREADMEDocumentsEveryKey keeps the README's configuration reference
// complete: every key has a row.
func TestREADMEDocumentsEveryKey(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range Default().Keys() {
		k = strings.Replace(strings.Replace(k, "listeners.tcp.", "listeners[].", 1), "listeners.ws.", "listeners[].", 1)
		if !strings.Contains(string(readme), "| `"+k+"` |") {
			t.Errorf("README's configuration reference has no row for %s", k)
		}
	}
}

// TestNamespaces: namespaces start from the default room options, are
// addressed by prefix in --set and the environment, and give a room its
// options by the part of its name before ':'.
func TestNamespaces(t *testing.T) {
	path := writeFile(t, `
rooms:
  default: {presence: false}
  namespaces:
    - {prefix: news, history_size: 100, history_ttl: 10m}
    - {prefix: ops, publish: none}
`)
	cfg, err := Load(path, []string{"TETHER_ROOMS_NAMESPACES_NEWS_HISTORY_SIZE=50"}, []string{"rooms.namespaces.ops.join=token"})
	if err != nil {
		t.Fatal(err)
	}
	news, ops, plain := cfg.Rooms.Options("news:eu"), cfg.Rooms.Options("ops:alerts"), cfg.Rooms.Options("lobby")
	if news.HistorySize != 50 || news.HistoryTTL.D() != 10*time.Minute || news.Join != JoinAnyone || !news.Presence {
		t.Errorf("news: %+v", news)
	}
	if ops.Publish != PublishNone || ops.Join != JoinToken || ops.HistorySize != 0 {
		t.Errorf("ops: %+v", ops)
	}
	if plain.Presence || plain != cfg.Rooms.Options("weather:today") {
		t.Errorf("rooms without a known namespace: %+v", plain)
	}
	if !cfg.Rooms.HasHistory() {
		t.Error("no history seen")
	}
	for _, bad := range []struct{ yaml, key string }{
		{"rooms: {namespaces: [{prefix: a}, {prefix: a}]}", "rooms.namespaces.a.prefix: two namespaces"},
		{"rooms: {namespaces: [{prefix: 'a:b'}]}", "rooms.namespaces.a:b.prefix"},
		{"rooms: {namespaces: [{prefix: a, join: everyone}]}", "rooms.namespaces.a.join: unknown value"},
		{"rooms: {namespaces: [{prefix: a, histroy_size: 1}]}", "rooms.namespaces.a.histroy_size: unknown key; did you mean history_size?"},
		{"rooms: {default: {history_size: -1}}", "rooms.default.history_size: must be at least 0"},
	} {
		if _, err := Load(writeFile(t, bad.yaml), nil, nil); err == nil || !strings.Contains(err.Error(), bad.key) {
			t.Errorf("%s: %v, want %s", bad.yaml, err, bad.key)
		}
	}
}

// TestHistoryReplicas: 0 picks 3 for an embedded server with two or more
// routes (a NATS cluster of three or more), 1 otherwise; a value set is
// taken as it is.
func TestHistoryReplicas(t *testing.T) {
	c := Default()
	if got := c.NATS.Replicas(); got != 1 {
		t.Errorf("single node: %d replicas, want 1", got)
	}
	c.NATS.Embedded.Cluster.Routes = []string{"nats-route://a:6222", "nats-route://b:6222"}
	if got := c.NATS.Replicas(); got != 3 {
		t.Errorf("embedded cluster of three: %d replicas, want 3", got)
	}
	c.NATS.URL = "nats://x:4222"
	if got := c.NATS.Replicas(); got != 1 {
		t.Errorf("external NATS: %d replicas, want 1", got)
	}
	c.NATS.HistoryReplicas = 2
	if got := c.NATS.Replicas(); got != 2 {
		t.Errorf("set to 2: %d replicas", got)
	}
}

// TestValidateTLS checks the certificate keys: both or neither, readable
// files, a certificate and its own key; each error names its key.
func TestValidateTLS(t *testing.T) {
	ca := testca.New(t)
	cert, key := ca.Issue(t, 2)
	otherCert, _ := ca.Issue(t, 3)
	cases := []struct {
		name string
		tls  TLS
		key  string // "": valid
		want string
	}{
		{"a pair", TLS{CertFile: cert, KeyFile: key}, "", ""},
		{"cert alone", TLS{CertFile: cert}, "tls.key_file", "required when"},
		{"key alone", TLS{KeyFile: key}, "tls.cert_file", "required when"},
		{"no cert file", TLS{CertFile: cert + ".missing", KeyFile: key}, "tls.cert_file", "no such file"},
		{"no key file", TLS{CertFile: cert, KeyFile: key + ".missing"}, "tls.key_file", "no such file"},
		{"another's key", TLS{CertFile: otherCert, KeyFile: key}, "tls", "not a certificate and its key"},
		{"key for cert", TLS{CertFile: key, KeyFile: key}, "tls", "not a certificate and its key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, prefix := range []string{"listeners.tcp.", "http."} {
				cfg := Default()
				if prefix == "http." {
					cfg.HTTP.TLS = c.tls
				} else {
					cfg.Listeners[0].TLS = c.tls
				}
				err := cfg.Validate()
				if c.key == "" {
					if err != nil {
						t.Fatalf("%s: %v", prefix, err)
					}
					continue
				}
				if err == nil || !strings.HasPrefix(err.Error(), prefix+c.key+": ") || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("got %v, want %s%s: ...%s", err, prefix, c.key, c.want)
				}
			}
		})
	}
}

// TestShutdownTimeoutOldName: shutdown_timeout, the key before the
// shutdown section, still sets shutdown.timeout in a file, with --set and
// in the environment (whose variable is the same for both names).
func TestShutdownTimeoutOldName(t *testing.T) {
	for _, c := range []struct {
		name      string
		file      string
		env, sets []string
		want      time.Duration
	}{
		{name: "file", file: "shutdown_timeout: 3s\n", want: 3 * time.Second},
		{name: "file, new name", file: "shutdown: {timeout: 4s}\n", want: 4 * time.Second},
		{name: "set", sets: []string{"shutdown_timeout=5s"}, want: 5 * time.Second},
		{name: "env", env: []string{"TETHER_SHUTDOWN_TIMEOUT=6s"}, want: 6 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := ""
			if c.file != "" {
				path = writeFile(t, c.file)
			}
			cfg, err := Load(path, c.env, c.sets)
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Shutdown.Timeout.D(); got != c.want {
				t.Errorf("shutdown.timeout %s, want %s", got, c.want)
			}
		})
	}
}
