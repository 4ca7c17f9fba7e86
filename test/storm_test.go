package test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tether/client"
	"tether/config"
	"tether/test/check"
)

// TestAcceptStormIsPaced: with node.accepts_per_second 200 and an accept
// queue of 300, a storm of 700 connections at once, half TCP and half
// WebSocket: a tenth of a second's worth goes at once, 300 wait in the
// queue and are welcomed at the rate, and the rest are closed at accept,
// counted accept_queue; the queue shows in the metrics. A member of a
// room keeps getting its messages, in time, all along.
func TestAcceptStormIsPaced(t *testing.T) {
	const rate, queue, storm = 200, 300, 700
	n := startNode(t, func(c *config.Config) {
		wsListener("127.0.0.1:0")(c)
		c.Node.AcceptsPerSecond, c.Node.AcceptQueue = rate, queue
	})
	member, sender := n.dial(t, "tcp"), n.dial(t, "tcp")
	join(t, member, "calm", "m")
	join(t, sender, "calm", "s")

	// The room goes on: 20 messages a second, each with its send time.
	stop := make(chan struct{})
	sent := make(chan int, 1)
	go func() {
		i := 0
		defer func() { sent <- i }()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if err := sender.Send(client.Request{Op: "send", Room: "calm", Data: strconv.FormatInt(time.Now().UnixNano(), 10)}); err != nil {
				t.Errorf("send: %v", err)
				return
			}
			i++
		}
	}()
	var worst, got atomic.Int64
	go func() {
		for {
			_ = member.Conn().SetReadDeadline(time.Now().Add(10 * time.Second))
			ev, err := member.Recv()
			if err != nil {
				return
			}
			if ev.Op != "message" {
				continue
			}
			at, _ := strconv.ParseInt(data(ev), 10, 64)
			if lat := time.Now().UnixNano() - at; lat > worst.Load() {
				worst.Store(lat)
			}
			got.Add(1)
		}
	}()

	// The queue, as /metrics shows it, while the storm lasts.
	var peak atomic.Int64
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if q := int64(gaugeValue(t, n, "tether_accept_queue")); q > peak.Load() {
				peak.Store(q)
			}
		}
	}()

	start := time.Now()
	var welcomed, refused atomic.Int64
	var lastWelcome atomic.Int64
	var wg sync.WaitGroup
	for i := range storm {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			var c *client.Client
			var err error
			if i%2 == 0 {
				c, err = client.DialWebSocket(ctx, "ws://"+n.addr("ws")+"/ws")
			} else {
				var nc net.Conn
				if nc, err = (&net.Dialer{}).DialContext(ctx, "tcp", n.addr("tcp")); err == nil {
					c, err = client.Wrap(nc, client.TCPOptions{}, 15*time.Second)
				}
			}
			if err != nil {
				refused.Add(1)
				return
			}
			t.Cleanup(func() { c.Close() })
			welcomed.Add(1)
			for now := time.Since(start).Nanoseconds(); ; {
				last := lastWelcome.Load()
				if now <= last || lastWelcome.CompareAndSwap(last, now) {
					break
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-watching
	sentN := <-sent
	check.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		if g := got.Load(); g != int64(sentN) {
			return fmt.Errorf("the room's member got %d of %d messages", g, sentN)
		}
		return nil
	})

	w, r := welcomed.Load(), refused.Load()
	took := time.Duration(lastWelcome.Load())
	t.Logf("storm of %d: %d welcomed (the last after %s), %d refused; queue peak %d; the room's worst latency %s",
		storm, w, took.Round(time.Millisecond), r, peak.Load(), time.Duration(worst.Load()).Round(time.Millisecond))
	if w < queue || r == 0 || w+r != storm {
		t.Errorf("%d welcomed and %d refused of %d, want the queue's %d and more welcomed, some refused", w, r, storm, queue)
	}
	// The gate lets through at most a tenth of a second's worth at once,
	// then rate a second.
	if least := time.Duration(w-rate/10) * time.Second / rate; took < least {
		t.Errorf("%d welcomed within %s: faster than %d a second (%s at least)", w, took, rate, least)
	}
	rejects := counterValue(t, n, `tether_rejects_total{listener="tcp",why="accept_queue"}`) +
		counterValue(t, n, `tether_rejects_total{listener="ws",why="accept_queue"}`)
	if rejects != float64(r) {
		t.Errorf("accept_queue rejects %v, want the %d refused", rejects, r)
	}
	queued := counterValue(t, n, "tether_accept_queued_total")
	if queued < queue || counterValue(t, n, "tether_accept_queue_wait_seconds_count") != queued {
		t.Errorf("tether_accept_queued_total %v, want at least %d, and as many waits", queued, queue)
	}
	if peak.Load() == 0 {
		t.Error("tether_accept_queue never showed a socket waiting")
	}
	if lat := time.Duration(worst.Load()); lat > 2*time.Second {
		t.Errorf("a room message took %s during the storm", lat)
	}
}
