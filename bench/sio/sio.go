// Package sio is a small Socket.IO 4 client over WebSocket, enough for
// tether's bench to drive a Socket.IO server with the same worker
// processes and figures as tether: Engine.IO v4 framing on a WebSocket
// (github.com/gobwas/ws), the default namespace only, events and their
// acknowledgements, pings answered. No long-polling, no binary events,
// no reconnection.
//
// The wire, one Engine.IO packet per WebSocket text message:
//
//	server → 0{"sid":...,"pingInterval":25000,"pingTimeout":20000,...}   open
//	client → 40                   connect to the default namespace
//	server → 40{"sid":...}        connected
//	both   → 42["event",arg]      an event; 42<id>["event",arg] asks for an ack
//	server → 43<id>[args...]      the ack of event <id>
//	server → 2, client → 3        ping, pong (Engine.IO v4: the server pings)
//	either → 41, 1                namespace disconnect, close
package sio

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// Open is the Engine.IO open packet's body.
type Open struct {
	SID          string `json:"sid"`
	PingInterval int    `json:"pingInterval"` // milliseconds
	PingTimeout  int    `json:"pingTimeout"`  // milliseconds
	MaxPayload   int    `json:"maxPayload"`
}

// Packet is one Socket.IO packet of the default namespace.
type Packet struct {
	Type  byte // '2' event, '3' ack
	ID    int  // the ack id; -1 none
	Event string
	Args  []json.RawMessage // an event's arguments after its name; an ack's arguments
}

// Options of Dial.
type Options struct {
	Local   net.IP        // source address; nil: the system's choice
	Timeout time.Duration // for the WebSocket and namespace handshakes; 0: 10 s
}

// Conn is one Socket.IO client connection. Emit may be called from any
// goroutine; the reads (Read, Next, Call) from one at a time.
type Conn struct {
	nc      net.Conn
	br      *bufio.Reader
	wmu     sync.Mutex
	Open    Open   // the server's open packet
	SID     string // the namespace connection's id (socket.id on the server)
	nextAck int
	backlog []*Packet // events read by Call while waiting for its ack
	buf     []byte
}

// URL turns a Socket.IO server's address (http://host:port, ws://host:port,
// or host:port) into the URL of its WebSocket transport.
func URL(server string) (string, error) {
	if !bytes.Contains([]byte(server), []byte("://")) {
		server = "http://" + server
	}
	u, err := url.Parse(server)
	if err != nil {
		return "", err
	}
	switch u.Scheme {
	case "http", "ws":
		u.Scheme = "ws"
	case "https", "wss":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("sio: %s: scheme %q", server, u.Scheme)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/socket.io/"
	}
	u.RawQuery = "EIO=4&transport=websocket"
	return u.String(), nil
}

// Dial connects to a Socket.IO server (see URL for the address) over
// WebSocket and to its default namespace.
func Dial(ctx context.Context, server string, o Options) (*Conn, error) {
	u, err := URL(server)
	if err != nil {
		return nil, err
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	d := ws.Dialer{Timeout: o.Timeout}
	if o.Local != nil {
		d.NetDial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: o.Local}}
			return nd.DialContext(ctx, network, addr)
		}
	}
	nc, br, _, err := d.Dial(ctx, u)
	if err != nil {
		return nil, err
	}
	c := &Conn{nc: nc, nextAck: 1}
	if br != nil {
		c.br = bufio.NewReaderSize(io.MultiReader(br, nc), 4096)
	} else {
		c.br = bufio.NewReaderSize(nc, 4096)
	}
	if err := c.handshake(o.Timeout); err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

func (c *Conn) handshake(timeout time.Duration) error {
	_ = c.nc.SetReadDeadline(time.Now().Add(timeout))
	defer c.nc.SetReadDeadline(time.Time{})
	p, err := c.Read()
	if err != nil {
		return fmt.Errorf("sio: open: %w", err)
	}
	if len(p) == 0 || p[0] != '0' {
		return fmt.Errorf("sio: expected an open packet, got %q", p)
	}
	if err := json.Unmarshal(p[1:], &c.Open); err != nil {
		return fmt.Errorf("sio: open packet %q: %w", p, err)
	}
	if err := c.write([]byte("40")); err != nil {
		return err
	}
	for {
		p, err := c.Read()
		if err != nil {
			return fmt.Errorf("sio: namespace connect: %w", err)
		}
		switch {
		case bytes.HasPrefix(p, []byte("40")):
			var ok struct {
				SID string `json:"sid"`
			}
			if err := json.Unmarshal(p[2:], &ok); err != nil {
				return fmt.Errorf("sio: connect packet %q: %w", p, err)
			}
			c.SID = ok.SID
			return nil
		case bytes.HasPrefix(p, []byte("44")):
			return fmt.Errorf("sio: namespace connect refused: %s", p[2:])
		}
	}
}

// Conn is the underlying network connection.
func (c *Conn) Conn() net.Conn { return c.nc }

