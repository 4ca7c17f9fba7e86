package relay_test

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"tether/actors/cluster"
	"tether/actors/conn"
	"tether/actors/relay"
	"tether/test/check"
	"tether/test/nodetest"
)

// These tests run a relay listener "game" as a node does, with the
// cluster bridge (which hands workers' answers and NATS's notices to the
// connections) and a nats-server in process (nodetest). The test plays the
// workers on NATS, and the clients over loopback TCP with pack('N')
// frames. Each test guards one promise of the package's doc.

// relayNode is a node whose TCP listener "game" runs relay.
type relayNode struct {
	*nodetest.Node
	addr             string
	unbound, dropped prometheus.Counter
}

func start(t *testing.T) *relayNode {
	t.Helper()
	n := nodetest.Start(t, nodetest.Options{})
	return &relayNode{
		Node: n, addr: n.Listen(t, "game", relay.New(n.Bus, n.Metrics, "game")),
		unbound: n.Metrics.RelayUnbound.WithLabelValues("game"), dropped: n.Metrics.RelayDropped.WithLabelValues("game"),
	}
}

// dial connects a client to the relay listener.
func (n *relayNode) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", n.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// send writes frames, each pack('N')ed, in one write.
func send(t *testing.T, c net.Conn, frames ...string) {
	t.Helper()
	var b []byte
	for _, f := range frames {
		b = append(binary.BigEndian.AppendUint32(b, uint32(len(f))), f...)
	}
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
}

// frame reads the next frame the node sends the client.
func frame(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var size uint32
	if err := binary.Read(c, binary.BigEndian, &size); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(c, body); err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// worker is a relay worker the test plays: it takes connects in the
// listener's queue group and answers with a subject of its own, where it
// takes the connections' further events; with a gate, it answers once the
// gate is closed. It records every event it gets, by connection:
// "connect", "message <frame>", "close <reason>".
type worker struct {
	subject string
	subs    []*nats.Subscription
	mu      sync.Mutex
	events  map[string][]string
}

func (n *relayNode) worker(t *testing.T, name string, gate chan struct{}) *worker {
	t.Helper()
	w := &worker{subject: "tether.worker." + name, events: map[string][]string{}}
	record := func(m *nats.Msg) {
		ev := m.Header.Get(cluster.HeaderEvent)
		switch ev {
		case relay.EventMessage:
			ev += " " + string(m.Data)
		case relay.EventClose:
			ev += " " + m.Header.Get(cluster.HeaderReason)
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		id := m.Header.Get(cluster.HeaderConn)
		w.events[id] = append(w.events[id], ev)
	}
	// Its own subject first: events come as soon as it answers a connect.
	own, err := n.Peer.Subscribe(w.subject, record)
	if err != nil {
		t.Fatal(err)
	}
	connects, err := n.Peer.QueueSubscribe("tether.events.game", "workers", func(m *nats.Msg) {
		record(m)
		if gate != nil {
			<-gate
		}
		r := nats.NewMsg(m.Reply)
		r.Header.Set(cluster.HeaderWorker, w.subject)
		_ = m.RespondMsg(r)
	})
	if err != nil {
		t.Fatal(err)
	}
	w.subs = []*nats.Subscription{own, connects}
	if err := n.Peer.Flush(); err != nil {
		t.Fatal(err)
	}
	return w
}

// stop ends the worker: NATS has none of its subscriptions once it
// returns.
func (w *worker) stop(t *testing.T, n *relayNode) {
	t.Helper()
	for _, s := range w.subs {
		if err := s.Unsubscribe(); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Peer.Flush(); err != nil {
		t.Fatal(err)
	}
}

// got returns the events the worker got, by connection.
func (w *worker) got() map[string][]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string][]string{}
	for id, evs := range w.events {
		out[id] = slices.Clone(evs)
	}
	return out
}

// waitFor waits until the worker got exactly want for some connection,
// and returns that connection's id.
func (w *worker) waitFor(t *testing.T, want ...string) string {
	t.Helper()
	var id string
	check.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		got := w.got()
		for c, evs := range got {
			if slices.Equal(evs, want) {
				id = c
				return nil
			}
		}
		return fmt.Errorf("the worker got %q; want %q for a connection", got, want)
	})
	return id
}

// TestEachConnectionsEventsGoToOneWorkerInOrder guards "one worker per
// connection, in order": with two workers in the queue group, every event
// of a connection (connect, each frame, close) reaches the worker that
// took its connect, in order, and no other.
func TestEachConnectionsEventsGoToOneWorkerInOrder(t *testing.T) {
	n := start(t)
	workers := []*worker{n.worker(t, "w1", nil), n.worker(t, "w2", nil)}
	const conns, frames = 8, 10
	for i := range conns {
		c := n.dial(t)
		for j := range frames {
			send(t, c, fmt.Sprintf("c%d-%d", i, j))
		}
		// A FIN: the node reads every frame, then closes client_closed.
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
	}
	closes := func() (n int) {
		for _, w := range workers {
			for _, evs := range w.got() {
				if slices.Contains(evs, "close client_closed") {
					n++
				}
			}
		}
		return n
	}
	check.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		if got := closes(); got < conns {
			return fmt.Errorf("%d of %d closes in", got, conns)
		}
		return nil
	})
	seen := map[string]bool{}
	for wi, w := range workers {
		for id, evs := range w.got() {
			for _, other := range workers[wi+1:] {
				if theirs := other.got()[id]; len(theirs) > 0 {
					t.Fatalf("connection %s: events at two workers: %q and %q", id, evs, theirs)
				}
			}
			client, _, _ := strings.Cut(strings.TrimPrefix(evs[min(1, len(evs)-1)], "message "), "-")
			want := []string{"connect"}
			for j := range frames {
				want = append(want, fmt.Sprintf("message %s-%d", client, j))
			}
			if want = append(want, "close client_closed"); !slices.Equal(evs, want) {
				t.Fatalf("connection %s: events %q, want %q", id, evs, want)
			}
			seen[client] = true
		}
	}
	if len(seen) != conns {
		t.Fatalf("events of %d clients, want %d", len(seen), conns)
	}
}

