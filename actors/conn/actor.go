// Package conn is the connection actor: one per socket, owning the
// socket, its framer and its liveness deadline.
//
// Concurrency rules (guarded by the tests in this package and in test/):
//   - Everything in Actor is touched only by the actor's own Receive,
//     except the fields marked immutable, which other goroutines read to
//     address it.
//   - The socket (transport.Socket) reads one chunk at a time and reads
//     again only when the actor has handled it: a fast sender is pushed
//     back by TCP flow control, never queued in memory.
//   - Writes never go through the mailbox on the delivery path: a room
//     pushes its frames (built once per fan-out) into the members'
//     sockets and flushes each once per batch, from its own goroutine;
//     the socket's lock orders those writes with the actor's own
//     (replies, pongs, the close frame). No write ever blocks: what the
//     kernel does not take waits in the socket's bounded queue for the
//     poller to find the socket writable.
//   - What the socket reports (a chunk, the end of input, a full queue, a
//     write waiting for the peer, a write error, the queue drained after
//     the close) comes as a message, so the actor decides everything.
//   - Connection actors run on shared long-lived workers (dispatcher.go),
//     not a goroutine each: an actor waits for nothing (replies come as
//     messages, writes never block), and a mailbox run ends once the
//     mailbox is empty; the socket's next chunk comes from the poller, so
//     one busy client never keeps a worker
//     (TestStreamingClientLeavesItsWorker).
package conn

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"tether/actors/protocol"
	"tether/framing"
	"tether/transport"
)

// Deliver asks a connection to send Payload as one message (a text
// message on WebSocket). Payload must not be modified.
type Deliver struct {
	Payload []byte
}

// Close asks a connection to close with Reason. A draining node gives a
// Hint with server_shutdown: the client is told when and where to come
// back.
type Close struct {
	Reason Reason
	Hint   *Hint
}

// Hint is a reconnect hint: how long the client should wait before it
// comes back, and where (the other nodes' public URLs of its listener, to
// try first; none: where it was).
type Hint struct {
	Retry time.Duration
	URLs  []string
}

// Reload gives a connection its listener's new settings (heartbeat and
// limits change live; framing does not).
type Reload struct {
	Settings *Settings
}

// Internal messages. They may reach an actor that already stopped (a read
// that failed on the closed socket); that is expected, so dead-letter
// logging is off for them.
type (
	readEnd        struct{ err error }
	tick           struct{}
	writeBlocked   struct{}
	writeFailed    struct{ err error }
	queueFull      struct{}
	drained        struct{}
	continueFrames struct{}
)

func (*readEnd) IgnoreDeadLetterLogging()        {}
func (*tick) IgnoreDeadLetterLogging()           {}
func (*writeBlocked) IgnoreDeadLetterLogging()   {}
func (*writeFailed) IgnoreDeadLetterLogging()    {}
func (*queueFull) IgnoreDeadLetterLogging()      {}
func (*drained) IgnoreDeadLetterLogging()        {}
func (*continueFrames) IgnoreDeadLetterLogging() {}

var (
	tickMsg         = &tick{}
	continueMsg     = &continueFrames{}
	writeBlockedMsg = &writeBlocked{}
	queueFullMsg    = &queueFull{}
	drainedMsg      = &drained{}
)

// now is the clock the actor keeps its times in (transport.Now: monotonic
// nanoseconds, 8 bytes a timestamp).
func now() int64 { return transport.Now() }

// Deps are what a listener gives each of its connections.
type Deps struct {
	System   *actor.ActorSystem
	Node     string
	Registry *Registry
	Budget   *Budget // the node's bound on unfinished inbound frames
	Metrics  *transport.ListenerMetrics
	Log      zerolog.Logger // the listener's logger; the connection adds its id
	NewApp   NewApp
}

