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
// that the info of a connection that just closed still says why, and the
// rooms it was in find its reason even when thousands close at once.
const closedKept = 1 << 15

// Registry maps the ids of a node's connections to their actors, and
// remembers the info of the last closedKept closed ones. It is shared by
// the listeners (which add), the connections (which report their close),
// and whoever routes to a connection by id; its methods are safe for
// concurrent use.
type Registry struct {
	mu     sync.RWMutex
	live   map[string]*Entry
	users  map[string]map[string]bool // user id → its live connections here
	closed map[string]*Info
	ring   []string // closed ids, oldest first once full
	next   int

	// OnUser, when set, learns that a user now has a connection on this
	// node (present) or no more (the cluster subscribes to the user's
	// subject only meanwhile). It is called outside the lock; set it
	// before the first connection.
	OnUser func(user string, present bool)
}

// Entry is a live connection in the registry.
type Entry struct {
	PID      *actor.PID
	Listener string
	User     string // bound by the backend; "" for none
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{live: map[string]*Entry{}, users: map[string]map[string]bool{}, closed: map[string]*Info{}}
}

// Bind binds a live connection to a user id (replacing an earlier one).
func (r *Registry) Bind(id, user string) bool {
	r.mu.Lock()
	e := r.live[id]
	if e == nil {
		r.mu.Unlock()
		return false
	}
	old := e.User
	gone := r.unbindLocked(id, old)
	e.User = user
	first := len(r.users[user]) == 0
	if r.users[user] == nil {
		r.users[user] = map[string]bool{}
	}
	r.users[user][id] = true
	r.mu.Unlock()
	if r.OnUser != nil {
		if gone {
			r.OnUser(old, false)
		}
		if first {
			r.OnUser(user, true)
		}
	}
	return true
}

// unbindLocked removes id from user's set and reports whether the user
// has no connection left here.
func (r *Registry) unbindLocked(id, user string) bool {
	if user == "" || r.users[user] == nil {
		return false
	}
	delete(r.users[user], id)
	if len(r.users[user]) == 0 {
		delete(r.users, user)
		return true
	}
	return false
}

// User lists the live connections bound to user on this node.
func (r *Registry) User(user string) []*Entry {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*Entry, 0, len(r.users[user]))
	for id := range r.users[user] {
		out = append(out, r.live[id])
	}
	return out
}

// Each calls f for every live connection; f must not call the registry.
func (r *Registry) Each(f func(id string, e *Entry)) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for id, e := range r.live {
		f(id, e)
	}
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

// Closed moves a connection from live to closed, keeping its final info.
// The connection calls it before its actor stops, so that whoever watches
// the actor finds the reason here when the Terminated message arrives.
func (r *Registry) Closed(info *Info) {
	r.mu.Lock()
	var gone string
	if e := r.live[info.ID]; e != nil {
		info.User = e.User
		if r.unbindLocked(info.ID, e.User) {
			gone = e.User
		}
	}
	delete(r.live, info.ID)
	if len(r.ring) < closedKept {
		r.ring = append(r.ring, info.ID)
	} else {
		delete(r.closed, r.ring[r.next])
		r.ring[r.next] = info.ID
		r.next = (r.next + 1) % closedKept
	}
	r.closed[info.ID] = info
	r.mu.Unlock()
	if gone != "" && r.OnUser != nil {
		r.OnUser(gone, false)
	}
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
