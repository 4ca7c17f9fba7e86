package conn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"tether/config"
	"tether/test/check"
	"tether/transport"
)

// These tests drive one connection actor over a real loopback socket
// pair: the test holds the client's end, and an App of the test's own
// sees what the actor hands it. Each guards one of the concurrency rules
// at the top of actor.go.

// testApp records the frames it is handed; a frame "block" makes it wait
// on release, "slow..." takes 100 µs, and "echo:<x>" sends x back.
type testApp struct {
	mu      sync.Mutex
	frames  []string
	limited int // messages dropped past the rate limit
	release chan struct{}
}

func (t *testApp) Opened(*Actor) {}
func (t *testApp) Frame(c *Actor, data []byte) {
	t.mu.Lock()
	t.frames = append(t.frames, string(data))
	t.mu.Unlock()
	switch s := string(data); {
	case s == "block":
		<-t.release
	case strings.HasPrefix(s, "slow"):
		time.Sleep(100 * time.Microsecond) // a request that takes its time
	case strings.HasPrefix(s, "echo:"):
		c.Send([]byte(s[5:]))
	}
}
func (t *testApp) Limited(*Actor, []byte) {
	t.mu.Lock()
	t.limited++
	t.mu.Unlock()
}
func (t *testApp) Receive(*Actor, any)    {}
func (t *testApp) Closing(*Actor, Reason) {}
func (t *testApp) Closed(*Actor, Reason)  {}
func (t *testApp) Describe(*Info)         {}

func newTestApp() *testApp  { return &testApp{release: make(chan struct{})} }
func (t *testApp) unblock() { close(t.release) }

func (t *testApp) handled() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.frames...)
}

func (t *testApp) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.frames)
}

// packN frames s as PHP's pack('N', strlen($s)) . $s.
func packN(s string) []byte { return append(binary.BigEndian.AppendUint32(nil, uint32(len(s))), s...) }

// fixture is one connection actor and the client's end of its socket.
type fixture struct {
	system   *actor.ActorSystem
	actor    *Actor
	pid      *actor.PID
	client   net.Conn
	registry *Registry
}

// start spawns a connection actor of a TCP listener (pack('N') framing)
// with app, its settings changed by mutate.
func start(t *testing.T, app App, mutate func(*config.Listener)) *fixture {
	t.Helper()
	lc := config.DefaultListener(config.ProtocolTCP)
	lc.Name = "tcp"
	if mutate != nil {
		mutate(&lc)
	}
	settings, err := NewSettings(&lc)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	system := actor.NewActorSystem()
	metrics := transport.NewMetrics()
	f := &fixture{system: system, client: client, registry: NewRegistry()}
	deps := &Deps{
		System: system, Node: "n", Registry: f.registry, Budget: NewBudget(64<<20, metrics.PartialBytes),
		Metrics: metrics.Listener("tcp", "tcp"), Log: zerolog.Nop(), NewApp: func(*Actor) App { return app },
	}
	f.actor, err = New("n.1", &transport.Accepted{Conn: server}, settings, deps)
	if err != nil {
		t.Fatal(err)
	}
	f.pid = system.Root.Spawn(Props(func() actor.Actor { return f.actor }))
	// Others write to a connection once it has started (a room, after
	// the join): its socket's events address the actor by then.
	check.For(t, 5*time.Second, time.Millisecond, func() error {
		if f.registry.Get(f.actor.ID()) == nil {
			return errors.New("not started")
		}
		return nil
	})
	t.Cleanup(func() {
		client.Close()
		system.Root.StopFuture(f.pid).Wait()
		system.Shutdown()
	})
	return f
}

