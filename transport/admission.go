package transport

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"tether/config"
)

// Admission decides, at accept, whether a listener takes a socket, and
// counts the sockets it took until they are closed: a WebSocket handshake
// in progress counts as much as an upgraded connection, and so does a
// socket lingering in its close, since each holds a descriptor. It
// enforces the listener's max_connections, max_per_ip and
// accepts_per_ip_per_second and the node's cap on all listeners together
// (NodeSockets). Its methods are safe for concurrent use: the TCP accept
// loop, net/http's accept loop and the connection actors all call them.
type Admission struct {
	node    *NodeSockets
	metrics *ListenerMetrics
	log     zerolog.Logger

	mu       sync.Mutex
	max      int    // 0: no limit of the listener's own
	maxPerIP int    // 0: none
	refusing string // why every socket is refused ("": none are)
	count    int
	perIP    map[netip.Addr]int
	accepts  acceptRate
	started  time.Time // the origin of acceptRate's times

	rejectLog *LogEvery // the "connection rejected" line, at most once a second
}

// NodeSockets is the node's count of admitted sockets, shared by its
// listeners' Admissions, and its cap (node.max_connections).
type NodeSockets struct {
	max   int64
	count atomic.Int64
	// Gate, when set, paces the admitted sockets of every listener
	// (node.accepts_per_second): see Admission.Pace.
	Gate *AcceptGate
}

// NewNodeSockets returns the node's count, capped at max.
func NewNodeSockets(max int) *NodeSockets { return &NodeSockets{max: int64(max)} }

// Max is the node's cap.
func (n *NodeSockets) Max() int { return int(n.max) }

// Count is how many sockets are admitted now.
func (n *NodeSockets) Count() int { return int(n.count.Load()) }

// NewAdmission returns the admission of one listener with its limits.
func NewAdmission(node *NodeSockets, limits config.Limits, metrics *ListenerMetrics, log zerolog.Logger) *Admission {
	a := &Admission{node: node, metrics: metrics, log: log, perIP: map[netip.Addr]int{}, started: time.Now(),
		rejectLog: NewLogEvery(time.Second)}
	a.SetLimits(limits)
	return a
}

// Ticket is one admitted socket's place: a value its one owner holds (the
// handshake, then the Socket) and releases once the socket is closed.
// The zero Ticket holds no place.
type Ticket struct {
	a  *Admission
	ip netip.Addr
}

// Admit takes c or refuses it. A refused socket is closed here, counted
// by why (max_connections, max_per_ip, accept_rate, draining,
// shutting_down; Pace adds accept_queue) and
// logged at most once a second.
func (a *Admission) Admit(c net.Conn) (Ticket, bool) {
	a.metrics.Accepts.Inc()
	var ip netip.Addr
	if tcp, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		ip = tcp.AddrPort().Addr()
	}
	a.mu.Lock()
	why := ""
	switch {
	case a.refusing != "":
		why = a.refusing
	case a.max > 0 && a.count >= a.max:
		why = "max_connections"
	case a.maxPerIP > 0 && a.perIP[ip] >= a.maxPerIP:
		why = "max_per_ip"
	case a.node.count.Add(1) > a.node.max:
		a.node.count.Add(-1)
		why = "max_connections"
	case !a.accepts.take(ip, time.Since(a.started)):
		// Asked last, so that only a socket admitted spends a token.
		a.node.count.Add(-1) // the place taken by the case above
		why = "accept_rate"
	}
	if why == "" {
		a.count++
		if a.maxPerIP > 0 {
			// Counted only while limited: an entry per address is most of
			// what admission costs a connection, and most listeners do
			// not limit per address.
			a.perIP[ip]++
		}
		a.mu.Unlock()
		return Ticket{a: a, ip: ip}, true
	}
	a.mu.Unlock()
	_ = c.Close()
	a.rejected(why, c.RemoteAddr())
	return Ticket{}, false
}

// rejected counts a socket closed at accept, and logs it at most once a
// second.
func (a *Admission) rejected(why string, remote net.Addr) {
	a.metrics.Rejected(why)
	if held, ok := a.rejectLog.Allow(); ok {
		a.mu.Lock()
		count := a.count
		a.mu.Unlock()
		a.log.Warn().Str("why", why).Str("remote", remote.String()).Int("rejected", held+1).
			Int("connections", count).Int("node_connections", int(a.node.count.Load())).Msg("connection rejected")
	}
}

// Serve accepts on ln until it is closed, admits each socket (Admit)
// and hands the admitted ones to take, with their tickets. Failing to
// accept (out of descriptors, say) is not fatal: it backs off and tries
// again, as net/http does. It returns the error that ended it.
func (a *Admission) Serve(ln net.Listener, log zerolog.Logger, take func(net.Conn, Ticket)) error {
	backoff := 5 * time.Millisecond
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			log.Error().Err(err).Dur("retry_in", backoff).Msg("accept failed")
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		if t, ok := a.Admit(c); ok {
			take(c, t)
		}
	}
}

