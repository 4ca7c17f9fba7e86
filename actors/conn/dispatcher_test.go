package conn

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"tether/actors/protocol"
	"tether/test/check"
)

// TestWorkersRunEveryRun guards the dispatcher's promise that scheduling
// never waits and no run is lost: two workers with a queue of four are
// given many runs at once from many goroutines, workers included, while
// both workers are held up; every run runs once the workers go on, and
// the ones past the queue ran meanwhile on goroutines of their own.
func TestWorkersRunEveryRun(t *testing.T) {
	w := newWorkers(2, 4)
	hold := make(chan struct{})
	var held sync.WaitGroup
	held.Add(2)
	for range 2 {
		w.Schedule(func() { held.Done(); <-hold })
	}
	held.Wait() // both workers are busy now
	// At most four runs wait in the queue (and the four their runs would
	// schedule do not exist yet); every other runs on a goroutine of its own.

	const n = 200
	var ran atomic.Int32
	var scheduled sync.WaitGroup
	for range n / 2 {
		scheduled.Add(1)
		go func() {
			defer scheduled.Done()
			w.Schedule(func() {
				ran.Add(1)
				w.Schedule(func() { ran.Add(1) }) // from a worker, or a run of its own
			})
		}()
	}
	scheduled.Wait() // no Schedule waited for the held workers
	check.For(t, 5*time.Second, time.Millisecond, func() error {
		if got := ran.Load(); got < n-2*4 {
			return fmt.Errorf("%d of %d ran with the workers held", got, n)
		}
		return nil
	})
	close(hold)
	check.For(t, 5*time.Second, time.Millisecond, func() error {
		if got := ran.Load(); got != n {
			return fmt.Errorf("%d of %d ran", got, n)
		}
		return nil
	})
}

// BenchmarkMailboxRun measures what a connection's mailbox run costs with
// one message in flight (each message is sent once the one before was
// handled, as a client with one request in flight does), the handling
// being a request's JSON decode: on protoactor's default dispatcher each
// run is a new goroutine whose stack the decode grows; on the workers it
// is not.
func BenchmarkMailboxRun(b *testing.B) {
	ping := []byte(`{"op":"ping","id":1,"data":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`)
	for _, bc := range []struct {
		name  string
		props func(actor.Producer) *actor.Props
	}{
		{"default", func(p actor.Producer) *actor.Props {
			return actor.PropsFromProducer(p, actor.WithMailbox(actor.UnboundedLockfree()))
		}},
		{"workers", Props},
	} {
		b.Run(bc.name, func(b *testing.B) {
			system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }))
			defer system.Shutdown()
			done := make(chan struct{})
			pid := system.Root.Spawn(bc.props(func() actor.Actor {
				return actor.ReceiveFunc(func(c actor.Context) {
					if data, ok := c.Message().([]byte); ok {
						var req protocol.Request
						if err := json.Unmarshal(data, &req); err != nil {
							panic(err)
						}
						done <- struct{}{}
					}
				})
			}))
			b.ReportAllocs()
			for b.Loop() {
				system.Root.Send(pid, ping)
				<-done
			}
		})
	}
}
