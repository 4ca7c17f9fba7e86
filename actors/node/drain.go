package node

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"tether/actors/cluster"
	"tether/actors/conn"
	"tether/actors/listener"
	"tether/config"
)

// Draining, as Phoenix's socket drainer does it: a node that drains turns
// /readyz false, refuses new connections (counted draining, or
// shutting_down when it stops), and closes its connections in batches of
// shutdown.drain_batch every shutdown.drain_interval, each with reason
// server_shutdown and a reconnect hint: a delay (shutdown.retry_delay
// plus a random part of shutdown.retry_jitter, so that a batch does not
// come back in one instant) and the public URLs of the other nodes'
// listener of the same name (from their heartbeats), shuffled per
// client. `tether drain` (POST /api/drain) drains and keeps the process;
// a stop drains first, within shutdown.timeout: its batches grow where
// needed so that the last connection is told by three quarters of it.

// DrainStatus is what POST and GET /api/drain answer.
type DrainStatus struct {
	Draining bool      `json:"draining"`
	Started  time.Time `json:"started,omitzero"`
	// Connections are the node's connections still open; Untold those
	// no batch has told to go yet.
	Connections int `json:"connections"`
	Untold      int `json:"untold"`
	// Done: every connection was told, and every one has closed.
	Done bool `json:"done"`
}

// drainState is a node's drain, from its start; the node keeps the one.
type drainState struct {
	started time.Time
	told    chan struct{} // closed once no connection is left untold
	quit    chan struct{} // closed once the node has stopped: batches end

	mu       sync.Mutex
	untold   int
	deadline time.Time // the last batch by then; zero: no stop yet

	urls map[string][]string // the last hints' URLs, per listener
}

// Drain starts draining the node, once; later calls report how far it
// is. The process stays up: only a stop (Shutdown) ends it.
func (n *Node) Drain() DrainStatus {
	n.startDrain("draining", time.Time{})
	return n.DrainStatus()
}

// DrainStatus reports the drain.
func (n *Node) DrainStatus() DrainStatus {
	d := n.drain.Load()
	if d == nil {
		return DrainStatus{Connections: n.registry.Len()}
	}
	d.mu.Lock()
	untold := d.untold
	d.mu.Unlock()
	st := DrainStatus{Draining: true, Started: d.started, Connections: n.registry.Len(), Untold: untold}
	st.Done = untold == 0 && st.Connections == 0
	return st
}

// startDrain starts the drain unless it runs already, refusing new
// sockets as why, and returns it. A non-zero deadline is a stop's: the
// last batch goes by then.
func (n *Node) startDrain(why string, deadline time.Time) *drainState {
	n.drainOnce.Do(func() {
		d := &drainState{started: time.Now(), told: make(chan struct{}), quit: make(chan struct{}), untold: n.registry.Len(), deadline: deadline}
		n.drain.Store(d)
		n.metrics.Draining.Set(1)
		for _, b := range n.listeners {
			if b.actor != nil {
				b.actor.Admission().Refuse(why)
			}
		}
		if pid := n.bridge.Load(); pid != nil {
			n.system.Root.Send(pid, &cluster.Announce{}) // the others stop sending clients here now
		}
		n.log.Info().Int("connections", d.untold).Int("batch", n.Config().Shutdown.DrainBatch).
			Str("interval", n.Config().Shutdown.DrainInterval.String()).Msg("draining")
		go n.drainBatches(d)
	})
	return n.drain.Load()
}

// stopDrain makes a stop of the drain: new sockets are refused as
// shutting_down, and every connection is told by three quarters of the
// time left until deadline. It returns once every connection was told,
// or ctx ends.
func (n *Node) stopDrain(ctx context.Context, deadline time.Time) {
	if n.registry == nil || n.root == nil {
		return // Start failed before the listeners
	}
	by := time.Now().Add(time.Until(deadline) * 3 / 4)
	d := n.startDrain("shutting_down", by)
	for _, b := range n.listeners {
		if b.actor != nil {
			b.actor.Admission().Refuse("shutting_down")
		}
	}
	d.mu.Lock()
	d.deadline = by // a drain that ran already: its next batches plan for the stop
	d.mu.Unlock()
	select {
	case <-d.told:
	case <-ctx.Done():
	}
}

// drainStopped ends the batches of a drain that a stop cut short.
func (n *Node) drainStopped() {
	if d := n.drain.Load(); d != nil {
		close(d.quit)
	}
}

