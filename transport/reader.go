package transport

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// ChunkSize is the size of a read buffer. A buffer is taken from a pool
// only once a socket is readable and goes back as soon as the chunk is
// handled, so idle connections hold none.
const ChunkSize = 16 << 10

var chunkPool = sync.Pool{New: func() any { b := make([]byte, ChunkSize); return &b }}

// Chunk is bytes read from a socket, in a pooled buffer that the reader
// takes back when Resume is called.
type Chunk struct {
	buf *[]byte
	n   int
}

// Bytes are the bytes read; valid until the owner calls Reader.Resume.
func (c *Chunk) Bytes() []byte { return (*c.buf)[:c.n] }

// ReaderSink receives what a Reader reads. Both methods are called from a
// poller goroutine shared by many sockets and must not block: they hand
// the value to the actor that owns the socket (a mailbox send).
type ReaderSink interface {
	// Chunk delivers bytes. The reader reads nothing more until Resume.
	Chunk(c *Chunk)
	// End reports that the socket can be read no more: io.EOF for the
	// peer's FIN, or the error. It is called at most once, last; it can
	// race with Stop, so an owner that stopped the reader ignores it.
	End(err error)
}

// Reader delivers one socket's bytes to its sink, one chunk at a time:
// after a chunk it reads nothing more until Resume, so a peer that sends
// faster than its actor handles frames fills its own TCP window instead of
// the node's memory.
//
// There is no goroutine per socket. Sockets are watched by a few shared
// pollers (one epoll set each, EPOLLONESHOT, so a socket is re-armed only
// by Resume); each poller's epoll descriptor is itself parked in Go's
// netpoller, so waiting blocks no OS thread. An idle connection costs its
// registration here and nothing else: no stack, no buffer.
type Reader struct {
	p    *poller
	key  uint32
	fd   int
	sink ReaderSink

	mu      sync.Mutex // serialises the poller's read with Resume and Stop
	armed   bool       // the poller may read: no chunk in flight
	stopped bool
	chunk   Chunk // the one chunk in flight
}

// StartReader starts delivering rc's bytes to sink; a paused reader reads
// nothing until the first Resume (its owner has bytes of the stream to
// handle first).
func StartReader(rc syscall.RawConn, sink ReaderSink, paused bool) (*Reader, error) {
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return nil, err
	}
	r := &Reader{fd: fd, sink: sink, armed: !paused}
	p, err := pickPoller()
	if err != nil {
		return nil, err
	}
	if err := p.add(r); err != nil {
		return nil, err
	}
	return r, nil
}

// Resume gives the chunk back; the reader reads again. Call it once per
// delivered chunk (and once after a paused start), and never after Stop.
func (r *Reader) Resume() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	r.releaseChunk()
	r.armed = true
	r.p.arm(r)
}

// Stop ends the reader. Call it before closing the socket: once Stop
// returns no read of this descriptor is under way or will start, so a new
// socket that reuses the descriptor number is safe from this reader.
func (r *Reader) Stop() {
	r.mu.Lock()
	r.stopped, r.armed = true, false
	r.releaseChunk()
	r.mu.Unlock()
	r.p.remove(r)
}

func (r *Reader) releaseChunk() {
	if r.chunk.buf != nil {
		chunkPool.Put(r.chunk.buf)
		r.chunk = Chunk{}
	}
}

// ready runs on the poller when the socket is readable (or closed).
func (r *Reader) ready() {
	r.mu.Lock()
	if !r.armed || r.stopped { // a stale event, or a chunk is in flight
		r.mu.Unlock()
		return
	}
	buf := chunkPool.Get().(*[]byte)
	n, err := syscall.Read(r.fd, *buf)
	if err == syscall.EAGAIN || err == syscall.EINTR {
		chunkPool.Put(buf) // spurious: wait again, without a buffer
		r.p.arm(r)
		r.mu.Unlock()
		return
	}
	r.armed = false
	if err == nil && n == 0 {
		err = io.EOF
	}
	if err != nil {
		chunkPool.Put(buf)
		r.stopped = true
		r.mu.Unlock()
		r.sink.End(err)
		return
	}
	r.chunk = Chunk{buf: buf, n: n}
	r.mu.Unlock()
	r.sink.Chunk(&r.chunk)
}

// poller is one epoll set and the goroutine that waits on it.
type poller struct {
	epfd int
	rc   syscall.RawConn // of the epoll descriptor, parked in Go's netpoller

	mu   sync.Mutex
	regs map[uint32]*Reader
	next uint32
}

var (
	pollersOnce sync.Once
	pollers     []*poller
	pollersErr  error
	nextPoller  atomic.Uint32
)

// pickPoller returns the pollers round robin, starting them (one per
// processor) on first use.
func pickPoller() (*poller, error) {
	pollersOnce.Do(func() {
		for range max(1, runtime.GOMAXPROCS(0)) {
			p, err := newPoller()
			if err != nil {
				pollersErr = err
				return
			}
			pollers = append(pollers, p)
			go p.run()
		}
	})
	if pollersErr != nil {
		return nil, pollersErr
	}
	return pollers[nextPoller.Add(1)%uint32(len(pollers))], nil
}

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, err
	}
	// A non-blocking descriptor given to os.NewFile is registered with
	// Go's netpoller: an epoll set is readable when it has events.
	f := os.NewFile(uintptr(epfd), "tether-poller")
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	return &poller{epfd: epfd, rc: rc, regs: map[uint32]*Reader{}}, nil
}

const pollEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

func (p *poller) add(r *Reader) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		p.next++
		if _, taken := p.regs[p.next]; !taken {
			break
		}
	}
	r.p, r.key = p, p.next
	p.regs[r.key] = r
	ev := unix.EpollEvent{Events: pollEvents, Fd: int32(r.key)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, r.fd, &ev); err != nil {
		delete(p.regs, r.key)
		return fmt.Errorf("epoll_ctl add: %w", err)
	}
	return nil
}

// arm re-enables the one-shot registration.
func (p *poller) arm(r *Reader) {
	ev := unix.EpollEvent{Events: pollEvents, Fd: int32(r.key)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, r.fd, &ev); err != nil {
		// The socket is gone; its owner is closing it and will Stop.
		return
	}
}

func (p *poller) remove(r *Reader) {
	p.mu.Lock()
	delete(p.regs, r.key)
	p.mu.Unlock()
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, r.fd, nil)
}

func (p *poller) run() {
	events := make([]unix.EpollEvent, 256)
	for {
		var n int
		var werr error
		err := p.rc.Read(func(uintptr) bool {
			n, werr = unix.EpollWait(p.epfd, events, 0)
			return n > 0 || (werr != nil && werr != unix.EINTR)
		})
		if err != nil || werr != nil {
			panic(fmt.Sprintf("tether: epoll wait failed: %v %v", err, werr)) // the epoll set is never closed
		}
		for i := range events[:n] {
			p.mu.Lock()
			r := p.regs[uint32(events[i].Fd)]
			p.mu.Unlock()
			if r != nil {
				p.dispatch(r)
			}
		}
	}
}

// dispatch runs one socket's read. A panic in it (a sink that misbehaves)
// ends that socket's reading with an error instead of the process.
func (p *poller) dispatch(r *Reader) {
	defer func() {
		if v := recover(); v != nil {
			r.sink.End(fmt.Errorf("reader panic: %v", v))
		}
	}()
	r.ready()
}
