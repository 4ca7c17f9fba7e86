package test

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tether/actors/conn"
	"tether/actors/node"
	"tether/client"
	"tether/config"
	"tether/test/check"
)

// rawMembers joins n raw TCP clients to room on addr and keeps reading
// (and discarding) what they are sent, so that they never push back.
// They count the messages whose data has the prefix want.
func rawMembers(t *testing.T, addr, room string, n int, want string) *atomic.Int64 {
	t.Helper()
	var got atomic.Int64
	var joined sync.WaitGroup
	for i := range n {
		c, _ := dialRaw(t, addr)
		if _, err := c.Write(packN(fmt.Sprintf(`{"op":"join","room":%q,"name":"m%d","id":1}`, room, i))); err != nil {
			t.Fatal(err)
		}
		joined.Add(1)
		go func() {
			ok := false
			for {
				msg, err := readPackN(c, time.Minute)
				if err != nil {
					if !ok {
						joined.Done()
					}
					return
				}
				if !ok && msg == `{"op":"ok","id":1}` {
					ok = true
					joined.Done()
				}
				if want != "" && strings.Contains(msg, `"data":"`+want) {
					got.Add(1)
				}
			}
		}()
	}
	joined.Wait()
	return &got
}

// TestDepartureNeverOvertakesAcceptedMessages: a sender in a busy room
// sends 50 messages, each answered ok, and disconnects at once: every
// other member still gets all 50. The room learned of the departure
// (Terminated, a system message) before the sends still queued in its
// mailbox, and dropped them as a straggler's.
func TestDepartureNeverOvertakesAcceptedMessages(t *testing.T) {
	n := startNode(t, nil)
	const members, messages = 2000, 50
	got := rawMembers(t, n.addr("tcp"), "busy", members, "last-words")
	watcher := n.dial(t, "tcp")
	join(t, watcher, "busy", "watcher")
	for round := range 3 {
		sender := n.dial(t, "tcp")
		join(t, sender, "busy", "sender")
		var batch []byte
		for i := range messages {
			batch = append(batch, packN(fmt.Sprintf(`{"op":"send","room":"busy","data":"last-words-%d-%d","id":%d}`, round, i, i))...)
		}
		if _, err := sender.Conn().Write(batch); err != nil {
			t.Fatal(err)
		}
		for range messages {
			if ev, err := sender.Expect("ok", 10*time.Second); err != nil {
				t.Fatalf("ok: %+v %v", ev, err)
			}
		}
		sender.Close()
		for i := range messages {
			ev, err := watcher.Expect("message", 10*time.Second)
			if err != nil {
				t.Fatalf("round %d: the watcher got %d of %d messages of a sender that left: %v", round, i, messages, err)
			}
			if want := fmt.Sprintf(`"last-words-%d-%d"`, round, i); string(ev.Data) != want {
				t.Fatalf("round %d: message %d is %s, want %s", round, i, ev.Data, want)
			}
		}
	}
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if g := got.Load(); g != 3*members*messages {
			return fmt.Errorf("members got %d of %d", g, 3*members*messages)
		}
		return nil
	})
}

// TestSendFloodIsBounded: a client flooding send into a 2,000-member room
// gets busy once the room's backlog is full; the node's memory stays
// bounded meanwhile, and another sender's messages keep flowing to the
// members.
func TestSendFloodIsBounded(t *testing.T) {
	n := startNode(t, nil)
	const members = 2000
	got := rawMembers(t, n.addr("tcp"), "flood", members, "calm")
	flooder := n.dial(t, "tcp")
	join(t, flooder, "flood", "flooder")
	calm := n.dial(t, "tcp")
	join(t, calm, "flood", "calm")
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	stop := make(chan struct{})
	busy := make(chan int, 1)
	go func() { // the flooder's answers
		b := 0
		for {
			ev, err := flooder.Recv()
			if err != nil {
				busy <- b
				return
			}
			if ev.Op == "error" && ev.Code == "busy" {
				b++
			}
		}
	}()
	var peak atomic.Uint64
	go func() {
		pad := strings.Repeat("f", 200)
		burst := []byte{}
		for range 100 {
			burst = append(burst, packN(`{"op":"send","room":"flood","data":"`+pad+`","id":1}`)...)
		}
		for {
			select {
			case <-stop:
				flooder.Close()
				return
			default:
			}
			if _, err := flooder.Conn().Write(burst); err != nil {
				return
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
		}
	}()
	const calmMessages = 20
	for i := range calmMessages {
		say(t, calm, "flood", fmt.Sprintf("calm-%d", i))
		time.Sleep(50 * time.Millisecond)
	}
	check.For(t, 30*time.Second, 50*time.Millisecond, func() error {
		if g := got.Load(); g != members*calmMessages {
			return fmt.Errorf("the members got %d of the calm sender's %d messages", g, members*calmMessages)
		}
		return nil
	})
	close(stop)
	if b := <-busy; b == 0 {
		t.Error("the flooder never got busy")
	}
	// The test process holds the node and its 2,000 clients: its heap is
	// the bound's witness. 2,000 members' queues (1 MiB each at most)
	// could hold 2 GB; the room's backlog keeps it far below.
	if grew := int64(peak.Load()) - int64(before.HeapInuse); grew > 256<<20 {
		t.Errorf("heap grew by %d MiB during the flood", grew>>20)
	}
}

// slowApp wraps an application so that a frame "slow" takes 1.5s.
type slowApp struct{ conn.App }

func (s slowApp) Frame(c *conn.Actor, data []byte) {
	if string(data) == "slow" {
		time.Sleep(1500 * time.Millisecond)
		return
	}
	s.App.Frame(c, data)
}

// TestLivenessCountsWhatTheSocketReceived: a client whose ping arrived
// while its connection was busy is alive, even if the idle check runs
// before the ping is handled: liveness is the time the socket received
// bytes, not the time the actor got around to them.
func TestLivenessCountsWhatTheSocketReceived(t *testing.T) {
	n := startNode(t, func(c *config.Config) {
		c.Listeners[0].Heartbeat.IdleTimeout = config.Duration(time.Second)
		c.Listeners[0].Heartbeat.CheckInterval = 0
	}, func(o *node.Options) {
		o.WrapApp = func(_ string, next conn.NewApp) conn.NewApp {
			return func(c *conn.Actor) conn.App { return slowApp{next(c)} }
		}
	})
	c := n.dial(t, "tcp")
	if err := c.SendRaw([]byte("slow")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the client's heartbeat, well within idle_timeout
	if err := c.Send(client.Request{Op: "ping", ID: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Expect("pong", 5*time.Second); err != nil {
		info, _ := n.ConnInfo(c.ID())
		t.Fatalf("a client that pinged 0.3s after its last message was closed: %v (reason %s)", err, info.Reason)
	}
}
