package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
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
