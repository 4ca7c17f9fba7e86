package test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"tether/actors/node"
	"tether/client"
	"tether/config"
	"tether/test/check"
)

// closed is what one client saw of its node's drain: when the close came,
// with which hint, and how (a TCP close message, or a WebSocket close
// frame's code).
type closed struct {
	at   time.Time
	hint *client.Hint
	err  error
	code uint16
}

// watchClose reads c until the server closes it and reports what it saw.
func watchClose(c *client.Client, out chan<- closed) {
	for {
		_, err := c.Recv()
		if err == nil {
			continue
		}
		got := closed{at: time.Now(), hint: c.Hint(), err: err}
		var ce *client.CloseError
		if errors.As(err, &ce) {
			got.code = ce.Code
			if ce.Reason != "server_shutdown" {
				got.err = fmt.Errorf("close reason %q", ce.Reason)
			}
		}
		out <- got
		return
	}
}

// readyzPoller asks /readyz every few milliseconds until stopped, and
// keeps when each question was asked and what it was answered.
type readyzPoller struct {
	mu      sync.Mutex
	answers []readyzAnswer
	stop    chan struct{}
	done    chan struct{}
}

type readyzAnswer struct {
	asked time.Time
	code  int
}

func pollReadyz(n *testNode) *readyzPoller {
	p := &readyzPoller{stop: make(chan struct{}), done: make(chan struct{})}
	url := "http://" + n.HTTPAddr().String() + "/readyz"
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			asked := time.Now()
			resp, err := http.Get(url)
			code := 0
			if err == nil {
				code = resp.StatusCode
				resp.Body.Close()
			}
			p.mu.Lock()
			p.answers = append(p.answers, readyzAnswer{asked: asked, code: code})
			p.mu.Unlock()
		}
	}()
	return p
}

// waitReady waits for a first 200.
func (p *readyzPoller) waitReady(t *testing.T) {
	t.Helper()
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, a := range p.answers {
			if a.code == http.StatusOK {
				return nil
			}
		}
		return errors.New("no /readyz 200 yet")
	})
}

// ended stops the poller and returns its answers.
func (p *readyzPoller) ended() []readyzAnswer {
	close(p.stop)
	<-p.done
	return p.answers
}

// checkNotReadyFrom fails unless /readyz said 200 before from and never
// after: every question asked from then on got 503 (or no answer, once
// the admin server is gone).
func checkNotReadyFrom(t *testing.T, answers []readyzAnswer, from time.Time) {
	t.Helper()
	before, after := 0, 0
	for _, a := range answers {
		switch {
		case a.asked.Before(from):
			if a.code == http.StatusOK {
				before++
			}
		case a.code == http.StatusOK:
			t.Errorf("/readyz asked %s after the drain began answered 200", a.asked.Sub(from))
		default:
			after++
		}
	}
	if before == 0 || after == 0 {
		t.Errorf("/readyz: %d ready answers before the drain, %d not ready after; want both", before, after)
	}
}