// Actor is one connection.
type Actor struct {
	// immutable after start; the socket's events read deps and self.
	id   string
	deps *Deps
	sock *transport.Socket
	self *actor.PID

	settings *Settings
	framer   framing.Framer
	app      App
	ctx      actor.Context
	chunk    *transport.Chunk // the chunk being framed, until the socket gets it back
	framing  bool             // input fed to the framer is not all handled yet; the socket waits
	batching bool             // inside frames(): replies are pushed, and flushed once at the end
	preread  *[]byte          // bytes read before the actor started (after a WebSocket upgrade)
	deadline deadline         // when the liveness check runs next (clock)
	rate     bucket           // the messages it sent, against settings.Rate
	// handshake is what the WebSocket upgrade request said that the App
	// may want (a token, headers), until Opened has run.
	handshake *transport.Handshake

	connected, lastRecv, lastPing int64 // now() values; lastRecv: when handled bytes were read
	partialSince                  int64 // when the unfinished frame held now began arriving; 0: none
	lingerUntil                   int64 // closing: when the last writes give up
	held                          int   // bytes of the unfinished frame, as last told to the budget

	bytesIn, framesIn uint64
	sentBefore        uint64 // written before the actor (the 101 response)

	reason Reason // set once closing
	done   bool   // socket closed and actor stopping
}

// New prepares the actor of an admitted socket: its Socket takes the
// socket's descriptor and ticket (transport.Adopt).
func New(id string, a *transport.Accepted, settings *Settings, deps *Deps) (*Actor, error) {
	framer, err := settings.NewFramer()
	if err != nil {
		return nil, err
	}
	c := &Actor{id: id, deps: deps, settings: settings, framer: framer, sentBefore: uint64(a.Sent)}
	if len(a.Preread) > 0 {
		c.preread = &a.Preread
	}
	c.handshake = a.Handshake
	if c.sock, err = transport.Adopt(a, c, deps.Metrics); err != nil {
		return nil, err
	}
	c.sock.SetLimits(settings.OutboundQueue, settings.DropWhenFull)
	c.sock.SetDelay(settings.Delayer)
	return c, nil
}

// ID is the connection id: node id, a dot, a random part
// (protocol.NewConnID).
func (a *Actor) ID() string { return a.id }

// Node is the id of the node holding the connection.
func (a *Actor) Node() string { return a.deps.Node }

// RemoteAddr is the client's address, ip:port.
func (a *Actor) RemoteAddr() string { return a.sock.Remote().String() }

// Settings are the listener's settings in force.
func (a *Actor) Settings() *Settings { return a.settings }

// Socket is the connection's socket: a room pushes its fan-out's frames
// into it directly. Write to it only once the actor has started (a room
// gets it with the join): the socket's events address the actor.
func (a *Actor) Socket() *transport.Socket { return a.sock }

// Context is the actor context, for Apps that send to other actors. It is
// valid only inside the App's methods.
func (a *Actor) Context() actor.Context { return a.ctx }

// Log is the connection's logger: every line carries its id. It is built
// on use, so that an idle connection holds no logger.
func (a *Actor) Log() *zerolog.Logger {
	l := a.deps.Log.With().Str("conn", a.id).Logger()
	return &l
}

// Receive is the actor's mailbox handler.
func (a *Actor) Receive(ctx actor.Context) {
	a.ctx = ctx
	switch m := ctx.Message().(type) {
	case *transport.Chunk:
		if !a.closing() {
			a.chunk = m
			a.countIn(len(m.Bytes()), m.At)
			a.feed(m.Bytes())
		}
	case *continueFrames:
		if !a.closing() && a.framing {
			a.frames()
		}
	case *Deliver:
		a.Send(m.Payload)
	case *tick:
		a.heartbeat()
	case *writeBlocked:
		a.schedule() // the write timeout counts from now
	case *drained:
		if a.closing() && !a.done {
			a.finish(true)
		}
	case *queueFull:
		if !a.closing() {
			a.Log().Info().Int("limit", a.settings.OutboundQueue).Msg("outbound queue full")
			a.closeNow(ReasonSlowConsumer)
		}
	case *writeFailed:
		if !a.done {
			a.socketFailed(m.err)
		}
	case *readEnd:
		a.readFailed(m.err)
	case *Close:
		a.Close(m.Reason) // with m.Hint (Actor.Hint)
	case *InfoRequest:
		ctx.Respond(a.info())
	case *Reload:
		a.settings = m.Settings
		a.sock.SetLimits(m.Settings.OutboundQueue, m.Settings.DropWhenFull)
		a.sock.SetDelay(m.Settings.Delayer)
		a.schedule()
	case *actor.Started:
		a.start(ctx)
	case *actor.Stopping:
		// Stopped from above (the node's drain timed out, or the
		// supervisor stopped it): close now, without lingering.
		if !a.closing() {
			a.reason = ReasonServerShutdown
		}
		a.finish(false)
	case *actor.Stopped, *actor.Restarting:
	default:
		a.app.Receive(a, m)
	}
}

