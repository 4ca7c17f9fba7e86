package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"tether/actors/protocol"
	"tether/actors/room"
	"tether/transport"
)

// Bus is a node's handle on NATS for publishing and asking. Any actor may
// use it: nats.go's connection is safe for concurrent use, and its Publish
// appends to a buffer that a flusher goroutine writes out; it waits on the
// socket itself only when that 32 KiB buffer is full, that is when NATS
// does not keep up. What could not be published is counted, and logged
// once per outage.
type Bus struct {
	Node     string
	Subjects Subjects
	nc       atomic.Pointer[nats.Conn] // replaced when NATS closed a connection for good
	metrics  *transport.Metrics

	lanes [2]lane // by Asker: clients cannot use up the admin API's slots

	mu          sync.Mutex
	outageStart time.Time // zero while connected
	buffered    int       // publications made while disconnected (sent on reconnect)
	lost        int       // publications that failed
	lostTotal   atomic.Int64
}

// NewBus makes the bus of a node. It exists before the NATS connection so
// that the connection's handlers can report to it (Disconnected); Attach
// gives it the connection, before anyone publishes.
func NewBus(node string, prefix string, metrics *transport.Metrics) *Bus {
	b := &Bus{Node: node, Subjects: Subjects{Prefix: prefix}, metrics: metrics}
	b.lanes[Clients] = lane{gathers: make(chan struct{}, maxClientGathers), requests: make(chan struct{}, maxClientRequests)}
	b.lanes[Admin] = lane{gathers: make(chan struct{}, maxAdminGathers), requests: make(chan struct{}, maxAdminRequests)}
	return b
}

// Asker says who asks the cluster a question; each has its own slots.
type Asker int

// Askers.
const (
	Clients Asker = iota // the connections' requests (members, whispers)
	Admin                // the admin API, over HTTP or NATS
)

// lane bounds one asker's questions in flight: a gather (members of a
// room with no member here, cluster-wide listings) holds a subscription
// for its window, a request its payload until answered. The chat
// application bounds each connection's share of the clients' lane
// (chat.MaxInFlight).
type lane struct {
	gathers  chan struct{} // one slot per gather in flight
	requests chan struct{} // one slot per request in flight
}

// The lanes' sizes.
const (
	maxClientGathers  = 256
	maxClientRequests = 1024
	maxAdminGathers   = 32
	maxAdminRequests  = 64
)

// ErrBusy says that too many gathers or requests are in flight; try
// again later.
var ErrBusy = errors.New("too many cluster-wide requests in flight")

// Attach gives the bus its connection, or a new one after NATS closed
// the old one for good (the bridge then subscribes again).
func (b *Bus) Attach(nc *nats.Conn) { b.nc.Store(nc) }

// Conn is the NATS connection.
func (b *Bus) Conn() *nats.Conn { return b.nc.Load() }

// Msg builds a message from this node with a kind and body.
func (b *Bus) Msg(subject, kind string, body []byte) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Header.Set(HeaderKind, kind)
	m.Header.Set(HeaderNode, b.Node)
	m.Data = body
	return m
}

// Publish sends m. While NATS is away nats.go buffers publications (up to
// nats.reconnect_buffer) and sends them on reconnect; those are counted
// as buffered, and any that fail as lost. The error is for callers that
// answer someone (the admin API); actors go on either way.
func (b *Bus) Publish(m *nats.Msg) error {
	err := checkSubject(m.Subject)
	if err == nil {
		err = b.Conn().PublishMsg(m)
	}
	kind := m.Header.Get(HeaderKind)
	b.mu.Lock()
	away := !b.outageStart.IsZero()
	if err != nil {
		b.lost++
	} else if away {
		b.buffered++
	}
	b.mu.Unlock()
	if err != nil {
		b.lostTotal.Add(1)
		b.metrics.NATSLost.Inc()
		return err
	}
	b.metrics.NATSOut.WithLabelValues(kind).Inc()
	return nil
}

// Lost is how many publications failed since the node started.
func (b *Bus) Lost() int64 { return b.lostTotal.Load() }

// Disconnected and reconnected bracket an outage, so that the reconnect
// can say how long it lasted and what it cost. Disconnected is the NATS
// connection's handler.
func (b *Bus) Disconnected(error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.outageStart.IsZero() {
		b.outageStart, b.buffered, b.lost = time.Now(), 0, 0
	}
	b.metrics.NATSDisconnects.Inc()
}

