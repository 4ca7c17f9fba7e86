package test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"tether/client"
	"tether/config"
	"tether/test/check"
)

// startNATS runs a nats-server in the test process on port (-1: any).
func startNATS(t *testing.T, port int) *server.Server {
	t.Helper()
	return runNATS(t, &server.Options{Host: "127.0.0.1", Port: port, NoSigs: true, NoLog: true})
}

// startJetStreamNATS is startNATS with JetStream, its store in dir (a
// fresh one when empty; the same dir again keeps the streams).
func startJetStreamNATS(t *testing.T, port int, dir string) *server.Server {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	return runNATS(t, &server.Options{Host: "127.0.0.1", Port: port, NoSigs: true, NoLog: true, JetStream: true, StoreDir: dir})
}

func runNATS(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(ns.Shutdown)
	return ns
}

// clusterTiming makes node liveness quick enough for tests: heartbeats
// every 100ms, dead after 1s.
func clusterTiming(c *config.Config) {
	c.Cluster.HeartbeatInterval = config.Duration(100 * time.Millisecond)
	c.Cluster.DeadAfter = config.Duration(time.Second)
	c.NATS.ReconnectWait = config.Duration(100 * time.Millisecond)
}

// startCluster starts nodes on one NATS server, each with a TCP listener.
func startCluster(t *testing.T, natsURL string, names ...string) []*testNode {
	t.Helper()
	return startClusterWith(t, natsURL, nil, names...)
}

// startClusterWith is startCluster with every node's configuration
// changed by mutate too (nil: not).
func startClusterWith(t *testing.T, natsURL string, mutate func(*config.Config), names ...string) []*testNode {
	t.Helper()
	var nodes []*testNode
	for _, name := range names {
		nodes = append(nodes, startNode(t, func(c *config.Config) {
			c.Node.Name = name
			c.NATS.URL = natsURL
			clusterTiming(c)
			if mutate != nil {
				mutate(c)
			}
		}))
	}
	// Every node has heard every other before the test starts.
	check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		for _, n := range nodes {
			if got := gaugeValue(t, n, "tether_cluster_nodes_alive"); int(got) != len(nodes)-1 {
				return fmt.Errorf("%s sees %v other nodes", n.ID(), got)
			}
		}
		return nil
	})
	return nodes
}

// natsIn is how many messages of a kind a node received from NATS.
func natsIn(t *testing.T, n *testNode, kind string) float64 {
	return counterValue(t, n, fmt.Sprintf(`tether_nats_received_total{kind=%q}`, kind))
}

// TestWhisperAcrossNodes: a client on A whispers to a client on C by
// connection id. The message crosses NATS once, to C only.
func TestWhisperAcrossNodes(t *testing.T) {
	ns := startNATS(t, -1)
	nodes := startCluster(t, ns.ClientURL(), "a", "b", "c")
	a, b, c := nodes[0], nodes[1], nodes[2]
	ca, cc := a.dial(t, "tcp"), c.dial(t, "tcp")
	join(t, ca, "x", "ann") // gives the whisper a name

	if _, err := ca.Call(client.Request{Op: "whisper", To: cc.ID(), Data: "psst"}); err != nil {
		t.Fatalf("whisper across nodes: %v", err)
	}
	ev, err := cc.Expect("message", 5*time.Second)
	if err != nil || ev.From != ca.ID() || ev.Name != "ann" || string(ev.Data) != `"psst"` || ev.Room != "" {
		t.Fatalf("got %+v %v", ev, err)
	}
	if got := natsIn(t, c, "deliver"); got != 1 {
		t.Errorf("node c received %v deliveries, want 1", got)
	}
	if got := natsIn(t, b, "deliver") + natsIn(t, a, "deliver"); got != 0 {
		t.Errorf("nodes a and b received %v deliveries, want 0", got)
	}

	for _, to := range []string{c.ID() + ".999999", "nosuchnode-xyz.1"} {
		if ev, err := ca.Call(client.Request{Op: "whisper", To: to, Data: 1}); err == nil || ev.Code != "not_found" {
			t.Errorf("whisper to %s: %+v %v, want not_found", to, ev, err)
		}
	}
}

