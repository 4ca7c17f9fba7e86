// Package check holds the polling helpers tether's tests use instead of
// sleeps: a condition is retried until it holds or a deadline passes, the
// way nats-server's checkFor does.
package check

import (
	"testing"
	"time"
)

// For retries f every interval until it returns nil, and fails the test
// with f's last error once total has passed.
func For(t testing.TB, total, interval time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing after %s: %v", total, err)
		}
		time.Sleep(interval)
	}
}

// Never fails the test if f returns an error at any poll during total:
// for conditions that must keep holding (a connection stays open).
func Never(t testing.TB, total, interval time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for time.Now().Before(deadline) {
		if err := f(); err != nil {
			t.Fatalf("after %s: %v", total-time.Until(deadline), err)
		}
		time.Sleep(interval)
	}
}
