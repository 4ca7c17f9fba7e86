package transport

import (
	"sync"
	"time"
)

// AcceptGate paces the sockets a node takes, all listeners together
// (node.accepts_per_second), so that a reconnect storm costs the
// connections already open little: a socket admitted (Admission) goes on
// at once while the rate allows and nobody waits; otherwise it waits in a
// queue of at most node.accept_queue sockets for its turn, and one more
// is refused (closed, counted accept_queue). The rate is a token bucket
// holding a tenth of a second's worth (at least one). What waits is an
// accepted socket, its descriptor counted by node.max_connections; what
// it costs the node (a WebSocket upgrade, a TLS handshake, a connection
// actor, its welcome) comes when its turn does.
type AcceptGate struct {
	m *Metrics

	mu       sync.Mutex
	rate     float64 // tokens a second; 0: no limit
	burst    float64
	max      int // sockets that may wait
	tokens   float64
	last     time.Time // when tokens was counted
	queue    []waiting
	timer    *time.Timer
	closed   bool
	armed    bool // timer set for the head of the queue
	nextFire time.Time
}

// waiting is a socket in the queue.
type waiting struct {
	since   time.Time
	release func()
	refuse  func(why string)
}

// NewAcceptGate returns the node's gate; rate 0 lets every socket
// through at once.
func NewAcceptGate(rate, queue int, m *Metrics) *AcceptGate {
	g := &AcceptGate{m: m}
	g.SetLimits(rate, queue)
	g.tokens = g.burst
	return g
}

// SetLimits changes the rate and the queue's bound (reload). Sockets
// waiting beyond a smaller bound keep their place.
func (g *AcceptGate) SetLimits(rate, queue int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	g.refill(now)
	g.rate, g.max = float64(rate), queue
	g.burst = max(1, g.rate/10)
	g.tokens = min(g.tokens, g.burst)
	if rate == 0 {
		g.tokens = 0
	}
	g.arm(now)
}

// pass lets one admitted socket through: true when it goes on now;
// otherwise release runs once its turn comes (on the gate's timer), or
// refuse runs, at once when the queue is full (accept_queue), or when
// the gate closes (shutting_down).
func (g *AcceptGate) pass(release func(), refuse func(why string)) bool {
	g.mu.Lock()
	if g.rate == 0 && len(g.queue) == 0 {
		g.mu.Unlock()
		return true
	}
	now := time.Now()
	g.refill(now)
	switch {
	case g.closed:
		g.mu.Unlock()
		refuse("shutting_down")
		return false
	case len(g.queue) == 0 && g.tokens >= 1:
		g.tokens--
		g.mu.Unlock()
		return true
	case len(g.queue) >= g.max:
		g.mu.Unlock()
		refuse("accept_queue")
		return false
	}
	g.queue = append(g.queue, waiting{since: now, release: release, refuse: refuse})
	g.m.AcceptQueue.Set(float64(len(g.queue)))
	g.m.AcceptQueued.Inc()
	g.arm(now)
	g.mu.Unlock()
	return false
}

// refill adds the tokens earned since last.
func (g *AcceptGate) refill(now time.Time) {
	if !g.last.IsZero() {
		g.tokens = min(g.burst, g.tokens+now.Sub(g.last).Seconds()*g.rate)
	}
	g.last = now
}

// arm sets the timer for when the head of the queue may go.
func (g *AcceptGate) arm(now time.Time) {
	if len(g.queue) == 0 || g.closed {
		return
	}
	wait := time.Duration(0)
	if g.rate > 0 && g.tokens < 1 {
		wait = time.Duration((1 - g.tokens) / g.rate * float64(time.Second))
	}
	at := now.Add(wait)
	if g.armed && !at.Before(g.nextFire) {
		return
	}
	if g.timer == nil {
		g.timer = time.AfterFunc(wait, g.fire)
	} else {
		g.timer.Reset(wait)
	}
	g.armed, g.nextFire = true, at
}

// fire lets go the sockets whose turn has come.
func (g *AcceptGate) fire() {
	g.mu.Lock()
	g.armed = false
	now := time.Now()
	g.refill(now)
	var ready []waiting
	for len(g.queue) > 0 && (g.rate == 0 || g.tokens >= 1) && !g.closed {
		if g.rate > 0 {
			g.tokens--
		}
		ready = append(ready, g.queue[0])
		g.queue[0] = waiting{}
		g.queue = g.queue[1:]
	}
	if len(g.queue) == 0 {
		g.queue = nil // let the backing array of a storm go
	}
	g.m.AcceptQueue.Set(float64(len(g.queue)))
	g.arm(now)
	g.mu.Unlock()
	for _, w := range ready {
		g.m.AcceptWait.Observe(now.Sub(w.since).Seconds())
		w.release()
	}
}

// Close refuses every socket waiting (shutting_down), and every one
// that would wait from now on.
func (g *AcceptGate) Close() {
	g.mu.Lock()
	g.closed = true
	queue := g.queue
	g.queue = nil
	if g.timer != nil {
		g.timer.Stop()
	}
	g.m.AcceptQueue.Set(0)
	g.mu.Unlock()
	for _, w := range queue {
		w.refuse("shutting_down")
	}
}
