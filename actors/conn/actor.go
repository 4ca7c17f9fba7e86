// Package conn is the connection actor: one per socket, owning the socket,
// its framer, its liveness deadline and its outbound queue.
//
// Concurrency rules (guarded by the tests in test/):
//   - Everything in Actor is touched only by the actor's own Receive,
//     except the fields marked immutable, which the reader goroutine reads
//     to address its messages.
//   - The reader (transport.Reader, a registration with a shared poller,
//     not a goroutine) reads one chunk at a time and reads again only when
//     the actor has handled it: a fast sender is pushed back by TCP flow
//     control, never queued in memory.
//   - Writes never block the actor: it makes one non-blocking write; what
//     the kernel does not take waits in a bounded queue, and a short-lived
//     goroutine waits for the peer (bounded by the write timeout) while the
//     actor keeps serving its mailbox.
//   - Whoever sends to a connection (a room, the cluster bridge) only
//     posts to its mailbox.
package conn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"tether/framing"
	"tether/transport"
)

// Deliver asks a connection to send Payload as one message (a text
// message on WebSocket). Payload is shared by every connection of a
// fan-out and must not be modified.
type Deliver struct {
	Payload []byte
}

// Close asks a connection to close with Reason.
type Close struct {
	Reason Reason
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
	readEnd   struct{ err error }
	tick      struct{}
	writeDone struct {
		n   int
		err error
	}
	continueFrames struct{}
)

func (*readEnd) IgnoreDeadLetterLogging()        {}
func (*tick) IgnoreDeadLetterLogging()           {}
func (*writeDone) IgnoreDeadLetterLogging()      {}
func (*continueFrames) IgnoreDeadLetterLogging() {}

var (
	tickMsg     = &tick{}
	continueMsg = &continueFrames{}
)

// epoch is the base of the monotonic nanosecond clock the actor keeps its
// times in (8 bytes each instead of a 24-byte time.Time).
var epoch = time.Now()

func now() int64 { return int64(time.Since(epoch)) }

func wall(t int64) time.Time { return epoch.Add(time.Duration(t)) }

// Deps are what a listener gives each of its connections.
type Deps struct {
	Node     string
	Registry *Registry
	Budget   *Budget // the node's bound on unfinished inbound frames
	Metrics  *transport.ListenerMetrics
	Log      zerolog.Logger // the listener's logger; the connection adds its id
	NewApp   NewApp
}

// Actor is one connection.
type Actor struct {
	// immutable after start; the poller reads system and self.
	id     string
	deps   *Deps
	sock   net.Conn
	raw    syscall.RawConn
	system *actor.ActorSystem
	self   *actor.PID

	settings *Settings
	framer   framing.Framer
	app      App
	ctx      actor.Context
	reader   *transport.Reader
	chunk    *transport.Chunk // the chunk being framed, until the reader gets it back
	framing  bool             // input fed to the framer is not all handled yet; the reader waits
	preread  []byte           // bytes read before the actor started (after a WebSocket upgrade)
	ticket   *transport.Ticket
	timer    *time.Timer

	connected, lastRecv, lastSend, lastPing int64 // now() values
	partialSince                            int64 // when the unfinished frame held now began arriving; 0: none
	held                                    int   // bytes of it, as last told to the budget

	bytesIn, bytesOut, framesIn, framesOut, dropped uint64
	sentBefore                                      uint64 // written before the actor (the 101 response)

	pending  *[]byte // encoded frames not yet written (pooled buffer)
	inflight *[]byte // being written by a waiting goroutine
	writing  bool

	reason      Reason    // set once closing
	lingerOK    bool      // closing, waiting for queued bytes to leave
	lingerUntil time.Time // when the last writes give up, set once at the close
	sealed      bool      // the close frame (or TCP's final message) is queued: nothing may follow it
	done        bool      // socket closed and actor stopping
}

// New prepares the actor of an admitted socket; the actor releases the
// socket's ticket once it has closed it.
func New(id string, s *transport.Socket, settings *Settings, deps *Deps) (*Actor, error) {
	sock := s.Conn
	sc, ok := sock.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("conn %s: %T has no file descriptor", id, sock)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	framer, err := settings.NewFramer()
	if err != nil {
		return nil, err
	}
	return &Actor{id: id, deps: deps, sock: sock, raw: raw, settings: settings, framer: framer,
		preread: s.Preread, ticket: s.Ticket, sentBefore: uint64(s.Sent)}, nil
}