// The socket's events (transport.SocketEvents): they run on a poller or
// a writer's goroutine, with the socket locked, and only post to the
// mailbox.

// Chunk delivers bytes read.
func (a *Actor) Chunk(c *transport.Chunk) { a.deps.System.Root.Send(a.self, c) }

// ReadEnded reports the end of input.
func (a *Actor) ReadEnded(err error) { a.deps.System.Root.Send(a.self, &readEnd{err: err}) }

// WriteBlocked reports a write waiting for the peer.
func (a *Actor) WriteBlocked() { a.deps.System.Root.Send(a.self, writeBlockedMsg) }

// WriteFailed reports a write error.
func (a *Actor) WriteFailed(err error) { a.deps.System.Root.Send(a.self, &writeFailed{err: err}) }

// QueueFull reports a full outbound queue.
func (a *Actor) QueueFull() { a.deps.System.Root.Send(a.self, queueFullMsg) }

// Drained reports that the last bytes after the close have left.
func (a *Actor) Drained() { a.deps.System.Root.Send(a.self, drainedMsg) }

func (a *Actor) start(ctx actor.Context) {
	a.self = ctx.Self()
	a.connected = now()
	a.lastRecv = a.connected
	a.deps.Registry.Add(a.id, &Entry{PID: a.self, Listener: a.settings.Listener})
	a.deps.Metrics.Connections.Inc()
	a.app = a.deps.NewApp(a)
	// The deadline and the socket first: whatever the App does next (even
	// panic), a silent connection is closed in time and a talking one is
	// read. With bytes that came with the upgrade request, the socket
	// starts paused: those are the start of the stream, and are framed
	// first (even past a panic) before it reads more.
	a.schedule()
	if err := a.sock.Start(a.preread != nil); err != nil {
		a.Log().Error().Err(err).Msg("cannot read the socket")
		a.closeNow(ReasonServerClosed)
		return
	}
	// What Opened says (the welcome, an auth ok) leaves in one write.
	a.batching = true
	a.app.Opened(a)
	a.batching = false
	a.sock.Flush()
	a.handshake = nil
	if a.preread == nil {
		return
	}
	preread := *a.preread
	a.preread = nil
	a.countIn(len(preread), a.connected)
	if a.closing() {
		return
	}
	a.feed(preread) // the framer copies what it keeps
}

// countIn counts bytes received, once per read; at is when they were read.
func (a *Actor) countIn(n int, at int64) {
	a.lastRecv = max(a.lastRecv, at)
	a.bytesIn += uint64(n)
	a.deps.Metrics.BytesIn.Add(float64(n))
}

// feed gives the framer the next input (a chunk, or the preread bytes)
// and handles its frames; the socket reads again once they all are.
func (a *Actor) feed(p []byte) {
	a.framing = true
	a.framer.Feed(p)
	a.frames()
}

// frames handles the whole frames of the input fed last, then lets the
// socket read again. The replies to the frames of one read go out in one
// write. If the App panics on a frame, the deferred check posts
// continueFrames: once the supervisor resumes this actor it goes on with
// the next frame of the same input, so one bad message loses nothing
// else.
func (a *Actor) frames() {
	a.batching = true
	defer func() {
		a.batching = false
		a.sock.Flush()
		if a.framing && !a.closing() {
			a.ctx.Send(a.self, continueMsg)
		}
	}()
	framed := false
	for !a.closing() {
		f, ok, err := a.framer.Next()
		if err != nil {
			a.badStream(err)
			return
		}
		if !ok {
			a.holding(framed)
			break
		}
		framed = true
		a.framesIn++
		a.deps.Metrics.FramesIn.Inc()
		a.frame(f)
	}
	if a.framing && !a.closing() {
		a.framing, a.chunk = false, nil
		a.sock.Resume()
	}
}

