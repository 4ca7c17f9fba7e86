package transport

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"

	"tether/test/check"
)

// events records what a Socket tells its owner.
type events struct {
	mu     sync.Mutex
	chunks [][]byte
	ended  error
	told   []string
	s      *Socket
}

func (e *events) Chunk(c *Chunk) {
	e.mu.Lock()
	e.chunks = append(e.chunks, bytes.Clone(c.Bytes()))
	e.mu.Unlock()
	go e.s.Resume() // as the owner does once the chunk is handled
}
func (e *events) ReadEnded(err error)   { e.record("ended"); e.mu.Lock(); e.ended = err; e.mu.Unlock() }
func (e *events) WriteBlocked()         { e.record("blocked") }
func (e *events) WriteFailed(err error) { e.record("failed") }
func (e *events) QueueFull()            { e.record("full") }
func (e *events) Drained()              { e.record("drained") }
func (e *events) record(what string)    { e.mu.Lock(); e.told = append(e.told, what); e.mu.Unlock() }

func (e *events) saw(what string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, w := range e.told {
		if w == what {
			return true
		}
	}
	return false
}

// loopback returns both ends of a new loopback TCP connection.
func loopback(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return client, server
}

// adopt adopts a as a listener does and starts reading.
func adopt(t *testing.T, a *Accepted, m *ListenerMetrics) (*Socket, *events) {
	t.Helper()
	ev := &events{}
	s, err := Adopt(a, ev, m)
	if err != nil {
		t.Fatal(err)
	}
	ev.s = s
	if err := s.Start(false); err != nil {
		t.Fatal(err)
	}
	return s, ev
}

// socketPair adopts the server end of a loopback connection.
func socketPair(t *testing.T) (*Socket, *events, net.Conn) {
	t.Helper()
	client, server := loopback(t)
	s, ev := adopt(t, &Accepted{Conn: server}, NewMetrics().Listener("t", "tcp"))
	t.Cleanup(func() { client.Close(); s.Close() })
	return s, ev, client
}

// TestSocketWritesWhatThePeerLetsThrough: frames queued past what the
// kernel takes wait for the poller (EPOLLOUT) and are written, in order,
// once the peer reads; the owner is told when a write first waited.
func TestSocketWritesWhatThePeerLetsThrough(t *testing.T) {
	s, ev, client := socketPair(t)
	s.SetLimits(64<<20, false)
	frame := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	var want bytes.Buffer
	for i := 0; s.BlockedSince() == 0 || i < 8; i++ {
		f := append([]byte{byte(i)}, frame...)
		if !s.Push(f, false) {
			t.Fatal("refused")
		}
		s.Flush()
		want.Write(f)
	}
	if !ev.saw("blocked") {
		t.Fatal("the owner was not told the write waits")
	}
	got := make([]byte, want.Len())
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatal("the bytes came out changed or out of order")
	}
	check.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		if s.BlockedSince() != 0 || s.Stats().Queued != 0 {
			return errors.New("still waiting")
		}
		return nil
	})
}

// TestDelayerWritesOnRounds: with a write delay, flushes wait for the
// delayer's round, and what was pushed meanwhile leaves together.
func TestDelayerWritesOnRounds(t *testing.T) {
	s, _, client := socketPair(t)
	s.SetDelay(NewDelayer(200 * time.Millisecond))
	start := time.Now()
	for i := range 10 {
		s.Push([]byte{byte('a' + i)}, false)
		s.Flush()
	}
	buf := make([]byte, 10)
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(client, buf); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 150*time.Millisecond {
		t.Errorf("written after %s; the delay is 200ms", took)
	}
	if string(buf) != "abcdefghij" {
		t.Fatalf("got %q", buf)
	}
	if st := s.Stats(); st.FramesOut != 10 || st.BytesOut != 10 {
		t.Fatalf("stats %+v", st)
	}
	var frames dto.Metric
	if err := s.m.FramesOut.Write(&frames); err != nil || frames.GetCounter().GetValue() != 10 {
		t.Errorf("tether_frames_out_total: %v %v, want 10", frames.GetCounter().GetValue(), err)
	}
}

// TestSocketReadsAndEnds: bytes reach the owner in chunks, and the peer's
// FIN ends the reading with io.EOF.
func TestSocketReadsAndEnds(t *testing.T) {
	s, ev, client := socketPair(t)
	if _, err := client.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	_ = client.(*net.TCPConn).CloseWrite()
	check.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		ev.mu.Lock()
		defer ev.mu.Unlock()
		if ev.ended == nil {
			return errors.New("not ended")
		}
		if !errors.Is(ev.ended, io.EOF) || len(ev.chunks) != 1 || string(ev.chunks[0]) != "hello" {
			return errors.New("wrong")
		}
		return nil
	})
	if s.LastRead() == 0 {
		t.Error("no read time")
	}
}