// ID is the connection id: node id, a dot, a sequence number.
func (a *Actor) ID() string { return a.id }

// Node is the id of the node holding the connection.
func (a *Actor) Node() string { return a.deps.Node }

// RemoteAddr is the client's address, ip:port.
func (a *Actor) RemoteAddr() string { return a.sock.RemoteAddr().String() }

// Settings are the listener's settings in force.
func (a *Actor) Settings() *Settings { return a.settings }

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
			a.countIn(len(m.Bytes()))
			a.feed(m.Bytes())
		}
	case *continueFrames:
		if !a.closing() && a.framing {
			a.frames()
		}
	case *Deliver:
		a.Send(m.Payload)
	case *writeDone:
		a.wrote(m)
	case *tick:
		a.heartbeat()
	case *readEnd:
		a.readFailed(m.err)
	case *Close:
		a.Close(m.Reason)
	case *InfoRequest:
		ctx.Respond(a.info())
	case *Reload:
		a.settings = m.Settings
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

// Chunk is the reader's delivery (transport.ReaderSink); it runs on a
// poller goroutine and only posts to the mailbox.
func (a *Actor) Chunk(c *transport.Chunk) { a.system.Root.Send(a.self, c) }

// End is the reader's last word (transport.ReaderSink).
func (a *Actor) End(err error) { a.system.Root.Send(a.self, &readEnd{err: err}) }

func (a *Actor) start(ctx actor.Context) {
	a.system, a.self = ctx.ActorSystem(), ctx.Self()
	a.connected = now()
	a.lastRecv = a.connected
	a.deps.Registry.Add(a.id, &Entry{PID: a.self, Listener: a.settings.Listener})
	a.deps.Metrics.Connections.Inc()
	a.app = a.deps.NewApp(a)
	// The deadline and the reader first: whatever the App does next (even
	// panic), a silent connection is closed in time and a talking one is
	// read. With bytes that came with the upgrade request, the reader
	// starts paused: those are the start of the stream, and are framed
	// first (even past a panic) before the reader delivers more.
	a.schedule()
	reader, err := transport.StartReader(a.raw, a, len(a.preread) > 0)
	if err != nil {
		a.Log().Error().Err(err).Msg("cannot read the socket")
		a.closeNow(ReasonServerClosed)
		return
	}
	a.reader = reader
	a.app.Opened(a)
	if len(a.preread) == 0 {
		return
	}
	preread := a.preread
	a.preread = nil
	a.countIn(len(preread))
	if a.closing() {
		return
	}
	a.feed(preread) // the framer copies what it keeps
}

// countIn counts bytes received, once per read.
func (a *Actor) countIn(n int) {
	a.lastRecv = now()
	a.bytesIn += uint64(n)
	a.deps.Metrics.BytesIn.Add(float64(n))
}

// feed gives the framer the next input (a chunk, or the preread bytes)
// and handles its frames; the reader reads again once they all are.
func (a *Actor) feed(p []byte) {
	a.framing = true
	a.framer.Feed(p)
	a.frames()
}

// frames handles the whole frames of the input fed last, then lets the
// reader read again. If the App panics on a frame, the deferred check
// posts continueFrames: once the supervisor resumes this actor it goes on
// with the next frame of the same input, so one bad message loses nothing
// else.
func (a *Actor) frames() {
	defer func() {
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
		a.reader.Resume()
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
		a.system.Root.Send(v.self, &Close{Reason: ReasonMemoryLimit})
	}
}