// holding accounts for the unfinished frame the framer holds once it has
// handled every whole one: its bytes count against the node's budget
// (whose largest holders close past it), and its start time bounds how
// long it may stay unfinished (heartbeat). framed says that frames were
// completed since the last call, so what is held now is a new frame.
func (a *Actor) holding(framed bool) {
	held := a.framer.Buffered()
	switch {
	case held == 0:
		a.partialSince = 0
	case framed || a.partialSince == 0:
		a.partialSince = now()
	}
	if held == a.held {
		return
	}
	a.held = held
	evict := a.deps.Budget.hold(a, held)
	if len(evict) > 0 {
		a.Log().Warn().Int("closing", len(evict)).Msg("unfinished frames past node.max_partial_bytes: closing the largest holders")
	}
	for _, v := range evict {
		a.deps.System.Root.Send(v.self, &Close{Reason: ReasonMemoryLimit})
	}
}

func (a *Actor) frame(f framing.Frame) {
	if !a.settings.WebSocket {
		a.message(f.Payload)
		return
	}
	switch f.Op {
	case framing.OpText, framing.OpBinary:
		a.message(f.Payload)
	case framing.OpPing:
		a.control(framing.OpPong, f.Payload)
	case framing.OpPong:
		// Life, counted in lastRecv already.
	case framing.OpClose:
		// The client's closing handshake: answer with its code, then close.
		code, _ := framing.ParseClose(f.Payload)
		if code == framing.CloseNoStatus {
			code = framing.CloseNormal
		}
		a.closeWS(ReasonClientClosed, code)
	}
}

// message hands a client message to the App, or, past the listener's
// rate limit, drops it (App.Limited says so), and closes a connection
// that goes on.
func (a *Actor) message(p []byte) {
	if a.settings.Rate.interval != 0 {
		switch a.rate.take(a.settings.Rate, now()) {
		case refused:
			a.deps.Metrics.RateLimited.Inc()
			a.app.Limited(a, p)
			return
		case excess:
			a.deps.Metrics.RateLimited.Inc()
			a.Log().Info().Msg("closed: went on past limits.messages_per_second")
			a.Close(ReasonRateLimited)
			return
		}
	}
	a.app.Frame(a, p)
}

// Handshake is what the WebSocket upgrade said (the token in its URL,
// its headers), or nil; only during App.Opened.
func (a *Actor) Handshake() *transport.Handshake { return a.handshake }

// badStream closes the connection on a framing error.
func (a *Actor) badStream(err error) {
	reason := ReasonBadFrame
	if errors.Is(err, framing.ErrFrameTooLarge) {
		reason = ReasonFrameTooLarge
	}
	a.Log().Info().Err(err).Str("reason", reason.String()).Msg("bad input")
	a.closeWS(reason, framing.CloseCodeFor(err))
}

// Send queues payload as one message to the client: a frame of the
// listener's framing on TCP; on WebSocket a text message, or a binary one
// when payload is not UTF-8 (framing.Encoder). It is written at once, or,
// while the frames of one read are handled, with the other replies.
func (a *Actor) Send(payload []byte) {
	frame, err := a.settings.Encoder.AppendMessage(nil, payload)
	if err != nil {
		a.Log().Warn().Err(err).Int("bytes", len(payload)).Msg("message not sent: cannot be framed")
		return
	}
	a.sock.Push(frame, false)
	if !a.batching {
		a.sock.Flush()
	}
}

// control queues a WebSocket control frame (a pong, a ping, the close
// frame): they may exceed the queue's limit, being small and required.
func (a *Actor) control(op framing.Op, payload []byte) {
	frame, err := a.framer.AppendFrame(nil, op, payload)
	if err != nil {
		a.Log().Warn().Err(err).Str("op", op.String()).Msg("control frame not sent")
		return
	}
	a.sock.Push(frame, true)
	if !a.batching {
		a.sock.Flush()
	}
}

