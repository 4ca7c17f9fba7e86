package test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"tether/config"
	"tether/test/check"
)

// TestAcceptRatePerIP: past limits.accepts_per_ip_per_second, new
// connections from one address are closed at accept and counted
// (accept_rate), on tcp and websocket listeners alike; another address
// connects meanwhile, the first connects again once its bucket has
// refilled, and a reload lifts the limit.
func TestAcceptRatePerIP(t *testing.T) {
	const rate = 3
	const limited, other = "127.0.0.2", "127.0.0.3"
	n := startNode(t, func(c *config.Config) {
		wsListener("127.0.0.1:0")(c)
		for i := range c.Listeners {
			c.Listeners[i].Limits.AcceptsPerIPPerSecond = rate
		}
	})
	refused := map[string]int{} // by listener, from the limited address
	try := func(listener, ip string) bool {
		c, err := n.dialFrom(listener, ip)
		if err != nil {
			if ip == limited {
				refused[listener]++
			}
			return false
		}
		t.Cleanup(func() { c.Close() })
		return true
	}

	for _, l := range []string{"tcp", "ws"} {
		t.Run(l, func(t *testing.T) {
			const tries = 4 * rate
			admitted, othersAdmitted := 0, 0
			start := time.Now()
			for i := range tries {
				if try(l, limited) {
					admitted++
				}
				if i%4 == 0 && try(l, other) { // rate tries, among the limited address's
					othersAdmitted++
				}
			}
			elapsed := time.Since(start)
			if othersAdmitted != rate {
				t.Fatalf("%s: %d of %d connections admitted while %s was limited, want all", other, othersAdmitted, rate, limited)
			}
			// The burst, and what refilled while the tries went on.
			most := rate + int(elapsed.Seconds()*rate)
			if admitted < rate || admitted > most || admitted == tries {
				t.Fatalf("%s: %d of %d admitted in %s, want %d to %d and some refused", limited, admitted, tries, elapsed, rate, most)
			}
			check.For(t, 5*time.Second, 50*time.Millisecond, func() error {
				if !try(l, limited) {
					return errors.New(limited + " still refused")
				}
				return nil
			})
			series := fmt.Sprintf(`tether_rejects_total{listener=%q,why="accept_rate"}`, l)
			check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
				if got := counterValue(t, n, series); got != float64(refused[l]) {
					return fmt.Errorf("%s = %v, want the %d refused", series, got, refused[l])
				}
				return nil
			})
		})
	}
	if len(n.logLines(`"message":"connection rejected"`, `"why":"accept_rate"`)) == 0 {
		t.Error(`no "connection rejected" log line with why accept_rate`)
	}

	next := nodeConfig()
	next.Listeners[0].Address = n.addr("tcp")
	wsListener(n.addr("ws"))(next)
	if err := next.Validate(); err != nil {
		t.Fatal(err)
	}
	n.Reload(next) // accepts_per_ip_per_second 0
	check.For(t, 5*time.Second, 50*time.Millisecond, func() error {
		for _, l := range []string{"tcp", "ws"} {
			for i := range 2 * rate {
				if !try(l, limited) {
					return fmt.Errorf("%s: connection %d from %s refused after the limit was lifted", l, i+1, limited)
				}
			}
		}
		return nil
	})
}
