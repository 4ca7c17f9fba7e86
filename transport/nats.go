package transport

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"tether/config"
)

// embeddedUser is the user of the credentials tether makes up: those of
// the password generated when none are configured, and those of routes
// with nats.token (nats-server's routes take a user and a password only).
const embeddedUser = "tether"

// EmbeddedCredentials returns cfg with the credentials its embedded server
// requires of every client: the configured user and password or token,
// or, when none are configured, user "tether" with a password generated
// now (130 bits from crypto/rand), which only this process knows.
func EmbeddedCredentials(cfg config.NATS) config.NATS {
	if cfg.User == "" && cfg.Token == "" {
		cfg.User, cfg.Password = embeddedUser, rand.Text()
	}
	return cfg
}

// StartEmbeddedNATS starts the in-process nats-server a node uses when no
// NATS URL is configured, and waits until it accepts clients. Its log goes
// through log. It requires cfg's user and password, or its token, of every
// client (see EmbeddedCredentials). With cluster routes configured, the
// embedded servers of several nodes form one NATS cluster, and require
// the same credentials of each other's routes (with a token: user
// "tether", the token as password); tether adds them to the route URLs
// that carry none. With jetstream (rooms with history) it runs JetStream,
// its store in cfg.Embedded.StoreDir (a temporary directory, for streams
// kept in memory, when that is empty), in a directory of its own under
// it: name, the node's name, which also names the server in a JetStream
// cluster (so it must stay the same across restarts).
func StartEmbeddedNATS(cfg config.NATS, jetstream bool, name string, log zerolog.Logger) (*server.Server, error) {
	e := cfg.Embedded
	opts := &server.Options{
		ServerName:    name,
		Host:          e.Host,
		Port:          e.Port,
		NoSigs:        true, // signals belong to tether, not to the embedded server
		MaxPayload:    8 << 20,
		Username:      cfg.User,
		Password:      cfg.Password,
		Authorization: cfg.Token,
	}
	if e.Cluster.Port != 0 {
		user, password := cfg.User, cfg.Password
		if cfg.Token != "" {
			user, password = embeddedUser, cfg.Token
		}
		opts.Cluster = server.ClusterOpts{Name: e.Cluster.Name, Host: e.Cluster.Host, Port: e.Cluster.Port, Username: user, Password: password}
		if len(e.Cluster.Routes) > 0 { // of none, RoutesFromStr makes one empty route, tried for ever
			opts.Routes = server.RoutesFromStr(strings.Join(e.Cluster.Routes, ","))
		}
		for _, r := range opts.Routes {
			if r.User == nil {
				r.User = url.UserPassword(user, password)
			}
		}
	}
	if jetstream {
		opts.JetStream = true
		opts.DisableJetStreamBanner = true
		opts.StoreDir = filepath.Join(e.StoreDir, name)
		if e.StoreDir == "" {
			dir, err := os.MkdirTemp("", "tether-jetstream")
			if err != nil {
				return nil, fmt.Errorf("embedded nats: %w", err)
			}
			opts.StoreDir = dir
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	fatal := make(chan string, 1)
	ns.SetLogger(newNATSLogger(log.With().Str("component", "nats-server").Logger(), fatal), false, false)
	go ns.Start()
	// Until it accepts clients, or says why it cannot (a port in use,
	// say): nats-server logs that as fatal and gives up.
	for deadline := time.Now().Add(10 * time.Second); ; {
		select {
		case why := <-fatal:
			ns.Shutdown()
			return nil, fmt.Errorf("embedded nats: %s", fatalKey(why, cfg))
		default:
		}
		if ns.ReadyForConnections(50 * time.Millisecond) {
			return ns, nil
		}
		if time.Now().After(deadline) {
			ns.Shutdown()
			return nil, errors.New("embedded nats: not ready within 10s")
		}
	}
}

// NATSEvents are called on the client's connection state changes. Any may
// be nil.
type NATSEvents struct {
	Disconnected func(err error)
	Reconnected  func()
	// Closed reports that the connection ended for good, with nats.go's
	// last error. Unless the owner closed or drained it, that means
	// nats.go gave up on a server error ("maximum control line exceeded",
	// an unknown -ERR, repeated authorization failures) however many
	// reconnects it was told to make, and the owner must connect again.
	Closed func(c *nats.Conn, err error)
}

// NATSAuth returns the nats.go options that authenticate a client with
// cfg's credentials file, user and password, or token (at most one is
// set: Validate sees to that), and those of its TLS: the CAs to trust,
// the client certificate. nats.go reads the files at each connect, so a
// renewed certificate is used from the next reconnect on.
func NATSAuth(cfg config.NATS) []nats.Option {
	var opts []nats.Option
	switch {
	case cfg.CredentialsFile != "":
		opts = append(opts, nats.UserCredentials(cfg.CredentialsFile))
	case cfg.User != "":
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	case cfg.Token != "":
		opts = append(opts, nats.Token(cfg.Token))
	}
	if cfg.TLS.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.TLS.CAFile))
	}
	if cfg.TLS.CertFile != "" {
		opts = append(opts, nats.ClientCert(cfg.TLS.CertFile, cfg.TLS.KeyFile))
	}
	return opts
}