// TestHeldChunkLosesNoByteNorTheEnd guards what an edge-triggered
// registration requires of the socket: an event comes once per change, so
// what arrives while the owner holds a chunk (no read then) must be read
// on Resume without another event, and a peer's FIN that a read takes
// together with the last bytes must still end the stream. The owner here
// resumes only once the peer has sent everything, more than one chunk,
// and closed; it must get every byte, in order, then the end. A paused
// Start with bytes already waiting is the same case.
func TestHeldChunkLosesNoByteNorTheEnd(t *testing.T) {
	for _, paused := range []bool{false, true} {
		s, ev, client := heldPair(t)
		want := bytes.Repeat([]byte("0123456789abcdef"), 3*ChunkSize/16+7) // three chunks and a bit
		if !paused {
			if err := s.Start(false); err != nil {
				t.Fatal(err)
			}
			if _, err := client.Write(want[:10]); err != nil {
				t.Fatal(err)
			}
			check.For(t, 5*time.Second, time.Millisecond, func() error { // the owner holds a chunk now
				if len(ev.got()) == 0 {
					return errors.New("no chunk yet")
				}
				return nil
			})
		}
		if _, err := client.Write(want[len(ev.got()):]); err != nil {
			t.Fatal(err)
		}
		_ = client.(*net.TCPConn).CloseWrite()
		check.For(t, 5*time.Second, time.Millisecond, func() error { // all of it waits in the kernel
			if n := s.Unread(); n != len(want)-len(ev.got()) {
				return fmt.Errorf("%d bytes unread", n)
			}
			return nil
		})
		if paused {
			if err := s.Start(true); err != nil {
				t.Fatal(err)
			}
		}
		check.For(t, 5*time.Second, time.Millisecond, func() error {
			ev.mu.Lock()
			ended := ev.ended
			ev.mu.Unlock()
			if !ended {
				s.Resume() // the owner is done with what it holds
				return errors.New("not ended")
			}
			return nil
		})
		if got := ev.got(); !bytes.Equal(got, want) {
			t.Fatalf("paused %v: got %d bytes of %d (or out of order)", paused, len(got), len(want))
		}
	}
}

// TestUrgentDataStopsNoStream guards the other short read that leaves
// bytes behind: TCP urgent data. A read stops at the urgent mark, so the
// bytes after it wait with no event of their own to come; the event that
// reported the urgent byte (EPOLLPRI) makes the socket read on until the
// kernel has nothing more. The urgent byte itself is out of band, and
// dropped.
func TestUrgentDataStopsNoStream(t *testing.T) {
	s, ev, client := heldPair(t)
	rc, err := client.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), []byte("X"), unix.MSG_OOB, nil)
		return true
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	if _, err := client.Write([]byte("def")); err != nil {
		t.Fatal(err)
	}
	check.For(t, 5*time.Second, time.Millisecond, func() error { // all of it waits in the server's kernel
		var n int
		var ierr error
		if err := rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil || ierr != nil {
			return fmt.Errorf("SIOCOUTQ: %v %v", err, ierr)
		}
		if n != 0 {
			return fmt.Errorf("%d bytes not acknowledged yet", n)
		}
		return nil
	})
	if err := s.Start(false); err != nil {
		t.Fatal(err)
	}
	check.For(t, 5*time.Second, time.Millisecond, func() error {
		if got := string(ev.got()); got != "abcdef" {
			s.Resume() // the owner is done with what it holds
			return fmt.Errorf("got %q", got)
		}
		return nil
	})
}

// heldPair adopts the server end of a loopback connection for an owner
// that holds each chunk until the test resumes; the test starts it.
func heldPair(t *testing.T) (*Socket, *heldEvents, net.Conn) {
	t.Helper()
	client, server := loopback(t)
	ev := &heldEvents{}
	s, err := Adopt(&Accepted{Conn: server}, ev, NewMetrics().Listener("t", "tcp"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); s.Close() })
	return s, ev, client
}

// heldEvents is an owner that holds each chunk until the test resumes.
type heldEvents struct {
	events
	mu    sync.Mutex
	bytes []byte
	ended bool
}

func (e *heldEvents) Chunk(c *Chunk) {
	e.mu.Lock()
	e.bytes = append(e.bytes, c.Bytes()...)
	e.mu.Unlock()
}
func (e *heldEvents) ReadEnded(error) { e.mu.Lock(); e.ended = true; e.mu.Unlock() }

func (e *heldEvents) got() []byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	return bytes.Clone(e.bytes)
}

// TestCloseLingeringReadsAwayThenCloses: a lingering close sends a FIN,
// reads what the peer still sends (so that no reset destroys what the
// peer has not read), and closes once the peer is done.
func TestCloseLingeringReadsAwayThenCloses(t *testing.T) {
	s, _, client := socketPair(t)
	s.Write([]byte("bye"), false)
	s.CloseLingering(5 * time.Second)
	// The peer still sends a lot after our FIN: nothing is reset.
	if _, err := client.Write(make([]byte, 1<<20)); err != nil {
		t.Fatalf("the peer's write after our close: %v", err)
	}
	got, err := io.ReadAll(client) // "bye", then our FIN
	if err != nil || string(got) != "bye" {
		t.Fatalf("read %q %v", got, err)
	}
	_ = client.Close()
	check.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.closed {
			return errors.New("still open")
		}
		return nil
	})
}
