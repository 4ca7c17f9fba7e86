package transport

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Sockets are watched by a few shared pollers (one epoll set each, one
// per processor) instead of a goroutine each. A socket is registered once,
// edge-triggered (EPOLLET), for everything it may wait for: readable, the
// peer's hang-up, writable. An event is reported once per change (bytes
// arrived, the send buffer drained after a write found it full), and the
// Socket remembers what it has not acted on yet (readable while its owner
// holds a chunk), so no system call is spent re-arming a registration after
// each read, as a one-shot registration needs: only when bytes were left
// waiting does Resume register the socket again to have them reported.
// This is the scheme of Go's own netpoller. Each poller's epoll descriptor is itself parked in Go's
// netpoller, so waiting blocks no OS thread. An idle socket costs its
// registration here and nothing else: no stack, no buffer.

// poller is one epoll set and the goroutine that waits on it.
type poller struct {
	epfd int
	rc   syscall.RawConn // of the epoll descriptor, parked in Go's netpoller

	mu   sync.Mutex
	regs []*Socket // by descriptor: a slot costs 8 bytes, a map entry ten times that
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
	return &poller{epfd: epfd, rc: rc}, nil
}

// add registers s for every event it may wait for (edge-triggered).
// Events carry the descriptor; one of a socket already closed can reach a
// new socket with the same descriptor, which then finds nothing to read
// or write yet and waits again: harmless.
func (p *poller) add(s *Socket) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	fd := int(s.fd)
	if fd >= len(p.regs) {
		p.regs = append(p.regs, make([]*Socket, fd+1-len(p.regs)+len(p.regs)/2)...)
	}
	s.p = p
	p.regs[fd] = s
	ev := unix.EpollEvent{Events: registered, Fd: s.fd}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		p.regs[fd] = nil
		return fmt.Errorf("epoll_ctl add: %w", err)
	}
	return nil
}

// registered is what every socket is registered for, edge-triggered.
const registered = unix.EPOLLIN | unix.EPOLLPRI | unix.EPOLLRDHUP | unix.EPOLLOUT | unix.EPOLLET

// rearm registers s again as it is: if it is ready (bytes wait), epoll
// reports it once more. An error means the socket is gone; its owner is
// closing it.
func (p *poller) rearm(s *Socket) {
	ev := unix.EpollEvent{Events: registered, Fd: s.fd}
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, int(s.fd), &ev)
}

func (p *poller) remove(s *Socket) {
	p.mu.Lock()
	if p.regs[s.fd] == s {
		p.regs[s.fd] = nil
	}
	p.mu.Unlock()
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(s.fd), nil)
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
			var s *Socket
			p.mu.Lock()
			if fd := int(events[i].Fd); fd < len(p.regs) {
				s = p.regs[fd]
			}
			p.mu.Unlock()
			if s != nil {
				s.dispatch(events[i].Events)
			}
		}
	}
}
