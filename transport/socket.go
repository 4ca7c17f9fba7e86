package transport

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Socket is one client socket, owned by its connection actor. It reads
// and writes the descriptor itself, with the shared pollers, instead of
// through net.Conn: an idle socket holds no goroutine, no buffer and no
// Go netpoller state (net.Conn's netFD and pollDesc cost more than the
// rest of a connection).
//
// Reading: the poller reads one chunk when the socket is readable and
// hands it to the owner (SocketEvents.Chunk); it reads again only once the
// owner calls Resume, so a peer that sends faster than its actor handles
// frames fills its own TCP window, not the node's memory.
//
// Writing: any goroutine may Push frames (shared, immutable: a fan-out
// hands every member the same bytes) and Flush them; a flush writes
// everything queued with one writev. What the kernel does not take waits
// in the queue while the poller waits for the socket to be writable
// (EPOLLOUT), and is written then: no goroutine waits on a slow peer.
// The queue is bounded (SetLimits).
//
// Concurrency: every method is safe for concurrent use; mu serialises the
// poller's reads and writes with the owner's and the fan-outs' calls.
type Socket struct {
	// Fields are ordered and sized to keep the struct small: an idle
	// connection's memory is what users compare first.
	fd       int32
	local    uint16       // the port the peer connected to
	lastRead atomic.Int64 // Now() of the last read that returned bytes
	p        *poller
	ev       SocketEvents
	m        *ListenerMetrics
	adm      *Admission // whose place the socket holds until it is closed
	tls      *bridge    // a TLS connection's bridge, which holds the place instead; told once the socket is closed
	remote   netip.AddrPort

	mu sync.Mutex
	// flags, guarded by mu
	reading bool // the owner waits for bytes: no chunk in flight
	// readable: an event said there are bytes (or the end) to read that
	// no read has taken yet. With an edge-triggered registration there is
	// no second event for them: the next read must look.
	readable bool
	// keepReading: an event reported the peer's hang-up, an error or
	// urgent data, after which a short read no longer proves that the
	// kernel holds nothing more (see read): read until it says so.
	keepReading bool
	closed      bool
	drop        bool // on a full queue drop the frame (and count it) instead of telling the owner
	writing     bool // a write found the kernel's buffer full: the poller writes the rest once the socket is writable
	sealed      bool // nothing more may be pushed; Drained once the queue is empty
	full        bool // QueueFull was told
	delayed     bool // on the delayer's list

	chunk    Chunk    // the one chunk in flight
	q        [][]byte // frames queued, oldest first; q[0][off:] is next
	off      int32
	reported int32 // queued bytes the metrics know of
	queued   int   // bytes queued
	limit    int   // bytes; a frame that finds the queue empty is always taken
	blocked  int64 // Now() when a write last found the kernel's buffer full; 0: not blocked
	delay    *Delayer

	// Counters for the connection's info.
	bytesOut, framesOut, dropped uint64
	framesReported               uint64 // of framesOut, what the metrics know of
	lastSend                     int64  // Now()

	discard *time.Timer // lingering close: reading away the peer's input until it ends
}

// SocketEvents is what a Socket tells its owner. Every method is called
// with the socket's lock held, from a poller or from whichever goroutine
// flushed, and must not block or call back into the socket: it posts a
// message to the owning actor.
type SocketEvents interface {
	// Chunk delivers bytes read. The socket reads nothing more until
	// Resume.
	Chunk(c *Chunk)
	// ReadEnded reports that the socket can be read no more: io.EOF for
	// the peer's FIN, or the error.
	ReadEnded(err error)
	// WriteBlocked reports that a write found the kernel's buffer full:
	// what is queued waits for the peer from BlockedSince (the write
	// timeout counts from there).
	WriteBlocked()
	// WriteFailed reports a write error; the queue is dropped.
	WriteFailed(err error)
	// QueueFull reports that a Push found the queue at its limit (once).
	QueueFull()
	// Drained reports that a sealed socket's queue is empty: all we had to
	// say has left.
	Drained()
}

// ChunkSize is the size of a read buffer. A buffer is taken from a pool
// only once a socket is readable and goes back as soon as the chunk is
// handled, so idle connections hold none.
const ChunkSize = 16 << 10

var chunkPool = sync.Pool{New: func() any { b := make([]byte, ChunkSize); return &b }}

// Chunk is bytes read from a socket, in a pooled buffer that the socket
// takes back on Resume.
type Chunk struct {
	buf *[]byte
	n   int
	// At is when the bytes were read (Now()): the time the peer was last
	// heard from, whenever the owner gets to them.
	At int64
}

