package node

import (
	"testing"
	"time"

	"tether/config"
)

// TestBatchSize: a drain closes drain_batch connections a batch (all
// with 0); a stop's batches grow so that the last connection is told by
// the stop's deadline, and past it every connection left is told at once.
func TestBatchSize(t *testing.T) {
	now := time.Now()
	cfg := config.Shutdown{DrainBatch: 100, DrainInterval: config.Duration(time.Second)}
	for _, c := range []struct {
		name     string
		batch    int
		untold   int
		deadline time.Time
		want     int
	}{
		{"tether drain", 100, 5000, time.Time{}, 100},
		{"all at once", 0, 5000, time.Time{}, -1},
		{"a stop with time for the batches", 100, 500, now.Add(10 * time.Second), 100},
		{"a stop without: 11 batches left", 100, 5000, now.Add(10 * time.Second), 455},
		{"a stop past its deadline", 100, 5000, now.Add(-time.Millisecond), -1},
	} {
		cfg.DrainBatch = c.batch
		if got := batchSize(cfg, c.untold, c.deadline, now); got != c.want {
			t.Errorf("%s: batch %d, want %d", c.name, got, c.want)
		}
	}
}