func (b *Bus) reconnected() (gap time.Duration, buffered, lost int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.outageStart.IsZero() {
		gap = time.Since(b.outageStart)
	}
	buffered, lost = b.buffered, b.lost
	b.outageStart, b.buffered, b.lost = time.Time{}, 0, 0
	return gap, buffered, lost
}

// requestTimeout bounds a question to one node.
const requestTimeout = 2 * time.Second

// ErrNoNode says that no node holds the subject: the node a connection id
// names is gone (NATS knows at once that nobody listens).
var ErrNoNode = errors.New("the connection's node is not in the cluster")

// ErrUnavailable says that the question got no answer in time, or NATS is
// away: whether the connection exists is unknown.
var ErrUnavailable = errors.New("the cluster did not answer")

// Request asks one node and returns its reply's body; a reply with a
// Tether-Reason header is an error with that code.
func (b *Bus) Request(ctx context.Context, who Asker, m *nats.Msg) ([]byte, error) {
	slots := b.lanes[who].requests
	select {
	case slots <- struct{}{}:
		defer func() { <-slots }()
	default:
		return nil, ErrBusy
	}
	if err := checkSubject(m.Subject); err != nil {
		return nil, err
	}
	nc := b.Conn()
	if !nc.IsConnected() {
		return nil, ErrUnavailable // nats.go would buffer the request and wait
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	reply, err := nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, ErrNoNode
		}
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if code := reply.Header.Get(HeaderReason); code != "" {
		return nil, &ReplyError{Code: code}
	}
	return reply.Data, nil
}

// ErrNoWorker says that no relay worker took a connection: none listens
// on the listener's events subject, none answered in time, or NATS is
// away.
var ErrNoWorker = errors.New("no relay worker took the connection")

// Offer sends a relay connection's connect event m as a request to the
// workers of its listener and returns the subject where the one that
// answered takes that connection's further events (its Tether-Worker
// header). A request waits for at most requestTimeout, so a worker that
// answers later is not the connection's worker.
func (b *Bus) Offer(ctx context.Context, m *nats.Msg) (string, error) {
	if err := checkSubject(m.Subject); err != nil {
		return "", err
	}
	nc := b.Conn()
	if !nc.IsConnected() {
		return "", fmt.Errorf("%w: nats is away", ErrNoWorker) // nats.go would buffer the request and wait
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	reply, err := nc.RequestMsgWithContext(ctx, m)
	b.metrics.NATSOut.WithLabelValues(m.Header.Get(HeaderKind)).Inc()
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNoWorker, err)
	}
	worker := reply.Header.Get(HeaderWorker)
	if err := checkSubject(worker); err != nil {
		return "", fmt.Errorf("the worker's %s header: %w", HeaderWorker, err)
	}
	return worker, nil
}

// ReplyError is a node's refusal: a protocol error code.
type ReplyError struct{ Code string }

func (e *ReplyError) Error() string { return e.Code }

// Deliver asks the node owning connection id to send it body as one
// message. It returns nil once that node has queued it.
func (b *Bus) Deliver(ctx context.Context, who Asker, id string, body []byte) error {
	m := b.Msg(b.Subjects.Node(protocol.NodeOf(id)), KindDeliver, body)
	m.Header.Set(HeaderConn, id)
	_, err := b.Request(ctx, who, m)
	return err
}

// Gather asks every node (on the cluster subject) for the admin API and
// collects the replies until want have come or the window closes.
func (b *Bus) Gather(ctx context.Context, what string, want int, window time.Duration) ([][]byte, error) {
	return b.gather(ctx, Admin, b.Msg(b.Subjects.Cluster(), KindGather, []byte(what)), want, window)
}