func (a *Actor) frame(f framing.Frame) {
	if !a.settings.WebSocket {
		a.app.Frame(a, f.Payload)
		return
	}
	switch f.Op {
	case framing.OpText, framing.OpBinary:
		a.app.Frame(a, f.Payload)
	case framing.OpPing:
		a.enqueue(framing.OpPong, f.Payload, true)
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
// when payload is not UTF-8 (what a relay worker pushes may be anything,
// and a browser fails the connection on a text frame that is not UTF-8).
func (a *Actor) Send(payload []byte) {
	op := framing.OpText
	if a.settings.WebSocket && !utf8.Valid(payload) {
		op = framing.OpBinary
	}
	a.enqueue(op, payload, false)
}

// bufPool holds outbound buffers. A connection takes one when it has
// something to write and gives it back once the kernel has taken it all.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooled keeps buffers grown by large bursts out of the pool.
const maxPooled = 64 << 10

func putBuf(b *[]byte) {
	if cap(*b) <= maxPooled {
		*b = (*b)[:0]
		bufPool.Put(b)
	}
}

func (a *Actor) queued() int {
	n := 0
	if a.pending != nil {
		n += len(*a.pending)
	}
	if a.inflight != nil {
		n += len(*a.inflight)
	}
	return n
}

// enqueue encodes one frame into the outbound queue and writes what it
// can. Control frames (pongs, the close frame) may exceed the queue limit:
// they are small and the protocol requires them.
func (a *Actor) enqueue(op framing.Op, payload []byte, control bool) {
	if a.sealed || (a.closing() && !a.lingerOK) {
		return
	}
	if a.pending == nil {
		a.pending = bufPool.Get().(*[]byte)
	}
	before, queuedBefore := len(*a.pending), a.queued()
	buf, err := a.framer.AppendFrame(*a.pending, op, payload)
	if err != nil {
		a.Log().Warn().Err(err).Int("bytes", len(payload)).Msg("message not sent: cannot be framed")
		return
	}
	*a.pending = buf
	// A message that finds the queue empty is always taken, however
	// large: the bound is outbound_queue plus one message, and a client
	// that keeps up is never refused.
	if !control && queuedBefore > 0 && a.queued() > a.settings.OutboundQueue {
		*a.pending = (*a.pending)[:before]
		if a.settings.DropWhenFull {
			a.dropped++
			a.deps.Metrics.Dropped.Inc()
			return
		}
		a.Log().Info().Int("queued", queuedBefore).Int("limit", a.settings.OutboundQueue).Msg("outbound queue full")
		a.closeNow(ReasonSlowConsumer)
		return
	}
	a.framesOut++
	a.lastSend = now()
	a.deps.Metrics.FramesOut.Inc()
	a.deps.Metrics.Queued.Add(float64(a.queued() - queuedBefore))
	a.flush()
}

// flush makes one non-blocking write of the queue. What the kernel does
// not take is handed to a goroutine that waits for the peer, bounded by
// the write timeout, while the actor goes on.
func (a *Actor) flush() {
	if a.writing || a.pending == nil || len(*a.pending) == 0 {
		return
	}
	n, err := transport.TryWrite(a.raw, *a.pending)
	a.sent(n)
	if err != nil {
		a.socketFailed(err)
		return
	}
	rest := (*a.pending)[n:]
	if len(rest) == 0 {
		putBuf(a.pending)
		a.pending = nil
		a.lingered()
		return
	}
	// The kernel's buffer is full. New frames go to a fresh pending buffer.
	*a.pending = rest
	a.inflight, a.pending = a.pending, nil
	a.writing = true
	switch {
	case a.closing():
		_ = a.sock.SetWriteDeadline(a.lingerUntil) // once, from the close: no write extends it
	case a.settings.WriteTimeout > 0:
		_ = a.sock.SetWriteDeadline(time.Now().Add(a.settings.WriteTimeout))
	}
	go waitWrite(a.sock, *a.inflight, a.system, a.self)
}

// waitWrite writes p with Go's blocking write (which waits for the socket
// to drain, up to the deadline) and tells the actor how it went.
func waitWrite(sock net.Conn, p []byte, system *actor.ActorSystem, self *actor.PID) {
	var n int
	var err error
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("write panic: %v", v)
		}
		system.Root.Send(self, &writeDone{n: n, err: err})
	}()
	n, err = sock.Write(p)
}

