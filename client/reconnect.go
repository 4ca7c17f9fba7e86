package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"
)

// ReconnectOptions configure a Reconnecting client.
type ReconnectOptions struct {
	// URLs are where the client connects: ws:// or wss:// URLs of
	// WebSocket listeners, or host:port of TCP listeners (default
	// framing). It connects to the first that answers, in order.
	URLs []string
	// Dial connects to one of URLs (or of a hint's); the default dials
	// a WebSocket URL with DialWebSocket, anything else with DialTCP.
	Dial func(ctx context.Context, url string) (*Client, error)
	// DialTimeout bounds one attempt: the connect and the welcome.
	// Default 10s.
	DialTimeout time.Duration
	// BackoffMin is the wait after a connection lost without a hint, or
	// a round of attempts that all failed; each next wait is twice as
	// long, at most BackoffMax, each ±20%. Defaults 500ms and 15s.
	BackoffMin, BackoffMax time.Duration
	// Ping, when set, sends a ping this often on the connection: the
	// client's own heartbeat. Default 0: none.
	Ping time.Duration
	// OnReconnect is called after each reconnect, on the goroutine that
	// called Recv.
	OnReconnect func(*Reconnect)
}

// Reconnect describes one reconnect of a Reconnecting client.
type Reconnect struct {
	Lost     time.Time     // when the connection was found lost
	Err      error         // why: the read's error (*CloseError on WebSocket)
	Hint     *Hint         // the server's reconnect hint, nil without one
	Waited   time.Duration // the wait before the first attempt
	At       time.Time     // when the new connection had joined its rooms again
	URL      string        // where it is now
	Attempts int           // connects tried
	// Rejoined is the answer to the join of each room, made with since
	// where the room keeps history (Recovered says whether every missed
	// message was replayed; they come from Recv next).
	Rejoined map[string]*Event
}

// Reconnecting is a client that stays connected: when its connection is
// lost, Recv connects again and joins its rooms again before it returns
// the next event. A draining node's close carries a hint (Client.Hint):
// it waits the hint's delay (plus up to a tenth of it, its own jitter)
// and tries the hint's URLs first, then its own; without a hint it backs
// off. Rooms with history are joined again with since, so that what was
// missed comes first; a replayed message it had already returned is
// dropped and counted (Duplicates).
//
// Recv is for one goroutine; Send, Call and Join may be called from
// others, and go to the connection of the moment.
type Reconnecting struct {
	o    ReconnectOptions
	done chan struct{}

	mu        sync.Mutex
	c         *Client
	url       string
	rooms     []Request           // joins to make again, in order
	last      map[string]Position // of the last message Recv returned, per room
	dups      int
	closeOnce sync.Once
}