// gather publishes m with a fresh inbox for replies and collects their
// bodies until want have come (0: until the window closes). It uses an
// asynchronous subscription: SubscribeSync would allocate a channel of
// 64k slots (512 KiB) per call.
func (b *Bus) gather(ctx context.Context, who Asker, m *nats.Msg, want int, window time.Duration) ([][]byte, error) {
	slots := b.lanes[who].gathers
	select {
	case slots <- struct{}{}:
		defer func() { <-slots }()
	default:
		return nil, ErrBusy
	}
	if err := checkSubject(m.Subject); err != nil {
		return nil, err
	}
	var mu sync.Mutex
	var out [][]byte
	enough := make(chan struct{})
	nc := b.Conn()
	m.Reply = nc.NewRespInbox()
	sub, err := nc.Subscribe(m.Reply, func(r *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		out = append(out, r.Data)
		if len(out) == want {
			close(enough)
		}
	})
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := nc.PublishMsg(m); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, window)
	defer cancel()
	select {
	case <-enough:
	case <-ctx.Done(): // the window closed: some node did not answer
	}
	mu.Lock()
	defer mu.Unlock()
	return out, nil
}

// PublishRoom sends a room event to the other nodes with members of the
// room (room.Cluster). Sync and state carry the node's members as JSON.
func (b *Bus) PublishRoom(name string, ev *room.Remote) error {
	body := ev.Body
	if ev.Kind == room.KindSync || ev.Kind == room.KindState {
		body, _ = json.Marshal(ev.Members)
	}
	m := b.Msg(b.Subjects.Room(name), ev.Kind, body)
	if ev.Member.Conn != "" {
		m.Header.Set(HeaderMember, memberHeader(ev.Member))
	}
	if ev.Reason != "" {
		m.Header.Set(HeaderReason, ev.Reason)
	}
	if ev.Seq != 0 {
		m.Header.Set(HeaderSeq, strconv.FormatUint(ev.Seq, 10))
	}
	if ev.From != "" {
		m.Header.Set(HeaderConn, ev.From)
	}
	if ev.Time != 0 {
		m.Header.Set(HeaderTime, strconv.FormatInt(ev.Time, 10))
	}
	return b.Publish(m)
}

// ReplyMembers answers a members gather (room.Cluster).
func (b *Bus) ReplyMembers(reply string, members []protocol.Member) {
	body, _ := json.Marshal(members)
	_ = b.Publish(b.Msg(reply, room.KindMembers, body)) // counted when lost
}

// GatherMembers asks every node with members of a room for them: the
// answer for a node that has no member itself. Only nodes with members
// subscribe to the room, so their number is unknown: it waits the window.
func (b *Bus) GatherMembers(ctx context.Context, admin bool, name string, window time.Duration) ([]protocol.Member, error) {
	who := Clients
	if admin {
		who = Admin
	}
	replies, err := b.gather(ctx, who, b.Msg(b.Subjects.Room(name), room.KindMembers, nil), 0, window)
	if err != nil {
		return nil, err
	}
	out := []protocol.Member{}
	for _, body := range replies {
		var ms []protocol.Member
		if json.Unmarshal(body, &ms) == nil {
			out = append(out, ms...)
		}
	}
	return out, nil
}

// decodeRoom turns a room subject message into the room's Remote event.
func decodeRoom(m *nats.Msg) (*room.Remote, error) {
	ev := &room.Remote{
		Kind: m.Header.Get(HeaderKind), Node: m.Header.Get(HeaderNode),
		Body: m.Data, Reason: m.Header.Get(HeaderReason), Reply: m.Reply, From: m.Header.Get(HeaderConn),
	}
	if h := m.Header.Get(HeaderSeq); h != "" {
		seq, err := strconv.ParseUint(h, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bad %s header: %w", HeaderSeq, err)
		}
		ev.Seq = seq
	}
	if h := m.Header.Get(HeaderTime); h != "" {
		t, err := strconv.ParseInt(h, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bad %s header: %w", HeaderTime, err)
		}
		ev.Time = t
	}
	if h := m.Header.Get(HeaderMember); h != "" {
		mem, err := parseMember(h)
		if err != nil {
			return nil, err
		}
		ev.Member = mem
	}
	if ev.Kind == room.KindSync || ev.Kind == room.KindState {
		if err := json.Unmarshal(m.Data, &ev.Members); err != nil {
			return nil, fmt.Errorf("bad %s body: %w", ev.Kind, err)
		}
	}
	return ev, nil
}

// memberHeader encodes a member for the Tether-Member header.
func memberHeader(m protocol.Member) string {
	b, _ := json.Marshal(m)
	return string(b)
}

func parseMember(s string) (protocol.Member, error) {
	var m protocol.Member
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return m, fmt.Errorf("bad %s header: %w", HeaderMember, err)
	}
	return m, nil
}