// drainBatches tells the connections to go, a batch every interval,
// until none is left untold. Batches keep to their schedule (the k-th
// at k intervals from the start) however long one takes to send.
func (n *Node) drainBatches(d *drainState) {
	defer close(d.told)
	next := d.started
	for {
		cfg := n.Config().Shutdown
		d.mu.Lock()
		batch := batchSize(cfg, d.untold, d.deadline, time.Now())
		d.mu.Unlock()
		untold, err := n.closeBatch(batch, n.hints(cfg, d))
		if err != nil {
			n.log.Warn().Err(err).Msg("drain batch not answered; trying again")
		}
		d.mu.Lock()
		d.untold = untold
		d.mu.Unlock()
		if err == nil && untold == 0 {
			n.log.Info().Str("took", time.Since(d.started).Round(time.Millisecond).String()).Msg("drained: every connection told to go")
			return
		}
		next = next.Add(cfg.DrainInterval.D())
		select {
		case <-time.After(time.Until(next)):
		case <-d.quit:
			return
		}
	}
}

// batchSize is how many connections the next batch tells to go: the
// configured batch (0: all), or more where the batches left before
// deadline (a stop's; zero: none) would not reach every one of untold.
func batchSize(cfg config.Shutdown, untold int, deadline, now time.Time) int {
	batch := cfg.DrainBatch
	if batch <= 0 {
		return -1
	}
	if !deadline.IsZero() {
		if !now.Before(deadline) {
			return -1
		}
		rounds := int(deadline.Sub(now)/cfg.DrainInterval.D()) + 1
		batch = max(batch, (untold+rounds-1)/rounds)
	}
	return batch
}

// closeBatch asks the listeners in turn to tell up to most connections
// (all when most < 0) to go, and returns how many are left untold.
func (n *Node) closeBatch(most int, hints map[string]func() *conn.Hint) (int, error) {
	untold := 0
	for _, b := range n.listeners {
		if b.pid == nil {
			continue
		}
		res, err := n.system.Root.RequestFuture(b.pid, &listener.CloseBatch{Max: most, Hint: hints[b.cfg.Name]}, apiTimeout).Result()
		if err != nil {
			return -1, err
		}
		r := res.(*listener.Batched)
		if most >= 0 {
			most = max(0, most-r.Closed)
		}
		untold += r.Left
	}
	return untold, nil
}

// hints makes, per listener, the reconnect hint of each of its clients:
// the delay with its jitter, and the public URLs of the other nodes'
// listener of the same name, alive and not draining, in an order of the
// client's own. Where a drain (d, when not nil) finds none, it keeps the
// URLs of its batch before: a node that missed a heartbeat or two while
// this one was busy draining is still where its clients should go.
func (n *Node) hints(cfg config.Shutdown, d *drainState) map[string]func() *conn.Hint {
	urls := map[string][]string{}
	if pid := n.bridge.Load(); pid != nil {
		res, err := n.system.Root.RequestFuture(pid, &cluster.Nodes{}, apiTimeout).Result()
		if view, ok := res.([]cluster.NodeInfo); ok && err == nil {
			for _, info := range view[1:] { // [0] is this node
				if !info.Alive || info.Draining {
					continue
				}
				for name, u := range info.URLs {
					urls[name] = append(urls[name], u)
				}
			}
		}
	}
	if d != nil {
		d.mu.Lock()
		for name, last := range d.urls {
			if len(urls[name]) == 0 {
				urls[name] = last
			}
		}
		d.urls = urls
		d.mu.Unlock()
	}
	out := map[string]func() *conn.Hint{}
	for _, b := range n.listeners {
		others := slices.Sorted(slices.Values(urls[b.cfg.Name]))
		out[b.cfg.Name] = func() *conn.Hint {
			h := &conn.Hint{Retry: cfg.RetryDelay.D(), URLs: others}
			if j := cfg.RetryJitter.D(); j > 0 {
				h.Retry += rand.N(j)
			}
			if len(others) > 1 {
				h.URLs = slices.Clone(others)
				rand.Shuffle(len(h.URLs), func(i, j int) { h.URLs[i], h.URLs[j] = h.URLs[j], h.URLs[i] })
			}
			return h
		}
	}
	return out
}

// describe is what the node adds to its heartbeats: its listeners'
// public URLs, and whether it drains.
func (n *Node) describe(info *cluster.NodeInfo) {
	for _, l := range n.Config().Listeners {
		if l.PublicURL != "" {
			if info.URLs == nil {
				info.URLs = map[string]string{}
			}
			info.URLs[l.Name] = l.PublicURL
		}
	}
	info.Draining = n.drain.Load() != nil
}