// Pace lets an admitted socket go on at the node's accept rate
// (node.accepts_per_second, NodeSockets.Gate): true now; otherwise
// release runs when its turn comes, on the gate's goroutine, or, when the
// node's queue is full (accept_queue) or the node stops meanwhile
// (shutting_down), the socket is closed with close and counted.
func (a *Admission) Pace(remote net.Addr, close, release func()) bool {
	g := a.node.Gate
	if g == nil {
		return true
	}
	return g.pass(release, func(why string) {
		close()
		a.rejected(why, remote)
	})
}

// Release gives the ticket's place back; the ticket holds none afterwards.
func (t *Ticket) Release() {
	if t.a != nil {
		t.a.release(t.ip)
		t.a = nil
	}
}

// release gives back the place of a socket from ip.
func (a *Admission) release(ip netip.Addr) {
	a.node.count.Add(-1)
	a.mu.Lock()
	a.count--
	if n, ok := a.perIP[ip]; ok {
		if n <= 1 {
			delete(a.perIP, ip)
		} else {
			a.perIP[ip] = n - 1
		}
	}
	a.mu.Unlock()
}

// SetLimits changes the listener's limits (reload); sockets already
// admitted stay. A max_per_ip set by a reload counts the sockets admitted
// from then on; a new accepts_per_ip_per_second starts every address
// with a full bucket.
func (a *Admission) SetLimits(l config.Limits) {
	a.mu.Lock()
	a.max, a.maxPerIP = l.MaxConnections, l.MaxPerIP
	a.accepts.setRate(l.AcceptsPerIPPerSecond)
	a.mu.Unlock()
}

// Close refuses every socket from now on (shutting_down).
func (a *Admission) Close() { a.Refuse("shutting_down") }

// Refuse refuses every socket from now on, counted as why: draining (the
// node drains and stays up) or shutting_down (it stops).
func (a *Admission) Refuse(why string) {
	a.mu.Lock()
	a.refusing = why
	a.mu.Unlock()
}

// Refusing is why every socket is refused now, or "".
func (a *Admission) Refusing() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.refusing
}

// acceptRate limits how often each remote address may open a connection:
// a token bucket per address holding up to rate tokens (the burst),
// refilled at rate tokens a second, one token a connection.
//
// A bucket is kept as the one time it will be full again, which says all
// of it: until then it lacks (full-now)/interval tokens. This is the
// generic cell rate algorithm, the token bucket in one number. Times are
// durations since the admission started (monotonic, and 8 bytes where a
// time.Time takes 24), since a spread of addresses makes many entries.
//
// A full bucket is the same as none, so only buckets that are not full
// need keeping, and those are of addresses admitted within the last
// second. The full ones are pruned by a sweep when the map has grown to
// twice what the last sweep kept (minSweep at least): amortized constant
// work an accept, no timer or goroutine, and a map of at most twice the
// addresses admitted in a second, even when every accept comes from a
// new address (a spread of spoofed sources). A sweep builds a new map,
// because a Go map never gives back the room of deleted entries: after a
// storm of addresses, the next sweep returns its memory.
type acceptRate struct {
	interval time.Duration // a token's refill time, 1s/rate; 0: no limit
	burst    time.Duration // the time rate tokens take to refill: interval × rate
	full     map[netip.Addr]time.Duration
	sweepAt  int // the map's size that triggers the next sweep
}

// minSweep is the least map size that triggers a sweep: below it pruning
// is not worth a pass over the map.
const minSweep = 1024

// setRate sets the limit (0: none) and forgets every bucket when it
// changes: their times were counted at the old rate.
func (r *acceptRate) setRate(rate int) {
	var interval time.Duration
	if rate > 0 {
		interval = time.Second / time.Duration(rate)
	}
	if interval == r.interval {
		return
	}
	r.interval, r.burst = interval, interval*time.Duration(rate)
	r.full, r.sweepAt = map[netip.Addr]time.Duration{}, minSweep
}

// take spends a token of ip's bucket at now, or reports that it is empty.
func (r *acceptRate) take(ip netip.Addr, now time.Duration) bool {
	if r.interval == 0 {
		return true
	}
	next := max(r.full[ip], now) + r.interval
	if next-now > r.burst {
		return false
	}
	if len(r.full) >= r.sweepAt {
		r.sweep(now)
	}
	r.full[ip] = next
	return true
}

// sweep drops the buckets that are full again at now.
func (r *acceptRate) sweep(now time.Duration) {
	kept := make(map[netip.Addr]time.Duration)
	for ip, full := range r.full {
		if full > now {
			kept[ip] = full
		}
	}
	r.full, r.sweepAt = kept, max(minSweep, 2*len(kept))
}