// Bytes are the bytes read; valid until the owner calls Resume.
func (c *Chunk) Bytes() []byte { return (*c.buf)[:c.n] }

// epoch is the base of Now: a monotonic clock in nanoseconds, 8 bytes per
// timestamp instead of a 24-byte time.Time.
var epoch = time.Now()

// Now is the monotonic clock sockets and connections keep their times in.
func Now() int64 { return int64(time.Since(epoch)) }

// Wall turns a Now value into wall-clock time.
func Wall(t int64) time.Time { return epoch.Add(time.Duration(t)) }

// Adopt takes an accepted socket: its descriptor is duplicated and the
// net.Conn closed, so that the socket is read and written only through the
// returned Socket (which ev hears from) and costs no net.Conn. The Socket
// owns the socket's ticket from now on, and releases it once closed (or,
// for a TLS connection, its bridge does once all of it is closed); on an
// error the caller still does. Start begins reading.
func Adopt(a *Accepted, ev SocketEvents, m *ListenerMetrics) (*Socket, error) {
	c := a.Conn
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("%T has no file descriptor", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var fd int
	var derr error
	if err := raw.Control(func(f uintptr) { fd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("dup: %w", derr)
	}
	s := &Socket{fd: int32(fd), ev: ev, m: m, limit: 1 << 20, adm: a.Ticket.a, tls: a.tls}
	a.Ticket, a.tls = Ticket{}, nil // the socket holds the place now
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		s.remote = a.AddrPort()
	}
	if a, ok := c.LocalAddr().(*net.TCPAddr); ok {
		s.local = uint16(a.Port)
	}
	_ = c.Close() // the duplicate keeps the connection open
	return s, nil
}

// Start registers the socket with a poller; a paused socket reads nothing
// until the first Resume (its owner has bytes of the stream to handle
// first).
func (s *Socket) Start(paused bool) error {
	p, err := pickPoller()
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reading = !paused
	return p.add(s)
}

// Remote is the peer's address.
func (s *Socket) Remote() netip.AddrPort { return s.remote }

// LocalPort is the port the peer connected to.
func (s *Socket) LocalPort() int { return int(s.local) }

// LastRead is when the socket last read bytes (Now()), 0 before any.
func (s *Socket) LastRead() int64 { return s.lastRead.Load() }

// dispatch handles a poller event: writes if a flush waits for the peer,
// and notes bytes to read, reading them if the owner waits for them (or a
// lingering close reads them away).
func (s *Socket) dispatch(events uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if s.writing && events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		s.writing = false
		s.flushNow()
		if s.closed {
			return
		}
	}
	if events&(unix.EPOLLIN|unix.EPOLLPRI|unix.EPOLLRDHUP|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		s.readable = true
		if events&(unix.EPOLLPRI|unix.EPOLLRDHUP|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
			s.keepReading = true
		}
		switch {
		case s.discard != nil:
			s.readAway()
		case s.reading:
			s.read()
		}
	}
}

// wake has the poller read what waits unread (an event came while the
// owner held a chunk, or the last read filled the buffer): re-registering
// a ready socket makes epoll report it again. Reading on the owner's
// goroutine instead would save that call, but a client that always has
// more to send would then keep its connection's worker (actors/conn's
// dispatcher) busy for as long as it sends: each chunk handled would read
// the next into the same mailbox run. Called with mu held.
func (s *Socket) wake() {
	if s.readable {
		s.p.rearm(s)
	}
}

// read reads one chunk, and hands it to the owner, or its end. Called
// with mu held.
//
// A short read took all the kernel held (a stream socket's read copies
// until the buffer is full or the receive queue is empty), so whatever
// arrives next comes with an event of its own: the socket is no longer
// readable. Not so for the peer's FIN: a read that returns the last bytes
// may consume the FIN behind them without saying so, and no event follows
// it; nor for TCP urgent data, where a read stops short at the urgent
// mark. Once an event has reported either, reads go on until the end (or
// EAGAIN).
func (s *Socket) read() {
	buf := chunkPool.Get().(*[]byte)
	n, err := unix.Read(int(s.fd), *buf)
	for err == unix.EINTR {
		n, err = unix.Read(int(s.fd), *buf)
	}
	if err == unix.EAGAIN {
		// Nothing after all: wait for the next event, without a buffer.
		// Nothing is pending either (no end, no error), so short reads
		// can be trusted again until an event says otherwise (a stale
		// event of a reused descriptor number, or a client's urgent byte,
		// would otherwise cost every Resume a re-registration).
		chunkPool.Put(buf)
		s.readable, s.keepReading = false, false
		return
	}
	s.reading = false
	if err == nil && n == 0 {
		err = io.EOF
	}
	if err != nil {
		chunkPool.Put(buf)
		s.ev.ReadEnded(err)
		return
	}
	s.readable = n == len(*buf) || s.keepReading
	now := Now()
	s.lastRead.Store(now)
	s.chunk = Chunk{buf: buf, n: n, At: now}
	s.ev.Chunk(&s.chunk)
}

