package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
)

// LengthTypes are the PHP pack codes a length field may use, with their
// size in bytes.
var LengthTypes = map[string]int{
	"c": 1, "C": 1, "s": 2, "S": 2, "n": 2, "v": 2, "l": 4, "L": 4, "N": 4, "V": 4,
}

// maxFrameLimit caps max_frame: a frame is held whole in memory.
const maxFrameLimit = 1 << 30

// Validate checks every key and returns one error per bad key, each naming
// the key and what it allows.
func (c *Config) Validate() error {
	v := &validator{}
	v.name("node.name", c.Node.Name)
	v.atLeast("node.max_connections", c.Node.MaxConnections, 0)
	v.atLeast("node.descriptor_reserve", c.Node.DescriptorReserve, 16)
	v.atLeast("node.accepts_per_second", c.Node.AcceptsPerSecond, 0)
	v.atLeast("node.accept_queue", c.Node.AcceptQueue, 0)
	if c.Node.MaxPartialBytes < 64<<10 {
		v.add("node.max_partial_bytes", "must be at least 64KiB, got %s", c.Node.MaxPartialBytes)
	}
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "auto", "json", "console")
	if c.HTTP.Address != "" {
		host := v.address("http.address", c.HTTP.Address)
		if c.HTTP.Token == "" && host != "" && !isLoopback(host) {
			v.add("http.token", "required when http.address is not a loopback address (%s)", c.HTTP.Address)
		}
	}
	v.tls("http.tls", c.HTTP.TLS)
	c.validateNATS(v)
	v.positive("cluster.heartbeat_interval", c.Cluster.HeartbeatInterval)
	if v.positive("cluster.dead_after", c.Cluster.DeadAfter) && c.Cluster.DeadAfter < 2*c.Cluster.HeartbeatInterval {
		v.add("cluster.dead_after", "must be at least twice cluster.heartbeat_interval (%s), got %s", c.Cluster.HeartbeatInterval, c.Cluster.DeadAfter)
	}
	v.atLeast("rooms.max_per_connection", c.Rooms.MaxPerConnection, 1)
	v.atLeast("rooms.announce_limit", c.Rooms.AnnounceLimit, 1)
	v.positive("rooms.presence_interval", c.Rooms.PresenceInterval)
	v.atLeast("rooms.max_backlog", c.Rooms.MaxBacklog, 1)
	c.Rooms.Default.validate(v, "rooms.default")
	prefixes := map[string]bool{}
	for i := range c.Rooms.Namespaces {
		ns := &c.Rooms.Namespaces[i]
		key := fmt.Sprintf("rooms.namespaces[%d]", i)
		if ns.Prefix != "" {
			key = "rooms.namespaces." + ns.Prefix
		}
		if v.name(key+".prefix", ns.Prefix) {
			if prefixes[ns.Prefix] {
				v.add(key+".prefix", "two namespaces have the prefix %q", ns.Prefix)
			}
			prefixes[ns.Prefix] = true
		}
		ns.validate(v, key)
	}
	c.Shutdown.validate(v)

	names := map[string]bool{}
	addrs := map[string]string{}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		key := fmt.Sprintf("listeners[%d]", i)
		if l.Name != "" {
			key = "listeners." + l.Name
		}
		if v.name(key+".name", l.Name) {
			if names[l.Name] {
				v.add(key+".name", "two listeners are named %q", l.Name)
			}
			names[l.Name] = true
		}
		if host := v.address(key+".address", l.Address); host != "" || l.Address != "" {
			if other, dup := addrs[l.Address]; dup && !strings.HasSuffix(l.Address, ":0") {
				v.add(key+".address", "%s is also the address of listener %s", l.Address, other)
			}
			addrs[l.Address] = l.Name
		}
		l.validate(v, key)
	}
	return v.err()
}

func (s *Shutdown) validate(v *validator) {
	v.nonNegative("shutdown.timeout", s.Timeout)
	v.atLeast("shutdown.drain_batch", s.DrainBatch, 0)
	v.positive("shutdown.drain_interval", s.DrainInterval)
	v.nonNegative("shutdown.retry_delay", s.RetryDelay)
	v.nonNegative("shutdown.retry_jitter", s.RetryJitter)
}

