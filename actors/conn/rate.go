package conn

import (
	"strconv"
	"time"
)

// Rate is a listener's limit on the messages one connection sends: a
// token bucket of Burst messages that refills at PerSecond. The zero Rate
// is no limit.
type Rate struct {
	interval  int64 // nanoseconds per message; 0: no limit
	burst     int64
	perSecond int
}

// NewRate returns the limit of perSecond messages a second with bursts of
// burst (0: twice perSecond, at least 1); perSecond 0 is no limit.
func NewRate(perSecond, burst int) Rate {
	if perSecond <= 0 {
		return Rate{}
	}
	if burst <= 0 {
		burst = max(1, 2*perSecond)
	}
	return Rate{interval: int64(time.Second) / int64(perSecond), burst: int64(burst), perSecond: perSecond}
}

// String says the rate: "20/s, bursts of 40".
func (r Rate) String() string {
	return strconv.Itoa(r.perSecond) + "/s, bursts of " + strconv.FormatInt(r.burst, 10)
}

// bucket is one connection's use of its Rate: the time at which its
// bucket is full again (GCRA, the generic cell rate algorithm: one
// timestamp instead of a level and a time), and how many messages were
// refused since it was last within its burst.
type bucket struct {
	full    int64 // now() value
	refused int32
}

// verdict is what the bucket says of a message.
type verdict uint8

const (
	allowed verdict = iota
	refused         // over the rate: drop it, tell the client
	excess          // refused more than a burst's worth: close the connection
)

// take accounts for one message at now under r.
func (b *bucket) take(r Rate, now int64) verdict {
	if r.interval == 0 {
		return allowed
	}
	full := max(b.full, now) + r.interval
	if full-now <= r.interval*r.burst {
		b.full = full
		if full-now <= r.interval*(r.burst/2+1) {
			// Back within half its burst: the connection slowed down.
			b.refused = 0
		}
		return allowed
	}
	b.refused++
	if int64(b.refused) > r.burst {
		return excess
	}
	return refused
}
