package conn

import (
	"runtime"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
)

// Props are a connection actor's: an unbounded lock-free mailbox (what
// reaches it is bounded by its socket reading one chunk at a time and by
// the senders' own limits), run by the shared workers below.
func Props(producer actor.Producer) *actor.Props {
	return actor.PropsFromProducer(producer,
		actor.WithMailbox(actor.UnboundedLockfree()), actor.WithDispatcher(connWorkers))
}

// workers is the dispatcher of connection actors: mailbox runs go to
// long-lived goroutines, instead of a goroutine being started for every
// run as protoactor's default dispatcher does.
//
// Why: a connection's mailbox runs once per request it reads when, as
// usual, its client has one request in flight, and a fresh goroutine
// starts with a small stack that handling a request (the actor, the
// application, the JSON decoder) grows twice, copying it each time. In the
// framed echo bench that stack growth was a fifth of the node's CPU; a
// worker keeps its grown stack from one run to the next.
//
// A run goes to a parked worker if there is one; else a new worker is
// started, up to max; past max the run gets a goroutine of its own (the
// default dispatcher's way), so every run starts at once, as on the
// default dispatcher: nothing ever waits for a worker. Workers stay once
// started (an idle one costs its stack, which the collector shrinks). A
// connection actor should not block, but one that does (a relay
// connection publishing into a stalled NATS connection) holds only its
// own worker and its own mailbox.
//
// A run ends when its mailbox is empty, so one client must never refill
// it from within the run: its socket's next chunk is read by the poller
// (transport.Socket.Resume), not by the run that handled the last one.
type workers struct {
	parked  chan func() // unbuffered: a send succeeds only to a parked worker
	started atomic.Int32
	max     int32
}

// connWorkers runs every connection actor of the process: as many
// workers as runs in progress at once (a few per processor when nothing
// blocks: a run spends much of its time in read and writev, during which
// the processor runs another), at most 64 per processor.
var connWorkers = newWorkers(64 * runtime.GOMAXPROCS(0))

// newWorkers makes a dispatcher of at most max workers.
func newWorkers(max int) *workers {
	return &workers{parked: make(chan func()), max: int32(max)}
}

func (w *workers) Schedule(run func()) {
	select {
	case w.parked <- run:
		return
	default:
	}
	if w.started.Add(1) <= w.max {
		go w.work(run)
		return
	}
	w.started.Add(-1)
	go run()
}

// Throughput is protoactor's default: how many messages a run handles
// before it yields the processor.
func (w *workers) Throughput() int { return 300 }

func (w *workers) work(run func()) {
	for {
		run()
		run = <-w.parked
	}
}