// Resume gives the chunk back; the socket reads again. Call it once per
// delivered chunk (and once after a paused Start).
func (s *Socket) Resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.discard != nil {
		return
	}
	s.releaseChunk()
	s.reading = true
	s.wake()
}

func (s *Socket) releaseChunk() {
	if s.chunk.buf != nil {
		chunkPool.Put(s.chunk.buf)
		s.chunk = Chunk{}
	}
}

// SetLimits sets the queue's bound in bytes and what a full queue does:
// drop the frame (counted) or tell the owner (QueueFull).
func (s *Socket) SetLimits(limit int, drop bool) {
	s.mu.Lock()
	s.limit, s.drop = limit, drop
	s.mu.Unlock()
}

// SetDelay makes Flush wait for d's next round (limits.write_delay)
// instead of writing at once; nil writes at once.
func (s *Socket) SetDelay(d *Delayer) {
	s.mu.Lock()
	s.delay = d
	s.mu.Unlock()
}

// Push queues frame, which must not be modified afterwards, after what is
// queued; Flush writes it. A frame past the queue's limit is refused
// (false): dropped and counted, or the owner is told (QueueFull). A
// control frame (a pong, the close frame) is taken whatever the limit: it
// is small, and the protocol requires it. Nothing is taken once the
// socket is sealed or closed.
func (s *Socket) Push(frame []byte, control bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.push(frame, control)
}

func (s *Socket) push(frame []byte, control bool) bool {
	if s.closed || s.sealed {
		return false
	}
	over := func() bool { return !control && s.queued > 0 && s.queued+len(frame) > s.limit }
	if over() && !s.writing && s.delay == nil {
		// The bound is on what the kernel has not taken: a batch pushed
		// before its flush must not count against it.
		s.flushNow()
		if s.closed {
			return false
		}
	}
	if over() {
		if s.drop {
			s.dropped++
			s.m.Dropped.Inc()
		} else if !s.full {
			s.full = true
			s.ev.QueueFull()
		}
		return false
	}
	if s.q == nil {
		s.q = getQueue()
	}
	s.q = append(s.q, frame)
	s.queued += len(frame)
	s.framesOut++
	return true
}

// Write is Push then Flush.
func (s *Socket) Write(frame []byte, control bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ok := s.push(frame, control)
	s.flush()
	return ok
}

// Flush writes what is queued with one writev, unless a write is already
// waiting for the peer (the poller writes the rest when the socket is
// writable) or the socket writes on its delayer's rounds.
func (s *Socket) Flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flush()
}

func (s *Socket) flush() {
	switch {
	case s.closed || s.writing || s.queued == 0:
	case s.delay != nil:
		if !s.delayed {
			s.delayed = true
			s.delay.add(s)
		}
	default:
		s.flushNow()
	}
}

// flushNow writes the queue until it is empty or the kernel's buffer is
// full. Called with mu held.
func (s *Socket) flushNow() {
	for s.queued > 0 {
		n, err := writev(int(s.fd), s.q, int(s.off))
		if n > 0 {
			s.consume(n)
		}
		switch {
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			if s.blocked == 0 {
				s.blocked = Now()
				s.ev.WriteBlocked()
			}
			s.writing = true // the registration's EPOLLOUT tells when the peer has taken some
			s.report()
			return
		case err != nil:
			s.dropQueue()
			s.report()
			s.ev.WriteFailed(err)
			return
		}
	}
	s.blocked = 0
	s.report()
	if s.sealed {
		s.ev.Drained()
	}
}

// consume takes n written bytes off the front of the queue.
func (s *Socket) consume(n int) {
	s.bytesOut += uint64(n)
	s.lastSend = Now()
	s.m.BytesOut.Add(float64(n))
	s.queued -= n
	i := 0
	for n > 0 {
		rest := len(s.q[i]) - int(s.off)
		if n < rest {
			s.off += int32(n)
			break
		}
		n -= rest
		s.q[i] = nil // the frame may be shared: let it go
		s.off = 0
		i++
	}
	if s.queued == 0 {
		putQueue(s.q)
		s.q, s.off = nil, 0
		return
	}
	s.q = s.q[i:]
}

