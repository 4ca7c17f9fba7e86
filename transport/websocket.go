package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/rs/zerolog"
)

// WebSocketOptions configure the HTTP side of a WebSocket listener.
type WebSocketOptions struct {
	// Path is where clients upgrade; every other path goes to Static.
	Path string
	// AllowedOrigins are the Origin values allowed to upgrade; "*" allows
	// any. A request without Origin (not a browser) is allowed: the check
	// exists to stop other web pages from using a visitor's browser.
	AllowedOrigins []string
	// HandshakeTimeout bounds accept-to-upgrade; a request not complete by
	// then gets 408 and is closed.
	HandshakeTimeout time.Duration
	// Static serves the other paths (the chat page, or static_dir).
	Static http.Handler
	// Admission admits each socket at accept (the listener's limits count
	// handshakes in progress).
	Admission *Admission
	// KeepHeaders keeps the upgrade request's headers for the connection
	// (Accepted.Handshake): its authentication backend gets them.
	KeepHeaders bool
	// Upgraded receives each upgraded socket, with its ticket and the
	// bytes the client sent after its request (the start of the WebSocket
	// stream). It takes ownership of the socket and the ticket.
	Upgraded func(s *Accepted)
	// TLS, when set, serves wss:// (and https:// for Static); upgraded
	// connections are bridged (see bridgeTLS).
	TLS *tls.Config
	Log zerolog.Logger
}

// Accepted is an admitted socket on its way to its connection actor,
// whose Socket owns it and releases its ticket once it is closed.
type Accepted struct {
	Conn   net.Conn
	Ticket Ticket
	// Preread holds bytes read past a WebSocket upgrade request: the
	// start of the stream.
	Preread []byte
	// Sent counts the bytes written before the connection actor took
	// over (the 101 response), which the kernel's count of acknowledged
	// bytes includes.
	Sent int
	// Handshake is what the upgrade request said that authentication may
	// need; nil when it said nothing of it.
	Handshake *Handshake

	tls *bridge // a bridged TLS connection's, which holds the ticket; Conn is its plaintext end
}

// Handshake is what a WebSocket upgrade request said that authentication
// needs: the token of its URL (?token=), and, on a listener whose backend
// decides (auth.mode proxy), its headers (a session cookie).
type Handshake struct {
	Token  string
	Header http.Header
}

// TCP is the client's TCP socket: Conn, or the socket under a TLS
// connection's bridge. Socket options are set on it.
func (a *Accepted) TCP() *net.TCPConn {
	if a.tls != nil {
		return a.tls.tcp
	}
	tcp, _ := a.Conn.(*net.TCPConn)
	return tcp
}

// Close closes a socket no Socket took (refused, or its listener
// stopped) and gives its place back: at once, or for a TLS connection
// once its bridge has ended.
func (a *Accepted) Close() {
	_ = a.Conn.Close()
	if a.tls != nil {
		a.tls.socketClosed()
		a.tls = nil
	}
	a.Ticket.Release()
}

// ListenWebSocket binds addr and serves WebSocket upgrades and static
// files on it, over TLS when o.TLS is set. The upgrade uses gobwas/ws on
// the hijacked connection; once it is done no HTTP buffer is kept: the
// socket goes to its connection actor with only the bytes already read.
func ListenWebSocket(addr string, o WebSocketOptions) (*HTTPServer, error) {
	lc := net.ListenConfig{KeepAlive: -1} // the listener's tcp_keepalive applies instead
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	if o.TLS != nil {
		// Under the guard: handshakeConn reads the requests decrypted,
		// and its 408 goes out over TLS. The upgrade hijacks an
		// HTTP/1.1 connection: no HTTP/2.
		cfg := o.TLS.Clone()
		cfg.NextProtos = []string{"http/1.1"}
		ln = tls.NewListener(ln, cfg)
	}
	log := o.Log.With().Str("component", "websocket").Logger()
	mux := http.NewServeMux()
	mux.Handle(o.Path, upgradeHandler(o, log))
	mux.Handle("/", o.Static)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: o.HandshakeTimeout,
		IdleTimeout:       o.HandshakeTimeout,
		MaxHeaderBytes:    16 << 10,
	}
	return serveHTTP(newGuardedListener(ln, o.Admission, log), srv, log), nil
}