// Connect connects to the first of o.URLs that answers and returns the
// client.
func Connect(ctx context.Context, o ReconnectOptions) (*Reconnecting, error) {
	if len(o.URLs) == 0 {
		return nil, errors.New("client: no URL to connect to")
	}
	if o.Dial == nil {
		o.Dial = dialURL
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = 500 * time.Millisecond
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = 15 * time.Second
	}
	r := &Reconnecting{o: o, done: make(chan struct{}), last: map[string]Position{}}
	var errs []error
	for _, u := range o.URLs {
		c, err := r.dial(ctx, u)
		if err == nil {
			r.c, r.url = c, u
			if o.Ping > 0 {
				go r.ping()
			}
			return r, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// dialURL dials a WebSocket URL or a TCP address.
func dialURL(ctx context.Context, url string) (*Client, error) {
	if strings.HasPrefix(url, "ws://") || strings.HasPrefix(url, "wss://") {
		return DialWebSocket(ctx, url)
	}
	return DialTCP(ctx, url, TCPOptions{})
}

func (r *Reconnecting) dial(ctx context.Context, url string) (*Client, error) {
	ctx, cancel := context.WithTimeout(ctx, r.o.DialTimeout)
	defer cancel()
	return r.o.Dial(ctx, url)
}

// Client is the connection of the moment.
func (r *Reconnecting) Client() *Client {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.c
}

// URL is where the client is connected now.
func (r *Reconnecting) URL() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.url
}

// Duplicates counts the replayed messages Recv dropped because it had
// returned them already.
func (r *Reconnecting) Duplicates() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dups
}

// Join joins a room (req.Op is set to join) and remembers it: after each
// reconnect the client joins it again, with since where it has a
// position. Call it from the goroutine that calls Recv, or before Recv
// runs: the reply is read from the connection.
func (r *Reconnecting) Join(req Request) (*Event, error) {
	req.Op = "join"
	ok, err := r.Client().Call(req)
	if err != nil {
		return ok, err
	}
	r.mu.Lock()
	r.rooms = slices.DeleteFunc(r.rooms, func(j Request) bool { return j.Room == req.Room })
	req.Since = nil
	r.rooms = append(r.rooms, req)
	r.mu.Unlock()
	return ok, nil
}

// Call sends a request on the connection of the moment and returns its
// reply (see Client.Call); it does not retry.
func (r *Reconnecting) Call(req Request) (*Event, error) { return r.Client().Call(req) }

// Send sends a request on the connection of the moment.
func (r *Reconnecting) Send(req Request) error { return r.Client().Send(req) }

// Close closes the connection and stops reconnecting: Recv returns
// ErrClosed.
func (r *Reconnecting) Close() error {
	r.closeOnce.Do(func() { close(r.done) })
	return r.Client().Close()
}

// Recv returns the next event. When the connection is lost it
// reconnects first (OnReconnect tells how), and goes on with the events
// of the new connection: the rooms' missed messages first. It returns an
// error once Close was called, or after a close the server meant (kicked,
// unauthorized, token_expired: 4004, 4006, 4007 on WebSocket).
func (r *Reconnecting) Recv() (*Event, error) {
	for {
		c := r.Client()
		ev, err := c.Recv()
		if err == nil {
			if r.duplicate(ev) {
				continue
			}
			return ev, nil
		}
		select {
		case <-r.done:
			return nil, ErrClosed
		default:
		}
		var ce *CloseError
		if errors.As(err, &ce) && (ce.Code == 4004 || ce.Code == 4006 || ce.Code == 4007) {
			return nil, err
		}
		if rerr := r.reconnect(c, err); rerr != nil {
			return nil, rerr
		}
	}
}

// duplicate says whether ev is a message of a room with history that
// Recv has returned already, and counts it; otherwise it notes its
// position.
func (r *Reconnecting) duplicate(ev *Event) bool {
	if ev.Op != "message" || ev.Epoch == "" || ev.Room == "" {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, ok := r.last[ev.Room]; ok && p.Epoch == ev.Epoch && ev.Offset <= p.Offset {
		r.dups++
		return true
	}
	r.last[ev.Room] = Position{Offset: ev.Offset, Epoch: ev.Epoch}
	return false
}

// reconnect replaces the lost connection old: after the hint's delay
// (or a backoff), the hint's URLs, then the client's own; then the rooms
// are joined again.
func (r *Reconnecting) reconnect(old *Client, lost error) error {
	_ = old.Close()
	rc := &Reconnect{Lost: time.Now(), Err: lost, Hint: old.Hint(), Rejoined: map[string]*Event{}}
	backoff := r.o.BackoffMin
	wait := jitter(backoff, 0.2)
	if rc.Hint != nil {
		wait = rc.Hint.Retry + time.Duration(rand.Int64N(int64(rc.Hint.Retry)/10+1))
	}
	rc.Waited = wait
	r.mu.Lock()
	from := r.url
	r.mu.Unlock()
	for {
		if err := r.sleep(wait); err != nil {
			return err
		}
		for _, u := range r.candidates(rc.Hint, from) {
			rc.Attempts++
			c, err := r.dial(context.Background(), u)
			if err != nil {
				continue
			}
			if err := r.rejoin(old, c, rc); err != nil {
				_ = c.Close()
				continue
			}
			r.mu.Lock()
			r.c, r.url = c, u
			r.mu.Unlock()
			select {
			case <-r.done: // closed while it connected
				_ = c.Close()
				return ErrClosed
			default:
			}
			rc.At, rc.URL = time.Now(), u
			if r.o.OnReconnect != nil {
				r.o.OnReconnect(rc)
			}
			return nil
		}
		wait = jitter(backoff, 0.2)
		backoff = min(2*backoff, r.o.BackoffMax)
	}
}

// candidates are the URLs to try, in order: the hint's, then the
// client's own, the one it was on last.
func (r *Reconnecting) candidates(h *Hint, from string) []string {
	var out []string
	if h != nil {
		out = append(out, h.URLs...)
	}
	for _, u := range r.o.URLs {
		if u != from {
			out = append(out, u)
		}
	}
	out = append(out, from)
	return slices.Compact(out)
}

// rejoin joins the rooms again on c, each from the position old had.
func (r *Reconnecting) rejoin(old, c *Client, rc *Reconnect) error {
	r.mu.Lock()
	rooms := slices.Clone(r.rooms)
	r.mu.Unlock()
	_ = c.Conn().SetReadDeadline(time.Now().Add(r.o.DialTimeout))
	defer c.Conn().SetReadDeadline(time.Time{})
	for _, j := range rooms {
		c.SetPosition(j.Room, old.Position(j.Room))
		j.Since = old.Position(j.Room)
		ok, err := c.Call(j)
		if err != nil && ok == nil {
			return fmt.Errorf("join %s again: %w", j.Room, err)
		}
		rc.Rejoined[j.Room] = ok
	}
	return nil
}

// sleep waits d, or until Close.
func (r *Reconnecting) sleep(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-r.done:
		return ErrClosed
	}
}

// ping sends a ping every o.Ping on the connection of the moment.
func (r *Reconnecting) ping() {
	t := time.NewTicker(r.o.Ping)
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-t.C:
			_ = r.Send(Request{Op: "ping"})
		}
	}
}

// jitter is d ± frac of it, at random.
func jitter(d time.Duration, frac float64) time.Duration {
	return time.Duration(float64(d) * (1 - frac + 2*frac*rand.Float64()))
}
