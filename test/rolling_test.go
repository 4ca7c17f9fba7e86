package test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"tether/client"
	"tether/config"
	"tether/test/check"
)

// roller is one client of the rolling drain: a Reconnecting client that
// keeps the numbered messages of the room in the order it got them, and
// its reconnects.
type roller struct {
	r  *client.Reconnecting
	mu sync.Mutex
	// got are the messages' numbers in order; moves the reconnects.
	got   []int
	moves []*client.Reconnect
	err   error
}

func (m *roller) run() {
	for {
		ev, err := m.r.Recv()
		if err != nil {
			m.mu.Lock()
			if !errors.Is(err, client.ErrClosed) {
				m.err = err
			}
			m.mu.Unlock()
			return
		}
		if ev.Op != "message" {
			continue
		}
		n, err := strconv.Atoi(data(ev))
		m.mu.Lock()
		if err != nil {
			m.err = fmt.Errorf("message %s: %v", ev.Data, err)
		}
		m.got = append(m.got, n)
		m.mu.Unlock()
	}
}

func (m *roller) state() (got int, moves []*client.Reconnect, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.got), slices.Clone(m.moves), m.err
}

// TestRollingDrainLosesNothing: two nodes on one JetStream NATS; 2,000
// clients (the Go client's Reconnecting, which knows node A's address
// only) in a room with history on A, and a sender on B sending 50
// messages a second. A is stopped with a drain of 500 every 500 ms.
// Every client is told to go within the drain window with a hint naming
// B (its public_url, from B's heartbeats), waits the hint's delay,
// reconnects to B within the drain window plus its hint, joins again with
// since and recovers; every client ends with every message, in order,
// without duplicates.
func TestRollingDrainLosesNothing(t *testing.T) {
	const (
		clients  = 2000
		batch    = 500
		interval = 500 * time.Millisecond
		jitter   = 500 * time.Millisecond
		rate     = 50
		room     = "roll:eu"
		// window is when the last batch leaves after the stop began.
		window = (clients/batch - 1) * interval
		// slack is what the close, a connect and a join with since may
		// take on top: in this test both nodes and the 2,000 clients
		// share two cores, under the race detector. Typically 0.2-2 s;
		// up to 6 s seen with other benchmarks on the machine.
		slack = 10 * time.Second
	)
	ns := startJetStreamNATS(t, -1, "")
	withRoom := func(c *config.Config) {
		c.NATS.URL = ns.ClientURL()
		clusterTiming(c)
		// A node that misses heartbeats while the machine is busy is
		// not dead: none dies in this test.
		c.Cluster.DeadAfter = config.Duration(5 * time.Second)
		c.Listeners[0].Heartbeat.IdleTimeout = 0 // the clients are silent
		o := config.DefaultRoomOptions()
		o.HistorySize, o.Presence = 10000, false // 2,000 joins announced to 2,000 members would be the test
		c.Rooms.Namespaces = append(c.Rooms.Namespaces, config.Namespace{Prefix: "roll", RoomOptions: o})
	}
	bAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	b := startNode(t, func(c *config.Config) {
		c.Node.Name = "b"
		withRoom(c)
		c.Listeners[0].Address, c.Listeners[0].PublicURL = bAddr, bAddr
	})
	a := startNode(t, func(c *config.Config) {
		c.Node.Name = "a"
		withRoom(c)
		c.Shutdown.DrainBatch = batch
		c.Shutdown.DrainInterval = config.Duration(interval)
		c.Shutdown.RetryJitter = config.Duration(jitter)
	})
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := gaugeValue(t, a, "tether_cluster_nodes_alive"); got != 1 {
			return fmt.Errorf("a sees %v other nodes", got)
		}
		return nil
	})

	// The clients, on A, connected and joined 16 at a time.
	rollers := make([]*roller, clients)
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	next := make(chan int, clients)
	for i := range clients {
		next <- i
	}
	close(next)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				m := &roller{}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				r, err := client.Connect(ctx, client.ReconnectOptions{
					URLs: []string{a.addr("tcp")},
					OnReconnect: func(rc *client.Reconnect) {
						m.mu.Lock()
						m.moves = append(m.moves, rc)
						m.mu.Unlock()
					},
				})
				cancel()
				if err != nil {
					errs <- fmt.Errorf("client %d: %w", i, err)
					continue
				}
				if _, err := r.Join(client.Request{Room: room, Name: fmt.Sprintf("c%d", i)}); err != nil {
					errs <- fmt.Errorf("client %d joins: %w", i, err)
					r.Close()
					continue
				}
				m.r = r
				rollers[i] = m
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, m := range rollers {
		r := m.r
		t.Cleanup(func() { r.Close() })
	}
	for _, m := range rollers {
		go m.run()
	}

	sender := b.dial(t, "tcp")
	join(t, sender, room, "sender")
	sent := 0
	send := func(until func() bool) {
		t.Helper()
		tick := time.NewTicker(time.Second / rate)
		defer tick.Stop()
		for !until() {
			<-tick.C
			sendDurably(t, sender, int64(sent+1), room, strconv.Itoa(sent))
			sent++
		}
	}
	send(func() bool { return sent >= rate/2 })

	began := time.Now()
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		stopped <- a.Shutdown(ctx)
	}()
	deadline := time.Now().Add(window + jitter + slack + 5*time.Second)
	send(func() bool {
		moved := 0
		for _, m := range rollers {
			if _, moves, _ := m.state(); len(moves) > 0 {
				moved++
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d clients reconnected after %s", moved, clients, time.Since(began))
		}
		return moved == clients
	})
	allBack := time.Since(began)
	more := sent + rate/2
	send(func() bool { return sent >= more })
	if err := <-stopped; err != nil {
		t.Errorf("stop a: %v", err)
	}

	check.For(t, 30*time.Second, 50*time.Millisecond, func() error {
		for i, m := range rollers {
			got, _, err := m.state()
			if err != nil {
				return fmt.Errorf("client %d: %w", i, err)
			}
			if got < sent {
				return fmt.Errorf("client %d has %d of %d messages", i, got, sent)
			}
		}
		return nil
	})

	var latest, toldLast time.Duration
	var overHint []time.Duration // coming back took this long past the hint's delay
	retried := 0
	perTenth := map[int64]int{}
	for i, m := range rollers {
		m.mu.Lock()
		got, moves := slices.Clone(m.got), slices.Clone(m.moves)
		m.mu.Unlock()
		for k, n := range got {
			if n != k {
				t.Fatalf("client %d: message %d is %d: out of order, missing or twice (%d messages)", i, k, n, len(got))
			}
		}
		if d := m.r.Duplicates(); d != 0 {
			t.Errorf("client %d: %d replayed messages it had already", i, d)
		}
		if len(moves) != 1 {
			t.Fatalf("client %d reconnected %d times, want once", i, len(moves))
		}
		rc := moves[0]
		switch {
		case rc.Hint == nil || len(rc.Hint.URLs) != 1 || rc.Hint.URLs[0] != bAddr:
			t.Fatalf("client %d: hint %+v, want B's public URL %s", i, rc.Hint, bAddr)
		case rc.URL != bAddr:
			t.Fatalf("client %d reconnected to %s, want B (%s)", i, rc.URL, bAddr)
		case rc.Hint.Retry >= jitter:
			t.Fatalf("client %d: hint delay %s, want less than the jitter %s", i, rc.Hint.Retry, jitter)
		case rc.At.Sub(rc.Lost) < rc.Hint.Retry:
			t.Fatalf("client %d came back %s after its close, before its hint's %s", i, rc.At.Sub(rc.Lost), rc.Hint.Retry)
		case rc.Lost.Sub(began) > window+slack:
			t.Fatalf("client %d was told to go %s after the stop began; the drain window is %s", i, rc.Lost.Sub(began), window)
		case rc.At.Sub(began) > window+rc.Hint.Retry+slack:
			t.Fatalf("client %d came back %s after the stop began: more than the drain window %s plus its hint %s (and %s); told at %s, %d attempts",
				i, rc.At.Sub(began), window, rc.Hint.Retry, slack, rc.Lost.Sub(began), rc.Attempts)
		}
		if ok := rc.Rejoined[room]; ok == nil || ok.Recovered == nil || !*ok.Recovered {
			t.Fatalf("client %d: join with since %+v, want recovered", i, ok)
		}
		latest = max(latest, rc.At.Sub(began))
		toldLast = max(toldLast, rc.Lost.Sub(began))
		overHint = append(overHint, rc.At.Sub(rc.Lost)-rc.Hint.Retry)
		if rc.Attempts > 1 {
			retried++
		}
		perTenth[rc.At.Sub(began).Milliseconds()/100]++
	}
	peak := 0
	for _, n := range perTenth {
		peak = max(peak, n)
	}
	slices.Sort(overHint)
	t.Logf("%d clients back on B, the last %s after the stop began (all seen %s), the last told %s after it; "+
		"back after the hint's delay in p50 %s, p99 %s, max %s; %d needed more than one attempt; at most %d back in one 100 ms; %d messages each, in order",
		clients, latest.Round(time.Millisecond), allBack.Round(time.Millisecond), toldLast.Round(time.Millisecond),
		overHint[len(overHint)/2].Round(time.Millisecond), overHint[len(overHint)*99/100].Round(time.Millisecond),
		overHint[len(overHint)-1].Round(time.Millisecond), retried, peak, sent)
	if peak > clients/2 {
		t.Errorf("%d of %d clients came back within one 100 ms: the drain did not spread them", peak, clients)
	}
}
