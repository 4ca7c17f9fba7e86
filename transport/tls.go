package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"tether/config"
)

// Certificate is a TLS certificate and its key, read from PEM files and
// read again by Reload: handshakes after a reload get the new
// certificate, connections already open keep the one they began with.
type Certificate struct {
	cert atomic.Pointer[tls.Certificate]
}

// LoadCertificate reads a certificate and its key.
func LoadCertificate(files config.TLS) (*Certificate, error) {
	c := &Certificate{}
	return c, c.Reload(files)
}

// Reload reads the files again. On an error the certificate in use
// stays.
func (c *Certificate) Reload(files config.TLS) error {
	cert, err := tls.LoadX509KeyPair(files.CertFile, files.KeyFile)
	if err != nil {
		return err
	}
	c.cert.Store(&cert)
	return nil
}

// ServerConfig is the TLS configuration of a server presenting c: each
// handshake takes the certificate loaded last.
func (c *Certificate) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.cert.Load(), nil
		},
	}
}

// TLS connections are bridged. A Socket reads and writes a descriptor
// with the shared pollers, and crypto/tls needs a net.Conn; so once the
// handshake is done, the connection actor gets one end of a unix socket
// pair, exactly like a plain socket (framing, rooms, fan-out, writev and
// the close paths do not know TLS), and two goroutines copy between the
// *tls.Conn and the other end:
//
//	client ⇄ TCP ⇄ *tls.Conn ⇄ bridge (in, out) ⇄ pair ⇄ Socket ⇄ actor
//
// Ends map across the bridge: the client's end of stream (close_notify,
// or a FIN between records) becomes a shutdown of the pair, which the
// Socket reads as the peer's FIN; the Socket's lingering close (shutdown
// of its writing) becomes close_notify then the TCP FIN; an error on
// either side closes all of it. A TLS connection holds three
// descriptors: the TCP socket and the pair.
//
// What the kernel knows of the TCP socket is not seen through the pair:
// Socket.BytesAcked fails, and a connection that keepalive or
// TCP_USER_TIMEOUT ends is reported as closed by the client.

// pairBuffer is SO_SNDBUF of each end of a pair. What a unix stream
// socket holds for its reader is bounded by the writer's send buffer
// (the kernel doubles the value set; a receive buffer plays no part), so
// a slow TLS client fills the pair within 32KiB and the Socket's write
// waits, as it would on the client's own TCP socket: the outbound
// queue's bound and write_timeout apply, instead of the pair hiding
// megabytes.
const pairBuffer = 16 << 10

// bridgeLinger bounds what a bridge does once the connection actor has
// closed its end: out writes the last bytes the actor wrote and says
// close_notify, in reads away what the client still sends (closing a
// TCP socket with unread input sends a reset, which makes the client
// drop our last bytes). A client that neither reads nor closes is cut
// then (or when the close_notify crypto/tls is sending gives up: it
// allows itself 5 s).
const bridgeLinger = 2 * time.Second

// HandshakeTLS runs the server's side of the TLS handshake on a's TCP
// socket, until ctx ends, and bridges the connection. On an error a is
// unchanged: the caller closes it.
func HandshakeTLS(ctx context.Context, a *Accepted, cfg *tls.Config) error {
	c := tls.Server(a.Conn, cfg)
	if err := c.HandshakeContext(ctx); err != nil {
		return err
	}
	return a.bridgeTLS(c)
}

// bridgeTLS bridges c, a's connection after its handshake: a.Conn
// becomes the connection actor's end of a new socket pair, and the
// bridge takes the ticket, which it gives back once the actor's end, the
// pair and the TCP socket are all closed. On an error a is unchanged.
func (a *Accepted) bridgeTLS(c *tls.Conn) error {
	tcp, ok := c.NetConn().(*net.TCPConn)
	if !ok {
		return fmt.Errorf("TLS over %T, not TCP", c.NetConn())
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socketpair: %w", err)
	}
	for _, fd := range fds {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, pairBuffer); err != nil {
			_ = unix.Close(fds[0])
			_ = unix.Close(fds[1])
			return fmt.Errorf("socketpair SO_SNDBUF: %w", err)
		}
	}
	b := &bridge{tls: c, tcp: tcp, pair: os.NewFile(uintptr(fds[1]), "tls-bridge"), ticket: a.Ticket}
	b.copies.Store(2)
	b.parts.Store(3)
	a.Conn = plainConn{File: os.NewFile(uintptr(fds[0]), "tls-plain"), tcp: tcp}
	a.Ticket, a.tls = Ticket{}, b
	go b.in()
	go b.out()
	return nil
}