// validatePublicURL checks what a listener announces: a ws:// or wss://
// URL on a websocket listener, host:port on a tcp one.
func (l *Listener) validatePublicURL(v *validator, key string) {
	switch {
	case l.PublicURL == "":
	case l.Protocol == ProtocolWebSocket:
		pu, err := url.Parse(l.PublicURL)
		if err != nil || (pu.Scheme != "ws" && pu.Scheme != "wss") || pu.Host == "" {
			v.add(key, "%q is not a WebSocket URL (want ws://host:port/path or wss://...)", l.PublicURL)
		}
	default:
		if host, port, err := net.SplitHostPort(l.PublicURL); err != nil || host == "" || port == "" {
			v.add(key, "%q is not host:port", l.PublicURL)
		}
	}
}

func (c *Config) validateNATS(v *validator) {
	n := &c.NATS
	if n.URL != "" {
		for _, u := range strings.Split(n.URL, ",") {
			pu, err := url.Parse(strings.TrimSpace(u))
			if err != nil || pu.Host == "" || !slices.Contains([]string{"nats", "tls", "ws", "wss"}, pu.Scheme) {
				v.add("nats.url", "%q is not a NATS URL (want nats://host:port, tls://, ws:// or wss://, comma separated)", u)
			}
		}
	} else {
		if n.Embedded.Host == "" {
			v.add("nats.embedded.host", "required when nats.url is empty")
		}
		v.port("nats.embedded.port", n.Embedded.Port)
		cl := n.Embedded.Cluster
		if v.port("nats.embedded.cluster.port", cl.Port) && cl.Port != 0 && cl.Name == "" {
			v.add("nats.embedded.cluster.name", "required when nats.embedded.cluster.port is set")
		}
		for _, r := range cl.Routes {
			pu, err := url.Parse(r)
			if err != nil || pu.Host == "" || (pu.Scheme != "nats-route" && pu.Scheme != "nats") {
				v.add("nats.embedded.cluster.routes", "%q is not a route URL (want nats-route://host:port)", r)
			}
		}
		if len(cl.Routes) > 0 && cl.Port == 0 {
			v.add("nats.embedded.cluster.port", "required (or -1) when routes are set")
		}
		// A generated password keeps out the other processes of this
		// machine; whatever reaches the server from elsewhere, and the
		// other servers of a cluster, need credentials every node knows.
		if n.User == "" && n.Password == "" && n.Token == "" {
			if n.Embedded.Host != "" && !isLoopback(n.Embedded.Host) {
				v.add("nats.user", "required (or nats.token) when nats.embedded.host is not a loopback address (%s): the embedded server then takes clients from other machines", n.Embedded.Host)
			} else if cl.Port != 0 {
				v.add("nats.user", "required (or nats.token) when the embedded server has routes (nats.embedded.cluster.port): every server of the cluster requires the same credentials of clients and routes")
			}
		}
		if n.User != "" && n.Password == "" {
			v.add("nats.password", "required with nats.user: it is what the embedded server requires")
		}
		if n.CredentialsFile != "" {
			v.add("nats.credentials_file", "applies to an external NATS (nats.url) only; the embedded server takes nats.user and nats.password, or nats.token")
		}
		for _, f := range []struct{ key, file string }{
			{"ca_file", n.TLS.CAFile}, {"cert_file", n.TLS.CertFile}, {"key_file", n.TLS.KeyFile},
		} {
			if f.file != "" {
				v.add("nats.tls."+f.key, "applies to an external NATS (nats.url) only: the embedded server does not speak TLS")
			}
		}
	}
	var ways []string
	for _, w := range []struct {
		key string
		set bool
	}{{"nats.user", n.User != "" || n.Password != ""}, {"nats.token", n.Token != ""}, {"nats.credentials_file", n.CredentialsFile != ""}} {
		if w.set {
			ways = append(ways, w.key)
		}
	}
	if len(ways) > 1 {
		v.add(ways[len(ways)-1], "conflicts with %s: NATS takes one of nats.user and nats.password, nats.token, nats.credentials_file", strings.Join(ways[:len(ways)-1], " and "))
	}
	if n.Password != "" && n.User == "" {
		v.add("nats.user", "required when nats.password is set")
	}
	if n.URL != "" {
		v.file("nats.credentials_file", n.CredentialsFile)
		v.file("nats.tls.ca_file", n.TLS.CAFile)
		v.file("nats.tls.cert_file", n.TLS.CertFile)
		v.file("nats.tls.key_file", n.TLS.KeyFile)
		if n.TLS.CertFile != "" && n.TLS.KeyFile == "" {
			v.add("nats.tls.key_file", "required when nats.tls.cert_file is set")
		}
		if n.TLS.KeyFile != "" && n.TLS.CertFile == "" {
			v.add("nats.tls.cert_file", "required when nats.tls.key_file is set")
		}
	}
	if n.SubjectPrefix == "" || len(n.SubjectPrefix) > maxName || strings.ContainsAny(n.SubjectPrefix, " \t*>") ||
		strings.HasPrefix(n.SubjectPrefix, ".") || strings.HasSuffix(n.SubjectPrefix, ".") || strings.Contains(n.SubjectPrefix, "..") {
		v.add("nats.subject_prefix", "%q is not a NATS subject prefix (at most 64 bytes of dot-separated tokens without spaces, * or >)", n.SubjectPrefix)
	}
	v.nonNegative("nats.reconnect_wait", n.ReconnectWait)
	if n.ReconnectBuffer < 0 {
		v.add("nats.reconnect_buffer", "must not be negative, got %d", n.ReconnectBuffer)
	}
	if n.HistoryReplicas < 0 || n.HistoryReplicas > 5 {
		v.add("nats.history_replicas", "must be 0 (pick) to 5, got %d", n.HistoryReplicas)
	}
}

