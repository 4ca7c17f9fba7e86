package transport

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"tether/config"
)

// TestAcceptRateBucket: an address may take rate connections at once,
// then one every 1/rate seconds; a bucket refills to rate, no more, and
// each address has its own.
func TestAcceptRateBucket(t *testing.T) {
	var r acceptRate
	r.setRate(3)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	took := func(ip netip.Addr, at time.Duration, n int) int {
		ok := 0
		for range n {
			if r.take(ip, at) {
				ok++
			}
		}
		return ok
	}
	t0 := 5 * time.Second
	if got := took(a, t0, 5); got != 3 {
		t.Fatalf("%d of 5 at once admitted, want the burst, 3", got)
	}
	if !r.take(b, t0) {
		t.Fatal("another address refused")
	}
	interval := time.Second / 3
	if r.take(a, t0+interval-time.Nanosecond) {
		t.Fatal("admitted before a token refilled")
	}
	if got := took(a, t0+interval, 2); got != 1 {
		t.Fatalf("%d admitted one interval later, want 1", got)
	}
	if got := took(a, t0+time.Hour, 5); got != 3 {
		t.Fatalf("%d of 5 admitted after an hour, want the burst, 3", got)
	}

	r.setRate(0)
	if got := took(a, t0+time.Hour, 100); got != 100 {
		t.Fatalf("%d of 100 admitted without a limit", got)
	}
	r.setRate(1) // a new rate: every bucket starts full
	if got := took(a, t0+time.Hour, 2); got != 1 {
		t.Fatalf("%d of 2 admitted at rate 1, want 1", got)
	}
}

// TestAcceptRatePrunes: a flood of connections each from a new address
// (spoofed sources, or an IPv6 prefix) keeps the map within twice the
// addresses admitted in a second, and the sweeps keep the buckets that
// are not full: an address that connects all along is held to its rate.
func TestAcceptRatePrunes(t *testing.T) {
	const rate, perSecond, seconds = 5, 20_000, 10
	var r acceptRate
	r.setRate(rate)
	greedy := netip.MustParseAddr("198.51.100.7")
	greedyAdmitted, biggest := 0, 0
	step := time.Second / perSecond
	for i := range perSecond * seconds {
		now := time.Duration(i) * step
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if !r.take(ip, now) {
			t.Fatalf("a new address refused at %s", now)
		}
		if r.take(greedy, now) {
			greedyAdmitted++
		}
		biggest = max(biggest, len(r.full))
	}
	if biggest > 2*perSecond {
		t.Fatalf("the map reached %d buckets, want at most %d (twice the addresses of a second)", biggest, 2*perSecond)
	}
	// The burst at once, then one every 1/rate s: 5 + 49 in 10s.
	if want := rate + rate*seconds - 1; greedyAdmitted != want {
		t.Fatalf("an address trying all along admitted %d times in %ds, want %d", greedyAdmitted, seconds, want)
	}
	t.Logf("at most %d buckets for %d addresses at %d a second", biggest, perSecond*seconds, perSecond)

	// One interval after the flood every bucket is full again but the
	// greedy address's.
	r.sweep(seconds*time.Second + time.Second/rate)
	if _, kept := r.full[greedy]; !kept || len(r.full) != 1 {
		t.Fatalf("%d buckets after a sweep (greedy's kept: %v), want only the greedy address's", len(r.full), kept)
	}
}

// remoteConn is a socket from a chosen remote address.
type remoteConn struct {
	net.Conn
	remote *net.TCPAddr
}

func (c remoteConn) RemoteAddr() net.Addr { return c.remote }
func (c remoteConn) Close() error         { return nil }

// TestAdmissionAcceptRate: Admit refuses an address past its rate without
// keeping the node's place, admits other addresses, and follows
// SetLimits.
func TestAdmissionAcceptRate(t *testing.T) {
	node := NewNodeSockets(100)
	a := NewAdmission(node, config.Limits{AcceptsPerIPPerSecond: 1}, NewMetrics().Listener("l", "tcp"), zerolog.Nop())
	from := func(ip string) net.Conn {
		return remoteConn{remote: &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}}
	}
	var tickets []Ticket
	admit := func(ip string) bool {
		tk, ok := a.Admit(from(ip))
		if ok {
			tickets = append(tickets, tk)
		}
		return ok
	}
	if !admit("192.0.2.1") || admit("192.0.2.1") {
		t.Fatal("want the first admitted and the second refused at 1 a second")
	}
	if !admit("192.0.2.2") {
		t.Fatal("another address refused")
	}
	if node.Count() != 2 {
		t.Fatalf("node count %d, want 2: a refused socket holds no place", node.Count())
	}
	a.SetLimits(config.Limits{})
	if !admit("192.0.2.1") || !admit("192.0.2.1") {
		t.Fatal("refused after the limit was lifted")
	}
	a.SetLimits(config.Limits{AcceptsPerIPPerSecond: 1})
	if !admit("192.0.2.1") || admit("192.0.2.1") {
		t.Fatal("want a full bucket of 1 after the limit is set again")
	}
	for i := range tickets {
		tickets[i].Release()
	}
	if node.Count() != 0 {
		t.Fatalf("node count %d after every release", node.Count())
	}
}