// TestRoomAcrossThreeNodes: members spread over three nodes; members lists
// them all from any node; every member gets every message exactly once,
// in each sender's order.
func TestRoomAcrossThreeNodes(t *testing.T) {
	const perSender = 30
	ns := startNATS(t, -1)
	nodes := startCluster(t, ns.ClientURL(), "a", "b", "c")
	var members []*client.Client
	for i, n := range nodes {
		for j := range 2 {
			c := n.dial(t, "tcp")
			join(t, c, "hall", fmt.Sprintf("m%d%d", i, j))
			members = append(members, c)
		}
	}
	for _, n := range nodes {
		c := members[0]
		if n != nodes[0] {
			c = n.dial(t, "tcp")
		}
		check.For(t, 5*time.Second, 50*time.Millisecond, func() error {
			ev, err := c.Call(client.Request{Op: "members", Room: "hall"})
			if err != nil {
				return err
			}
			if len(ev.Members) != len(members) {
				return fmt.Errorf("members from %s lists %d of %d", n.ID(), len(ev.Members), len(members))
			}
			return nil
		})
	}

	// One sender per node (the first member of each), all at once.
	senders := []*client.Client{members[0], members[2], members[4]}
	for _, s := range senders {
		go func() {
			for i := range perSender {
				_ = s.Send(client.Request{Op: "send", Room: "hall", Data: map[string]any{"s": s.ID(), "i": i}, Echo: true})
			}
		}()
	}
	for _, m := range members {
		next := map[string]int{} // sender → next index expected
		_ = m.Conn().SetReadDeadline(time.Now().Add(15 * time.Second))
		for got := 0; got < len(senders)*perSender; {
			ev, err := m.Recv()
			if err != nil {
				t.Fatalf("%s after %d messages: %v", m.ID(), got, err)
			}
			if ev.Op != "message" {
				continue
			}
			var d struct {
				S string `json:"s"`
				I int    `json:"i"`
			}
			if err := json.Unmarshal(ev.Data, &d); err != nil {
				t.Fatal(err)
			}
			if d.S != ev.From || d.I != next[d.S] {
				t.Fatalf("%s got %s #%d, want #%d: out of order or twice", m.ID(), d.S, d.I, next[d.S])
			}
			next[d.S]++
			got++
		}
		// Nothing more: a ping answered next proves no duplicate follows.
		_ = m.Conn().SetReadDeadline(time.Time{})
		if ev, err := m.Call(client.Request{Op: "ping"}); err != nil || ev.Op != "pong" {
			t.Fatalf("%s: %+v %v", m.ID(), ev, err)
		}
		if pending := m.Pending(); len(pending) != 0 {
			t.Fatalf("%s got more after all messages: %+v", m.ID(), pending[0])
		}
	}
}

// TestNodeDeathRemovesItsMembers: node b runs as a process of its own and
// is killed without a goodbye. Members on a and c get one left (node_down)
// for each of b's members within dead_after, and members no longer lists
// them: no ghosts.
func TestNodeDeathRemovesItsMembers(t *testing.T) {
	ns := startNATS(t, -1)
	nodes := startCluster(t, ns.ClientURL(), "a", "c")
	a, c := nodes[0], nodes[1]
	ma, mc := a.dial(t, "tcp"), c.dial(t, "tcp")
	join(t, ma, "room", "ma")
	join(t, mc, "room", "mc")

	b := startClusterProcess(t, "b", ns.ClientURL(), "")
	var onB []*client.Client
	for i := range 2 {
		cb := dialRetry(t, b.tcpAddr)
		join(t, cb, "room", fmt.Sprintf("mb%d", i))
		onB = append(onB, cb)
	}
	// b joined late; its room synced: every node, b too, lists all four.
	for _, m := range []*client.Client{ma, mc, onB[0]} {
		check.For(t, 5*time.Second, 50*time.Millisecond, func() error {
			ev, err := m.Call(client.Request{Op: "members", Room: "room"})
			if err != nil || len(ev.Members) != 4 {
				return fmt.Errorf("members: %+v %v", ev, err)
			}
			return nil
		})
	}

	killed := time.Now()
	b.kill()
	for _, m := range []*client.Client{ma, mc} {
		gone := map[string]bool{}
		for len(gone) < len(onB) {
			ev, err := m.Expect("left", 5*time.Second)
			if err != nil {
				t.Fatalf("%s: %v", m.ID(), err)
			}
			if ev.Reason != "node_down" || gone[ev.Conn] {
				t.Fatalf("%s: left %+v (seen %v)", m.ID(), ev, gone)
			}
			gone[ev.Conn] = true
		}
		// dead_after, plus a heartbeat check's period, plus slack for a
		// loaded machine.
		if after := time.Since(killed); after > time.Second+200*time.Millisecond+time.Second {
			t.Errorf("node_down after %s, dead_after is 1s", after)
		}
		for _, cb := range onB {
			if !gone[cb.ID()] {
				t.Errorf("%s got no left for %s", m.ID(), cb.ID())
			}
		}
		ev, err := m.Call(client.Request{Op: "members", Room: "room"})
		if err != nil || len(ev.Members) != 2 {
			t.Errorf("members after b died: %+v %v", ev, err)
		}
	}
}

