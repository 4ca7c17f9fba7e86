package transport

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"tether/test/check"
)

// gateRecord records what the gate did with each socket, by number.
type gateRecord struct {
	mu       sync.Mutex
	released []int
	at       []time.Time
	refused  map[int]string
}

// pass hands socket i to the gate; one that goes at once counts as
// released too.
func (r *gateRecord) pass(g *AcceptGate, i int) bool {
	release := func() {
		r.mu.Lock()
		r.released = append(r.released, i)
		r.at = append(r.at, time.Now())
		r.mu.Unlock()
	}
	now := g.pass(release, func(why string) {
		r.mu.Lock()
		r.refused[i] = why
		r.mu.Unlock()
	})
	if now {
		release()
	}
	return now
}

func (r *gateRecord) snapshot() ([]int, []time.Time, map[int]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	refused := map[int]string{}
	for k, v := range r.refused {
		refused[k] = v
	}
	return slices.Clone(r.released), slices.Clone(r.at), refused
}

// TestAcceptGate: at 100 a second, a burst of a tenth of that goes at
// once, the next sockets wait in order, up to the queue's bound, and go
// at the rate; one more than the queue holds is refused (accept_queue);
// closing the gate refuses what waits (shutting_down); rate 0 lets
// everything through.
func TestAcceptGate(t *testing.T) {
	const rate, queue = 100, 20
	m := NewMetrics()
	g := NewAcceptGate(rate, queue, m)
	r := &gateRecord{refused: map[int]string{}}
	now := 0
	start := time.Now()
	for i := range rate / 10 {
		if r.pass(g, i) {
			now++
		}
	}
	if now != rate/10 {
		t.Fatalf("%d of a burst of %d went at once", now, rate/10)
	}
	for i := rate / 10; i < rate/10+queue+5; i++ {
		if r.pass(g, i) {
			t.Fatalf("socket %d went at once past the burst", i)
		}
	}
	_, _, refused := r.snapshot()
	if len(refused) != 5 {
		t.Fatalf("refused %v, want the 5 past the queue", refused)
	}
	for i, why := range refused {
		if why != "accept_queue" || i < rate/10+queue {
			t.Errorf("socket %d refused %q", i, why)
		}
	}
	check.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		if released, _, _ := r.snapshot(); len(released) < rate/10+queue {
			return fmt.Errorf("%d of %d released", len(released), rate/10+queue)
		}
		return nil
	})
	released, at, _ := r.snapshot()
	for k, i := range released {
		if i != k {
			t.Fatalf("released in the order %v", released)
		}
	}
	// queue sockets at rate a second: no sooner than (queue-1)/rate.
	if took := at[len(at)-1].Sub(start); took < time.Duration(queue-1)*time.Second/rate {
		t.Errorf("%d waiting sockets released within %s, faster than %d a second", queue, took, rate)
	}

	// What waits when the gate closes is refused.
	r = &gateRecord{refused: map[int]string{}}
	for i := range queue {
		r.pass(g, i)
	}
	g.Close()
	released, _, refused = r.snapshot()
	if len(refused) == 0 || len(refused)+len(released) != queue {
		t.Errorf("closing the gate: %d released, refused %v; want every one either way, some refused", len(released), refused)
	}
	for i, why := range refused {
		if why != "shutting_down" {
			t.Errorf("socket %d refused %q when the gate closed", i, why)
		}
	}

	// A reload that lifts the rate lets every socket waiting go.
	g = NewAcceptGate(1, queue, m)
	r = &gateRecord{refused: map[int]string{}}
	for i := range queue {
		r.pass(g, i)
	}
	g.SetLimits(0, queue)
	check.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		if released, _, refused := r.snapshot(); len(released) != queue || len(refused) != 0 {
			return fmt.Errorf("rate lifted: %d of %d released, %v refused", len(released), queue, refused)
		}
		return nil
	})

	g = NewAcceptGate(0, 0, m)
	for i := range 1000 {
		if !g.pass(func() {}, func(string) {}) {
			t.Fatalf("socket %d waited without a rate", i)
		}
	}
}