// TestFramesWaitForAWorker guards point 3: while no worker takes a
// connection, its frames wait (past relay.MaxWaitingFrames they are dropped and
// counted), the connect is counted unbound and offered again, and the
// worker that takes it gets the frames that waited, in order; a
// connection that closes without a worker drops its frames, counted, and
// sends no close.
func TestFramesWaitForAWorker(t *testing.T) {
	n := start(t)
	waiting := n.dial(t)
	var frames []string
	for j := range relay.MaxWaitingFrames + 3 {
		frames = append(frames, fmt.Sprintf("f%d", j))
	}
	send(t, waiting, frames...)
	gone := n.dial(t)
	send(t, gone, "g0", "g1")
	gone.Close()
	check.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		if u, d := nodetest.Count(n.unbound), nodetest.Count(n.dropped); u < 2 || d != 3+2 {
			return fmt.Errorf("%v connects unbound, %v frames dropped; want 2 or more, and 5", u, d)
		}
		return nil
	})

	w := n.worker(t, "w1", nil)
	want := []string{"connect"}
	for _, f := range frames[:relay.MaxWaitingFrames] {
		want = append(want, "message "+f)
	}
	id := w.waitFor(t, want...)
	send(t, waiting, "after")
	w.waitFor(t, append(want, "message after")...)
	if got := w.got(); len(got) != 1 {
		t.Fatalf("the worker got events of %d connections, want only %s's: %q", len(got), id, got)
	}
}

// TestAGoneWorkersConnectionIsOfferedAgain guards point 4: once a
// connection's worker has ended, NATS says so at the next event, which is
// counted dropped, and the connection is offered to the workers again; a
// notice about a worker the connection had before changes nothing.
func TestAGoneWorkersConnectionIsOfferedAgain(t *testing.T) {
	n := start(t)
	w1 := n.worker(t, "w1", nil)
	c := n.dial(t)
	send(t, c, "a")
	id := w1.waitFor(t, "connect", "message a")
	w1.stop(t, n)
	w2 := n.worker(t, "w2", nil)
	send(t, c, "b") // to w1, gone
	check.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		if d := nodetest.Count(n.dropped); d != 1 {
			return fmt.Errorf("%v events dropped, want 1", d)
		}
		return nil
	})
	send(t, c, "c")
	w2.waitFor(t, "connect", "message c")

	// NATS's no-responders status, late, about the first binding.
	stale := nats.NewMsg(fmt.Sprintf("tether.relay.%s.1", id))
	stale.Header.Set("Status", "503")
	if err := n.Peer.PublishMsg(stale); err != nil {
		t.Fatal(err)
	}
	check.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		if d := nodetest.Count(n.dropped); d != 2 {
			return fmt.Errorf("%v events dropped, want 2", d)
		}
		return nil
	})
	send(t, c, "d")
	w2.waitFor(t, "connect", "message c", "message d")
}

// TestAWorkersAnswersReachTheConnection guards the way back: a worker's
// deliver to the connection's node is sent to the client as one frame,
// one to a connection the node does not have is answered not_found, and
// a kick closes the connection, whose worker gets the close with the
// reason.
func TestAWorkersAnswersReachTheConnection(t *testing.T) {
	n := start(t)
	w := n.worker(t, "w1", nil)
	c := n.dial(t)
	id := w.waitFor(t, "connect")
	ask := func(kind, to string, body []byte) string {
		m := nats.NewMsg("tether.node.n")
		m.Header.Set(cluster.HeaderKind, kind)
		m.Header.Set(cluster.HeaderConn, to)
		m.Data = body
		r, err := n.Peer.RequestMsg(m, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return r.Header.Get(cluster.HeaderReason)
	}
	if reason := ask(cluster.KindDeliver, id, []byte("hello")); reason != "" {
		t.Fatalf("deliver: %s", reason)
	}
	if got := frame(t, c); got != "hello" {
		t.Fatalf("the client got %q, want hello", got)
	}
	if reason := ask(cluster.KindDeliver, "n.nobody", []byte("hello")); reason != "not_found" {
		t.Fatalf("deliver to n.nobody: %q, want not_found", reason)
	}
	if reason := ask(cluster.KindKick, id, nil); reason != "" {
		t.Fatalf("kick: %s", reason)
	}
	if r := n.Closed(t, id); r != conn.ReasonKicked {
		t.Fatalf("closed %s, want kicked", r)
	}
	w.waitFor(t, "connect", "close kicked")
}

// TestACloseWhileTheConnectIsOutReachesItsWorker guards Closed: a
// connection that closes before a worker has answered its connect owes
// the worker that does its frames and its close.
func TestACloseWhileTheConnectIsOutReachesItsWorker(t *testing.T) {
	n := start(t)
	gate := make(chan struct{})
	w := n.worker(t, "w1", gate)
	c := n.dial(t)
	id := w.waitFor(t, "connect")
	send(t, c, "f0", "f1")
	c.Close()
	if r := n.Closed(t, id); r != conn.ReasonClientClosed {
		t.Fatalf("closed %s, want client_closed", r)
	}
	close(gate)
	w.waitFor(t, "connect", "message f0", "message f1", "close client_closed")
}