func (a *Actor) wrote(m *writeDone) {
	if a.done {
		return // finish has counted the in-flight bytes off already
	}
	a.writing = false
	a.sent(m.n)
	// On failure the unwritten rest goes with the buffer (the connection
	// closes); on success it is 0.
	a.deps.Metrics.Queued.Sub(float64(len(*a.inflight) - max(m.n, 0)))
	putBuf(a.inflight)
	a.inflight = nil
	if a.done {
		return
	}
	if m.err != nil {
		a.socketFailed(m.err)
		return
	}
	if !a.closing() {
		_ = a.sock.SetWriteDeadline(time.Time{}) // later TryWrites must not see a stale deadline
	}
	a.flush()
	a.lingered()
}

func (a *Actor) sent(n int) {
	if n <= 0 {
		return
	}
	a.bytesOut += uint64(n)
	a.deps.Metrics.BytesOut.Add(float64(n))
	a.deps.Metrics.Queued.Sub(float64(n))
}

// socketFailed closes the connection after a read or write error, with
// the reason the error means.
func (a *Actor) socketFailed(err error) {
	switch transport.Classify(err) {
	case transport.FailurePeerClosed:
		a.closeNow(ReasonClientClosed)
	case transport.FailureWriteTimeout:
		a.closeNow(ReasonWriteTimeout)
	case transport.FailureTimedOut:
		a.closeNow(a.timedOutReason())
	default:
		a.Log().Warn().Err(err).Msg("socket failed")
		a.closeNow(ReasonClientClosed)
	}
}

// readFailed handles the reader's end: the peer's FIN or reset, or the
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
// TCP_USER_TIMEOUT) gave up; none means the keepalive probes did.
func (a *Actor) timedOutReason() Reason {
	acked, err := transport.BytesAcked(a.raw)
	if err == nil && a.sentBefore+a.bytesOut > acked {
		return ReasonUserTimeout
	}
	return ReasonKeepalive
}

// heartbeat runs when the liveness timer fires: it closes a silent
// connection, sends a ping if one is due, and sets the next deadline.
func (a *Actor) heartbeat() {
	if a.closing() {
		return
	}
	s := a.settings
	t := now()
	silent := time.Duration(t - a.lastRecv)
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
				a.enqueue(framing.OpPing, s.PingData, true)
			} else {
				a.enqueue(framing.OpBinary, s.PingData, false)
			}
		}
	}
	a.schedule()
}

// schedule sets the one liveness timer to the earliest deadline: idle
// (rounded up to check_interval, so timers of many connections fire
// together), the next ping, or the no-pong limit. It is not reset per
// message: when it fires early for a connection that spoke meanwhile,
// heartbeat just moves it on.
func (a *Actor) schedule() {
	s := a.settings
	next := int64(-1)
	earliest := func(t int64) {
		if next < 0 || t < next {
			next = t
		}
	}
	if s.IdleTimeout > 0 {
		d := a.lastRecv + int64(s.IdleTimeout)
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
			earliest(max(a.lastRecv, a.lastPing) + int64(s.PingInterval))
		}
		if s.PingLimit > 0 {
			earliest(a.lastRecv + int64(s.PingLimit)*int64(s.PingInterval))
		}
	}
	if next < 0 {
		if a.timer != nil {
			a.timer.Stop()
		}
		return
	}
	d := max(time.Duration(next-now()), 0)
	if a.timer == nil {
		system, self := a.system, a.self
		a.timer = time.AfterFunc(d, func() { system.Root.Send(self, tickMsg) })
		return
	}
	a.timer.Reset(d)
}

func (a *Actor) closing() bool { return a.reason != ReasonNone }

// Close closes the connection with reason. WebSocket clients get a close
// frame with the reason's code; what is already queued gets a bounded
// chance (the write timeout) to leave first.
func (a *Actor) Close(reason Reason) {
	a.closeWS(reason, reason.WebSocketCode())
}

func (a *Actor) closeWS(reason Reason, code uint16) {
	if a.closing() {
		return
	}
	a.reason = reason
	a.lingerOK = true
	// What is queued gets the write timeout to leave, counted once from
	// now, and bounded even when write_timeout is off.
	linger := a.settings.WriteTimeout
	if linger <= 0 {
		linger = defaultLinger
	}
	a.lingerUntil = time.Now().Add(linger)
	if a.writing {
		_ = a.sock.SetWriteDeadline(a.lingerUntil)
	}
	switch {
	case a.settings.WebSocket:
		a.enqueue(framing.OpClose, closeBody(code, reason.String()), true)
	case reason != ReasonClientClosed && a.app != nil:
		a.app.Closing(a, reason)
	}
	a.sealed = true // RFC 6455 section 5.5.1: no data frame after the close frame
	a.lingered()
}

