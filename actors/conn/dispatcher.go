package conn

import (
	"runtime"

	"github.com/asynkron/protoactor-go/actor"
)

// Props are a connection actor's: an unbounded lock-free mailbox (what
// reaches it is bounded by its socket reading one chunk at a time and by
// the senders' own limits), run by the shared workers below.
func Props(producer actor.Producer) *actor.Props {
	return actor.PropsFromProducer(producer,
		actor.WithMailbox(actor.UnboundedLockfree()), actor.WithDispatcher(connWorkers))
}

// workers is the dispatcher of connection actors: a few long-lived
// goroutines take the mailboxes' runs from a queue, instead of a goroutine
// being started for every run as protoactor's default dispatcher does.
//
// Why: a connection's mailbox runs once per request it reads when, as
// usual, its client has one request in flight, and a fresh goroutine
// starts with a small stack that handling a request (the actor, the
// application, the JSON decoder) grows twice, copying it each time. In the
// framed echo bench that stack growth was a fifth of the node's CPU; a
// worker keeps its grown stack from one run to the next.
//
// The rule this brings: a connection actor never blocks (it waits for
// nothing: replies come as messages, writes never block), or it holds up
// the connections queued behind it. Runs are queued in order; when the
// queue is full a run gets a goroutine of its own, so scheduling never
// waits either, even from a worker.
type workers chan func()

// connWorkers runs every connection actor of the process: four per
// processor, as a run spends much of its time in system calls (read,
// writev) during which the processor runs another worker.
var connWorkers = newWorkers(4*runtime.GOMAXPROCS(0), 4096)

// newWorkers starts n workers sharing a queue of the given length.
func newWorkers(n, queue int) workers {
	w := make(workers, queue)
	for range n {
		go func() {
			for run := range w {
				run()
			}
		}()
	}
	return w
}

func (w workers) Schedule(run func()) {
	select {
	case w <- run:
	default:
		go run()
	}
}

// Throughput is protoactor's default: how many messages a run handles
// before it yields the processor.
func (w workers) Throughput() int { return 300 }
