package conn

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"tether/actors/protocol"
	"tether/test/check"
)

// TestWorkersRunEveryRun guards the dispatcher's promise that every run
// starts at once and scheduling never waits: two workers at most, both
// held up, are given many runs at once from many goroutines, runs
// included; every run runs meanwhile, on goroutines of their own.
func TestWorkersRunEveryRun(t *testing.T) {
	w := newWorkers(2)
	hold := make(chan struct{})
	defer close(hold)
	var held sync.WaitGroup
	held.Add(2)
	for range 2 {
		w.Schedule(func() { held.Done(); <-hold })
	}
	held.Wait() // both workers are busy now

	const n = 200
	var ran atomic.Int32
	for range n / 2 {
		go w.Schedule(func() {
			ran.Add(1)
			w.Schedule(func() { ran.Add(1) }) // from within a run
		})
	}
	check.For(t, 5*time.Second, time.Millisecond, func() error {
		if got := ran.Load(); got != n {
			return fmt.Errorf("%d of %d ran with the workers held", got, n)
		}
		return nil
	})
	if got := w.started.Load(); got != 2 {
		t.Fatalf("%d workers started; at most 2", got)
	}
}

// TestStreamingClientLeavesItsWorker guards the rule that a mailbox run
// ends when its mailbox is empty, so that a worker serves many
// connections: with a single worker, a client that streams requests
// faster than they are handled (its socket is never empty) must not keep
// it: the worker parks between the client's chunks (a run of the test's
// own is handed to it), and another connection is served meanwhile. It
// fails if the socket's next chunk is read within the run that handled
// the last one: that run never ends.
func TestStreamingClientLeavesItsWorker(t *testing.T) {
	saved := connWorkers
	connWorkers = newWorkers(1)
	t.Cleanup(func() { connWorkers = saved })

	streaming := newTestApp()
	streamer := start(t, streaming, nil)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		chunk := bytes.Repeat(packN("slow"+strings.Repeat("s", 996)), 64)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := streamer.client.Write(chunk); err != nil {
				return
			}
		}
	}()
	check.For(t, 5*time.Second, time.Millisecond, func() error { // streaming, and read
		if streaming.count() < 100 {
			return errors.New("not streaming yet")
		}
		return nil
	})
	check.For(t, 5*time.Second, 100*time.Microsecond, func() error {
		select {
		case connWorkers.parked <- func() {}:
			return nil
		default:
			return errors.New("the worker never parks: the streaming client's run never ends")
		}
	})

	other := start(t, newTestApp(), nil)
	if _, err := other.client.Write(packN("echo:answer")); err != nil {
		t.Fatal(err)
	}
	if got, err := other.read(5 * time.Second); err != nil || got != "answer" {
		t.Fatalf("the other connection got %q, %v, while one client streamed", got, err)
	}
	handled := streaming.count() // and the streamer is still served
	check.For(t, 5*time.Second, time.Millisecond, func() error {
		if streaming.count() < handled+100 {
			return errors.New("the streaming client is no longer read")
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
