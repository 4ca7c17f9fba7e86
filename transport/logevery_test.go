package transport

import (
	"errors"
	"testing"
	"time"

	"tether/test/check"
)

// TestLogEvery: the first line goes out, the next ones within the
// interval are held back, and the first after it says how many were.
func TestLogEvery(t *testing.T) {
	e := NewLogEvery(100 * time.Millisecond)
	if held, ok := e.Allow(); !ok || held != 0 {
		t.Fatalf("first: %d %v", held, ok)
	}
	heldBack := 0
	check.For(t, 5*time.Second, time.Millisecond, func() error {
		held, ok := e.Allow()
		if !ok {
			heldBack++
			return errors.New("held back")
		}
		if held != heldBack {
			t.Fatalf("says %d held back, %d were", held, heldBack)
		}
		return nil
	})
	if heldBack == 0 {
		t.Errorf("nothing held back within the interval")
	}
	if _, ok := e.Allow(); ok {
		t.Errorf("a second line right after the one let out")
	}
}
