package test

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"tether/actors/cluster"
	"tether/actors/conn"
	"tether/actors/relay"
	"tether/config"
	"tether/test/check"
)

// startRelayNode starts a node whose TCP listener "game" runs relay on the
// NATS server at url.
func startRelayNode(t *testing.T, url string) *testNode {
	t.Helper()
	return startNode(t, func(c *config.Config) {
		c.NATS.URL = url
		c.Listeners[0].App = config.AppRelay
		c.Listeners[0].Name = "game"
	})
}

// workerEvent is one line of `relayworker -v`: event, connection, and the
// frame, remote address or reason, quoted.
var workerEvent = regexp.MustCompile(`(?m)(connect|message|close) (\S+) ("(?:[^"\\]|\\.)*")$`)

// workerEvents reads the events a relayworker logged with -v, by
// connection: "connect", "message <frame>", "close <reason>".
func workerEvents(t *testing.T, logs *syncBuffer) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, m := range workerEvent.FindAllStringSubmatch(logs.String(), -1) {
		detail, err := strconv.Unquote(m[3])
		if err != nil {
			t.Fatalf("worker log line %q: %v", m[0], err)
		}
		ev := m[1]
		if ev != "connect" {
			ev += " " + detail
		}
		out[m[2]] = append(out[m[2]], ev)
	}
	return out
}

// TestRelayEventsOfAConnectionReachOneWorkerInOrder: many short-lived
// relay connections, each sending a numbered sequence of frames and
// closing, over three example workers. Every event of one connection
// (connect, each message in order, close) is handled by one worker, in
// that order, as GatewayWorker keeps a client on one worker.
func TestRelayEventsOfAConnectionReachOneWorkerInOrder(t *testing.T) {
	ns := startNATS(t, -1)
	n := startRelayNode(t, ns.ClientURL())
	bin := buildExample(t, "relayworker")
	workers := map[string]*syncBuffer{}
	for _, name := range []string{"w1", "w2", "w3"} {
		_, workers[name] = startProcess(t, bin, "-nats", ns.ClientURL(), "-listener", "game", "-name", name, "-v")
	}

	const conns, frames = 30, 20
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			c, err := net.Dial("tcp", n.addr("game"))
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			for j := range frames {
				if _, err := c.Write(packN(fmt.Sprintf("c%d-%d", i, j))); err != nil {
					t.Error(err)
					return
				}
			}
			// A FIN, not a reset: the node reads every frame, then
			// closes (client_closed). The answers are read away until it
			// does, so that closing never resets.
			_ = c.(*net.TCPConn).CloseWrite()
			if _, err := waitClosed(c, 10*time.Second); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()

	// Each connection's events, by worker, once every close is in.
	var byWorker map[string]map[string][]string
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		byWorker = map[string]map[string][]string{}
		closed := 0
		for name, logs := range workers {
			byWorker[name] = workerEvents(t, logs)
			for _, evs := range byWorker[name] {
				for _, ev := range evs {
					if strings.HasPrefix(ev, "close ") {
						closed++
					}
				}
			}
		}
		if closed < conns {
			return fmt.Errorf("%d of %d closes handled", closed, conns)
		}
		return nil
	})

	seen := map[string]bool{} // the frames' client numbers, c0 to c29
	for name, events := range byWorker {
		for id, evs := range events {
			for other, theirs := range byWorker {
				if other != name && len(theirs[id]) > 0 {
					t.Fatalf("connection %s: events at %s %q and at %s %q", id, name, evs, other, theirs[id])
				}
			}
			tag := "" // the frames name their client: c<i>-<j>
			if len(evs) > 1 {
				tag, _, _ = strings.Cut(strings.TrimPrefix(evs[1], "message "), "-")
			}
			want := []string{"connect"}
			for j := range frames {
				want = append(want, fmt.Sprintf("message %s-%d", tag, j))
			}
			want = append(want, "close client_closed")
			if !slices.Equal(evs, want) {
				t.Fatalf("connection %s at %s: events %q, want %q", id, name, evs, want)
			}
			seen[tag] = true
		}
	}
	if len(seen) != conns {
		t.Errorf("%d connections' events seen, want %d", len(seen), conns)
	}
}

// TestRelayFramesWaitForAWorker: with no worker, a relay connection's
// frames wait (the first MaxWaitingFrames; the rest are dropped), and the
// node says so in its log and metrics; once a worker starts, it takes the
// connection and gets the frames that waited, in order.
func TestRelayFramesWaitForAWorker(t *testing.T) {
	ns := startNATS(t, -1)
	n := startRelayNode(t, ns.ClientURL())
	c, err := net.Dial("tcp", n.addr("game"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const extra = 6
	for j := range relay.MaxWaitingFrames + extra {
		if _, err := c.Write(packN(fmt.Sprintf("f%d", j))); err != nil {
			t.Fatal(err)
		}
	}
	check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		unbound := counterValue(t, n, `tether_relay_unbound_total{listener="game"}`)
		dropped := counterValue(t, n, `tether_relay_dropped_total{listener="game"}`)
		if unbound == 0 || dropped != extra {
			return fmt.Errorf("unbound %v, dropped %v; want some, and %d", unbound, dropped, extra)
		}
		return nil
	})
	if len(n.logLines(`"level":"warn"`, "no relay worker took the connection")) != 1 ||
		len(n.logLines(`"level":"warn"`, "relay frames dropped")) != 1 {
		t.Errorf("want one warning of each: no worker, frames dropped")
	}

	startProcess(t, buildExample(t, "relayworker"), "-nats", ns.ClientURL(), "-listener", "game", "-name", "w1")
	for j := range relay.MaxWaitingFrames {
		answer, err := readPackN(c, 10*time.Second)
		if want := fmt.Sprintf("w1: f%d", j); answer != want || err != nil {
			t.Fatalf("answer %d: %q %v, want %q", j, answer, err, want)
		}
	}
	if _, err := c.Write(packN("after")); err != nil {
		t.Fatal(err)
	}
	if answer, err := readPackN(c, 5*time.Second); answer != "w1: after" || err != nil {
		t.Fatalf("answer to a frame sent once bound: %q %v", answer, err)
	}
	if len(n.logLines("relay connection has a worker")) != 1 {
		t.Errorf("the worker's arrival is not logged")
	}
}