// read reads one pack('N') frame from the client's end.
func (f *fixture) read(timeout time.Duration) (string, error) {
	_ = f.client.SetReadDeadline(time.Now().Add(timeout))
	var hdr [4]byte
	if _, err := io.ReadFull(f.client, hdr[:]); err != nil {
		return "", err
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	_, err := io.ReadFull(f.client, body)
	return string(body), err
}

// closed waits for the connection's close and returns its reason.
func (f *fixture) closed(t *testing.T, within time.Duration) Reason {
	t.Helper()
	var reason Reason
	check.For(t, within, 5*time.Millisecond, func() error {
		info, ok := f.registry.ClosedInfo(f.actor.ID())
		if !ok {
			return errors.New("still open")
		}
		reason = info.Reason
		return nil
	})
	return reason
}

// TestOneChunkAtATime guards "the socket reads one chunk at a time and
// reads again only when the actor has handled it": while the App holds a
// frame, the actor holds at most one chunk of what the client sends, and
// the client is pushed back by TCP (its writes stop being taken); once
// the App goes on, every frame arrives, in order.
func TestOneChunkAtATime(t *testing.T) {
	app := newTestApp()
	f := start(t, app, nil)
	var stream []byte
	stream = append(stream, packN("block")...)
	const frames = 20000
	for i := range frames {
		stream = append(stream, packN(fmt.Sprintf("frame %05d %s", i, strings.Repeat("x", 200)))...)
	}
	wrote := make(chan int, 1)
	go func() {
		n, _ := f.client.Write(stream) // blocks while the server does not read
		wrote <- n
	}()
	check.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		if app.count() == 0 {
			return errors.New("the first frame is not handled yet")
		}
		return nil
	})
	// Held: the first frame blocks the actor. The kernel's buffers fill
	// and the client's write stops; the actor has read one chunk only.
	var info *Info
	check.Never(t, 300*time.Millisecond, 20*time.Millisecond, func() error {
		info = f.actor.info()
		if info.BytesIn > transport.ChunkSize {
			return fmt.Errorf("read %d bytes while its App held a frame; one chunk is %d", info.BytesIn, transport.ChunkSize)
		}
		return nil
	})
	select {
	case n := <-wrote:
		t.Fatalf("the client wrote all %d bytes while the server read %d: not pushed back", n, info.BytesIn)
	default:
	}
	app.unblock()
	if n := <-wrote; n != len(stream) {
		t.Fatalf("wrote %d of %d", n, len(stream))
	}
	check.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := app.count(); n != frames+1 {
			return fmt.Errorf("%d of %d frames handled", n, frames+1)
		}
		return nil
	})
	for i, got := range app.handled()[1:] {
		if want := fmt.Sprintf("frame %05d ", i); !strings.HasPrefix(got, want) {
			t.Fatalf("frame %d is %.20q", i, got)
		}
	}
}

// TestConcurrentWritersKeepFramesWhole guards "a room pushes its frames
// into the members' sockets and flushes each, from its own goroutine;
// the socket's lock orders those writes with the actor's own": four
// writers push and flush frames while the actor answers the client's
// requests; the client reads every frame whole, each writer's in its
// order, and every answer.
func TestConcurrentWritersKeepFramesWhole(t *testing.T) {
	app := newTestApp()
	f := start(t, app, func(l *config.Listener) { l.Limits.OutboundQueue = 64 << 20 })
	enc := f.actor.Settings().Encoder
	const writers, each, echoes = 4, 2000, 500
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				frame, err := enc.AppendMessage(nil, []byte(fmt.Sprintf("w%d %05d %s", w, i, strings.Repeat("y", 100))))
				if err != nil {
					t.Error(err)
					return
				}
				f.actor.Socket().Push(frame, false)
				f.actor.Socket().Flush()
			}
		}()
	}
	go func() {
		for i := range echoes {
			if _, err := f.client.Write(packN(fmt.Sprintf("echo:e %05d", i))); err != nil {
				return
			}
		}
	}()
	next := make([]int, writers)
	echoed := 0
	for got := 0; got < writers*each+echoes; got++ {
		msg, err := f.read(10 * time.Second)
		if err != nil {
			t.Fatalf("after %d frames: %v", got, err)
		}
		var w, i int
		switch {
		case strings.HasPrefix(msg, "e "):
			if _, err := fmt.Sscanf(msg, "e %d", &i); err != nil || i != echoed {
				t.Fatalf("answer %q, want %d", msg, echoed)
			}
			echoed++
		default:
			if _, err := fmt.Sscanf(msg, "w%d %d", &w, &i); err != nil || w < 0 || w >= writers || i != next[w] {
				t.Fatalf("frame %.30q: writer %d expected %v", msg, w, next)
			}
			next[w]++
		}
	}
	wg.Wait()
}

// TestNoWriteBlocks guards "no write ever blocks: what the kernel does
// not take waits in the socket's bounded queue": a client that reads
// nothing does not slow the writer, whose pushes return at once; past the
// queue's bound the connection closes slow_consumer.
func TestNoWriteBlocks(t *testing.T) {
	app := newTestApp()
	f := start(t, app, func(l *config.Listener) { l.Limits.OutboundQueue = 1 << 20 })
	frame, _ := f.actor.Settings().Encoder.AppendMessage(nil, make([]byte, 32<<10))
	started := time.Now()
	pushed := 0
	for f.actor.Socket().Push(frame, false) {
		f.actor.Socket().Flush()
		pushed++
		if pushed > 10000 {
			t.Fatal("the queue took 320 MB: no bound")
		}
	}
	if took := time.Since(started); took > time.Second {
		t.Errorf("%d pushes to a client that reads nothing took %s", pushed, took)
	}
	if r := f.closed(t, 5*time.Second); r != ReasonSlowConsumer {
		t.Fatalf("closed %s, want slow_consumer", r)
	}
}