// TestDrain: tether drain on a node with TCP and WebSocket clients turns
// /readyz false from its first moment, refuses new connections on both
// listeners (counted draining), and closes the clients in batches of
// drain_batch per drain_interval, each told server_shutdown with a
// reconnect hint (WebSocket: close 1012); the node stays up, drained.
func TestDrain(t *testing.T) {
	const batch, interval, clients = 2, 400 * time.Millisecond, 6
	const delay, jitter = 200 * time.Millisecond, 300 * time.Millisecond
	n := startNode(t, func(c *config.Config) {
		wsListener("127.0.0.1:0")(c)
		c.HTTP.Token = "drain-test-token"
		c.Shutdown.DrainBatch = batch
		c.Shutdown.DrainInterval = config.Duration(interval)
		c.Shutdown.RetryDelay = config.Duration(delay)
		c.Shutdown.RetryJitter = config.Duration(jitter)
	})
	got := make(chan closed, clients)
	for i := range clients {
		c := n.dial(t, "tcp")
		if i == 0 {
			c = n.dialWS(t)
		}
		go watchClose(c, got)
	}
	readyz := pollReadyz(n)
	readyz.waitReady(t)

	dir := t.TempDir()
	conf := filepath.Join(dir, "tether.yaml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "http: {address: %q, token: drain-test-token}\n", n.HTTPAddr()), 0o644); err != nil {
		t.Fatal(err)
	}
	began := time.Now() // no later than the drain's start
	stdout, stderr, code := tether(t, dir, "drain", "-c", conf)
	if code != 0 || !strings.Contains(stdout, "draining since") {
		t.Fatalf("tether drain: exit %d\n%s%s", code, stdout, stderr)
	}
	called := time.Now()

	// New connections are refused, on both listeners, and counted.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := client.DialTCP(ctx, n.addr("tcp"), client.TCPOptions{}); err == nil {
		c.Close()
		t.Error("a TCP client was welcomed while the node drained")
	}
	if c, err := client.DialWebSocket(ctx, "ws://"+n.addr("ws")+"/ws"); err == nil {
		c.Close()
		t.Error("a WebSocket client was welcomed while the node drained")
	}
	for _, l := range []string{"tcp", "ws"} {
		series := fmt.Sprintf(`tether_rejects_total{listener=%q,why="draining"}`, l)
		check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
			if v := counterValue(t, n, series); v != 1 {
				return fmt.Errorf("%s = %v, want 1", series, v)
			}
			return nil
		})
	}

	// Every client is told to go, in batches, with its hint.
	var all []closed
	for range clients {
		select {
		case c := <-got:
			all = append(all, c)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d clients told to go", len(all), clients)
		}
	}
	slices.SortFunc(all, func(a, b closed) int { return a.at.Compare(b.at) })
	ws := 0
	for _, c := range all {
		if c.err != nil && !errors.Is(c.err, client.ErrClosed) {
			t.Errorf("a client's close: %v", c.err)
		}
		if c.hint == nil || c.hint.Retry < delay || c.hint.Retry >= delay+jitter || len(c.hint.URLs) != 0 {
			t.Errorf("hint %+v, want a delay in [%s, %s) and no URLs (no other node)", c.hint, delay, delay+jitter)
		}
		if c.code != 0 {
			ws++
			if c.code != 1012 {
				t.Errorf("WebSocket close code %d, want 1012", c.code)
			}
		}
	}
	if ws != 1 {
		t.Errorf("%d WebSocket close frames, want 1", ws)
	}
	// The k-th batch leaves k-1 intervals after the drain began, at the
	// earliest: before that, at most (k-1) batches can have arrived.
	for k := 1; k*batch < clients; k++ {
		early := 0
		for _, c := range all {
			if c.at.Before(began.Add(time.Duration(k) * interval)) {
				early++
			}
		}
		if early > k*batch {
			t.Errorf("%d clients told within %d drain intervals, want at most %d (batches of %d)", early, k, k*batch, batch)
		}
	}
	checkNotReadyFrom(t, readyz.ended(), called)

	var st node.DrainStatus
	check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		if code := api(t, n, http.MethodGet, "/api/drain", nil, &st); code != http.StatusOK || !st.Done {
			return fmt.Errorf("GET /api/drain: %d %+v", code, st)
		}
		return nil
	})
	stdout, stderr, code = tether(t, dir, "drain", "-c", conf, "--wait")
	if code != 0 || !strings.Contains(stdout, "drained: no connection left") {
		t.Errorf("tether drain --wait on a drained node: exit %d\n%s%s", code, stdout, stderr)
	}
	if code := api(t, n, http.MethodGet, "/healthz", nil, nil); code != http.StatusOK {
		t.Errorf("/healthz %d: a drained node stays up", code)
	}
	var r node.Readiness
	if code := api(t, n, http.MethodGet, "/readyz", nil, &r); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz %d %+v, want 503 while drained", code, r)
	}
}

// TestStopDrainsFirst: a stop drains the same way before the node exits:
// /readyz false from its first moment while the admin server still
// answers, new connections refused (shutting_down), the clients told in
// batches, then the node is down.
func TestStopDrainsFirst(t *testing.T) {
	const clients, interval = 4, 300 * time.Millisecond
	n := startNode(t, func(c *config.Config) {
		c.Shutdown.DrainBatch = 1
		c.Shutdown.DrainInterval = config.Duration(interval)
	})
	got := make(chan closed, clients)
	for range clients {
		go watchClose(n.dial(t, "tcp"), got)
	}
	readyz := pollReadyz(n)
	readyz.waitReady(t)
	began := time.Now()
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopped <- n.Shutdown(ctx)
	}()
	first := <-got
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := client.DialTCP(ctx, n.addr("tcp"), client.TCPOptions{}); err == nil {
		c.Close()
		t.Error("a client was welcomed while the node stopped")
	}
	if v := counterValue(t, n, `tether_rejects_total{listener="tcp",why="shutting_down"}`); v != 1 {
		t.Errorf("shutting_down rejects %v, want 1", v)
	}
	last := first
	for i := 1; i < clients; i++ {
		select {
		case c := <-got:
			last = c
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d clients told to go", i, clients)
		}
	}
	if first.hint == nil || last.hint == nil {
		t.Errorf("hints %+v, %+v: every client of a stop gets one", first.hint, last.hint)
	}
	if spread := last.at.Sub(began); spread < time.Duration(clients-1)*interval {
		t.Errorf("the last of %d clients told %s after the stop began, want batches of 1 every %s", clients, spread, interval)
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the node did not stop")
	}
	checkNotReadyFrom(t, readyz.ended(), began)
}

