package transport

import (
	"sync"
	"time"
)

// LogEvery lets a kind of log line out at most once an interval, for
// what can happen many times a second (a route tried again, frames of
// many connections dropped): the first goes out, the rest until the
// interval has passed are held back and counted, and the next line that
// goes out says how many were. Safe for concurrent use.
type LogEvery struct {
	interval time.Duration
	mu       sync.Mutex
	last     time.Time
	held     int
}

// NewLogEvery returns a LogEvery letting a line out at most once an
// interval.
func NewLogEvery(interval time.Duration) *LogEvery { return &LogEvery{interval: interval} }

// Allow says whether a line goes out now and, when it does, how many were
// held back since the last that did.
func (e *LogEvery) Allow() (held int, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if now := time.Now(); e.last.IsZero() || now.Sub(e.last) >= e.interval {
		held, e.held, e.last = e.held, 0, now
		return held, true
	}
	e.held++
	return 0, false
}
