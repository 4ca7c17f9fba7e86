package test

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"tether/actors/conn"
	"tether/actors/node"
	"tether/client"
	"tether/config"
	"tether/test/check"
)

// testNode is a node started in process on loopback with random ports,
// its log kept for assertions.
type testNode struct {
	*node.Node
	logs *syncBuffer
}

// nodeConfig is the configuration of a test node: embedded NATS, admin
// server and one TCP listener "tcp", all on random loopback ports.
func nodeConfig() *config.Config {
	cfg := config.Default()
	cfg.Node.Name = "t"
	cfg.NATS.Embedded.Port = -1
	cfg.NATS.Embedded.StoreDir = "" // history, where a test has some, in memory
	cfg.HTTP.Address = "127.0.0.1:0"
	tcp := config.DefaultListener(config.ProtocolTCP)
	tcp.Name, tcp.Address = "tcp", "127.0.0.1:0"
	cfg.Listeners = []config.Listener{tcp}
	return cfg
}

// startNode starts a node with nodeConfig changed by mutate.
func startNode(t *testing.T, mutate func(*config.Config), opts ...func(*node.Options)) *testNode {
	t.Helper()
	cfg := nodeConfig()
	if mutate != nil {
		mutate(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	o := node.Options{Config: cfg, Log: zerolog.New(logs).With().Timestamp().Logger(), Version: "test"}
	for _, f := range opts {
		f(&o)
	}
	n, err := node.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
		if t.Failed() {
			t.Logf("node log:\n%s", logs.String())
		}
	})
	return &testNode{Node: n, logs: logs}
}

// addr is the dialable address of a listener.
func (n *testNode) addr(listener string) string { return n.Addr(listener).String() }

// dial connects the project's own client to a TCP listener with the
// default framing.
func (n *testNode) dial(t *testing.T, listener string) *client.Client {
	t.Helper()
	return n.dialWith(t, listener, client.TCPOptions{})
}

// dialWith connects with the given framing.
func (n *testNode) dialWith(t *testing.T, listener string, o client.TCPOptions) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.DialTCP(ctx, n.addr(listener), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialFrom connects the project's client to listener ("ws" is the
// WebSocket one, any other a TCP one with the default framing) from the
// source address ip, and reads the welcome: a socket closed at accept is
// an error.
func (n *testNode) dialFrom(listener, ip string) (*client.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if listener == "ws" {
		return client.DialWebSocketFrom(ctx, "ws://"+n.addr(listener)+"/ws", net.ParseIP(ip))
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.DialContext(ctx, "tcp", n.addr(listener))
	if err != nil {
		return nil, err
	}
	cl, err := client.Wrap(c, client.TCPOptions{}, 5*time.Second)
	if err != nil {
		c.Close()
	}
	return cl, err
}

// closeReason waits until connection id has closed and returns its reason.
func (n *testNode) closeReason(t *testing.T, id string, within time.Duration) conn.Reason {
	t.Helper()
	var reason conn.Reason
	check.For(t, within, 10*time.Millisecond, func() error {
		info, ok := n.ConnInfo(id)
		if !ok {
			return fmt.Errorf("no info for %s", id)
		}
		if info.Closed == nil {
			return fmt.Errorf("%s still open", id)
		}
		reason = info.Reason
		return nil
	})
	return reason
}

// logLines returns the node's log lines containing every one of subs.
func (n *testNode) logLines(subs ...string) []string { return linesWith(n.logs.String(), subs...) }

// linesWith returns the lines of logs containing every one of subs.
func linesWith(logs string, subs ...string) []string {
	var out []string
	for _, line := range strings.Split(logs, "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// dialRaw connects a raw socket to a pack('N') TCP listener at addr and
// reads its welcome; it returns the socket and the connection id.
func dialRaw(t *testing.T, addr string) (net.Conn, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	welcome, err := readPackN(c, 5*time.Second)
	if err != nil {
		t.Fatalf("welcome: %v", err)
	}
	var w struct{ Conn string }
	if err := json.Unmarshal([]byte(welcome), &w); err != nil {
		t.Fatalf("welcome %q: %v", welcome, err)
	}
	return c, w.Conn
}

// packN frames body as PHP's pack('N', strlen($body)) . $body does: the
// byte layout written out by hand, independent of the framing package.
func packN(body string) []byte {
	b := make([]byte, 4+len(body))
	binary.BigEndian.PutUint32(b, uint32(len(body)))
	copy(b[4:], body)
	return b
}

// readPackN reads one pack('N')-framed message from a raw socket.
func readPackN(c net.Conn, timeout time.Duration) (string, error) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return "", err
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	if _, err := io.ReadFull(c, body); err != nil {
		return "", err
	}
	return string(body), nil
}

// waitClosed reads from a raw socket until the server closes it, and
// returns when that happened.
func waitClosed(c net.Conn, timeout time.Duration) (time.Time, error) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return time.Time{}, fmt.Errorf("still open after %s", timeout)
		}
		return time.Now(), nil
	}
}

// metrics scrapes the node's /metrics: series (name with labels) → value.
func (n *testNode) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + n.HTTPAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// counterValue is one series' value (0 when absent).
func counterValue(t *testing.T, n *testNode, series string) float64 {
	t.Helper()
	return n.metrics(t)[series]
}

// gaugeValue sums every series of a metric name.
func gaugeValue(t *testing.T, n *testNode, name string) float64 {
	t.Helper()
	sum := 0.0
	for series, v := range n.metrics(t) {
		if series == name || strings.HasPrefix(series, name+"{") {
			sum += v
		}
	}
	return sum
}

// keepAlive makes c send a ping every period until the test ends: the
// client's own heartbeat.
func keepAlive(t *testing.T, c *client.Client, every time.Duration) {
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(every):
				_ = c.Send(client.Request{Op: "ping"})
			}
		}
	}()
}