// TestNATSRestart: the NATS server restarts under running nodes while a
// member of node a keeps sending. Local delivery goes on meanwhile; within
// seconds cross-node messages flow again, and the gap is logged. A member
// of node b gets every message exactly once, in order, or is told of the
// ones lost (gap): nothing is silent, nothing doubled. A member that joins
// on b during the outage gets no message sent before its join, however
// late NATS hands it over (a buffered it meanwhile).
func TestNATSRestart(t *testing.T) {
	port := freePort(t)
	ns := startNATS(t, port)
	url := ns.ClientURL()
	nodes := startCluster(t, url, "a", "b")
	a, b := nodes[0], nodes[1]
	a1, a2, b1 := a.dial(t, "tcp"), a.dial(t, "tcp"), b.dial(t, "tcp")
	for _, c := range []*client.Client{a1, a2, b1} {
		join(t, c, "r", c.ID())
	}
	check.For(t, 5*time.Second, 50*time.Millisecond, func() error {
		ev, err := a1.Call(client.Request{Op: "members", Room: "r"})
		if err != nil || len(ev.Members) != 3 {
			return fmt.Errorf("members %+v %v", ev, err)
		}
		return nil
	})
	sent := 0
	send := func(n int) {
		for range n {
			say(t, a1, "r", fmt.Sprintf("m%04d", sent))
			sent++
		}
	}
	send(20)

	ns.Shutdown()
	ns.WaitForShutdown()
	check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		if gaugeValue(t, a, "tether_nats_disconnects_total") < 1 || gaugeValue(t, b, "tether_nats_disconnects_total") < 1 {
			return errors.New("a node has not noticed")
		}
		return nil
	})
	send(30) // local delivery does not need NATS; a buffers them for b
	// Whether b1 still exists cannot be known now: unavailable, not
	// not_found.
	if ev, err := a1.Call(client.Request{Op: "whisper", To: b1.ID(), Data: 1}); err == nil || ev.Code != "unavailable" {
		t.Errorf("whisper during the outage: %+v %v, want unavailable", ev, err)
	}
	// Once a2 has the last of them, a's room has sent them all (an ok
	// only says that the room took the send): b2 joins after that.
	for {
		ev, err := a2.Expect("message", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if string(ev.Data) == fmt.Sprintf(`"m%04d"`, sent-1) {
			break
		}
	}
	b2 := b.dial(t, "tcp")
	join(t, b2, "r", "b2")
	joinedAt := sent // every message before this one was sent before b2 joined
	send(30)

	startNATS(t, port)
	// Within seconds, a's messages reach b again.
	got := []int{}
	gaps := 0
	recv := func(c *client.Client, timeout time.Duration) (int, error) {
		_ = c.Conn().SetReadDeadline(time.Now().Add(timeout))
		defer c.Conn().SetReadDeadline(time.Time{})
		for {
			ev, err := c.Recv()
			if err != nil {
				return 0, err
			}
			switch ev.Op {
			case "gap":
				if c == b1 {
					gaps++
				}
			case "message":
				var n int
				if _, err := fmt.Sscanf(strings.Trim(string(ev.Data), `"`), "m%d", &n); err == nil {
					return n, nil
				}
			}
		}
	}
	check.For(t, 15*time.Second, 10*time.Millisecond, func() error {
		send(1)
		for {
			n, err := recv(b1, 100*time.Millisecond)
			if err != nil {
				return fmt.Errorf("b1 has not got a message since the restart: %v", err)
			}
			got = append(got, n)
			if n == sent-1 {
				return nil
			}
		}
	})
	send(20)
	for got[len(got)-1] != sent-1 {
		n, err := recv(b1, 5*time.Second)
		if err != nil {
			t.Fatalf("b1 after message %d: %v", got[len(got)-1], err)
		}
		got = append(got, n)
	}
	// b1: in order, once each; what is missing, b1 was told of.
	missing := 0
	for i, n := range got {
		if i > 0 && n <= got[i-1] {
			t.Fatalf("b1 got m%04d after m%04d: out of order or twice", n, got[i-1])
		}
		if i > 0 {
			missing += n - got[i-1] - 1
		}
	}
	if missing > 0 && gaps == 0 {
		t.Errorf("b1 missed %d messages and was not told (no gap)", missing)
	}
	t.Logf("b1 got %d of %d messages; %d missing, %d gaps told: %v", len(got), sent, missing, gaps, got)
	// b2: nothing sent before it joined.
	for {
		n, err := recv(b2, time.Second)
		if err != nil {
			t.Fatalf("b2: %v", err)
		}
		if n < joinedAt {
			t.Fatalf("b2 joined during the outage and got m%04d, sent before its join (m%04d on)", n, joinedAt)
		}
		if n == sent-1 {
			break
		}
	}
	check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		lines := a.logLines(`"nats outage over`)
		if len(lines) == 0 || !strings.Contains(lines[0], `"gap":`) || !strings.Contains(lines[0], `"buffered":`) {
			return fmt.Errorf("the gap is not logged: %v", lines)
		}
		return nil
	})
}

