package test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"tether/client"
	"tether/config"
	"tether/test/check"
)

// sendDurably sends one message with its own request id until the room
// has stored it: an error unavailable (NATS away) is answered by sending
// it again with the same id, which the room stores once.
func sendDurably(t *testing.T, c *client.Client, id int64, room, data string) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		if err := c.Send(client.Request{Op: "send", ID: id, Room: room, Data: data}); err != nil {
			t.Errorf("send %d: %v", id, err)
			return
		}
		for {
			ev, err := c.Recv()
			if err != nil {
				t.Errorf("send %d: %v", id, err)
				return
			}
			if string(ev.ID) != strconv.FormatInt(id, 10) {
				continue
			}
			if ev.Op == "ok" {
				return
			}
			if ev.Code != "unavailable" && ev.Code != "busy" || attempt > 100 {
				t.Errorf("send %d: %+v", id, ev)
				return
			}
			time.Sleep(50 * time.Millisecond) // a pause before trying again, as a client would
			break
		}
	}
}

// member collects one member's messages of a room with history, in the
// order it gets them. On a gap, or when its node goes away (then it
// connects to another), it joins again with since, and the room replays
// what it missed.
type member struct {
	name  string
	room  string
	c     *client.Client
	dial  func() (*client.Client, error) // another node, after its own died
	mu    sync.Mutex
	got   []int
	gaps  int
	moves int
	err   error
}

func (m *member) run(ctx context.Context, total int) {
	for len(m.snapshot()) < total && ctx.Err() == nil {
		_ = m.c.Conn().SetReadDeadline(time.Now().Add(time.Second))
		ev, err := m.c.Recv()
		var ne interface{ Timeout() bool }
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			continue
		case err != nil:
			// Its node is gone: another one, and since.
			since := m.c.Position(m.room)
			c, derr := m.dial()
			if derr != nil {
				m.fail(fmt.Errorf("%s: reconnect: %w", m.name, derr))
				return
			}
			c.SetPosition(m.room, since)
			m.c = c
			m.moves++
			m.rejoin()
			continue
		}
		switch ev.Op {
		case "gap":
			m.mu.Lock()
			m.gaps++
			m.mu.Unlock()
			m.rejoin()
		case "message":
			n, err := strconv.Atoi(data(ev))
			if err != nil {
				continue
			}
			m.mu.Lock()
			m.got = append(m.got, n)
			m.mu.Unlock()
		}
	}
}

// rejoin joins the room again with since: the missed messages come before
// the ok, and Recv returns them next.
func (m *member) rejoin() {
	_ = m.c.Conn().SetReadDeadline(time.Now().Add(10 * time.Second))
	ok, err := m.c.Call(client.Request{Op: "join", Room: m.room, Name: m.name, Since: m.c.Position(m.room)})
	if err != nil {
		m.fail(fmt.Errorf("%s: join with since: %w", m.name, err))
		return
	}
	if ok.Recovered == nil || !*ok.Recovered {
		m.fail(fmt.Errorf("%s: join with since %+v did not recover: %+v", m.name, m.c.Position(m.room), ok))
	}
}

func (m *member) fail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err == nil {
		m.err = err
	}
}

func (m *member) snapshot() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]int(nil), m.got...)
}

// TestChaos: three nodes; a sender on one sends 5,000 numbered messages
// into a room with history with a member on each node, while the NATS
// server restarts twice and one member's node is SIGKILLed, that member
// coming back on another node with since. Every member ends with all
// 5,000, in order, without duplicates; one that stayed connected saw every
// message or a gap followed by its recovery; nothing silent.
func TestChaos(t *testing.T) {
	const total, room = 5000, "news:chaos"
	port, store := freePort(t), t.TempDir()
	ns := startJetStreamNATS(t, port, store)
	url := ns.ClientURL()
	var nodes []*testNode
	for _, name := range []string{"a", "b"} {
		nodes = append(nodes, startNode(t, func(c *config.Config) {
			c.Node.Name = name
			c.NATS.URL = url
			clusterTiming(c)
			withHistory(total)(c)
		}))
	}
	a, b := nodes[0], nodes[1]
	c := startClusterProcess(t, "c", url, fmt.Sprintf("rooms: {namespaces: [{prefix: news, history_size: %d}]}\n", total))

	members := []*member{
		{name: "on-a", c: a.dial(t, "tcp")},
		{name: "on-b", c: b.dial(t, "tcp")},
		{name: "on-c", c: dialRetry(t, c.tcpAddr)},
	}
	for _, m := range members {
		m.room = room
		m.dial = func() (*client.Client, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			cl, err := client.DialTCP(ctx, b.addr("tcp"), client.TCPOptions{})
			if err == nil {
				t.Cleanup(func() { cl.Close() })
			}
			return cl, err
		}
		if _, err := m.c.Call(client.Request{Op: "join", Room: room, Name: m.name}); err != nil {
			t.Fatalf("%s joins: %v", m.name, err)
		}
	}
	sender := a.dial(t, "tcp")
	join(t, sender, room, "sender")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for _, m := range members {
		wg.Add(1)
		go func() { defer wg.Done(); m.run(ctx, total) }()
	}
	sent := make(chan int, total)
	go func() {
		for i := range total {
			sendDurably(t, sender, int64(i+1), room, strconv.Itoa(i))
			sent <- i
		}
		close(sent)
	}()
	waitSent := func(n int) {
		for i := range sent {
			if i >= n {
				return
			}
		}
	}

	restartNATS := func() {
		ns.Shutdown()
		ns.WaitForShutdown()
		time.Sleep(300 * time.Millisecond) // NATS stays away a while: that is the fault under test
		ns = startJetStreamNATS(t, port, store)
	}
	waitSent(1000)
	restartNATS()
	waitSent(2500)
	c.kill() // the member on c moves to b, with since
	waitSent(3500)
	restartNATS()
	waitSent(total - 1)

	check.For(t, 2*time.Minute, 100*time.Millisecond, func() error {
		for _, m := range members {
			m.mu.Lock()
			n, err := len(m.got), m.err
			m.mu.Unlock()
			if err != nil {
				return err
			}
			if n < total {
				return fmt.Errorf("%s has %d of %d", m.name, n, total)
			}
		}
		return nil
	})
	cancel()
	wg.Wait()
	for _, m := range members {
		got := m.snapshot()
		for i, n := range got {
			if n != i {
				t.Fatalf("%s: message %d is %d: out of order, missing or twice", m.name, i, n)
			}
		}
		t.Logf("%s: %d messages in order, %d gaps recovered, moved %d times", m.name, len(got), m.gaps, m.moves)
	}
	if members[2].moves == 0 {
		t.Error("the member on the killed node did not move")
	}
}