// TestWriteTimeout guards the write timeout, counted by the poller's
// wait for the peer: a client that stops reading with frames queued is
// closed write_timeout once the wait is longer than limits.write_timeout.
func TestWriteTimeout(t *testing.T) {
	app := newTestApp()
	f := start(t, app, func(l *config.Listener) {
		l.Limits.OutboundQueue = 64 << 20
		l.Limits.WriteTimeout = config.Duration(300 * time.Millisecond)
	})
	frame, _ := f.actor.Settings().Encoder.AppendMessage(nil, make([]byte, 64<<10))
	for f.actor.Socket().BlockedSince() == 0 {
		f.actor.Socket().Push(frame, false)
		f.actor.Socket().Flush()
	}
	blocked := time.Now()
	if r := f.closed(t, 5*time.Second); r != ReasonWriteTimeout {
		t.Fatalf("closed %s, want write_timeout", r)
	}
	if took := time.Since(blocked); took < 250*time.Millisecond {
		t.Errorf("closed %s after the write blocked; write_timeout is 300ms", took)
	}
}

// TestEventsComeAsMessages guards "what the socket reports comes as a
// message": the peer's FIN closes the connection client_closed, and a
// frame past max_frame closes it frame_too_large after telling the
// client, whatever goroutine saw it.
func TestEventsComeAsMessages(t *testing.T) {
	t.Run("fin", func(t *testing.T) {
		f := start(t, newTestApp(), nil)
		_ = f.client.(*net.TCPConn).CloseWrite()
		if r := f.closed(t, 5*time.Second); r != ReasonClientClosed {
			t.Fatalf("closed %s, want client_closed", r)
		}
	})
	t.Run("frame too large", func(t *testing.T) {
		f := start(t, newTestApp(), func(l *config.Listener) { l.Framing.MaxFrame = 1024 })
		if _, err := f.client.Write(packN(strings.Repeat("z", 2000))); err != nil {
			t.Fatal(err)
		}
		if r := f.closed(t, 5*time.Second); r != ReasonFrameTooLarge {
			t.Fatalf("closed %s, want frame_too_large", r)
		}
	})
}

// TestRateLimit: past limits.messages_per_second and its burst a message
// is dropped (App.Limited), not handed on; a client that goes on until a
// burst more were dropped is closed rate_limited.
func TestRateLimit(t *testing.T) {
	app := newTestApp()
	f := start(t, app, func(l *config.Listener) { l.Limits.MessagesPerSecond, l.Limits.Burst = 1, 5 })
	var flood []byte
	for i := range 5 {
		flood = append(flood, packN(fmt.Sprintf("m%d", i))...)
	}
	if _, err := f.client.Write(flood); err != nil {
		t.Fatal(err)
	}
	check.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		if n := app.count(); n != 5 {
			return fmt.Errorf("handed %d of the burst of 5", n)
		}
		return nil
	})
	// The bucket is empty: what comes at once is refused, and the sixth
	// refusal past the burst of five closes the connection.
	flood = flood[:0]
	for i := range 6 {
		flood = append(flood, packN(fmt.Sprintf("x%d", i))...)
	}
	if _, err := f.client.Write(flood); err != nil {
		t.Fatal(err)
	}
	if r := f.closed(t, 5*time.Second); r != ReasonRateLimited {
		t.Fatalf("closed %s; want rate_limited", r)
	}
	app.mu.Lock()
	defer app.mu.Unlock()
	if len(app.frames) != 5 || app.limited != 5 {
		t.Fatalf("handed %d, limited %d; want 5 handed (the burst) and 5 refused before the close", len(app.frames), app.limited)
	}
}

// TestRateBucket: a client sending at its rate is never refused; one
// that calms down after a burst is forgiven its refusals.
func TestRateBucket(t *testing.T) {
	r := NewRate(10, 4)
	var b bucket
	at := int64(0)
	for i := range 100 {
		at += int64(100 * time.Millisecond)
		if v := b.take(r, at); v != allowed {
			t.Fatalf("message %d at the rate: %v", i, v)
		}
	}
	at += int64(100 * time.Millisecond) // the last message's interval has passed: the bucket is full
	for range 4 {
		if b.take(r, at) != allowed {
			t.Fatal("the burst was refused")
		}
	}
	if b.take(r, at) != refused {
		t.Fatal("past the burst: not refused")
	}
	at += int64(time.Second) // calm: the bucket refills, refusals forgotten
	for range 4 {
		b.take(r, at)
	}
	for range 4 {
		if v := b.take(r, at); v == excess {
			t.Fatal("refusals before the calm counted again")
		}
	}
}