// TestRelayConnectionMovesWhenItsWorkerGoes: when a connection's worker
// is killed, NATS tells the node at the next event, and the node offers
// the connection to the other worker, which gets its next frames.
func TestRelayConnectionMovesWhenItsWorkerGoes(t *testing.T) {
	ns := startNATS(t, -1)
	n := startRelayNode(t, ns.ClientURL())
	bin := buildExample(t, "relayworker")
	w1, _ := startProcess(t, bin, "-nats", ns.ClientURL(), "-listener", "game", "-name", "w1")
	c, err := net.Dial("tcp", n.addr("game"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(packN("a")); err != nil {
		t.Fatal(err)
	}
	if answer, err := readPackN(c, 5*time.Second); answer != "w1: a" || err != nil {
		t.Fatalf("first answer: %q %v", answer, err)
	}

	startProcess(t, bin, "-nats", ns.ClientURL(), "-listener", "game", "-name", "w2")
	if err := w1.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	// Frames sent before the node notices are lost; then w2 answers.
	i := 0
	check.For(t, 10*time.Second, 0, func() error {
		i++
		if _, err := c.Write(packN(fmt.Sprintf("b%d", i))); err != nil {
			t.Fatal(err)
		}
		answer, err := readPackN(c, 200*time.Millisecond)
		if err != nil {
			return err
		}
		if worker, _, _ := strings.Cut(answer, ": "); worker != "w2" {
			t.Fatalf("answer %q after w1 was killed", answer)
		}
		return nil
	})
	if counterValue(t, n, `tether_relay_dropped_total{listener="game"}`) == 0 {
		t.Errorf("no event counted lost to the dead worker")
	}
	if len(n.logLines(`"level":"warn"`, "relay worker gone")) != 1 {
		t.Errorf("want one warning: relay worker gone")
	}
}

// TestRelayCloseWhileTheConnectIsOut: a connection that closes before a
// worker answers its connect still owes that worker its frames and its
// close. The test is the worker here, and answers only once the
// connection has closed.
func TestRelayCloseWhileTheConnectIsOut(t *testing.T) {
	ns := startNATS(t, -1)
	n := startRelayNode(t, ns.ClientURL())
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	const own = "tether.worker.test"
	events, err := nc.SubscribeSync(own)
	if err != nil {
		t.Fatal(err)
	}
	connects, err := nc.QueueSubscribeSync("tether.events.game", "workers")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	c, err := net.Dial("tcp", n.addr("game"))
	if err != nil {
		t.Fatal(err)
	}
	connect, err := connects.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	id := connect.Header.Get(cluster.HeaderConn)
	if _, err := c.Write(append(packN("f0"), packN("f1")...)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if reason := n.closeReason(t, id, 5*time.Second); reason != conn.ReasonClientClosed {
		t.Fatalf("closed with %s", reason)
	}
	answer := nats.NewMsg(connect.Reply)
	answer.Header.Set(cluster.HeaderWorker, own)
	if err := connect.RespondMsg(answer); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"message f0", "message f1", "close client_closed"} {
		m, err := events.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("waiting for %s: %v", want, err)
		}
		got := m.Header.Get(cluster.HeaderEvent) + " " + string(m.Data) + m.Header.Get(cluster.HeaderReason)
		if got != want || m.Header.Get(cluster.HeaderConn) != id {
			t.Fatalf("event %q of %s, want %q of %s", got, m.Header.Get(cluster.HeaderConn), want, id)
		}
	}
}

// TestRelayWithoutAWorkerIsNotSilent: clients of a relay listener with no
// worker that connect, send and close at once (echo hi | nc) lose their
// frames. That is counted (tether_relay_dropped_total) and logged,
// though at most once a relay.WarnEvery for the listener: twenty such
// clients make one warning, not twenty (and before, none).
func TestRelayWithoutAWorkerIsNotSilent(t *testing.T) {
	ns := startNATS(t, -1)
	n := startRelayNode(t, ns.ClientURL())
	const clients = 20
	for i := range clients {
		c, err := net.Dial("tcp", n.addr("game"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(append(packN(fmt.Sprintf("c%d-a", i)), packN(fmt.Sprintf("c%d-b", i))...)); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := counterValue(t, n, `tether_relay_dropped_total{listener="game"}`); got != 2*clients {
			return fmt.Errorf("dropped %v, want %d", got, 2*clients)
		}
		return nil
	})
	lines := n.logLines(`"level":"warn"`, "relay connection closed before a worker took it: its frames are dropped")
	if len(lines) != 1 || !strings.Contains(lines[0], `"frames":2`) || !strings.Contains(lines[0], `"reason":"client_closed"`) {
		t.Errorf("want one warning with frames 2 and the reason, got:\n%s", strings.Join(lines, "\n"))
	}
	if got := len(n.logLines(`"level":"warn"`, "no relay worker took the connection")); got > 1 {
		t.Errorf("%d warnings of connections without a worker within %s", got, relay.WarnEvery)
	}
}
