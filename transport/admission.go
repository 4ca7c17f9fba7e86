package transport

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Admission decides, at accept, whether a listener takes a socket, and
// counts the sockets it took until they are closed: a WebSocket handshake
// in progress counts as much as an upgraded connection, and so does a
// socket lingering in its close, since each holds a descriptor. It
// enforces the listener's max_connections and max_per_ip and the node's
// cap on all listeners together (NodeSockets). Its methods are safe for
// concurrent use: the TCP accept loop, net/http's accept loop and the
// connection actors all call them.
type Admission struct {
	node    *NodeSockets
	metrics *ListenerMetrics
	log     zerolog.Logger

	mu       sync.Mutex
	max      int // 0: no limit of the listener's own
	maxPerIP int // 0: none
	closed   bool
	count    int
	perIP    map[netip.Addr]int

	rejectsUnlogged int
	lastRejectLog   time.Time
}

// NodeSockets is the node's count of admitted sockets, shared by its
// listeners' Admissions, and its cap (node.max_connections).
type NodeSockets struct {
	max   int64
	count atomic.Int64
}

// NewNodeSockets returns the node's count, capped at max.
func NewNodeSockets(max int) *NodeSockets { return &NodeSockets{max: int64(max)} }

// Max is the node's cap.
func (n *NodeSockets) Max() int { return int(n.max) }

// Count is how many sockets are admitted now.
func (n *NodeSockets) Count() int { return int(n.count.Load()) }

// NewAdmission returns the admission of one listener.
func NewAdmission(node *NodeSockets, max, maxPerIP int, metrics *ListenerMetrics, log zerolog.Logger) *Admission {
	return &Admission{node: node, max: max, maxPerIP: maxPerIP, metrics: metrics, log: log, perIP: map[netip.Addr]int{}}
}

// Ticket is one admitted socket's place: a value its one owner holds (the
// handshake, then the Socket) and releases once the socket is closed.
// The zero Ticket holds no place.
type Ticket struct {
	a  *Admission
	ip netip.Addr
}

// Admit takes c or refuses it. A refused socket is closed here, counted
// by why (max_connections, max_per_ip, shutting_down) and logged at most
// once a second.
func (a *Admission) Admit(c net.Conn) (Ticket, bool) {
	a.metrics.Accepts.Inc()
	var ip netip.Addr
	if tcp, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		ip = tcp.AddrPort().Addr()
	}
	a.mu.Lock()
	why := ""
	switch {
	case a.closed:
		why = "shutting_down"
	case a.max > 0 && a.count >= a.max:
		why = "max_connections"
	case a.maxPerIP > 0 && a.perIP[ip] >= a.maxPerIP:
		why = "max_per_ip"
	case a.node.count.Add(1) > a.node.max:
		a.node.count.Add(-1)
		why = "max_connections"
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
	a.rejectsUnlogged++
	logNow := time.Since(a.lastRejectLog) >= time.Second
	rejected, count := a.rejectsUnlogged, a.count
	if logNow {
		a.rejectsUnlogged, a.lastRejectLog = 0, time.Now()
	}
	a.mu.Unlock()
	_ = c.Close()
	a.metrics.Rejected(why)
	if logNow {
		a.log.Warn().Str("why", why).Str("remote", c.RemoteAddr().String()).Int("rejected", rejected).
			Int("connections", count).Int("node_connections", int(a.node.count.Load())).Msg("connection rejected")
	}
	return Ticket{}, false
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
// from then on.
func (a *Admission) SetLimits(max, maxPerIP int) {
	a.mu.Lock()
	a.max, a.maxPerIP = max, maxPerIP
	a.mu.Unlock()
}

// Close refuses every socket from now on (shutting_down).
func (a *Admission) Close() {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
}
