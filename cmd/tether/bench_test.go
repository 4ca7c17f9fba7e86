package main

import (
	"testing"
)

// TestMeasureRSS: the figure per connection is the growth from the lowest
// RSS at rest to the lowest held, and only when that growth stands out of
// what the RSS moves by itself: a server that returned memory while the
// connections were held gives no figure, never a negative one.
func TestMeasureRSS(t *testing.T) {
	const mb = 1 << 20
	cases := []struct {
		name       string
		rest, held []int64
		conns      int
		measurable bool
		perConn    float64
	}{
		{"steady growth", []int64{40 * mb, 41 * mb, 40 * mb}, []int64{64 * mb, 63 * mb, 63 * mb}, 10000, true, float64(23*mb) / 10000},
		// The report that was negative: the one reading before caught
		// garbage (50 MB) the server then returned.
		{"memory returned meanwhile", []int64{50 * mb, 44 * mb, 42 * mb}, []int64{43 * mb, 42 * mb, 42 * mb}, 1000, false, 0},
		{"growth within the noise", []int64{40 * mb, 42 * mb}, []int64{46 * mb, 48 * mb}, 1000, false, 0},
		{"growth below a MiB", []int64{40 * mb}, []int64{40*mb + 512<<10}, 100, false, 0},
		{"no connections", []int64{40 * mb}, []int64{50 * mb}, 0, false, 0},
	}
	for _, c := range cases {
		f := measureRSS(c.rest, c.held, c.conns)
		if f.measurable() != c.measurable {
			t.Errorf("%s: measurable %v, want %v (%+v)", c.name, f.measurable(), c.measurable, f)
			continue
		}
		if c.measurable && f.perConn() != c.perConn {
			t.Errorf("%s: %.1f bytes per connection, want %.1f", c.name, f.perConn(), c.perConn)
		}
		if f.measurable() && f.perConn() <= 0 {
			t.Errorf("%s: measurable, and %.1f bytes per connection", c.name, f.perConn())
		}
	}
}
