package conn

import (
	"cmp"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Budget bounds the bytes of unfinished inbound frames that all of a
// node's connections hold together (node.max_partial_bytes). Each
// connection holds at most its listener's max_frame of a frame still
// arriving; without a node-wide bound, many connections each holding
// back the end of a large frame take the node's memory (200 of them
// holding just under 2 MiB took 490 MB). Past the limit the largest
// holders are closed (memory_limit) until the rest fits: they hold the
// most and cost their peers the most.
//
// Connections report what they hold only when it changes; an idle
// connection, or one whose frames arrive whole, never takes the lock.
type Budget struct {
	limit int
	gauge prometheus.Gauge // the bytes held, node-wide

	mu      sync.Mutex
	total   int
	holders map[*Actor]int
}

// NewBudget returns a budget of limit bytes, reporting its total to gauge.
func NewBudget(limit int, gauge prometheus.Gauge) *Budget {
	return &Budget{limit: limit, gauge: gauge, holders: map[*Actor]int{}}
}

// hold records that a now holds n bytes of unfinished frames. When the
// node's total is past the limit it returns the holders to close, largest
// first (a itself among them, maybe), until the rest fits; they no longer
// count.
func (b *Budget) hold(a *Actor, n int) (evict []*Actor) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total += n - b.holders[a]
	if n == 0 {
		delete(b.holders, a)
	} else {
		b.holders[a] = n
	}
	if b.total > b.limit {
		type holder struct {
			a *Actor
			n int
		}
		all := make([]holder, 0, len(b.holders))
		for h, n := range b.holders {
			all = append(all, holder{h, n})
		}
		slices.SortFunc(all, func(x, y holder) int {
			return cmp.Or(cmp.Compare(y.n, x.n), cmp.Compare(x.a.id, y.a.id))
		})
		for _, h := range all {
			if b.total <= b.limit {
				break
			}
			evict = append(evict, h.a)
			b.total -= h.n
			delete(b.holders, h.a)
		}
	}
	b.gauge.Set(float64(b.total))
	return evict
}
