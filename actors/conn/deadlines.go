package conn

import (
	"container/heap"
	"sync"
	"time"
)

// deadlines fires the connections' liveness deadlines (idle, ping,
// no-pong, write timeout, linger) from one runtime timer for the whole
// process, instead of one per connection: a runtime timer and its closure
// cost ~250 bytes, a tenth of an idle connection's budget. A connection
// has at most one deadline, kept in a heap by time; setting it moves the
// connection's entry, cancelling removes it.
type deadlines struct {
	mu    sync.Mutex
	due   deadlineHeap
	timer *time.Timer
	at    int64 // when the timer fires (now()); 0: not set
}

// clock holds every connection's deadline.
var clock deadlines

// deadline is a connection's place in the heap; guarded by deadlines.mu.
type deadline struct {
	at  int64
	pos int32 // index in the heap + 1; 0: not in it
}

type deadlineHeap []*Actor

func (h deadlineHeap) Len() int           { return len(h) }
func (h deadlineHeap) Less(i, j int) bool { return h[i].deadline.at < h[j].deadline.at }
func (h deadlineHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].deadline.pos, h[j].deadline.pos = int32(i+1), int32(j+1)
}
func (h *deadlineHeap) Push(x any) {
	a := x.(*Actor)
	*h = append(*h, a)
	a.deadline.pos = int32(len(*h))
}
func (h *deadlineHeap) Pop() any {
	old := *h
	a := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	a.deadline.pos = 0
	return a
}

// set makes a's next tick due at at (now()), replacing its deadline.
func (d *deadlines) set(a *Actor, at int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	a.deadline.at = at
	if a.deadline.pos > 0 {
		heap.Fix(&d.due, int(a.deadline.pos-1))
	} else {
		heap.Push(&d.due, a)
	}
	d.arm()
}

// cancel removes a's deadline, if it has one.
func (d *deadlines) cancel(a *Actor) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if a.deadline.pos > 0 {
		heap.Remove(&d.due, int(a.deadline.pos-1))
	}
}

// arm sets the timer to the earliest deadline. Called with mu held.
func (d *deadlines) arm() {
	if len(d.due) == 0 {
		return
	}
	next := d.due[0].deadline.at
	if d.at != 0 && d.at <= next {
		return // the timer fires first anyway
	}
	d.at = next
	wait := max(time.Duration(next-now()), 0)
	if d.timer == nil {
		d.timer = time.AfterFunc(wait, d.fire)
	} else {
		d.timer.Reset(wait)
	}
}

// fire sends a tick to every connection whose deadline has come.
func (d *deadlines) fire() {
	d.mu.Lock()
	d.at = 0
	t := now()
	var ticked []*Actor
	for len(d.due) > 0 && d.due[0].deadline.at <= t {
		ticked = append(ticked, heap.Pop(&d.due).(*Actor))
	}
	d.arm()
	d.mu.Unlock()
	for _, a := range ticked {
		a.deps.System.Root.Send(a.self, tickMsg)
	}
}
