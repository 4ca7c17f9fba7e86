package test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"tether/config"
	"tether/test/check"
	"tether/test/testca"
)

// routed makes a node's embedded NATS server the i-th of a cluster joined
// by routes on the route ports ports, each routing to all the others,
// with the credentials routes need: user tether, password s3cret.
func routed(ports []int, i int) func(*config.Config) {
	return func(c *config.Config) {
		c.NATS.User, c.NATS.Password = "tether", "s3cret"
		c.NATS.Embedded.Cluster = config.EmbeddedCluster{Name: "tether-test", Host: "127.0.0.1", Port: ports[i]}
		for j, p := range ports {
			if j != i {
				c.NATS.Embedded.Cluster.Routes = append(c.NATS.Embedded.Cluster.Routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
			}
		}
	}
}

// natsServerLines are the lines of a log at level that the embedded
// nats-server wrote.
func natsServerLines(logs, level string) []string {
	return linesWith(logs, `"component":"nats-server"`, `"level":"`+level+`"`)
}

// TestRouteLossLogsNoErrors: once a node of a routed cluster stops,
// cleanly or by SIGKILL, its peer's embedded server tries the route again
// every second, for ever. That is expected and says nothing new: the
// peer logs it at debug and at most a warning now and then, never an
// error (it logged `Error trying to connect to route` at level error
// about 8 times a second), nor while the cluster starts. A node with a
// route port and no routes tries none.
func TestRouteLossLogsNoErrors(t *testing.T) {
	for _, how := range []string{"SIGTERM", "SIGKILL"} {
		t.Run(how, func(t *testing.T) {
			// Only a routes to b: the route is a's to try again. (Where
			// both route to each other, either may hold the route that
			// survives, and so try it again.)
			ports := []int{freePort(t), freePort(t)}
			a := startNode(t, func(c *config.Config) {
				c.Node.Name = "a"
				clusterTiming(c)
				routed(ports, 0)(c)
			})
			bAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			b := startServeProcess(t, fmt.Sprintf(`
node: {name: b}
log: {format: json}
http: {address: ""}
nats:
  user: tether
  password: s3cret
  embedded: {port: -1, store_dir: "", cluster: {name: tether-test, port: %d}}
cluster: {heartbeat_interval: 100ms, dead_after: 1s}
listeners:
  - {name: tcp, address: %q}
`, ports[1], bAddr), bAddr)
			check.For(t, 20*time.Second, 50*time.Millisecond, func() error {
				if got := gaugeValue(t, a, "tether_cluster_nodes_alive"); got != 1 {
					return fmt.Errorf("a sees %v other nodes", got)
				}
				return nil
			})

			// a started first: its route to b failed until b came up,
			// which is no error either (a start of three nodes logged 6).
			before := len(a.logs.String())
			if errs := natsServerLines(a.logs.String(), "error"); len(errs) > 0 {
				t.Errorf("a's start logged %d errors, first: %s", len(errs), errs[0])
			}
			if warns := natsServerLines(a.logs.String(), "warn"); len(warns) > 1 {
				t.Errorf("a's start logged %d warnings:\n%s", len(warns), strings.Join(warns, "\n"))
			}
			if how == "SIGKILL" {
				b.kill()
			} else {
				b.stop(t)
			}
			// a's server tries the route every second meanwhile.
			check.Never(t, 3*time.Second, 100*time.Millisecond, func() error {
				if errs := natsServerLines(a.logs.String()[before:], "error"); len(errs) > 0 {
					return fmt.Errorf("%d error lines after b's %s, first: %s", len(errs), how, errs[0])
				}
				return nil
			})
			if how == "SIGTERM" {
				// b, with a route port and no routes of its own, tried
				// none (it tried an empty one for ever).
				if strings.Contains(b.logs.String(), "Error trying to connect to route") {
					t.Errorf("b, which has no routes, tried one")
				}
			}
			since := a.logs.String()[before:]
			if warns := natsServerLines(since, "warn"); len(warns) > 2 {
				t.Errorf("%d warnings in 3s after b's %s:\n%s", len(warns), how, strings.Join(warns, "\n"))
			}
			if len(a.logLines(`"peer":"b-`)) == 0 {
				t.Errorf("a did not log that b is gone")
			}
		})
	}
}

// logEntries parses a process's JSON log lines, up to and with the first
// whose message is upTo.
func logEntries(t *testing.T, logs, upTo string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(logs, "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		out = append(out, e)
		if e["message"] == upTo {
			return out
		}
	}
	t.Fatalf("no %q in the log:\n%s", upTo, logs)
	return nil
}

// TestStartLogSaysWhatRuns: the start of `tether serve` says what a new
// user needs and nothing more: one line per listener (name, protocol,
// address, app, auth mode, tls), the chat page's URL for each websocket
// listener serving the embedded page (https with tls), and a warning for
// a TETHER_* variable that is no key (TETHER_HOME), which does not stop
// the node. The embedded nats-server's banner (7 lines, 15 with
// JetStream) is debug.
func TestStartLogSaysWhatRuns(t *testing.T) {
	ca := testca.New(t)
	certFile, keyFile := ca.Issue(t, 2)
	addr := func() string { return fmt.Sprintf("127.0.0.1:%d", freePort(t)) }
	tcp, ws, wss, files := addr(), addr(), addr(), addr()
	p := startServeProcess(t, fmt.Sprintf(`
node: {name: s}
log: {format: json}
http: {address: ""}
nats: {embedded: {port: -1, store_dir: ""}}
rooms: {namespaces: [{prefix: news, history_size: 10}]}
listeners:
  - {name: tcp, address: %q, heartbeat: {idle_timeout: 30s}}
  - {name: ws, protocol: websocket, address: %q}
  - name: wss
    protocol: websocket
    address: %q
    tls: {cert_file: %q, key_file: %q}
    auth: {mode: token, jwt: {hmac_secret: %q}}
  - {name: files, protocol: websocket, address: %q, static_dir: %q}
`, tcp, ws, wss, certFile, keyFile, testSecret, files, t.TempDir()), tcp, "export TETHER_HOME=/opt/tether")
	check.For(t, 20*time.Second, 50*time.Millisecond, func() error {
		if !strings.Contains(p.logs.String(), `"node started"`) {
			return errors.New("node not started")
		}
		return nil
	})
	entries := logEntries(t, p.logs.String(), "node started")

	type listening struct{ protocol, address, auth string }
	want := map[string]listening{
		"tcp": {"tcp", tcp, "none"}, "ws": {"websocket", ws, "none"},
		"wss": {"websocket", wss, "token"}, "files": {"websocket", files, "none"},
	}
	seen := map[string]int{}
	var pages []string
	for _, e := range entries {
		switch msg, _ := e["message"].(string); {
		case e["component"] == "nats-server" && e["level"] != "debug":
			t.Errorf("nats-server at %s during the start: %s", e["level"], msg)
		case msg == "listening":
			name, _ := e["listener"].(string)
			w := want[name]
			seen[name]++
			if e["protocol"] != w.protocol || e["address"] != w.address || e["app"] != "chat" || e["auth"] != w.auth || e["tls"] != (name == "wss") {
				t.Errorf("listening line of %s: %v, want %+v", name, e, w)
			}
		case strings.HasPrefix(msg, "chat page: "):
			pages = append(pages, strings.TrimPrefix(msg, "chat page: "))
		}
	}
	for name := range want {
		if seen[name] != 1 {
			t.Errorf("%d listening lines for %s", seen[name], name)
		}
	}
	if wantPages := []string{"http://" + ws + "/", "https://" + wss + "/"}; !slices.Equal(pages, wantPages) {
		t.Errorf("chat pages %q, want %q", pages, wantPages)
	}
	// The URLs serve the page.
	for i, url := range pages {
		c := httpsClient(ca)
		resp, err := c.Get(url)
		if err != nil {
			t.Errorf("page %d: %v", i, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "<html") {
			t.Errorf("%s: %d %.80q", url, resp.StatusCode, body)
		}
	}
	var warned bool
	for _, e := range entries {
		if e["level"] == "warn" && e["message"] == "environment TETHER_HOME: not a configuration key; ignored" {
			warned = true
		}
	}
	if !warned {
		t.Errorf("no warning about TETHER_HOME")
	}
}

// TestTakenNATSPortFailsAtOnce: `tether serve` whose embedded NATS port is
// taken exits at once, not after a 10 s wait, with one line naming
// nats.embedded.port.
func TestTakenNATSPortFailsAtOnce(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "tether.yaml")
	port := taken.Addr().(*net.TCPAddr).Port
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`
log: {format: json}
http: {address: ""}
nats: {embedded: {port: %d}}
listeners: [{name: tcp, address: "127.0.0.1:0"}]
`, port)), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, stderr, code := tether(t, dir, "serve", "-c", conf)
	took := time.Since(start)
	if code == 0 {
		t.Fatal("serve started on a taken NATS port")
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "tether: ") || !strings.Contains(last, fmt.Sprintf("nats.embedded.port %d", port)) {
		t.Errorf("last line %q does not name nats.embedded.port %d", last, port)
	}
	if took > 3*time.Second {
		t.Errorf("serve failed after %s", took.Round(time.Millisecond))
	}
}