// Close closes the connection, saying so first (41, then the WebSocket
// close frame).
func (c *Conn) Close() error {
	_ = c.write([]byte("41"))
	c.wmu.Lock()
	_ = ws.WriteFrame(c.nc, ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))))
	c.wmu.Unlock()
	return c.nc.Close()
}

func (c *Conn) write(p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return wsutil.WriteClientText(c.nc, p)
}

// EncodeEvent is the Engine.IO message of an event: 42[<id>]["event",arg].
// id < 0 asks for no ack.
func EncodeEvent(id int, event string, arg any) ([]byte, error) {
	b := []byte("42")
	if id >= 0 {
		b = strconv.AppendInt(b, int64(id), 10)
	}
	name, _ := json.Marshal(event)
	b = append(b, '[')
	b = append(b, name...)
	if arg != nil {
		a, err := json.Marshal(arg)
		if err != nil {
			return nil, err
		}
		b = append(b, ',')
		b = append(b, a...)
	}
	return append(b, ']'), nil
}

// Emit sends an event with one argument (nil: none), asking no ack.
func (c *Conn) Emit(event string, arg any) error {
	p, err := EncodeEvent(-1, event, arg)
	if err != nil {
		return err
	}
	return c.write(p)
}

// WriteRaw sends an Engine.IO message as it is, e.g. 42["send",{...}].
func (c *Conn) WriteRaw(p []byte) error { return c.write(p) }

// Call sends an event asking for an ack and reads until the ack comes,
// keeping the events read meanwhile for Next. It returns the ack's
// arguments.
func (c *Conn) Call(event string, arg any, timeout time.Duration) ([]json.RawMessage, error) {
	id := c.nextAck
	c.nextAck++
	p, err := EncodeEvent(id, event, arg)
	if err != nil {
		return nil, err
	}
	if err := c.write(p); err != nil {
		return nil, err
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(timeout))
	defer c.nc.SetReadDeadline(time.Time{})
	for {
		pk, err := c.next()
		if err != nil {
			return nil, err
		}
		if pk.Type == '3' && pk.ID == id {
			return pk.Args, nil
		}
		if pk.Type == '2' {
			c.backlog = append(c.backlog, pk)
		}
	}
}

// Next returns the next event or ack, answering pings meanwhile.
func (c *Conn) Next() (*Packet, error) {
	if len(c.backlog) > 0 {
		pk := c.backlog[0]
		c.backlog = c.backlog[1:]
		return pk, nil
	}
	return c.next()
}

func (c *Conn) next() (*Packet, error) {
	for {
		p, err := c.Read()
		if err != nil {
			return nil, err
		}
		if len(p) >= 2 && p[0] == '4' && (p[1] == '2' || p[1] == '3') {
			return Decode(p)
		}
		if bytes.HasPrefix(p, []byte("41")) {
			return nil, errors.New("sio: disconnected by the server")
		}
	}
}

// Decode parses an Engine.IO message holding a Socket.IO event or ack of
// the default namespace: 42[<id>][...] or 43<id>[...].
func Decode(p []byte) (*Packet, error) {
	if len(p) < 3 || p[0] != '4' || (p[1] != '2' && p[1] != '3') {
		return nil, fmt.Errorf("sio: not an event or ack: %q", p)
	}
	pk := &Packet{Type: p[1], ID: -1}
	rest := p[2:]
	i := 0
	for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
		i++
	}
	if i > 0 {
		pk.ID, _ = strconv.Atoi(string(rest[:i]))
	}
	var args []json.RawMessage
	if err := json.Unmarshal(rest[i:], &args); err != nil {
		return nil, fmt.Errorf("sio: packet %q: %w", p, err)
	}
	if pk.Type == '2' {
		if len(args) == 0 || json.Unmarshal(args[0], &pk.Event) != nil {
			return nil, fmt.Errorf("sio: event without a name: %q", p)
		}
		args = args[1:]
	}
	pk.Args = args
	return pk, nil
}

// Read returns the next Engine.IO message other than a ping (answered
// with a pong) and WebSocket control frames (a ping answered, a close
// ending the connection). The slice is valid until the next Read.
func (c *Conn) Read() ([]byte, error) {
	for {
		h, err := ws.ReadHeader(c.br)
		if err != nil {
			return nil, err
		}
		if int64(cap(c.buf)) < h.Length {
			c.buf = make([]byte, h.Length)
		}
		p := c.buf[:h.Length]
		if _, err := io.ReadFull(c.br, p); err != nil {
			return nil, err
		}
		if h.Masked {
			ws.Cipher(p, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpPing:
			c.wmu.Lock()
			err = wsutil.WriteClientMessage(c.nc, ws.OpPong, p)
			c.wmu.Unlock()
			if err != nil {
				return nil, err
			}
			continue
		case ws.OpClose:
			return nil, io.EOF
		case ws.OpText, ws.OpBinary, ws.OpContinuation:
		default:
			continue
		}
		if len(p) == 1 && p[0] == '2' { // Engine.IO ping
			if err := c.write([]byte("3")); err != nil {
				return nil, err
			}
			continue
		}
		if len(p) == 1 && p[0] == '1' { // Engine.IO close
			return nil, io.EOF
		}
		return p, nil
	}
}