func upgradeHandler(o WebSocketOptions, log zerolog.Logger) http.Handler {
	// The handshake response gets the rest of the handshake time to leave.
	upgrader := ws.HTTPUpgrader{Timeout: o.HandshakeTimeout}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if origin := r.Header.Get("Origin"); origin != "" && !originAllowed(origin, o.AllowedOrigins) {
			log.Info().Str("origin", origin).Str("remote", r.RemoteAddr).Msg("websocket origin refused")
			http.Error(w, "origin not allowed", http.StatusForbidden)
			return
		}
		c, rw, _, err := upgrader.Upgrade(r, w)
		if err != nil {
			// gobwas/ws has answered with the RFC's status (400, or 426
			// with the versions it speaks).
			log.Debug().Err(err).Str("remote", r.RemoteAddr).Msg("websocket handshake refused")
			if c != nil {
				_ = c.Close()
			}
			return
		}
		g, ok := c.(*handshakeConn)
		if !ok { // every socket of this server comes through guardedListener
			log.Error().Str("type", fmt.Sprintf("%T", c)).Msg("upgraded socket without a ticket")
			_ = c.Close()
			return
		}
		s := &Accepted{Conn: g.Conn, Ticket: g.handOff(), Sent: g.written} // the actor wants the *net.TCPConn (or the TLS bridge) and its descriptor
		if token := r.URL.Query().Get("token"); token != "" || o.KeepHeaders {
			s.Handshake = &Handshake{Token: token}
			if o.KeepHeaders {
				s.Handshake.Header = r.Header
			}
		}
		if n := rw.Reader.Buffered(); n > 0 {
			s.Preread = make([]byte, n)
			_, _ = rw.Reader.Read(s.Preread)
		}
		_ = s.Conn.SetDeadline(time.Time{})
		if tc, ok := s.Conn.(*tls.Conn); ok {
			// Bytes the TLS connection has decrypted or read past the
			// request go through the bridge, after Preread.
			if err := s.bridgeTLS(tc); err != nil {
				log.Error().Err(err).Str("remote", r.RemoteAddr).Msg("tls connection not bridged")
				s.Close()
				return
			}
		}
		o.Upgraded(s)
	})
}

func originAllowed(origin string, allowed []string) bool {
	for _, a := range allowed {
		if a == "*" || strings.EqualFold(a, origin) {
			return true
		}
	}
	return false
}

// guardedListener admits accepted sockets (closing those past a limit at
// once), paces them at the node's accept rate, and hands them to
// net/http wrapped in handshakeConn. It accepts on a goroutine of its
// own, so that it goes on accepting (and refusing, counted) while
// admitted sockets wait for their turn. With TLS, the sockets it accepts
// are *tls.Conn, their handshake still to come.
type guardedListener struct {
	net.Listener
	admission *Admission
	log       zerolog.Logger
	ready     chan net.Conn // admitted and paced, for Accept
	done      chan struct{} // closed once the listener is: err says why
	err       error
}

func newGuardedListener(ln net.Listener, admission *Admission, log zerolog.Logger) *guardedListener {
	l := &guardedListener{Listener: ln, admission: admission, log: log, ready: make(chan net.Conn), done: make(chan struct{})}
	go l.accept()
	return l
}

func (l *guardedListener) accept() {
	l.err = l.admission.Serve(l.Listener, l.log, func(c net.Conn, t Ticket) {
		hc := &handshakeConn{Conn: c, ticket: t}
		deliver := func() {
			select {
			case l.ready <- hc:
			case <-l.done:
				_ = hc.Close()
			}
		}
		if l.admission.Pace(c.RemoteAddr(), func() { _ = hc.Close() }, deliver) {
			deliver()
		}
	})
	close(l.done)
}

// Accept returns the next socket admitted and paced.
func (l *guardedListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

// handshakeConn answers a first request that is still incomplete when the
// handshake timeout passes (a slowloris client) with 408 Request Timeout,
// as RFC 9110 section 15.5.9 describes; net/http itself closes such a
// connection without a word. net/http serialises its reads, so the state
// needs no lock.
type handshakeConn struct {
	net.Conn
	matched  int  // bytes of "\r\n\r\n" seen in a row
	complete bool // the first request's header is in
	answered bool
	written  int // bytes written: the upgrade's response

	mu     sync.Mutex // Close may come from net/http's goroutines
	ticket Ticket     // released on Close, unless handed off with the upgraded socket
}

// handOff takes the ticket out: the upgraded socket releases it.
func (c *handshakeConn) handOff() Ticket {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.ticket
	c.ticket = Ticket{}
	return t
}

// Close closes the socket and gives its place back, unless it was
// handed off upgraded.
func (c *handshakeConn) Close() error {
	err := c.Conn.Close()
	t := c.handOff()
	t.Release()
	return err
}

func (c *handshakeConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written += n
	return n, err
}

const requestTimeout = "HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 16\r\n\r\nrequest timeout\n"

func (c *handshakeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.complete {
		for _, b := range p[:n] {
			switch {
			case b == "\r\n\r\n"[c.matched]:
				c.matched++
			case b == '\r':
				c.matched = 1
			default:
				c.matched = 0
			}
			if c.matched == 4 {
				c.complete = true
				break
			}
		}
	}
	var ne net.Error
	if err != nil && !c.complete && !c.answered && errors.As(err, &ne) && ne.Timeout() {
		c.answered = true
		_ = c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.Conn.Write([]byte(requestTimeout))
	}
	return n, err
}
