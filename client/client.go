// Package client is a Go client of tether's chat protocol, over TCP (with
// any of tether's framings) or WebSocket, either over TLS. Tests, the
// bench tool and users use it.
//
// Recv returns the server's messages in order, and Call sends a request
// with an id and returns its reply, keeping the events that arrive
// meanwhile for later Recv calls. Send and SendRaw may be called from any
// goroutine; Recv, Expect and Call (which receive) from one at a time.
//
// Connect makes a client that stays connected (Reconnecting): it
// reconnects when its connection is lost, honouring a draining node's
// reconnect hint (Hint), and joins its rooms again with since.
package client

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"tether/actors/protocol"
	"tether/framing"
)

// Member is one member of a room, as the protocol has it.
type Member = protocol.Member

// Heartbeat is the liveness rules a welcome announces.
type Heartbeat = protocol.Heartbeat

// Event is any message from the server; which fields are set depends on Op.
type Event struct {
	Op      string          `json:"op"`
	ID      json.RawMessage `json:"id,omitempty"`
	Conn    string          `json:"conn,omitempty"`
	Node    string          `json:"node,omitempty"`
	Room    string          `json:"room,omitempty"`
	From    string          `json:"from,omitempty"`
	Name    string          `json:"name,omitempty"`
	Avatar  string          `json:"avatar,omitempty"`
	Reason  string          `json:"reason,omitempty"`
	Code    string          `json:"code,omitempty"`
	Message string          `json:"message,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	Time    time.Time       `json:"time,omitzero"`
	Members []Member        `json:"members,omitempty"`
	Joined  []Member        `json:"joined,omitempty"`
	Left    []Member        `json:"left,omitempty"`
	// Presence diffs: whole counts, and whether the lists were cut.
	JoinedCount int        `json:"joined_count,omitempty"`
	LeftCount   int        `json:"left_count,omitempty"`
	Truncated   bool       `json:"truncated,omitempty"`
	Heartbeat   *Heartbeat `json:"heartbeat,omitempty"`
	// Auth (welcome): the listener authenticates its clients ("token" or
	// "proxy"). User and Expires (the ok of auth and refresh): who the
	// connection is, and until when (Unix seconds; 0: no end).
	Auth    string `json:"auth,omitempty"`
	User    string `json:"user,omitempty"`
	Expires int64  `json:"expires,omitempty"`
	// Rooms with history: a message's place, the room's place in a join's
	// ok (and whether a join with since recovered everything, or why
	// not), and the history request's messages.
	Offset    uint64            `json:"offset,omitempty"`
	Epoch     string            `json:"epoch,omitempty"`
	Recovered *bool             `json:"recovered,omitempty"`
	Messages  []json.RawMessage `json:"messages,omitempty"`
	// The reconnect hint of a draining node's close (op "close", reason
	// server_shutdown): how long to wait, and where to go first.
	RetryMS *int64   `json:"retry_ms,omitempty"`
	URLs    []string `json:"urls,omitempty"`
}

// Hint is a draining node's reconnect hint: come back after Retry,
// trying URLs first (the other nodes' public URLs of the listener; none:
// where the client was).
type Hint struct {
	Retry time.Duration
	URLs  []string
}

// hintOf is the hint of a close message, or nil.
func hintOf(ev *Event) *Hint {
	if ev.Op != "close" || ev.RetryMS == nil {
		return nil
	}
	return &Hint{Retry: time.Duration(*ev.RetryMS) * time.Millisecond, URLs: ev.URLs}
}

// Position is a place in a room's history.
type Position = protocol.Position

// Request is a client message; Call fills ID.
type Request struct {
	Op     string `json:"op"`
	ID     int64  `json:"id,omitempty"`
	Room   string `json:"room,omitempty"`
	Name   string `json:"name,omitempty"`
	Avatar string `json:"avatar,omitempty"`
	To     string `json:"to,omitempty"`
	Echo   bool   `json:"echo,omitempty"`
	Data   any    `json:"data,omitempty"`
	// Since, on a join of a room with history, asks for every message
	// after it first (Client.Position gives the last one received).
	Since *Position `json:"since,omitempty"`
	Limit int       `json:"limit,omitempty"` // history: how many
	Token string    `json:"token,omitempty"` // auth, refresh
}

// ErrClosed is returned by Recv once the server closed the connection. The
// WebSocket close code and reason are in CloseError.
var ErrClosed = errors.New("client: connection closed by server")

// CloseError is the server's WebSocket close frame. Reason is the close
// reason's name: a reason that is a close message, as a draining node
// sends with code 1012 ({"op":"close","reason":"server_shutdown",
// "retry_ms":...}), gives its name, and its reconnect hint in Hint.
type CloseError struct {
	Code   uint16
	Reason string
	Hint   *Hint
}

func (e *CloseError) Error() string { return fmt.Sprintf("closed by server: %d %s", e.Code, e.Reason) }

// Is makes errors.Is(err, ErrClosed) true for a close frame too.
func (e *CloseError) Is(target error) bool { return target == ErrClosed }

// Client is one connection to a tether node.
type Client struct {
	conn    net.Conn
	wire    wire
	writeMu *sync.Mutex // shared with the wire, which writes pongs
	nextID  int64
	backlog []*Event
	// The last position received of each room with history.
	positions map[string]Position
	hint      *Hint // the server's reconnect hint, once it closed with one
	// Welcome is the server's first message.
	Welcome *Event
}

// wire is a transport: a TCP framing or WebSocket.
type wire interface {
	write(payload []byte) error
	read() ([]byte, error)
}

// TCPOptions choose the framing of a TCP connection; the zero value is
// tether's default (length prefix, pack code N, body at 4).
type TCPOptions struct {
	Framing string // "length" (default) or "eof"
	Length  framing.LengthOptions
	EOF     []byte // delimiter, default "\r\n"
	// TLS, when set, speaks TLS (a listener with tls). An empty
	// ServerName is the host dialled.
	TLS *tls.Config
}

// DialTCP connects to a TCP listener and reads the welcome.
func DialTCP(ctx context.Context, addr string, o TCPOptions) (*Client, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return wrap(ctx, c, o)
}

// Wrap starts a client on a socket already connected to a TCP listener
// (dialed from a chosen source address, say) and reads the welcome; c is
// closed on an error.
func Wrap(c net.Conn, o TCPOptions, timeout time.Duration) (*Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return wrap(ctx, c, o)
}

// wrap starts a client on c (closed on an error): its TLS handshake,
// then the welcome.
func wrap(ctx context.Context, c net.Conn, o TCPOptions) (*Client, error) {
	if o.TLS != nil {
		cfg := o.TLS
		if cfg.ServerName == "" {
			cfg = cfg.Clone()
			cfg.ServerName, _, _ = net.SplitHostPort(c.RemoteAddr().String())
		}
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("client: tls: %w", err)
		}
		c = tc
	}
	w, err := newTCPWire(c, o)
	if err != nil {
		c.Close()
		return nil, err
	}
	return start(ctx, c, w, &sync.Mutex{})
}

// NewTCPFramer returns the framer the options describe, for code that
// frames by hand (tests sending PHP-style packets).
func NewTCPFramer(o TCPOptions) (framing.Framer, error) {
	switch o.Framing {
	case "", "length":
		lo := o.Length
		if lo.Type == 0 {
			lo = framing.LengthOptions{Type: 'N', BodyOffset: 4}
		}
		if lo.MaxFrame == 0 {
			lo.MaxFrame = framing.DefaultMaxFrame
		}
		return framing.NewLength(lo)
	case "eof":
		delim := o.EOF
		if len(delim) == 0 {
			delim = []byte("\r\n")
		}
		return framing.NewEOF(framing.EOFOptions{Delimiter: delim, MaxFrame: framing.DefaultMaxFrame})
	}
	return nil, fmt.Errorf("client: unknown framing %q", o.Framing)
}

// DialWebSocket connects to a WebSocket listener (ws://host:port/ws) and
// reads the welcome.
func DialWebSocket(ctx context.Context, url string) (*Client, error) {
	return DialWebSocketFrom(ctx, url, nil)
}

// DialWebSocketFrom is DialWebSocket from the local address local (nil:
// any), for load generators that spread clients over many addresses.
func DialWebSocketFrom(ctx context.Context, url string, local net.IP) (*Client, error) {
	return DialWebSocketWith(ctx, url, WebSocketOptions{Local: local})
}

// WebSocketOptions are how DialWebSocketWith connects.
type WebSocketOptions struct {
	// Local is the local address to dial from; nil: any.
	Local net.IP
	// TLS configures wss:// URLs; nil: the system's roots.
	TLS *tls.Config
}

// DialWebSocketWith connects to a WebSocket listener (ws:// or wss://)
// as o says and reads the welcome.
func DialWebSocketWith(ctx context.Context, url string, o WebSocketOptions) (*Client, error) {
	d := ws.Dialer{TLSConfig: o.TLS}
	if local := o.Local; local != nil {
		d.NetDial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: local}}
			return nd.DialContext(ctx, network, addr)
		}
	}
	return dialWebSocket(ctx, url, d)
}

// DialWebSocketHeader is DialWebSocket with headers added to the upgrade
// request (a session cookie for a proxy listener's backend).
func DialWebSocketHeader(ctx context.Context, url string, h http.Header) (*Client, error) {
	return dialWebSocket(ctx, url, ws.Dialer{Header: ws.HandshakeHeaderHTTP(h)})
}

func dialWebSocket(ctx context.Context, url string, d ws.Dialer) (*Client, error) {
	c, br, _, err := d.Dial(ctx, url)
	if err != nil {
		return nil, err
	}
	var r io.Reader = c
	if br != nil { // bytes the server sent right after its handshake
		r = io.MultiReader(br, c)
	}
	mu := &sync.Mutex{}
	return start(ctx, c, &wsWire{conn: c, r: r, writeMu: mu}, mu)
}

func start(ctx context.Context, c net.Conn, w wire, writeMu *sync.Mutex) (*Client, error) {
	cl := &Client{conn: c, wire: w, writeMu: writeMu}
	if d, ok := ctx.Deadline(); ok {
		_ = c.SetReadDeadline(d)
		defer c.SetReadDeadline(time.Time{})
	}
	ev, err := cl.Recv()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("client: no welcome: %w", err)
	}
	if ev.Op != "welcome" {
		c.Close()
		return nil, fmt.Errorf("client: first message is %q, not welcome", ev.Op)
	}
	cl.Welcome = ev
	return cl, nil
}

// ID is the connection id the server gave this client.
func (c *Client) ID() string { return c.Welcome.Conn }

// Conn is the underlying socket (for deadlines, or to misbehave in tests).
func (c *Client) Conn() net.Conn { return c.conn }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// SendRaw sends payload as one message.
func (c *Client) SendRaw(payload []byte) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	return c.wire.write(payload)
}

// Send sends a request without waiting for a reply.
func (c *Client) Send(r Request) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return c.SendRaw(b)
}

// RecvRaw returns the next message as bytes, skipping any backlog.
func (c *Client) RecvRaw() ([]byte, error) { return c.wire.read() }

// Recv returns the next message from the server.
func (c *Client) Recv() (*Event, error) {
	var ev *Event
	if len(c.backlog) > 0 {
		ev = c.backlog[0]
		c.backlog = c.backlog[1:]
	} else {
		var err error
		if ev, err = c.readEvent(); err != nil {
			return nil, err
		}
	}
	if ev.Op == "message" && ev.Epoch != "" {
		c.setPosition(ev.Room, Position{Offset: ev.Offset, Epoch: ev.Epoch})
	}
	return ev, nil
}

// Pending are the events received (while Call waited for its reply) that
// Recv has not returned yet.
func (c *Client) Pending() []*Event { return c.backlog }

// readEvent reads and decodes the next message from the wire.
func (c *Client) readEvent() (*Event, error) {
	b, err := c.wire.read()
	if err != nil {
		var ce *CloseError
		if errors.As(err, &ce) && ce.Hint != nil && c.hint == nil {
			c.hint = ce.Hint // a hint sent before the frame has the URLs too
		}
		return nil, err
	}
	var ev Event
	if err := json.Unmarshal(b, &ev); err != nil {
		return nil, fmt.Errorf("client: bad message %q: %w", b, err)
	}
	if h := hintOf(&ev); h != nil {
		c.hint = h
	}
	return &ev, nil
}

// Hint is the reconnect hint the server closed the connection with (a
// draining node's), once Recv has read the close; nil otherwise.
func (c *Client) Hint() *Hint { return c.hint }

func (c *Client) setPosition(room string, p Position) {
	if c.positions == nil {
		c.positions = map[string]Position{}
	}
	c.positions[room] = p
}

// SetPosition sets room's position, for a new connection that goes on
// where another one left off (nil forgets it).
func (c *Client) SetPosition(room string, p *Position) {
	if p == nil {
		delete(c.positions, room)
		return
	}
	c.setPosition(room, *p)
}

// Position is the place of the last message of room (a room with
// history) that Recv returned, or of its join's ok: what a join with
// Since wants after a reconnect. nil when there is none.
func (c *Client) Position(room string) *Position {
	p, ok := c.positions[room]
	if !ok {
		return nil
	}
	return &p
}

// Call sends r with a fresh id and returns the reply with that id. Events
// that arrive first are kept for Recv. A reply with op "error" is returned
// as an *Event and an error.
func (c *Client) Call(r Request) (*Event, error) {
	c.nextID++
	r.ID = c.nextID
	if err := c.Send(r); err != nil {
		return nil, err
	}
	want := strconv.FormatInt(r.ID, 10)
	var kept []*Event
	defer func() { c.backlog = append(kept, c.backlog...) }()
	for {
		ev, err := c.readEvent()
		if err != nil {
			return nil, err
		}
		if string(ev.ID) != want {
			kept = append(kept, ev)
			continue
		}
		if ev.Op == "error" {
			return ev, fmt.Errorf("%s: %s", ev.Code, ev.Message)
		}
		if r.Op == "join" && ev.Epoch != "" && !slices.ContainsFunc(kept, func(k *Event) bool { return k.Op == "message" && k.Room == r.Room }) {
			// The room's place now; with messages replayed before the
			// ok, the last of them gives it once Recv returns it.
			c.setPosition(r.Room, Position{Offset: ev.Offset, Epoch: ev.Epoch})
		}
		return ev, nil
	}
}

// Authenticate sends auth with token and returns its answer.
func (c *Client) Authenticate(token string) (*Event, error) {
	return c.Call(Request{Op: "auth", Token: token})
}

// Expect reads messages until one has op, discarding the others, or
// fails once timeout has passed.
func (c *Client) Expect(op string, timeout time.Duration) (*Event, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	defer c.conn.SetReadDeadline(time.Time{})
	for {
		ev, err := c.Recv()
		if err != nil {
			return nil, fmt.Errorf("waiting for %q: %w", op, err)
		}
		if ev.Op == op {
			return ev, nil
		}
	}
}

// Ping sends ping and waits for pong.
func (c *Client) Ping() error {
	_, err := c.Call(Request{Op: "ping"})
	return err
}

type tcpWire struct {
	conn   net.Conn
	framer framing.Framer
	buf    []byte
	out    []byte
	queue  [][]byte
}

func newTCPWire(c net.Conn, o TCPOptions) (*tcpWire, error) {
	f, err := NewTCPFramer(o)
	if err != nil {
		return nil, err
	}
	return &tcpWire{conn: c, framer: f, buf: make([]byte, 32<<10)}, nil
}

func (w *tcpWire) write(payload []byte) error {
	var err error
	w.out, err = w.framer.AppendFrame(w.out[:0], framing.OpBinary, payload)
	if err != nil {
		return err
	}
	_, err = w.conn.Write(w.out)
	return err
}

func (w *tcpWire) read() ([]byte, error) {
	for len(w.queue) == 0 {
		n, err := w.conn.Read(w.buf)
		if n > 0 {
			w.framer.Feed(w.buf[:n])
			for {
				f, ok, ferr := w.framer.Next()
				if ferr != nil {
					return nil, ferr
				}
				if !ok {
					break
				}
				w.queue = append(w.queue, append([]byte(nil), f.Payload...))
			}
		}
		if err != nil && len(w.queue) == 0 {
			if errors.Is(err, io.EOF) {
				return nil, ErrClosed
			}
			return nil, err
		}
	}
	p := w.queue[0]
	w.queue = w.queue[1:]
	return p, nil
}

type wsWire struct {
	conn    net.Conn
	r       io.Reader
	writeMu *sync.Mutex // the client's: pongs must not cut into a Send
}

func (w *wsWire) write(payload []byte) error {
	return wsutil.WriteClientMessage(w.conn, ws.OpText, payload)
}

func (w *wsWire) read() ([]byte, error) {
	for {
		h, err := ws.ReadHeader(w.r)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, ErrClosed
			}
			return nil, err
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(w.r, payload); err != nil {
			return nil, err
		}
		switch h.OpCode {
		case ws.OpText, ws.OpBinary:
			if !h.Fin {
				return nil, errors.New("client: fragmented server messages are not supported")
			}
			return payload, nil
		case ws.OpPing:
			w.writeMu.Lock()
			err := wsutil.WriteClientMessage(w.conn, ws.OpPong, payload)
			w.writeMu.Unlock()
			if err != nil {
				return nil, err
			}
		case ws.OpClose:
			code, reason := framing.ParseClose(payload)
			w.writeMu.Lock()
			_ = wsutil.WriteClientMessage(w.conn, ws.OpClose, ws.NewCloseFrameBody(ws.StatusCode(code), ""))
			w.writeMu.Unlock()
			ce := &CloseError{Code: code, Reason: reason}
			var m Event
			if strings.HasPrefix(reason, "{") && json.Unmarshal([]byte(reason), &m) == nil && m.Op == "close" {
				ce.Reason, ce.Hint = m.Reason, hintOf(&m)
			}
			return nil, ce
		}
	}
}