func (l *Listener) validate(v *validator, key string) {
	if !v.oneOf(key+".protocol", l.Protocol, ProtocolTCP, ProtocolWebSocket) {
		return
	}
	v.oneOf(key+".app", l.App, AppChat, AppRelay)
	ws := l.Protocol == ProtocolWebSocket
	if ws {
		if !strings.HasPrefix(l.Path, "/") {
			v.add(key+".path", "must start with /, got %q", l.Path)
		}
		if l.StaticDir != "" {
			if st, err := os.Stat(l.StaticDir); err != nil || !st.IsDir() {
				v.add(key+".static_dir", "%q is not a directory", l.StaticDir)
			}
		}
		for _, o := range l.AllowedOrigins {
			if o == "*" {
				continue
			}
			if pu, err := url.Parse(o); err != nil || pu.Scheme == "" || pu.Host == "" || pu.Path != "" {
				v.add(key+".allowed_origins", "%q is not an origin (want * or scheme://host[:port])", o)
			}
		}
		v.nonNegative(key+".handshake_timeout", l.HandshakeTimeout)
	} else {
		for _, f := range []struct {
			field string
			set   bool
		}{
			{"path", l.Path != ""}, {"static_dir", l.StaticDir != ""},
			{"allowed_origins", len(l.AllowedOrigins) > 0}, {"handshake_timeout", l.HandshakeTimeout != 0},
		} {
			if f.set {
				v.add(key+"."+f.field, "applies to websocket listeners only")
			}
		}
	}

	f := &l.Framing
	fk := key + ".framing"
	maxFrameOK := f.MaxFrame > 0 && f.MaxFrame <= maxFrameLimit
	if !maxFrameOK {
		v.add(fk+".max_frame", "must be between 1 and 1GiB, got %s", f.MaxFrame)
	}
	if ws {
		v.oneOf(fk+".type", f.Type, FramingWebSocket)
	} else if v.oneOf(fk+".type", f.Type, FramingLength, FramingEOF) {
		switch f.Type {
		case FramingEOF:
			if len(f.EOF) < 1 || len(f.EOF) > 8 {
				v.add(fk+".eof", "must be 1 to 8 bytes, got %d", len(f.EOF))
			} else if maxFrameOK && int64(f.MaxFrame) <= int64(len(f.EOF)) {
				v.add(fk+".max_frame", "must be larger than the delimiter")
			}
		case FramingLength:
			size, ok := LengthTypes[f.LengthType]
			if !ok {
				v.add(fk+".length_type", "unknown pack code %q (allowed: c C s S n N l L v V)", f.LengthType)
				break
			}
			if f.LengthOffset < 0 {
				v.add(fk+".length_offset", "must not be negative, got %d", f.LengthOffset)
			} else if f.BodyOffset < f.LengthOffset+size {
				v.add(fk+".body_offset", "must be at least length_offset + %d (the size of %q), got %d", size, f.LengthType, f.BodyOffset)
			} else if maxFrameOK && int64(f.MaxFrame) <= int64(f.BodyOffset) {
				v.add(fk+".max_frame", "must be larger than body_offset (%d)", f.BodyOffset)
			}
		}
	}

	ka := &l.TCPKeepalive
	kk := key + ".tcp_keepalive"
	if ka.Enabled {
		// The kernel counts keepalive time in whole seconds.
		for _, f := range []struct {
			field string
			d     Duration
		}{{"idle", ka.Idle}, {"interval", ka.Interval}} {
			if f.d < Duration(time.Second) || f.d%Duration(time.Second) != 0 {
				v.add(kk+"."+f.field, "must be a whole number of seconds, at least 1s, got %s", f.d)
			}
		}
		if ka.Count < 1 || ka.Count > 127 {
			v.add(kk+".count", "must be between 1 and 127, got %d", ka.Count)
		}
	}
	v.tls(key+".tls", l.TLS)
	l.validatePublicURL(v, key+".public_url")
	if v.nonNegative(key+".tcp_user_timeout", l.TCPUserTimeout) && l.TCPUserTimeout%Duration(time.Millisecond) != 0 {
		v.add(key+".tcp_user_timeout", "must be a whole number of milliseconds, got %s", l.TCPUserTimeout)
	}

	hb := &l.Heartbeat
	hk := key + ".heartbeat"
	v.nonNegative(hk+".idle_timeout", hb.IdleTimeout)
	v.nonNegative(hk+".check_interval", hb.CheckInterval)
	v.nonNegative(hk+".ping_interval", hb.PingInterval)
	v.atLeast(hk+".ping_not_response_limit", hb.PingNotResponseLimit, 0)
	if ws && len(hb.PingData) > 125 {
		v.add(hk+".ping_data", "must be at most 125 bytes on websocket listeners (a ping control frame), got %d", len(hb.PingData))
	}

	lim := &l.Limits
	lk := key + ".limits"
	v.atLeast(lk+".max_connections", lim.MaxConnections, 0)
	v.atLeast(lk+".max_per_ip", lim.MaxPerIP, 0)
	v.atLeast(lk+".accepts_per_ip_per_second", lim.AcceptsPerIPPerSecond, 0)
	if lim.OutboundQueue < 1024 {
		v.add(lk+".outbound_queue", "must be at least 1KiB, got %s", lim.OutboundQueue)
	}
	v.nonNegative(lk+".write_timeout", lim.WriteTimeout)
	v.oneOf(lk+".on_full", lim.OnFull, OnFullClose, OnFullDrop)
	if v.nonNegative(lk+".write_delay", lim.WriteDelay) && lim.WriteDelay > Duration(time.Second) {
		v.add(lk+".write_delay", "must be at most 1s, got %s", lim.WriteDelay)
	}
	v.atLeast(lk+".messages_per_second", lim.MessagesPerSecond, 0)
	v.atLeast(lk+".burst", lim.Burst, 0)
	if lim.MessagesPerSecond > int(time.Second) {
		v.add(lk+".messages_per_second", "must be at most %d, got %d", int(time.Second), lim.MessagesPerSecond)
	}
	l.Auth.validate(v, key+".auth", l.App)
}