// RedactURL drops the credentials from NATS URLs (comma separated), for
// logs, errors and the status API.
func RedactURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = nil
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

// ConnectNATS connects to urls with auth (see NATSAuth) and keeps
// reconnecting for ever: a node whose NATS goes away keeps serving its
// local connections and comes back into the cluster by itself. Where
// nats.go closes the connection for good anyway, ev.Closed says so.
func ConnectNATS(urls, name string, cfg config.NATS, auth []nats.Option, log zerolog.Logger, ev NATSEvents) (*nats.Conn, error) {
	log = log.With().Str("component", "nats").Logger()
	nc, err := nats.Connect(urls, append([]nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(cfg.ReconnectWait.D()),
		nats.ReconnectJitter(cfg.ReconnectWait.D()/5, cfg.ReconnectWait.D()/5),
		nats.ReconnectBufSize(int(cfg.ReconnectBuffer)),
		nats.RetryOnFailedConnect(false),
		nats.NoEcho(), // a node delivers its own publications locally
		nats.DisconnectErrHandler(func(c *nats.Conn, err error) {
			if c.IsClosed() || c.IsDraining() {
				return // our own shutdown, not an outage
			}
			log.Warn().Err(err).Msg("nats disconnected; reconnecting")
			if ev.Disconnected != nil {
				ev.Disconnected(err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info().Str("url", RedactURL(c.ConnectedUrl())).Msg("nats reconnected")
			if ev.Reconnected != nil {
				ev.Reconnected()
			}
		}),
		nats.ClosedHandler(func(c *nats.Conn) {
			if ev.Closed != nil {
				ev.Closed(c, c.LastError())
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Error().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("nats async error")
		}),
	}, auth...)...)
	if errors.Is(err, nats.ErrAuthorization) {
		return nil, fmt.Errorf("nats connect %s: %w (nats.user and nats.password, nats.token or nats.credentials_file are not what the server requires)", RedactURL(urls), err)
	}
	if err != nil {
		return nil, fmt.Errorf("nats connect %s: %w", RedactURL(urls), err)
	}
	return nc, nil
}

// fatalKey names the configuration key behind what nats-server gave up
// on: a port it cannot listen on, a store it cannot use.
func fatalKey(why string, cfg config.NATS) string {
	e := cfg.Embedded
	switch {
	case strings.HasPrefix(why, "Error listening on port:"):
		return fmt.Sprintf("nats.embedded.port %d: cannot listen on %s:%d (in use by another process? -1 takes any free port): %s", e.Port, e.Host, e.Port, why)
	case strings.HasPrefix(why, "Error listening on router port:"):
		return fmt.Sprintf("nats.embedded.cluster.port %d: cannot listen on %s:%d (in use by another process?): %s", e.Cluster.Port, e.Cluster.Host, e.Cluster.Port, why)
	case strings.HasPrefix(why, "Can't start JetStream:"):
		return fmt.Sprintf("nats.embedded.store_dir %q: %s", e.StoreDir, why)
	}
	return why
}

// natsLogger writes nats-server's log lines through zerolog, and hands
// the first fatal one to fatal. What the server says of itself as it
// starts and stops (natsBanner) goes to debug: the node's own lines say
// it ("embedded nats listening", "node stopped"). A route it cannot
// reach is tried every second for as long as it stays configured, and
// each failure is an error of nats-server's: those go to debug, and a
// warning says so at most once a routeWarnEvery.
type natsLogger struct {
	log       zerolog.Logger
	fatal     chan string
	routeWarn *LogEvery
}

func newNATSLogger(log zerolog.Logger, fatal chan string) natsLogger {
	return natsLogger{log: log, fatal: fatal, routeWarn: NewLogEvery(routeWarnEvery)}
}

// routeWarnEvery is the most often a failing route is warned of.
const routeWarnEvery = time.Minute

// natsBanner are the formats of nats-server's notices as it starts and
// stops (server.go Start and Shutdown, route.go StartRouting, jetstream.go
// enableJetStream), and its warning about plain-text passwords, which
// tether's configuration has by design.
var natsBanner = map[string]bool{
	"Starting nats-server": true, "  Version:  %s": true, "  Git:      [%s]": true,
	"  Cluster:  %s": true, "  Name:     %s": true, "  Node:     %s": true, "  ID:       %s": true,
	"Listening for client connections on %s": true, "Server is ready": true,
	"Cluster name is %s": true, "Listening for route connections on %s": true,
	"Starting JetStream": true, "Took %s to start JetStream": true,
	"---------------- JETSTREAM ----------------": true, "  Strict:          %t": true,
	"  Max Memory:      %s": true, "  Max Storage:     %s": true, "  Store Directory: \"%s\"": true,
	"  Domain:          %s": true, "  API Level:       %d": true, "-------------------------------------------": true,
	"Initiating Shutdown...": true, "Server Exiting..": true,
	"Initiating JetStream Shutdown...": true, "JetStream Shutdown": true,
	"Plaintext passwords detected, use nkeys or bcrypt": true,
}

// routeConnectError starts nats-server's message for a failed attempt to
// connect to a route (route.go connectToRoute).
const routeConnectError = "Error trying to connect to route"

func (l natsLogger) Noticef(format string, v ...any) {
	if natsBanner[format] {
		l.log.Debug().Msgf(format, v...)
		return
	}
	l.log.Info().Msgf(format, v...)
}

func (l natsLogger) Warnf(format string, v ...any) {
	if natsBanner[format] {
		l.log.Debug().Msgf(format, v...)
		return
	}
	l.log.Warn().Msgf(format, v...)
}

func (l natsLogger) Fatalf(format string, v ...any) {
	l.log.Error().Msgf(format, v...)
	select {
	case l.fatal <- fmt.Sprintf(format, v...):
	default:
	}
}

func (l natsLogger) Errorf(format string, v ...any) {
	if strings.HasPrefix(format, routeConnectError) {
		if held, ok := l.routeWarn.Allow(); ok {
			l.log.Warn().Int("held_back", held).
				Str("then", "tried again every second, failures logged at debug level, warned again after "+routeWarnEvery.String()).
				Msgf(format, v...)
			return
		}
		l.log.Debug().Msgf(format, v...)
		return
	}
	l.log.Error().Msgf(format, v...)
}

func (l natsLogger) Debugf(format string, v ...any) { l.log.Debug().Msgf(format, v...) }
func (l natsLogger) Tracef(format string, v ...any) { l.log.Trace().Msgf(format, v...) }
