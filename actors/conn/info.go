package conn

import (
	"net"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// Info is what is known of one connection: Swoole's getClientInfo, kept
// for a while after the close with its reason. The admin API serves it for
// any connection of the cluster.
type Info struct {
	ID          string     `json:"id"`
	Node        string     `json:"node"`
	Listener    string     `json:"listener"`
	Protocol    string     `json:"protocol"`
	RemoteAddr  string     `json:"remote_addr"`
	RemotePort  int        `json:"remote_port"`
	LocalPort   int        `json:"local_port"`
	Connected   time.Time  `json:"connected"`
	LastReceive time.Time  `json:"last_receive"`
	LastSend    time.Time  `json:"last_send,omitzero"`
	BytesIn     uint64     `json:"bytes_in"`
	BytesOut    uint64     `json:"bytes_out"`
	FramesIn    uint64     `json:"frames_in"`
	FramesOut   uint64     `json:"frames_out"`
	Queued      int        `json:"queued_bytes"`
	Dropped     uint64     `json:"dropped"`
	Rooms       []string   `json:"rooms"`
	User        string     `json:"user,omitempty"`
	Closed      *time.Time `json:"closed,omitempty"`
	Reason      Reason     `json:"reason,omitempty"`
}

// InfoRequest asks a connection actor for its Info (the reply).
type InfoRequest struct{}

// closedKept is how many closed connections the registry remembers, so
// that the info of a connection that just closed still says why.
const closedKept = 10000

// Registry maps the ids of a node's connections to their actors, and
// remembers the info of the last closedKept closed ones. It is shared by
// the listeners (which add), the connections (which report their close),
// and whoever routes to a connection by id; its methods are safe for
// concurrent use.
type Registry struct {
	mu     sync.RWMutex
	live   map[string]*Entry
	closed map[string]*Info
	ring   []string // closed ids, oldest first once full
	next   int
}

// Entry is a live connection in the registry.
type Entry struct {
	PID      *actor.PID
	Listener string
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{live: map[string]*Entry{}, closed: map[string]*Info{}}
}

// Add records a live connection.
func (r *Registry) Add(id string, e *Entry) {
	r.mu.Lock()
	r.live[id] = e
	r.mu.Unlock()
}

// Get returns the live connection with id, or nil.
func (r *Registry) Get(id string) *Entry {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.live[id]
}

// Len is the number of live connections.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.live)
}

// IDs lists the live connections.
func (r *Registry) IDs() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ids := make([]string, 0, len(r.live))
	for id := range r.live {
		ids = append(ids, id)
	}
	return ids
}

// Closed moves a connection from live to closed, keeping its final info.
// The connection calls it before its actor stops, so that whoever watches
// the actor finds the reason here when the Terminated message arrives.
func (r *Registry) Closed(info *Info) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.live, info.ID)
	if len(r.ring) < closedKept {
		r.ring = append(r.ring, info.ID)
	} else {
		delete(r.closed, r.ring[r.next])
		r.ring[r.next] = info.ID
		r.next = (r.next + 1) % closedKept
	}
	r.closed[info.ID] = info
}

// ClosedInfo returns the final info of a recently closed connection.
func (r *Registry) ClosedInfo(id string) (*Info, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	info, ok := r.closed[id]
	return info, ok
}

// splitHostPort is net.SplitHostPort with the port as a number.
func splitHostPort(a net.Addr) (string, int) {
	if tcp, ok := a.(*net.TCPAddr); ok {
		return tcp.IP.String(), tcp.Port
	}
	host, _, _ := net.SplitHostPort(a.String())
	return host, 0
}