// socketFailed closes the connection after a read or write error, with
// the reason the error means.
func (a *Actor) socketFailed(err error) {
	switch transport.Classify(err) {
	case transport.FailurePeerClosed:
		a.closeNow(ReasonClientClosed)
	case transport.FailureTimedOut:
		a.closeNow(a.timedOutReason())
	default:
		a.Log().Warn().Err(err).Msg("socket failed")
		a.closeNow(ReasonClientClosed)
	}
}

// readFailed handles the end of input: the peer's FIN or reset, or the
// kernel giving up on it. A FIN always closes our side at once, so no
// socket lingers in CLOSE_WAIT.
func (a *Actor) readFailed(err error) {
	if a.closing() {
		if !a.done {
			a.finish(false) // the peer went away while we were lingering
		}
		return
	}
	a.socketFailed(err)
}

// timedOutReason tells keepalive from user timeout after ETIMEDOUT: data
// the peer never acknowledged means the retransmissions (bounded by
// TCP_USER_TIMEOUT) gave up; none means the keepalive probes did. The
// kernel's count includes what was written before the actor took over.
func (a *Actor) timedOutReason() Reason {
	acked, err := a.sock.BytesAcked()
	if err == nil && a.sentBefore+a.sock.Stats().BytesOut > acked {
		return ReasonUserTimeout
	}
	return ReasonKeepalive
}

// lastHeard is when the peer was last heard from: the read time of the
// bytes handled last, or of bytes the socket read since (still waiting in
// the mailbox behind other work).
func (a *Actor) lastHeard() int64 { return max(a.lastRecv, a.sock.LastRead()) }

// heartbeat runs when the connection's deadline comes: it closes a silent
// connection, or one whose write waited too long, or whose linger is
// over; it sends a ping if one is due, and sets the next deadline.
func (a *Actor) heartbeat() {
	t := now()
	if a.closing() {
		if !a.done && t >= a.lingerUntil {
			a.finish(false) // the last writes gave up: write_timeout, or 5s
		}
		return
	}
	s := a.settings
	if bs := a.sock.BlockedSince(); bs != 0 && s.WriteTimeout > 0 && time.Duration(t-bs) >= s.WriteTimeout {
		a.closeNow(ReasonWriteTimeout)
		return
	}
	silent := time.Duration(t - a.lastHeard())
	if (s.IdleTimeout > 0 && silent >= s.IdleTimeout) || (s.PingInterval > 0 && s.PingLimit > 0 && silent >= time.Duration(s.PingLimit)*s.PingInterval) {
		if a.sock.Unread() > 0 {
			// The peer sent bytes the socket has not read yet, because
			// this connection is behind: it is alive.
			a.lastRecv, silent = t, 0
		}
	}
	if s.IdleTimeout > 0 && silent >= s.IdleTimeout {
		a.Close(ReasonIdle)
		return
	}
	// A frame left unfinished that long is idle too, however often a
	// byte of it arrives (a slowloris holding its buffer).
	if s.IdleTimeout > 0 && a.partialSince != 0 && time.Duration(t-a.partialSince) >= s.IdleTimeout {
		a.Log().Info().Int("held", a.held).Msg("frame unfinished for idle_timeout")
		a.Close(ReasonIdle)
		return
	}
	if s.PingInterval > 0 {
		if s.PingLimit > 0 && silent >= time.Duration(s.PingLimit)*s.PingInterval {
			a.Close(ReasonNoPong)
			return
		}
		// Workerman's rule: no ping to a client that spoke within the
		// interval.
		if len(s.PingData) > 0 && silent >= s.PingInterval && time.Duration(t-a.lastPing) >= s.PingInterval {
			a.lastPing = t
			a.deps.Metrics.Pings.Inc()
			if s.WebSocket {
				a.control(framing.OpPing, s.PingData)
			} else {
				a.Send(s.PingData)
			}
		}
	}
	a.schedule()
}

