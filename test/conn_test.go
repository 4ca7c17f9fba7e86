package test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"tether/actors/conn"
	"tether/actors/node"
	"tether/client"
	"tether/config"
	"tether/framing"
	"tether/test/check"
)

// TestPHPFramedClient speaks to the default TCP listener the way a PHP
// client does, pack('N', strlen($json)) . $json, over a raw socket.
func TestPHPFramedClient(t *testing.T) {
	n := startNode(t, nil)
	c, err := net.Dial("tcp", n.addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	welcome, err := readPackN(c, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var w struct {
		Op, Conn, Node string
	}
	if err := json.Unmarshal([]byte(welcome), &w); err != nil || w.Op != "welcome" || !strings.HasPrefix(w.Conn, n.ID()+".") || w.Node != n.ID() {
		t.Fatalf("welcome: %s (%v)", welcome, err)
	}

	if _, err := c.Write(packN(`{"op":"ping","id":1}`)); err != nil {
		t.Fatal(err)
	}
	if got, err := readPackN(c, 5*time.Second); err != nil || got != `{"op":"pong","id":1}` {
		t.Fatalf("pong: %q %v", got, err)
	}

	// A message split into 1-byte writes is handled once.
	for _, b := range packN(`{"op":"ping","id":2}`) {
		if _, err := c.Write([]byte{b}); err != nil {
			t.Fatal(err)
		}
	}
	// Ten messages in one write are each handled once, in order.
	var ten []byte
	for id := 3; id <= 12; id++ {
		ten = append(ten, packN(fmt.Sprintf(`{"op":"ping","id":%d}`, id))...)
	}
	if _, err := c.Write(ten); err != nil {
		t.Fatal(err)
	}
	// A last ping marks the end: nothing may come between pong 12 and it.
	if _, err := c.Write(packN(`{"op":"ping","id":13}`)); err != nil {
		t.Fatal(err)
	}
	for id := 2; id <= 13; id++ {
		got, err := readPackN(c, 5*time.Second)
		if want := fmt.Sprintf(`{"op":"pong","id":%d}`, id); err != nil || got != want {
			t.Fatalf("reply %d: got %q (%v), want %q", id, got, err, want)
		}
	}

	// Malformed JSON gets an error reply, not a close.
	if _, err := c.Write(packN(`{"op":`)); err != nil {
		t.Fatal(err)
	}
	got, err := readPackN(c, 5*time.Second)
	if err != nil || !strings.Contains(got, `"op":"error"`) || !strings.Contains(got, `"code":"bad_request"`) {
		t.Fatalf("malformed JSON: %q %v", got, err)
	}
	if _, err := c.Write(packN(`{"op":"ping","id":14}`)); err != nil {
		t.Fatal(err)
	}
	if got, err := readPackN(c, 5*time.Second); err != nil || got != `{"op":"pong","id":14}` {
		t.Fatalf("after an error the connection must still work: %q %v", got, err)
	}
}

func TestIdleTimeout(t *testing.T) {
	const idle, check_ = time.Second, 200 * time.Millisecond
	n := startNode(t, func(c *config.Config) {
		hb := &c.Listeners[0].Heartbeat
		hb.IdleTimeout, hb.CheckInterval = config.Duration(idle), config.Duration(check_)
	})

	t.Run("silent client is closed idle", func(t *testing.T) {
		silent := n.dial(t, "tcp")
		spoke := time.Now() // the welcome was its last exchange
		last, err := silent.Expect("close", idle+check_+2*time.Second)
		if err != nil || last.Reason != "idle" {
			t.Fatalf("final frame: %+v %v, want close idle", last, err)
		}
		closedAt, err := waitClosed(silent.Conn(), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		// The server's clock starts at accept, a little before the client
		// has its welcome: hence the slack below idle.
		if after := closedAt.Sub(spoke); after < idle-200*time.Millisecond || after > idle+check_+500*time.Millisecond {
			t.Errorf("closed after %s, want within [%s, %s]", after, idle, idle+check_)
		}
		if r := n.closeReason(t, silent.ID(), 5*time.Second); r != conn.ReasonIdle {
			t.Errorf("reason %s, want idle", r)
		}
	})

	t.Run("heartbeats keep a client open for several idle periods", func(t *testing.T) {
		live := n.dial(t, "tcp")
		check.Never(t, 4*idle, 300*time.Millisecond, func() error { return live.Ping() })
		if info, ok := n.ConnInfo(live.ID()); !ok || info.Closed != nil {
			t.Fatalf("heartbeating client closed: %+v", info)
		}
	})
}

func TestServerPing(t *testing.T) {
	n := startNode(t, func(c *config.Config) {
		hb := &c.Listeners[0].Heartbeat
		hb.IdleTimeout = 0
		hb.PingInterval, hb.PingNotResponseLimit = config.Duration(time.Second), 2
	})

	t.Run("a client that never answers is closed no_pong", func(t *testing.T) {
		mute := n.dial(t, "tcp")
		start := time.Now()
		pings := 0
		_ = mute.Conn().SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			ev, err := mute.Recv()
			if err != nil {
				if !errors.Is(err, client.ErrClosed) {
					t.Fatalf("want the server to close, got %v", err)
				}
				break
			}
			if ev.Op == "ping" {
				pings++
			}
		}
		if after := time.Since(start); after < 1800*time.Millisecond || after > 3*time.Second {
			t.Errorf("closed after %s, want about 2s", after)
		}
		if pings < 1 {
			t.Errorf("got %d pings before the close", pings)
		}
		if r := n.closeReason(t, mute.ID(), 5*time.Second); r != conn.ReasonNoPong {
			t.Errorf("reason %s, want no_pong", r)
		}
	})

	t.Run("a client that answers stays", func(t *testing.T) {
		polite := n.dial(t, "tcp")
		deadline := time.Now().Add(4 * time.Second)
		pings := 0
		for time.Now().Before(deadline) {
			_ = polite.Conn().SetReadDeadline(deadline)
			ev, err := polite.Recv()
			if err != nil {
				if errors.Is(err, client.ErrClosed) {
					t.Fatal("closed although it answered every ping")
				}
				break // the deadline
			}
			if ev.Op == "ping" {
				pings++
				if err := polite.Send(client.Request{Op: "pong"}); err != nil {
					t.Fatal(err)
				}
			}
		}
		if pings < 3 {
			t.Errorf("got %d pings in 4s with a 1s interval", pings)
		}
		if info, _ := n.ConnInfo(polite.ID()); info == nil || info.Closed != nil {
			t.Errorf("answering client closed: %+v", info)
		}
	})

	t.Run("a client that speaks gets no pings", func(t *testing.T) {
		chatty := n.dial(t, "tcp")
		for range 12 { // 3.6s, speaking every 300ms (the interval is 1s)
			if _, err := chatty.Call(client.Request{Op: "ping"}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond) // the client's own heartbeat period, not a wait for a condition
		}
		_ = chatty.Conn().SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		for {
			ev, err := chatty.Recv()
			if err != nil {
				break
			}
			if ev.Op == "ping" {
				t.Fatalf("server pinged a client that spoke within every interval")
			}
		}
	})
}

// TestBadInputClosesOnlyThatConnection: an oversize frame and a garbage
// length header close their own connection with a reason; a bystander on
// the same listener is untouched.
func TestBadInputClosesOnlyThatConnection(t *testing.T) {
	n := startNode(t, func(c *config.Config) {
		c.Listeners[0].Framing.MaxFrame = 1024
		signed := c.Listeners[0]
		signed.Name, signed.Framing.LengthType = "signed", "l" // 32-bit signed little endian
		c.Listeners = append(c.Listeners, signed)
	})
	bystander := n.dial(t, "tcp")

	cases := []struct {
		listener string
		send     []byte
		want     conn.Reason
	}{
		{"tcp", packN(strings.Repeat("x", 1021)), conn.ReasonFrameTooLarge}, // 4+1021 = 1025 > 1024
		{"tcp", []byte{0xff, 0xff, 0xff, 0xff, 'g', 'a', 'r', 'b'}, conn.ReasonFrameTooLarge},
		{"signed", []byte{0xfe, 0xff, 0xff, 0xff, 'g', 'a', 'r', 'b'}, conn.ReasonBadFrame}, // length -2
	}
	signed := client.TCPOptions{Length: framing.LengthOptions{Type: 'l', BodyOffset: 4}}
	for _, c := range cases {
		opts := client.TCPOptions{}
		if c.listener == "signed" {
			opts = signed
		}
		victim := n.dialWith(t, c.listener, opts)
		if _, err := victim.Conn().Write(c.send); err != nil {
			t.Fatal(err)
		}
		if _, err := waitClosed(victim.Conn(), 5*time.Second); err != nil {
			t.Fatalf("%s %x: %v", c.listener, c.send[:8], err)
		}
		if r := n.closeReason(t, victim.ID(), 5*time.Second); r != c.want {
			t.Errorf("%s %x: reason %s, want %s", c.listener, c.send[:8], r, c.want)
		}
		if err := bystander.Ping(); err != nil {
			t.Fatalf("bystander hurt: %v", err)
		}
	}
	// A frame of exactly max_frame is accepted.
	ok := n.dial(t, "tcp")
	body := `{"op":"ping","id":1,"data":"` + strings.Repeat("y", 1024-4-len(`{"op":"ping","id":1,"data":""}`)) + `"}`
	if _, err := ok.Conn().Write(packN(body)); err != nil {
		t.Fatal(err)
	}
	if ev, err := ok.Expect("pong", 5*time.Second); err != nil || string(ev.ID) != "1" {
		t.Fatalf("max_frame exactly: %v %v", ev, err)
	}
	if len(n.logLines(`"message":"bad input"`, `"conn":"`+bystander.ID()+`"`)) != 0 {
		t.Error("the bystander was logged as bad input")
	}
}

// TestSlowConsumer: a client that sends but never reads fills its own
// outbound queue and is closed slow_consumer, while a hundred others keep
// getting their replies; the node's queued bytes never pass the limits.
func TestSlowConsumer(t *testing.T) {
	const queue = 64 << 10
	n := startNode(t, func(c *config.Config) {
		c.Listeners[0].Limits.OutboundQueue = queue
		c.Listeners[0].Limits.WriteTimeout = config.Duration(30 * time.Second) // the queue, not the timer, must catch it
	})

	others := make([]*client.Client, 100)
	for i := range others {
		others[i] = n.dial(t, "tcp")
	}

	hog := n.dial(t, "tcp")
	if tcp, ok := hog.Conn().(*net.TCPConn); ok {
		_ = tcp.SetReadBuffer(4096) // a small window: the kernel holds little for it
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // ping as fast as the server takes them, never read a pong
		defer wg.Done()
		burst := bytes.Repeat(packN(`{"op":"ping","id":123456}`), 1000)
		rest := burst
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = hog.Conn().SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			n, err := hog.Conn().Write(rest)
			rest = rest[n:] // a timed-out write may have sent part: go on from there
			if len(rest) == 0 {
				rest = burst
			}
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				return // closed by the server
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	// While the hog is being filled, everyone else is served.
	var maxQueued float64
	check.For(t, 30*time.Second, 20*time.Millisecond, func() error {
		for i, o := range others[:10] {
			if err := o.Ping(); err != nil {
				return fmt.Errorf("other %d: %w", i, err)
			}
		}
		if q := gaugeValue(t, n, "tether_outbound_queued_bytes"); q > maxQueued {
			maxQueued = q
		}
		info, ok := n.ConnInfo(hog.ID())
		if !ok || info.Closed == nil {
			return errors.New("hog still open")
		}
		if info.Reason != conn.ReasonSlowConsumer {
			t.Fatalf("hog closed with %s, want slow_consumer", info.Reason)
		}
		return nil
	})
	for i, o := range others {
		if err := o.Ping(); err != nil {
			t.Fatalf("other %d after the hog's close: %v", i, err)
		}
	}
	if maxQueued > float64(101*queue) {
		t.Errorf("queued bytes reached %.0f, over 101 connections x %d", maxQueued, queue)
	}
	// The hog's bytes, in flight when it was closed, are counted off.
	check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		if q := gaugeValue(t, n, "tether_outbound_queued_bytes"); q != 0 {
			return fmt.Errorf("%v bytes still counted as queued", q)
		}
		return nil
	})
}

// TestConnectionLimits: the connection past max_connections, or past
// max_per_ip from one address, is closed at once; the others stay.
func TestConnectionLimits(t *testing.T) {
	n := startNode(t, func(c *config.Config) {
		c.Listeners[0].Limits.MaxConnections = 4
		c.Listeners[0].Limits.MaxPerIP = 3
	})
	dialFrom := func(ip string) (net.Conn, error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
		return d.Dial("tcp", n.addr("tcp"))
	}
	var kept []net.Conn
	for range 3 {
		c, err := dialFrom("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := readPackN(c, 5*time.Second); err != nil { // welcome
			t.Fatal(err)
		}
		kept = append(kept, c)
	}
	fourth, err := dialFrom("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer fourth.Close()
	if _, err := readPackN(fourth, 5*time.Second); err == nil {
		t.Fatal("a fourth connection from one IP got a welcome with max_per_ip 3")
	}
	other, err := dialFrom("127.0.0.2")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := readPackN(other, 5*time.Second); err != nil {
		t.Fatalf("another IP was refused: %v", err)
	}
	fifth, err := dialFrom("127.0.0.3")
	if err != nil {
		t.Fatal(err)
	}
	defer fifth.Close()
	if _, err := readPackN(fifth, 5*time.Second); err == nil {
		t.Fatal("a fifth connection got a welcome with max_connections 4")
	}
	for i, c := range append(kept, other) {
		if _, err := c.Write(packN(`{"op":"ping","id":1}`)); err != nil {
			t.Fatal(err)
		}
		if got, err := readPackN(c, 5*time.Second); err != nil || got != `{"op":"pong","id":1}` {
			t.Fatalf("kept connection %d: %q %v", i, got, err)
		}
	}
	if got := counterValue(t, n, `tether_rejects_total{listener="tcp",why="max_per_ip"}`); got != 1 {
		t.Errorf("max_per_ip rejects counted %v, want 1", got)
	}
	if got := counterValue(t, n, `tether_rejects_total{listener="tcp",why="max_connections"}`); got != 1 {
		t.Errorf("max_connections rejects counted %v, want 1", got)
	}
}

// panicky wraps an application so that a frame `panic` makes it panic.
type panicky struct{ conn.App }

func (p panicky) Frame(c *conn.Actor, data []byte) {
	if string(data) == "panic" {
		panic("boom on request")
	}
	p.App.Frame(c, data)
}

// TestHandlerPanicAffectsOnlyThatConnection: a panic while handling one
// message is logged with the connection id and skipped (the rest of the
// same read is still handled); past the budget that connection is closed
// with reason panic; a bystander notices nothing.
func TestHandlerPanicAffectsOnlyThatConnection(t *testing.T) {
	n := startNode(t, nil, func(o *node.Options) {
		o.WrapApp = func(_ string, next conn.NewApp) conn.NewApp {
			return func(c *conn.Actor) conn.App { return panicky{next(c)} }
		}
	})
	bystander := n.dial(t, "tcp")
	victim := n.dial(t, "tcp")

	// One read holding a panicking message between two pings: both pings
	// are answered.
	var batch []byte
	batch = append(batch, packN(`{"op":"ping","id":1}`)...)
	batch = append(batch, packN("panic")...)
	batch = append(batch, packN(`{"op":"ping","id":2}`)...)
	if _, err := victim.Conn().Write(batch); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"1", "2"} {
		ev, err := victim.Expect("pong", 5*time.Second)
		if err != nil || string(ev.ID) != id {
			t.Fatalf("pong %s after a panic: %v %v", id, ev, err)
		}
	}
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		if len(n.logLines(`"message":"connection panicked"`, `"conn":"`+victim.ID()+`"`, `"panic":"boom on request"`)) == 0 {
			return errors.New("panic not logged with the connection id")
		}
		return nil
	})

	// Past the budget the connection is closed with reason panic.
	for range 3 {
		if err := victim.SendRaw([]byte("panic")); err != nil {
			break
		}
	}
	if r := n.closeReason(t, victim.ID(), 5*time.Second); r != conn.ReasonPanic {
		t.Errorf("reason %s, want panic", r)
	}
	if err := bystander.Ping(); err != nil {
		t.Fatalf("bystander hurt: %v", err)
	}
	if lines := n.logLines(`"conn":"` + bystander.ID() + `"`); len(lines) != 0 {
		t.Errorf("bystander appears in the log: %v", lines)
	}
}