// TestRelayWorkersQueueGroup: a relay listener's connections are shared
// by the two example workers of one queue group, each connection kept by
// one of them: every answer to a client comes from one worker, in the
// order of the client's messages, exactly once.
func TestRelayWorkersQueueGroup(t *testing.T) {
	ns := startNATS(t, -1)
	n := startRelayNode(t, ns.ClientURL())
	worker := buildExample(t, "relayworker")
	for _, name := range []string{"w1", "w2"} {
		startProcess(t, worker, "-nats", ns.ClientURL(), "-listener", "game", "-name", name)
	}

	// Enough clients that both workers get some: the queue group picks
	// one at random for each connect.
	const perClient = 10
	clients := make([]net.Conn, 20)
	for i := range clients {
		c, err := net.Dial("tcp", n.addr("game"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients[i] = c
	}
	for i, c := range clients {
		for j := range perClient {
			if _, err := c.Write(packN(fmt.Sprintf("c%d-%d", i, j))); err != nil {
				t.Fatal(err)
			}
		}
	}
	byWorker := map[string]int{} // clients by worker
	for i, c := range clients {
		var first string
		for j := range perClient {
			answer, err := readPackN(c, 10*time.Second)
			if err != nil {
				t.Fatalf("client %d after %d answers: %v", i, j, err)
			}
			worker, msg, _ := strings.Cut(answer, ": ")
			if j == 0 {
				first = worker
				byWorker[worker]++
			}
			if worker != first || msg != fmt.Sprintf("c%d-%d", i, j) {
				t.Fatalf("client %d's answer %d is %q, want %q", i, j, answer, fmt.Sprintf("%s: c%d-%d", first, i, j))
			}
		}
	}
	// No second answer to any message: the next reads time out.
	deadline := time.Now().Add(300 * time.Millisecond)
	for i, c := range clients {
		if extra, err := readPackN(c, time.Until(deadline)); err == nil {
			t.Fatalf("client %d got an extra answer %q", i, extra)
		}
	}
	if len(byWorker) != 2 || byWorker["w1"] == 0 || byWorker["w2"] == 0 {
		t.Errorf("clients by worker: %v", byWorker)
	}
}