// schedule sets the connection's one deadline (clock) to the earliest of:
// idle
// (rounded up to check_interval, so timers of many connections fire
// together), the next ping, the no-pong limit, the write timeout of a
// write waiting for the peer, or the end of the linger. It is not reset
// per message: when it fires early for a connection that spoke meanwhile,
// heartbeat just moves it on.
func (a *Actor) schedule() {
	s := a.settings
	next := int64(-1)
	earliest := func(t int64) {
		if next < 0 || t < next {
			next = t
		}
	}
	switch {
	case a.done:
	case a.closing():
		earliest(a.lingerUntil)
	default:
		last := a.lastHeard()
		if s.IdleTimeout > 0 {
			d := last + int64(s.IdleTimeout)
			if a.partialSince != 0 {
				d = min(d, a.partialSince+int64(s.IdleTimeout))
			}
			if ci := int64(s.CheckInterval); ci > 0 {
				d = (d + ci - 1) / ci * ci
			}
			earliest(d)
		}
		if s.PingInterval > 0 {
			if len(s.PingData) > 0 {
				earliest(max(last, a.lastPing) + int64(s.PingInterval))
			}
			if s.PingLimit > 0 {
				earliest(last + int64(s.PingLimit)*int64(s.PingInterval))
			}
		}
		if bs := a.sock.BlockedSince(); bs != 0 && s.WriteTimeout > 0 {
			earliest(bs + int64(s.WriteTimeout))
		}
	}
	if next < 0 {
		clock.cancel(a)
		return
	}
	clock.set(a, next)
}

func (a *Actor) closing() bool { return a.reason != ReasonNone }

// Closing says whether the connection is closing: nothing it is sent
// from now on reaches the client.
func (a *Actor) Closing() bool { return a.closing() }

// Close closes the connection with reason. WebSocket clients get a close
// frame with the reason's code; what is already queued gets a bounded
// chance (the write timeout) to leave first.
func (a *Actor) Close(reason Reason) {
	a.closeWS(reason, reason.WebSocketCode())
}

// closeWS closes while the socket still works: the close frame (or the
// TCP application's last words) is the last thing queued, and once what
// is queued has left (Drained) the socket closes the orderly way. The
// linger counts once, from now: write_timeout, or 5s when that is 0.
func (a *Actor) closeWS(reason Reason, code uint16) {
	if a.closing() {
		return
	}
	a.reason = reason
	linger := a.settings.WriteTimeout
	if linger <= 0 {
		linger = defaultLinger
	}
	a.lingerUntil = now() + int64(linger)
	a.batching = false // the close frame goes out now, with what is queued
	switch {
	case a.settings.WebSocket:
		text := reason.String()
		if a.Hint() != nil {
			// The hint as the close reason; when its URLs do not fit, the
			// App sends the whole hint first (chat: its close message) and
			// the reason keeps the delay.
			if text = a.closeMessage(true); len(text) > maxCloseReason {
				if a.app != nil {
					a.app.Closing(a, reason)
				}
				text = a.closeMessage(false)
			}
		}
		a.control(framing.OpClose, closeBody(code, text))
	case reason != ReasonClientClosed && a.app != nil:
		a.app.Closing(a, reason)
	}
	// RFC 6455 section 5.5.1: no data frame after the close frame.
	if a.sock.Seal() {
		a.finish(true)
		return
	}
	a.sock.Flush()
	a.schedule()
}

// defaultLinger bounds a closing connection's last writes when
// limits.write_timeout is 0.
const defaultLinger = 5 * time.Second

// drainLinger bounds how long a closed connection's input is read and
// thrown away after our side is shut down (transport.CloseLingering).
const drainLinger = 2 * time.Second

// maxCloseReason is the most a close frame's reason may hold: a control
// frame's 125 bytes less the code (RFC 6455 section 5.5).
const maxCloseReason = 123