// TestDrainHintNamesOtherNodes: a draining node's hint lists the public
// URL that another node announced for the listener of the same name.
// On WebSocket it is the close frame's reason (1012) when it fits in
// 123 bytes; a longer one comes first as the last text message, and the
// close reason keeps the delay. TCP's final frame carries it whole.
func TestDrainHintNamesOtherNodes(t *testing.T) {
	short := "ws://b.example:9502/ws"
	long := "wss://" + strings.Repeat("b", 60) + ".example.com:443/ws"
	ns := startNATS(t, -1)
	listeners := func(c *config.Config, urls ...string) {
		c.NATS.URL = ns.ClientURL()
		clusterTiming(c)
		c.Listeners[0].PublicURL = urls[0]
		for i, name := range []string{"ws", "ws2"} {
			wsListener("127.0.0.1:0")(c)
			l := &c.Listeners[len(c.Listeners)-1]
			l.Name, l.PublicURL = name, urls[i+1]
		}
	}
	b := startNode(t, func(c *config.Config) { c.Node.Name = "b"; listeners(c, "b.example:9501", short, long) })
	a := startNode(t, func(c *config.Config) { c.Node.Name = "a"; listeners(c, "", "", "") })
	check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		var nodes []struct {
			Node string
			URLs map[string]string
		}
		api(t, a, http.MethodGet, "/api/nodes", nil, &nodes)
		for _, nd := range nodes {
			if nd.Node == b.ID() && nd.URLs["ws2"] == long {
				return nil
			}
		}
		return fmt.Errorf("a does not know b's public URLs: %+v", nodes)
	})

	dial := func(listener string) *client.Client {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := client.DialWebSocket(ctx, "ws://"+a.addr(listener)+"/ws")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	tcp, ws, ws2 := a.dial(t, "tcp"), dial("ws"), dial("ws2")
	a.Drain()

	ev, err := tcp.Expect("close", 5*time.Second)
	if err != nil || ev.Reason != "server_shutdown" || ev.RetryMS == nil || !slices.Equal(ev.URLs, []string{"b.example:9501"}) {
		t.Errorf("tcp: final frame %+v %v, want server_shutdown with retry_ms and b's tcp URL", ev, err)
	}
	// The short URL fits in the close frame: no text message first.
	var ce *client.CloseError
	if ev, err := ws.Recv(); !errors.As(err, &ce) || ce.Code != 1012 || ce.Reason != "server_shutdown" || ce.Hint == nil || !slices.Equal(ce.Hint.URLs, []string{short}) {
		t.Errorf("ws: %+v %v, want close 1012 with the hint and b's ws URL in its reason", ev, err)
	}
	// The long one does not: the whole hint as the last text message,
	// then the close frame with the delay alone.
	ev, err = ws2.Recv()
	if err != nil || ev.Op != "close" || ev.RetryMS == nil || !slices.Equal(ev.URLs, []string{long}) {
		t.Fatalf("ws2: %+v %v, want the close message with b's long URL first", ev, err)
	}
	if _, err := ws2.Recv(); !errors.As(err, &ce) || ce.Code != 1012 || ce.Hint == nil || len(ce.Hint.URLs) != 0 || ce.Hint.Retry != time.Duration(*ev.RetryMS)*time.Millisecond {
		t.Errorf("ws2: %v (hint %+v), want close 1012 with the same delay and no URLs", err, ce)
	}
	if h := ws2.Hint(); h == nil || !slices.Equal(h.URLs, []string{long}) {
		t.Errorf("ws2: the client's hint %+v, want the message's, with the URL", h)
	}
}
