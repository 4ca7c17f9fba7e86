package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"tether/actors/cluster"
	"tether/test/check"
	"tether/test/nodetest"
)

// TestDeliverAsksTheConnectionsNode guards Request through Deliver: the
// question goes to the node the connection id names, with the
// connection and the asking node in its headers; that node's refusal is
// a ReplyError with its code, and a node nobody holds is ErrNoNode at
// once.
func TestDeliverAsksTheConnectionsNode(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{})
	asked := n.Other(t, "o", "o.here")
	ctx := context.Background()
	if err := n.Bus.Deliver(ctx, cluster.Clients, "o.here", []byte("hi")); err != nil {
		t.Fatalf("deliver to o.here: %v", err)
	}
	m := asked()[0]
	if m.Header.Get(cluster.HeaderKind) != cluster.KindDeliver || m.Header.Get(cluster.HeaderNode) != "n" || string(m.Data) != "hi" {
		t.Fatalf("o was asked %v %q; want a deliver of hi from n", m.Header, m.Data)
	}
	var refused *cluster.ReplyError
	if err := n.Bus.Deliver(ctx, cluster.Clients, "o.gone", []byte("hi")); !errors.As(err, &refused) || refused.Code != "not_found" {
		t.Fatalf("deliver to o.gone: %v, want not_found", err)
	}
	start := time.Now()
	if err := n.Bus.Deliver(ctx, cluster.Clients, "z.x", []byte("hi")); !errors.Is(err, cluster.ErrNoNode) || time.Since(start) > time.Second {
		t.Fatalf("deliver to a node nobody holds: %v after %s, want ErrNoNode at once", err, time.Since(start))
	}
}

// held is a node that takes questions and answers none until release.
type held struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

func hold(t *testing.T, nc *nats.Conn, subject string) *held {
	t.Helper()
	h := &held{}
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.msgs = append(h.msgs, m)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return h
}

// wait waits until the node holds want questions.
func (h *held) wait(t *testing.T, want int) {
	t.Helper()
	check.For(t, 5*time.Second, time.Millisecond, func() error {
		h.mu.Lock()
		defer h.mu.Unlock()
		if len(h.msgs) != want {
			return fmt.Errorf("%d questions held, want %d", len(h.msgs), want)
		}
		return nil
	})
}

// release answers every question held.
func (h *held) release(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.msgs {
		if err := m.Respond(nil); err != nil {
			t.Fatal(err)
		}
	}
}

// TestQuestionsInFlightAreBoundedPerAsker guards the lanes: an asker's
// requests, and its gathers, in flight are bounded (past the bound:
// ErrBusy at once, nothing sent), the other asker's lane stays free, and
// answered questions give their slots back.
func TestQuestionsInFlightAreBoundedPerAsker(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{})
	ctx := context.Background()
	requests := hold(t, n.Peer, "tether.node.o")
	done := make(chan error, cluster.MaxAdminRequests)
	for range cluster.MaxAdminRequests {
		go func() { done <- n.Bus.Deliver(ctx, cluster.Admin, "o.x", nil) }()
	}
	requests.wait(t, cluster.MaxAdminRequests)
	if err := n.Bus.Deliver(ctx, cluster.Admin, "o.x", nil); !errors.Is(err, cluster.ErrBusy) {
		t.Fatalf("a request past the admin lane's bound: %v, want ErrBusy", err)
	}
	if err := n.Bus.Deliver(ctx, cluster.Clients, "z.x", nil); !errors.Is(err, cluster.ErrNoNode) {
		t.Fatalf("a client's request while the admin lane is full: %v, want it asked (ErrNoNode)", err)
	}

	gathers := hold(t, n.Peer, "tether.cluster")
	gathered := make(chan error, cluster.MaxAdminGathers)
	for range cluster.MaxAdminGathers {
		go func() {
			_, err := n.Bus.Gather(ctx, "stats", 1, 5*time.Second)
			gathered <- err
		}()
	}
	gathers.wait(t, cluster.MaxAdminGathers)
	if _, err := n.Bus.Gather(ctx, "stats", 1, 5*time.Second); !errors.Is(err, cluster.ErrBusy) {
		t.Fatalf("a gather past the admin lane's bound: %v, want ErrBusy", err)
	}
	if _, err := n.Bus.GatherMembers(ctx, false, "r", 10*time.Millisecond); err != nil {
		t.Fatalf("a client's gather while the admin lane is full: %v", err)
	}

	requests.release(t)
	gathers.release(t)
	for range cluster.MaxAdminRequests {
		if err := <-done; err != nil {
			t.Fatalf("a held request, answered: %v", err)
		}
	}
	for range cluster.MaxAdminGathers {
		if err := <-gathered; err != nil {
			t.Fatalf("a held gather, answered: %v", err)
		}
	}
	if err := n.Bus.Deliver(ctx, cluster.Admin, "z.x", nil); !errors.Is(err, cluster.ErrNoNode) {
		t.Fatalf("a request once the lane is free again: %v, want it asked (ErrNoNode)", err)
	}
}