func (s *Socket) dropQueue() {
	if s.q != nil {
		clear(s.q)
		putQueue(s.q)
	}
	s.q, s.off, s.queued = nil, 0, 0
}

// report tells the metrics how the queued bytes changed, when they did
// (a queue that empties at every flush costs nothing here), and the
// frames queued since the last report: one addition a flush, not one a
// frame, on the delivery path.
func (s *Socket) report() {
	if q := int32(min(s.queued, 1<<30)); q != s.reported {
		s.m.Queued.Add(float64(q - s.reported))
		s.reported = q
	}
	if f := s.framesOut - s.framesReported; f > 0 {
		s.m.FramesOut.Add(float64(f))
		s.framesReported = s.framesOut
	}
}

// BlockedSince is when a write began waiting for the peer (Now()), or 0.
func (s *Socket) BlockedSince() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.blocked
}

// Seal refuses every frame from now on (the close frame is queued). It
// reports whether the queue is already empty; otherwise Drained tells
// when it is.
func (s *Socket) Seal() (empty bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sealed = true
	return s.queued == 0
}

// Stats are a socket's counters, for the connection's info.
type Stats struct {
	BytesOut, FramesOut, Dropped uint64
	Queued                       int
	LastSend                     int64 // Now(); 0: never
}

// Stats returns the socket's counters.
func (s *Socket) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{BytesOut: s.bytesOut, FramesOut: s.framesOut, Dropped: s.dropped, Queued: s.queued, LastSend: s.lastSend}
}

// Close closes the socket now, dropping what is queued.
func (s *Socket) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeNow()
}

// closeNow closes the descriptor. Called with mu held; the poller is told
// first, so no event of a reused descriptor number reaches this socket.
func (s *Socket) closeNow() {
	if s.closed {
		return
	}
	s.closed = true
	if s.p != nil {
		s.p.remove(s)
	}
	_ = unix.Close(int(s.fd))
	s.releaseChunk()
	s.dropQueue()
	s.report()
	if s.discard != nil {
		s.discard.Stop()
		lingering.Add(-1)
	}
	if s.adm != nil {
		s.adm.release(s.remote.Addr())
		s.adm = nil
	}
	if s.tls != nil {
		s.tls.socketClosed()
		s.tls = nil
	}
}

// lingering counts the lingering closes in progress.
var lingering atomic.Int64

// maxLingering bounds the lingering closes in progress: past it sockets
// are closed at once. Each holds a descriptor and a timer for up to its
// bound.
const maxLingering = 4096

// CloseLingering closes the socket the orderly way, nginx's lingering
// close: it shuts down the sending side (what is queued is dropped: call
// it once Drained), then reads away what the peer still sends until the
// peer's end of stream or bound, and only then closes the descriptor. Closing a socket whose input is unread makes the kernel
// send a reset instead of a FIN, and a reset makes the peer's kernel drop
// what it has not delivered yet: our last messages and the close reason.
// No goroutine waits meanwhile: the poller reads, a timer ends it.
func (s *Socket) CloseLingering(bound time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.p == nil || lingering.Add(1) > maxLingering || unix.Shutdown(int(s.fd), unix.SHUT_WR) != nil {
		if !s.closed && s.p != nil && s.discard == nil {
			lingering.Add(-1)
		}
		s.closeNow()
		return
	}
	s.releaseChunk()
	s.dropQueue()
	s.report()
	s.sealed, s.reading, s.writing = true, false, false
	s.discard = time.AfterFunc(bound, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.closeNow()
	})
	s.wake()
}

// readAway reads and drops what the peer sends during a lingering close,
// until there is nothing more for now; at its end of stream (or an error)
// the socket closes. Called with mu held.
func (s *Socket) readAway() {
	var buf [4096]byte
	for {
		n, err := unix.Read(int(s.fd), buf[:])
		switch {
		case err == unix.EAGAIN:
			s.readable, s.keepReading = false, false
			return
		case err == unix.EINTR:
		case err != nil || n == 0:
			s.closeNow()
			return
		}
	}
}