// Hint is the reconnect hint the connection is closing with, or nil: the
// hint of the Close message being handled (the close frame and the App's
// last words go out while it is), so that no connection holds a field
// for it.
func (a *Actor) Hint() *Hint {
	if a.ctx != nil {
		if m, ok := a.ctx.Message().(*Close); ok {
			return m.Hint
		}
	}
	return nil
}

// CloseMessage is what tells the client why the server closes the
// connection: {"op":"close","reason":...}, and the reconnect hint when
// there is one. A TCP App sends it as the last frame (App.Closing).
func (a *Actor) CloseMessage() []byte { return []byte(a.closeMessage(true)) }

func (a *Actor) closeMessage(urls bool) string {
	m := &protocol.Close{Op: "close", Reason: a.reason.String()}
	if h := a.Hint(); h != nil {
		ms := h.Retry.Milliseconds()
		m.RetryMS = &ms
		if urls {
			m.URLs = h.URLs
		}
	}
	return string(protocol.Encode(m))
}

// closeBody is a close frame's payload (RFC 6455 section 5.5.1): the code
// in two bytes, big endian, then the reason. Reasons are short ASCII names.
func closeBody(code uint16, reason string) []byte {
	b := make([]byte, 2, 2+len(reason))
	binary.BigEndian.PutUint16(b, code)
	return append(b, reason...)
}

// closeNow closes without sending anything more: the peer is gone, or
// is the problem (slow_consumer).
func (a *Actor) closeNow(reason Reason) {
	if !a.closing() {
		a.reason = reason
	}
	a.finish(false)
}

// finish closes the socket and stops the actor: the registry learns the
// reason before the actor stops, so rooms watching it find the reason when
// their Terminated arrives. A graceful finish shuts down our side and
// reads the peer's input away for a while before the socket closes
// (transport.Socket.CloseLingering): closing a socket with unread input
// sends a reset, and the reset makes the kernel drop what it still held
// for the peer, our last words included.
func (a *Actor) finish(graceful bool) {
	if a.done {
		return
	}
	a.done = true
	clock.cancel(a)
	info := a.info() // before the close: the socket's counters
	if graceful {
		a.sock.CloseLingering(drainLinger)
	} else {
		a.sock.Close()
	}
	a.chunk, a.framing = nil, false
	a.framer.Reset() // a partial frame's buffer goes back to the pool
	if a.held != 0 {
		a.held = 0
		a.deps.Budget.hold(a, 0)
	}
	if a.app != nil {
		a.app.Closed(a, a.reason)
	}
	closed := time.Now()
	info.Closed = &closed
	a.deps.Registry.Closed(info)
	a.deps.Metrics.Connections.Dec()
	a.deps.Metrics.Closed(a.reason.String())
	a.Log().Info().Str("reason", a.reason.String()).Str("remote", info.RemoteAddr).
		Str("duration", closed.Sub(info.Connected).Round(time.Millisecond).String()).
		Uint64("bytes_in", a.bytesIn).Uint64("bytes_out", info.BytesOut).Msg("connection closed")
	if a.ctx != nil {
		a.ctx.Stop(a.self)
	}
}

func (a *Actor) info() *Info {
	protocol := "tcp"
	if a.settings.WebSocket {
		protocol = "websocket"
	}
	st := a.sock.Stats()
	remote := a.sock.Remote()
	info := &Info{
		ID: a.id, Node: a.deps.Node, Listener: a.settings.Listener, Protocol: protocol,
		RemoteAddr: remote.Addr().String(), RemotePort: int(remote.Port()), LocalPort: a.sock.LocalPort(),
		Connected: transport.Wall(a.connected), LastReceive: transport.Wall(a.lastHeard()),
		BytesIn: a.bytesIn, BytesOut: st.BytesOut, FramesIn: a.framesIn, FramesOut: st.FramesOut,
		Queued: st.Queued, Dropped: st.Dropped, Reason: a.reason, Rooms: []string{},
	}
	if st.LastSend != 0 {
		info.LastSend = transport.Wall(st.LastSend)
	}
	if e := a.deps.Registry.Get(a.id); e != nil {
		info.User = e.User
	}
	if a.app != nil {
		a.app.Describe(info)
	}
	return info
}
