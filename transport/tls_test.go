package transport

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"tether/config"
	"tether/test/check"
	"tether/test/testca"
)

// tlsSocket is a TLS connection over loopback as a listener makes it: the
// server's end admitted, handshaken, bridged and adopted by a Socket.
type tlsSocket struct {
	s      *Socket
	ev     *events
	client *tls.Conn
	node   *NodeSockets // the admission's count: 1 while the connection holds its place
}

func newTLSSocket(t *testing.T) *tlsSocket {
	t.Helper()
	ca := testca.New(t)
	certFile, keyFile := ca.Issue(t, 2)
	cert, err := LoadCertificate(config.TLS{CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	raw, server := loopback(t)
	node := NewNodeSockets(10)
	m := NewMetrics().Listener("t", "tcp")
	ticket, ok := NewAdmission(node, config.Limits{}, m, zerolog.Nop()).Admit(server)
	if !ok {
		t.Fatal("not admitted")
	}
	a := &Accepted{Conn: server, Ticket: ticket}
	cfg := ca.ClientConfig()
	cfg.ServerName = "127.0.0.1"
	client := tls.Client(raw, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	handshook := make(chan error, 1)
	go func() { handshook <- client.HandshakeContext(ctx) }()
	if err := HandshakeTLS(ctx, a, cert.ServerConfig()); err != nil {
		t.Fatal(err)
	}
	if err := <-handshook; err != nil {
		t.Fatal(err)
	}
	s, ev := adopt(t, a, m)
	t.Cleanup(func() { client.Close(); s.Close() })
	return &tlsSocket{s: s, ev: ev, client: client, node: node}
}

// released waits until the connection's place is given back, and checks
// it was given back once.
func (c *tlsSocket) released(t *testing.T, within time.Duration) {
	t.Helper()
	check.For(t, within, 5*time.Millisecond, func() error {
		if n := c.node.Count(); n != 0 {
			return fmt.Errorf("%d places held", n)
		}
		return nil
	})
	check.Never(t, 100*time.Millisecond, 10*time.Millisecond, func() error {
		if n := c.node.Count(); n != 0 {
			return fmt.Errorf("%d places held: released twice?", n)
		}
		return nil
	})
}

func (e *events) received() []byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	return bytes.Join(e.chunks, nil)
}

func (e *events) endedWith() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ended
}

// TestTLSSocketCarriesBothWays: through the bridge, what the client sends
// reaches the Socket decrypted and what the Socket writes reaches the
// client, and the Socket reports the client's TCP address, not the
// pair's.
func TestTLSSocketCarriesBothWays(t *testing.T) {
	c := newTLSSocket(t)
	if got, want := c.s.Remote().String(), c.client.LocalAddr().String(); got != want {
		t.Errorf("Remote() = %s, want the client's %s", got, want)
	}
	if c.s.LocalPort() != c.client.RemoteAddr().(*net.TCPAddr).Port {
		t.Errorf("LocalPort() = %d, want %s's", c.s.LocalPort(), c.client.RemoteAddr())
	}
	sent := bytes.Repeat([]byte("ping "), 10000) // several records
	if _, err := c.client.Write(sent); err != nil {
		t.Fatal(err)
	}
	check.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		if got := c.ev.received(); !bytes.Equal(got, sent) {
			return fmt.Errorf("socket has %d of %d bytes", len(got), len(sent))
		}
		return nil
	})
	frame := bytes.Repeat([]byte("pong "), 20000)
	c.s.Write(frame, false)
	got := make([]byte, len(frame))
	_ = c.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c.client, got); err != nil || !bytes.Equal(got, frame) {
		t.Fatalf("client read %v, equal %v", err, bytes.Equal(got, frame))
	}
}

// TestTLSClientEndReachesSocket: the client's close_notify reaches the
// Socket as the end of its stream, after the bytes sent before it; the
// Socket's close then ends the bridge and gives the place back.
func TestTLSClientEndReachesSocket(t *testing.T) {
	c := newTLSSocket(t)
	if _, err := c.client.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	if err := c.client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	check.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		if !errors.Is(c.ev.endedWith(), io.EOF) {
			return fmt.Errorf("socket's read ended with %v", c.ev.endedWith())
		}
		return nil
	})
	if got := string(c.ev.received()); got != "last words" {
		t.Errorf("socket read %q before the end", got)
	}
	c.s.Close()
	c.released(t, 5*time.Second)
}

// TestTLSLingeringCloseSaysCloseNotify: the Socket's lingering close
// (shutdown of its writing, then reading until the peer's end) reaches
// the client as its last bytes then close_notify; once the client closes
// too, everything is closed and the place given back at once.
func TestTLSLingeringCloseSaysCloseNotify(t *testing.T) {
	c := newTLSSocket(t)
	c.s.Write([]byte("goodbye"), false)
	c.s.CloseLingering(time.Minute)
	_ = c.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c.client) // io.EOF: close_notify; a bare FIN would be ErrUnexpectedEOF mid-record
	if err != nil || string(got) != "goodbye" {
		t.Fatalf("client read %q, %v; want goodbye then close_notify", got, err)
	}
	if n := c.node.Count(); n != 1 {
		t.Fatalf("%d places held while the close lingers, want 1", n)
	}
	c.client.Close()
	c.released(t, 5*time.Second) // well before the linger's minute
}

// TestTLSSocketCloseCutsSilentClient: a client that neither reads nor
// closes does not keep the bridge past bridgeLinger once the Socket has
// closed: the TCP socket is closed and the place given back.
func TestTLSSocketCloseCutsSilentClient(t *testing.T) {
	c := newTLSSocket(t)
	// The client reads nothing: fill its TCP buffers, then the pair.
	frame := bytes.Repeat([]byte("x"), 64<<10)
	c.s.SetLimits(64<<20, false)
	check.For(t, 20*time.Second, time.Millisecond, func() error {
		if c.s.BlockedSince() != 0 {
			return nil
		}
		c.s.Write(frame, false)
		return errors.New("the socket's writes do not wait yet")
	})
	closed := time.Now()
	c.s.Close()
	c.released(t, bridgeLinger+5*time.Second)
	if took := time.Since(closed); took < bridgeLinger-100*time.Millisecond {
		t.Errorf("cut after %s, before the linger of %s", took, bridgeLinger)
	}
	_ = c.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	var ne net.Error
	if _, err := io.Copy(io.Discard, c.client); errors.As(err, &ne) && ne.Timeout() {
		t.Error("the client's connection is still open")
	}
}