// plainConn is the connection actor's end of a bridged TLS connection:
// the decrypted stream, with the client's TCP addresses, so that the
// Socket and the logs report the client, not the pair.
type plainConn struct {
	*os.File
	tcp *net.TCPConn
}

func (c plainConn) LocalAddr() net.Addr  { return c.tcp.LocalAddr() }
func (c plainConn) RemoteAddr() net.Addr { return c.tcp.RemoteAddr() }

// bridge copies between a TLS connection and its pair (see above).
type bridge struct {
	tls    *tls.Conn
	tcp    *net.TCPConn
	pair   *os.File // the bridge's end
	ticket Ticket
	copies atomic.Int32 // copies running: the last one to end closes the TCP socket and the pair
	parts  atomic.Int32 // the copies and the actor's end: the last one to end gives the ticket back
}

// inBuffer is the buffer of in, which waits in tls.Conn.Read with it:
// an idle connection holds it, on in's stack. Clients send little
// (requests); at 512 bytes the stack stays at 4 KiB, where 2 KiB made it
// 8 KiB.
const inBuffer = 512

// in copies what the client sends, decrypted, to the pair.
func (b *bridge) in() {
	defer b.copyEnded()
	buf := make([]byte, inBuffer)
	forward := true
	for {
		n, err := b.tls.Read(buf)
		if n > 0 && forward {
			if _, werr := b.pair.Write(buf[:n]); werr != nil {
				forward = false // the actor's end is closed: read the rest away, within bridgeLinger
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			// close_notify, or a FIN between records: the actor reads
			// the end of stream.
			b.shutdownPair()
			return
		default:
			b.closeAll() // a reset, a timeout, a bad record: the actor reads the end at once
			return
		}
	}
}

// out copies what the actor writes to the client, encrypted.
func (b *bridge) out() {
	defer b.copyEnded()
	rc, err := b.pair.SyscallConn()
	if err != nil {
		b.closeAll()
		return
	}
	for {
		buf, n, err := readPair(rc)
		if buf != nil {
			_, werr := b.tls.Write((*buf)[:n])
			chunkPool.Put(buf)
			if werr != nil {
				b.closeAll()
				return
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			// The actor shut down its writing (a lingering close) or
			// closed its end: the client hears our end of stream, from
			// TLS (close_notify) and from TCP (FIN), and goes on being
			// read until it closes too.
			_ = b.tls.CloseWrite()
			_ = b.tcp.CloseWrite()
			return
		default:
			b.closeAll()
			return
		}
	}
}

// readPair reads one chunk from the bridge's end of the pair, waiting
// for it without a buffer: an idle connection holds none. buf, from
// chunkPool, is nil unless n > 0; err is io.EOF at the end of stream.
func readPair(rc syscall.RawConn) (buf *[]byte, n int, err error) {
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		buf = chunkPool.Get().(*[]byte)
		for {
			n, rerr = unix.Read(int(fd), *buf)
			if rerr != unix.EINTR {
				break
			}
		}
		if rerr == nil && n > 0 {
			return true
		}
		chunkPool.Put(buf)
		buf = nil
		return rerr != unix.EAGAIN
	})
	switch {
	case err != nil:
		return nil, 0, err
	case rerr != nil:
		return nil, 0, rerr
	case buf == nil:
		return nil, 0, io.EOF
	}
	return buf, n, nil
}

// shutdownPair ends the pair's stream towards the actor. It fails only
// once the pair is closed, and then the actor has read its end already.
func (b *bridge) shutdownPair() {
	if rc, err := b.pair.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) { _ = unix.Shutdown(int(fd), unix.SHUT_WR) })
	}
}

// closeAll closes the TCP socket, without close_notify (the connection
// failed, or is over), and the bridge's end of the pair: both copies end
// at once, and the actor reads the end of its stream.
func (b *bridge) closeAll() {
	_ = b.tcp.Close()
	_ = b.pair.Close()
}

func (b *bridge) copyEnded() {
	if b.copies.Add(-1) == 0 {
		b.closeAll()
	}
	b.partEnded()
}

func (b *bridge) partEnded() {
	if b.parts.Add(-1) == 0 {
		b.ticket.Release()
	}
}

// socketClosed is called once the actor's end is closed (by its Socket,
// or by Accepted.Close when no Socket took it): the copies still running
// get bridgeLinger to finish.
func (b *bridge) socketClosed() {
	_ = b.tcp.SetDeadline(time.Now().Add(bridgeLinger))
	b.partEnded()
}