// TestReloadAppliesToLiveConnections: a reload changes heartbeat settings
// of connections already open, without dropping them.
func TestReloadAppliesToLiveConnections(t *testing.T) {
	n := startNode(t, func(c *config.Config) { c.Listeners[0].Heartbeat.IdleTimeout = 0 })
	silent, talker := n.dial(t, "tcp"), n.dial(t, "tcp")

	next := nodeConfig()
	hb := &next.Listeners[0].Heartbeat
	hb.IdleTimeout, hb.CheckInterval = config.Duration(time.Second), config.Duration(100*time.Millisecond)
	next.Listeners[0].Address = n.addr("tcp") // unchanged in effect: addresses do not change live
	if err := next.Validate(); err != nil {
		t.Fatal(err)
	}
	reloaded := time.Now()
	n.Reload(next)

	keepAlive(t, talker, 300*time.Millisecond)
	if r := n.closeReason(t, silent.ID(), 5*time.Second); r != conn.ReasonIdle {
		t.Fatalf("silent connection after the reload: %s, want idle", r)
	}
	if since := time.Since(reloaded); since > 3*time.Second {
		t.Errorf("closed %s after the reload, idle_timeout is now 1s", since)
	}
	if info, _ := n.ConnInfo(talker.ID()); info == nil || info.Closed != nil {
		t.Fatalf("the reload dropped a live connection: %+v", info)
	}
}