// BytesAcked reports how many bytes the peer has acknowledged over the
// connection's life (TCP_INFO's tcpi_bytes_acked). Compared with the bytes
// written it tells how a timed-out connection died: with data the peer
// never acknowledged, of TCP_USER_TIMEOUT (or retransmissions); without,
// of keepalive. The counter survives the kernel purging its queues on the
// timeout, which tcpi_unacked does not. A TLS connection's Socket holds a
// unix socket (its bridge's pair), which has no TCP_INFO: the call fails.
func (s *Socket) BytesAcked() (uint64, error) {
	info, err := unix.GetsockoptTCPInfo(int(s.fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, err
	}
	return info.Bytes_acked, nil
}

// Unread reports how many bytes the kernel holds that the socket has not
// read yet: the peer sent them, whatever the owner's backlog. On a TLS
// connection it counts what the bridge has decrypted into the pair, not
// what waits in the TCP socket behind it (a bridge blocked on a full
// pair shows here all the same).
func (s *Socket) Unread() int {
	n, err := unix.IoctlGetInt(int(s.fd), unix.SIOCINQ)
	if err != nil {
		return 0
	}
	return n
}

// maxIovecs bounds one writev's segments; more frames take more calls.
const maxIovecs = 64

// writev writes q[0][off:], q[1], ... with one system call.
func writev(fd int, q [][]byte, off int) (int, error) {
	var iov [maxIovecs]unix.Iovec
	n := 0
	for i, b := range q {
		if i == 0 {
			b = b[off:]
		}
		if len(b) == 0 {
			continue
		}
		iov[n].Base = &b[0]
		iov[n].SetLen(len(b))
		n++
		if n == maxIovecs {
			break
		}
	}
	if n == 0 {
		return 0, nil
	}
	r, _, errno := unix.Syscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(n))
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

// queuePool holds the backing arrays of write queues: a queue takes one
// when a frame is pushed and gives it back once it is empty, so an idle
// connection holds none.
var queuePool = sync.Pool{New: func() any { q := make([][]byte, 0, 16); return &q }}

func getQueue() [][]byte { return (*queuePool.Get().(*[][]byte))[:0] }

func putQueue(q [][]byte) {
	if cap(q) > 1024 { // grown by a burst: let it go
		return
	}
	q = q[:0]
	queuePool.Put(&q)
}

// Delayer writes its sockets' queues on rounds of a fixed delay instead
// of at every flush (limits.write_delay): what piles up meanwhile goes out
// in one writev, trading latency for system calls.
type Delayer struct {
	d     time.Duration
	mu    sync.Mutex
	due   []*Socket
	timer *time.Timer
}

// NewDelayer returns a delayer with rounds of d.
func NewDelayer(d time.Duration) *Delayer { return &Delayer{d: d} }

// add puts s on the next round. Called with s.mu held.
func (d *Delayer) add(s *Socket) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.due = append(d.due, s)
	if d.timer == nil {
		d.timer = time.AfterFunc(d.d, d.round)
	} else if len(d.due) == 1 {
		d.timer.Reset(d.d)
	}
}

func (d *Delayer) round() {
	d.mu.Lock()
	due := d.due
	d.due = nil
	d.mu.Unlock()
	for _, s := range due {
		s.mu.Lock()
		s.delayed = false
		if !s.closed && !s.writing {
			s.flushNow()
		}
		s.mu.Unlock()
	}
}

// FlushAll flushes every socket of socks, spread over a pool of flusher
// goroutines (one per processor) and the caller, and returns once all are
// flushed. A fan-out to ten thousand members spends its time in write
// system calls (on loopback each also does the receiver's TCP work):
// written from one goroutine they take one core and the last member waits
// for all the others.
func FlushAll(socks []*Socket) {
	const chunk = 256 // fewer sockets than this are flushed by the caller alone
	if len(socks) <= chunk {
		for _, s := range socks {
			s.Flush()
		}
		return
	}
	flushersOnce.Do(startFlushers)
	var wg sync.WaitGroup
	parts := min(len(flushers)+1, (len(socks)+chunk-1)/chunk)
	size := (len(socks) + parts - 1) / parts
	for i := 1; i < parts; i++ {
		wg.Add(1)
		flushers[i-1] <- flushJob{socks: socks[i*size : min((i+1)*size, len(socks))], wg: &wg}
	}
	for _, s := range socks[:size] {
		s.Flush()
	}
	wg.Wait()
}

type flushJob struct {
	socks []*Socket
	wg    *sync.WaitGroup
}

var (
	flushersOnce sync.Once
	flushers     []chan flushJob
)

// startFlushers starts one flusher goroutine per processor but one (the
// caller of FlushAll is the last).
func startFlushers() {
	for range max(1, runtime.GOMAXPROCS(0)-1) {
		jobs := make(chan flushJob, 16)
		flushers = append(flushers, jobs)
		go func() {
			for job := range jobs {
				flushJobs(job)
			}
		}()
	}
}

// flushJobs flushes one job's sockets; a panic (which a flush should
// never raise) is not allowed to leave FlushAll waiting.
func flushJobs(job flushJob) {
	defer job.wg.Done()
	defer func() { recover() }()
	for _, s := range job.socks {
		s.Flush()
	}
}
