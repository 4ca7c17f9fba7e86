package room

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// TestHandleBoundsTheBacklog guards "the backlog is bounded": TrySend
// refuses past the bound until the room has handled a message; Send waits
// for a slot instead, and gives up once the room has stopped.
func TestHandleBoundsTheBacklog(t *testing.T) {
	system := actor.NewActorSystem()
	defer system.Shutdown()
	var got atomic.Int32
	h := newHandle(2)
	h.PID = system.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(*Send); ok {
			got.Add(1) // received, not handled: the slot stays taken
		}
	}))
	for i := range 2 {
		if !h.TrySend(system, &Send{}) {
			t.Fatalf("send %d refused with a backlog of 2", i)
		}
	}
	if h.TrySend(system, &Send{}) {
		t.Fatal("a third send was taken with a backlog of 2")
	}
	h.handled()
	if !h.TrySend(system, &Send{}) {
		t.Fatal("refused after a message was handled")
	}
	sent := make(chan bool, 1)
	go func() { sent <- h.Send(system, &Send{}) }()
	select {
	case <-sent:
		t.Fatal("Send did not wait for a slot")
	case <-time.After(50 * time.Millisecond):
	}
	h.handled()
	if ok := <-sent; !ok {
		t.Fatal("Send gave up with a slot free")
	}
	go func() { sent <- h.Send(system, &Send{}) }()
	close(h.gone)
	if ok := <-sent; ok {
		t.Fatal("Send posted to a stopped room")
	}
}
