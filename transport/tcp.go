package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ListenTCP binds a TCP listener. Go's own keepalive default (15s probes
// on every accepted socket) is turned off, so that each listener's
// tcp_keepalive settings are the only ones in force.
func ListenTCP(addr string) (*net.TCPListener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	return ln.(*net.TCPListener), nil
}

// SocketOptions are the liveness options set on every accepted socket.
type SocketOptions struct {
	// Keepalive turns on SO_KEEPALIVE with TCP_KEEPIDLE, TCP_KEEPINTVL and
	// TCP_KEEPCNT; the kernel then closes a silent dead peer's socket
	// after Idle + Interval*Count.
	Keepalive      bool
	Idle, Interval time.Duration
	Count          int
	UserTimeout    time.Duration // TCP_USER_TIMEOUT; 0 leaves the kernel default
}

// ApplySocketOptions sets opts on an accepted socket.
func ApplySocketOptions(c *net.TCPConn, opts SocketOptions) error {
	if opts.Keepalive {
		if err := c.SetKeepAliveConfig(net.KeepAliveConfig{
			Enable: true, Idle: opts.Idle, Interval: opts.Interval, Count: opts.Count,
		}); err != nil {
			return err
		}
	} else if err := c.SetKeepAlive(false); err != nil {
		return err
	}
	if opts.UserTimeout <= 0 {
		return nil
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(opts.UserTimeout.Milliseconds()))
	})
	return errors.Join(err, serr)
}

// TryWrite makes one non-blocking write of p and reports how much the
// kernel took. It never waits: when the socket buffer is full it returns
// 0 and a nil error, and the caller decides whether to wait (in another
// goroutine) or give up. This is how an actor writes without ever blocking
// its mailbox on a slow peer.
func TryWrite(rc syscall.RawConn, p []byte) (int, error) {
	var n int
	var werr error
	err := rc.Write(func(fd uintptr) bool {
		n, werr = syscall.Write(int(fd), p)
		return true // one attempt only
	})
	if err != nil {
		return 0, err
	}
	if werr == syscall.EAGAIN || werr == syscall.EINTR {
		return 0, nil
	}
	if n < 0 {
		n = 0
	}
	return n, werr
}

// Failure says why a socket stopped working, in the terms of the close
// reasons: the peer closed or reset it, the kernel's keepalive gave up, or
// data stayed unacknowledged past TCP_USER_TIMEOUT.
type Failure int

// The socket failures a reader or writer can observe.
const (
	FailureOther        Failure = iota // anything else (our own close included)
	FailurePeerClosed                  // FIN (read returned 0), reset or broken pipe
	FailureTimedOut                    // ETIMEDOUT: keepalive or user timeout
	FailureWriteTimeout                // our write deadline passed
)

// Classify maps a read or write error to a Failure.
func Classify(err error) Failure {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.ECONNABORTED):
		return FailurePeerClosed
	case errors.Is(err, syscall.ETIMEDOUT):
		return FailureTimedOut
	case errors.Is(err, os.ErrDeadlineExceeded):
		return FailureWriteTimeout
	}
	return FailureOther
}

// BytesAcked reports how many bytes the peer has acknowledged over the
// connection's life (TCP_INFO's tcpi_bytes_acked). Compared with the bytes
// written it tells how a timed-out connection died: with data the peer
// never acknowledged, of TCP_USER_TIMEOUT (or retransmissions); without,
// of keepalive. The counter survives the kernel purging its queues on the
// timeout, which tcpi_unacked does not.
func BytesAcked(rc syscall.RawConn) (uint64, error) {
	var info *unix.TCPInfo
	var serr error
	err := rc.Control(func(fd uintptr) {
		info, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	})
	if err = errors.Join(err, serr); err != nil {
		return 0, err
	}
	return info.Bytes_acked, nil
}

// lingering counts the closes in progress in CloseLingering.
var lingering atomic.Int64

// maxLingering bounds the lingering closes in progress: past it sockets
// are closed at once. Each holds a goroutine and a descriptor for up to
// its bound.
const maxLingering = 4096

// CloseLingering closes c after shutting down its sending side and
// reading away what the peer still sends, until the peer's end of stream
// or bound, then calls done. It returns at once; the rest happens in a
// short-lived goroutine. This is nginx's lingering close: closing a socket
// whose input is unread makes the kernel send a reset instead of a FIN,
// and a reset makes the peer's kernel drop what it had not delivered yet
// (our last messages and the close reason) and its own kernel refuse more
// of ours. A peer still sending a frame we refused would never learn why.
func CloseLingering(c net.Conn, done func(), bound time.Duration) {
	tcp, ok := c.(*net.TCPConn)
	if !ok || lingering.Add(1) > maxLingering {
		if ok {
			lingering.Add(-1)
		}
		_ = c.Close()
		done()
		return
	}
	go func() {
		defer func() {
			recover() // nothing here may take the node down
			_ = c.Close()
			lingering.Add(-1)
			done()
		}()
		if tcp.CloseWrite() != nil {
			return
		}
		_ = tcp.SetReadDeadline(time.Now().Add(bound))
		buf := make([]byte, 4096)
		for {
			if _, err := tcp.Read(buf); err != nil {
				return // the peer's FIN, its reset, or the bound
			}
		}
	}()
}