// minHMACSecret is the shortest HS256 secret accepted: RFC 7518 section
// 3.2 asks for a key at least as long as the hash (256 bits).
const minHMACSecret = 32

func (a *Auth) validate(v *validator, key, app string) {
	if !v.oneOf(key+".mode", a.Mode, AuthNone, AuthToken, AuthProxy) {
		return
	}
	if a.Mode != AuthNone && app != AppChat {
		v.add(key+".mode", "%s needs app chat (relay workers authenticate their own clients), got app %s", a.Mode, app)
	}
	if a.Mode != AuthNone && a.Timeout <= 0 {
		v.add(key+".timeout", "must be positive, got %s", a.Timeout)
	}
	j := &a.JWT
	switch {
	case a.Mode != AuthToken:
		if j.HMACSecret != "" || j.PublicKeyFile != "" {
			v.add(key+".jwt", "applies to mode token only (mode is %s)", a.Mode)
		}
	case j.HMACSecret != "" && j.PublicKeyFile != "":
		v.add(key+".jwt", "set one of hmac_secret and public_key_file: the key fixes the algorithm")
	case j.HMACSecret != "":
		if len(j.HMACSecret) < minHMACSecret {
			v.add(key+".jwt.hmac_secret", "must be at least %d bytes, got %d", minHMACSecret, len(j.HMACSecret))
		}
	case j.PublicKeyFile != "":
		if _, err := os.Stat(j.PublicKeyFile); err != nil {
			v.add(key+".jwt.public_key_file", "%v", err)
		}
	default:
		v.add(key+".jwt", "mode token needs hmac_secret (HS256) or public_key_file (RS256, ES256)")
	}
	if a.Mode == AuthProxy {
		if pu, err := url.Parse(a.Proxy.URL); err != nil || pu.Host == "" || (pu.Scheme != "http" && pu.Scheme != "https") {
			v.add(key+".proxy.url", "%q is not an http:// or https:// URL", a.Proxy.URL)
		}
		v.positive(key+".proxy.timeout", a.Proxy.Timeout)
	} else if a.Proxy.URL != "" {
		v.add(key+".proxy.url", "applies to mode proxy only (mode is %s)", a.Mode)
	}
}

