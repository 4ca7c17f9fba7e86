package conn

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func gaugeOf(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

// TestBudgetEvictsLargestHoldersFirst: past the limit the budget names
// the largest holders, until the rest fits, and stops counting them.
func TestBudgetEvictsLargestHoldersFirst(t *testing.T) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
	b := NewBudget(100, g)
	a, bb, c, d := &Actor{id: "a"}, &Actor{id: "b"}, &Actor{id: "c"}, &Actor{id: "d"}
	steps := []struct {
		who   *Actor
		n     int
		evict []*Actor
		total float64
	}{
		{a, 40, nil, 40},
		{bb, 30, nil, 70},
		{c, 20, nil, 90},
		{d, 25, []*Actor{a}, 75},  // 115: a, the largest, goes
		{bb, 50, nil, 95},         // a holder grows
		{c, 30, []*Actor{bb}, 55}, // 105: b, now the largest, goes
		{a, 0, nil, 55},           // an evicted holder's close counts nothing twice
		{d, 80, []*Actor{d}, 30},  // 110: the reporting holder itself goes
		{c, 0, nil, 0},
	}
	for i, s := range steps {
		got := b.hold(s.who, s.n)
		if len(got) != len(s.evict) {
			t.Fatalf("step %d: evicted %d, want %d", i, len(got), len(s.evict))
		}
		for j := range got {
			if got[j] != s.evict[j] {
				t.Fatalf("step %d: evicted %s, want %s", i, got[j].id, s.evict[j].id)
			}
		}
		if v := gaugeOf(t, g); v != s.total {
			t.Fatalf("step %d: gauge %v, want %v", i, v, s.total)
		}
	}
}
