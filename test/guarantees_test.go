package test

import (
	"encoding/json"
	"fmt"
	"syscall"
	"testing"
	"time"

	"tether/actors/chat"
	"tether/client"
	"tether/config"
	"tether/test/check"
)

// TestWhispersKeepTheirOrder: whispers from one client to a client of
// another node arrive in the order they were sent, however many are in
// flight at once. Each used to cross on a goroutine of its own, so two
// could overtake each other.
func TestWhispersKeepTheirOrder(t *testing.T) {
	ns := startNATS(t, -1)
	nodes := startCluster(t, ns.ClientURL(), "a", "b")
	ca, cb := nodes[0].dial(t, "tcp"), nodes[1].dial(t, "tcp")
	const rounds = 40
	for r := range rounds {
		for i := range chat.MaxInFlight { // as many in flight as a client may have
			if err := ca.Send(client.Request{Op: "whisper", ID: int64(1 + i), To: cb.ID(), Data: r*chat.MaxInFlight + i}); err != nil {
				t.Fatal(err)
			}
		}
		for range chat.MaxInFlight {
			if ev, err := ca.Expect("ok", 5*time.Second); err != nil {
				t.Fatalf("round %d: %+v %v", r, ev, err)
			}
		}
	}
	for want := range rounds * chat.MaxInFlight {
		ev, err := cb.Expect("message", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var got int
		_ = json.Unmarshal(ev.Data, &got)
		if got != want {
			t.Fatalf("whisper %d arrived where %d was due", got, want)
		}
	}
}

// TestNodeThoughtDeadTillItSyncs: a node paused longer than dead_after is
// declared dead, and its members leave everywhere (node_down). When it
// comes back, its members' messages reach the others' members only once
// they have joined again there: never a message from a member its
// receiver was told had left.
func TestNodeThoughtDeadTillItSyncs(t *testing.T) {
	ns := startNATS(t, -1)
	b := startNode(t, func(c *config.Config) {
		c.Node.Name = "b"
		c.NATS.URL = ns.ClientURL()
		clusterTiming(c)
	})
	a := startClusterProcess(t, "a", ns.ClientURL(), "")
	am := dialRetry(t, a.tcpAddr)
	bm := b.dial(t, "tcp")
	join(t, am, "r", "am")
	join(t, bm, "r", "bm")
	// b knows am once am's messages reach bm. (A joined event for am
	// comes only if b learns of am after bm's join: the joins race.)
	check.For(t, 5*time.Second, 0, func() error {
		say(t, am, "r", "hello")
		ev, err := bm.Expect("message", 200*time.Millisecond)
		if err != nil || ev.From != am.ID() {
			return fmt.Errorf("bm hears nothing from am: %+v %v", ev, err)
		}
		return nil
	})

	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if ev, err := bm.Expect("left", 5*time.Second); err != nil || ev.Conn != am.ID() || ev.Reason != "node_down" {
		t.Fatalf("bm: %+v %v, want am left node_down", ev, err)
	}
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// At once, before a has synced the room again.
	say(t, am, "r", "right after the pause")
	// bm gets am's joined before any message of am's.
	for {
		ev, err := bm.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Op == "message" && ev.From == am.ID() {
			t.Fatalf("bm got %s from am, who it was told had left, before am joined again", ev.Data)
		}
		if ev.Op == "joined" && ev.Conn == am.ID() {
			break
		}
	}
	// Then am's messages flow (the first one too, if it came after).
	say(t, am, "r", "once synced")
	for {
		ev, err := bm.Expect("message", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if string(ev.Data) == `"once synced"` {
			break
		}
		if string(ev.Data) != `"right after the pause"` {
			t.Fatalf("bm got %s", ev.Data)
		}
	}
}