// defaultLinger bounds a closing connection's last writes when
// limits.write_timeout is 0.
const defaultLinger = 5 * time.Second

// drainLinger bounds how long a closed connection's input is read and
// thrown away after our side is shut down (transport.CloseLingering).
const drainLinger = 2 * time.Second

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

// lingered finishes a closing connection once its queue is empty: all we
// had to say has left, so the close is orderly (finish's graceful).
func (a *Actor) lingered() {
	if a.lingerOK && !a.done && !a.writing && (a.pending == nil || len(*a.pending) == 0) {
		a.finish(true)
	}
}

// finish closes the socket and stops the actor: the registry learns the
// reason before the actor stops, so rooms watching it find the reason when
// their Terminated arrives. A graceful finish shuts down our side and
// reads the peer's input away for a while before the socket closes
// (transport.CloseLingering): closing a socket with unread input sends a
// reset, and the reset makes the kernel drop what it still held for the
// peer, our last words included.
func (a *Actor) finish(graceful bool) {
	if a.done {
		return
	}
	a.done, a.lingerOK = true, false
	if a.timer != nil {
		a.timer.Stop()
	}
	if a.reader != nil {
		a.reader.Stop() // before the close: the descriptor number may be reused at once
	}
	if graceful {
		transport.CloseLingering(a.sock, a.ticket.Release, drainLinger)
	} else {
		_ = a.sock.Close()
		a.ticket.Release()
	}
	a.chunk, a.framing = nil, false
	a.framer.Reset() // a partial frame's buffer goes back to the pool
	if a.held != 0 {
		a.held = 0
		a.deps.Budget.hold(a, 0)
	}
	if a.pending != nil {
		a.deps.Metrics.Queued.Sub(float64(len(*a.pending)))
		putBuf(a.pending)
		a.pending = nil
	}
	if a.writing {
		// The waiting goroutine owns inflight until its writeDone, which
		// a stopped actor never handles: count the bytes off now, and
		// leave the buffer to the garbage collector.
		a.deps.Metrics.Queued.Sub(float64(len(*a.inflight)))
	}
	if a.app != nil {
		a.app.Closed(a, a.reason)
	}
	info := a.info()
	closed := time.Now()
	info.Closed = &closed
	a.deps.Registry.Closed(info)
	a.deps.Metrics.Connections.Dec()
	a.deps.Metrics.Closed(a.reason.String())
	a.Log().Info().Str("reason", a.reason.String()).Str("remote", info.RemoteAddr).
		Str("duration", closed.Sub(info.Connected).Round(time.Millisecond).String()).
		Uint64("bytes_in", a.bytesIn).Uint64("bytes_out", a.bytesOut).Msg("connection closed")
	if a.ctx != nil {
		a.ctx.Stop(a.self)
	}
}

func (a *Actor) info() *Info {
	protocol := "tcp"
	if a.settings.WebSocket {
		protocol = "websocket"
	}
	rhost, rport := splitHostPort(a.sock.RemoteAddr())
	_, lport := splitHostPort(a.sock.LocalAddr())
	info := &Info{
		ID: a.id, Node: a.deps.Node, Listener: a.settings.Listener, Protocol: protocol,
		RemoteAddr: rhost, RemotePort: rport, LocalPort: lport,
		Connected: wall(a.connected), LastReceive: wall(a.lastRecv),
		BytesIn: a.bytesIn, BytesOut: a.bytesOut, FramesIn: a.framesIn, FramesOut: a.framesOut,
		Queued: a.queued(), Dropped: a.dropped, Reason: a.reason, Rooms: []string{},
	}
	if a.lastSend != 0 {
		info.LastSend = wall(a.lastSend)
	}
	if e := a.deps.Registry.Get(a.id); e != nil {
		info.User = e.User
	}
	if a.app != nil {
		a.app.Describe(info)
	}
	return info
}