func (o *RoomOptions) validate(v *validator, key string) {
	v.atLeast(key+".history_size", o.HistorySize, 0)
	v.nonNegative(key+".history_ttl", o.HistoryTTL)
	v.oneOf(key+".join", o.Join, JoinAnyone, JoinToken)
	v.oneOf(key+".publish", o.Publish, PublishMembers, PublishNone)
}

// validator collects key errors so that one run reports every bad key.
type validator struct{ errs []error }

func (v *validator) add(key, format string, args ...any) {
	v.errs = append(v.errs, keyErr(key, format, args...))
}

func (v *validator) err() error { return errors.Join(v.errs...) }

func (v *validator) oneOf(key, value string, allowed ...string) bool {
	if slices.Contains(allowed, value) {
		return true
	}
	v.add(key, "unknown value %q (allowed: %s)", value, strings.Join(allowed, ", "))
	return false
}

// maxName bounds node and listener names: both become parts of NATS
// subjects and connection ids (at most 128 bytes).
const maxName = 64

func (v *validator) name(key, value string) bool {
	if value == "" {
		v.add(key, "required")
		return false
	}
	if len(value) > maxName {
		v.add(key, "is %d bytes; at most %d", len(value), maxName)
		return false
	}
	for _, r := range value {
		if !isNameRune(r) {
			v.add(key, "%q may hold only letters, digits, - and _", value)
			return false
		}
	}
	return true
}

// file checks that path, when set, is a file tether can read.
func (v *validator) file(key, path string) {
	if path == "" {
		return
	}
	f, err := os.Open(path)
	if err != nil {
		v.add(key, "%v", err)
		return
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || st.IsDir() {
		v.add(key, "%q is not a file", path)
	}
}

func (v *validator) nonNegative(key string, d Duration) bool {
	if d < 0 {
		v.add(key, "must not be negative, got %s", d)
		return false
	}
	return true
}

func (v *validator) positive(key string, d Duration) bool {
	if d <= 0 {
		v.add(key, "must be positive, got %s", d)
		return false
	}
	return true
}

func (v *validator) atLeast(key string, n, least int) {
	if n < least {
		v.add(key, "must be at least %d, got %d", least, n)
	}
}

func (v *validator) port(key string, p int) bool {
	if p < -1 || p > 65535 {
		v.add(key, "must be a port between 0 and 65535, or -1 for any free port, got %d", p)
		return false
	}
	return true
}

// tls checks a certificate and its key: both set or neither, files that
// can be read, and a pair that loads. A bad file fails the start, or the
// reload (which keeps the running configuration), instead of every
// handshake.
func (v *validator) tls(key string, t TLS) {
	switch {
	case t.CertFile == "" && t.KeyFile == "":
		return
	case t.CertFile == "":
		v.add(key+".cert_file", "required when %s.key_file is set", key)
		return
	case t.KeyFile == "":
		v.add(key+".key_file", "required when %s.cert_file is set", key)
		return
	}
	certPEM, err := os.ReadFile(t.CertFile)
	if err != nil {
		v.add(key+".cert_file", "%v", err)
		return
	}
	keyPEM, err := os.ReadFile(t.KeyFile)
	if err != nil {
		v.add(key+".key_file", "%v", err)
		return
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		v.add(key, "%s and %s are not a certificate and its key: %v", t.CertFile, t.KeyFile, err)
	}
}

// address checks host:port and returns the host ("" when invalid).
func (v *validator) address(key, addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.add(key, "%q is not host:port", addr)
		return ""
	}
	var p int
	if _, err := fmt.Sscanf(port, "%d", &p); err != nil || p < 0 || p > 65535 {
		v.add(key, "%q has no valid port", addr)
		return ""
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
