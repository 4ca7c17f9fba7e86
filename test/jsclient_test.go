package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"tether/actors/conn"
	"tether/actors/node"
	"tether/actors/protocol"
	"tether/clients/js"
	"tether/config"
)

// TestJSClientIsServed: every WebSocket listener serves the embedded
// client at /tether.js as JavaScript, also one with a static_dir, whose
// own tether.js it shadows while its other files are served.
func TestJSClientIsServed(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{"index.html": "<p>my page</p>", "tether.js": "// not the client"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	n := startNode(t, func(c *config.Config) {
		wsListener("127.0.0.1:0")(c)
		static := config.DefaultListener(config.ProtocolWebSocket)
		static.Name, static.Address, static.StaticDir = "static", "127.0.0.1:0", dir
		c.Listeners = append(c.Listeners, static)
	})
	want, err := fs.ReadFile(js.FS, "tether.js")
	if err != nil {
		t.Fatal(err)
	}
	get := func(url string) (string, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s %v", url, resp.Status, err)
		}
		return string(body), resp.Header.Get("Content-Type")
	}
	for _, l := range []string{"ws", "static"} {
		body, ctype := get("http://" + n.addr(l) + "/tether.js")
		if body != string(want) || !strings.HasPrefix(ctype, "text/javascript") {
			t.Errorf("listener %s: /tether.js is %d bytes of %q; want the embedded client (%d bytes) as text/javascript", l, len(body), ctype, len(want))
		}
	}
	if body, _ := get("http://" + n.addr("static") + "/"); body != "<p>my page</p>" {
		t.Errorf("static_dir's index: %q", body)
	}
}

// testOps wraps the chat application of the JavaScript client's test node
// with requests no real server knows, to make it misbehave on demand:
// test_gap (ok, then a gap in the room), test_silent (no answer) and
// test_mute (no answer to it or to anything after: a stuck server).
type testOps struct {
	conn.App
	muted bool
}

func (o *testOps) Frame(c *conn.Actor, data []byte) {
	if o.muted {
		return
	}
	var req struct {
		Op   string
		ID   json.RawMessage
		Room string
	}
	if !bytes.Contains(data, []byte(`"test_`)) || json.Unmarshal(data, &req) != nil {
		o.App.Frame(c, data)
		return
	}
	switch req.Op {
	case "test_gap":
		c.Send(protocol.Encode(&protocol.Reply{Op: "ok", ID: req.ID}))
		c.Send(protocol.Encode(&protocol.Gap{Op: "gap", Room: req.Room}))
	case "test_silent":
	case "test_mute":
		o.muted = true
	default:
		o.App.Frame(c, data)
	}
}

// TestJSClientWithNode runs the JavaScript client's tests
// (clients/js/test, Node's test runner) against real nodes on one
// JetStream NATS: "main" with a WebSocket listener "ws" (idle timeout 2s:
// only a client that keeps its heartbeat stays), a token listener
// "wstoken" and a listener "wsroll", and "other" with a "ws" listener and
// a "wsroll" whose public URL main's reconnect hints name; other stays up
// while the tests stop and start main. The tests drive this test through a control
// server: POST /stop and /start (main, on the same addresses), GET
// /token?user=&name=&rooms=&ttl=&key=other (minted here).
func TestJSClientWithNode(t *testing.T) {
	nodeArgs := nodeWithWebSocket(t)
	tests, err := filepath.Glob("../clients/js/test/*.test.js")
	if err != nil || len(tests) == 0 {
		t.Fatalf("no tests in clients/js/test: %v", err)
	}
	ns := startJetStreamNATS(t, -1, "")
	// "wsroll", on both nodes: other announces its public URL, which
	// main's reconnect hints then name when it stops.
	roll := func(c *config.Config, address, publicURL string) {
		l := config.DefaultListener(config.ProtocolWebSocket)
		l.Name, l.Address, l.PublicURL = "wsroll", address, publicURL
		c.Listeners = append(c.Listeners, l)
		c.Cluster.HeartbeatInterval = config.Duration(200 * time.Millisecond)
	}
	mainConfig := func(ws, wstoken, wsroll, admin string) func(*config.Config) {
		return func(c *config.Config) {
			c.NATS.URL = ns.ClientURL()
			c.HTTP.Address = admin
			withHistory(100)(c)
			wsListener(ws)(c)
			l := &c.Listeners[len(c.Listeners)-1]
			l.Heartbeat.IdleTimeout = config.Duration(2 * time.Second)
			l.Heartbeat.CheckInterval = 0
			tl := config.DefaultListener(config.ProtocolWebSocket)
			tl.Name, tl.Address = "wstoken", wstoken
			tl.Auth.Mode, tl.Auth.JWT = config.AuthToken, config.JWT{HMACSecret: testSecret}
			c.Listeners = append(c.Listeners, tl)
			roll(c, wsroll, "")
			c.Shutdown.RetryDelay = config.Duration(300 * time.Millisecond)
			c.Shutdown.RetryJitter = config.Duration(200 * time.Millisecond)
		}
	}
	withTestOps := func(o *node.Options) {
		o.WrapApp = func(_ string, next conn.NewApp) conn.NewApp {
			return func(c *conn.Actor) conn.App { return &testOps{App: next(c)} }
		}
	}
	mainNode := startNode(t, mainConfig("127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"), withTestOps)
	ws, wstoken, wsroll, admin := mainNode.addr("ws"), mainNode.addr("wstoken"), mainNode.addr("wsroll"), mainNode.HTTPAddr().String()
	otherRoll := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	other := startNode(t, func(c *config.Config) {
		c.NATS.URL = ns.ClientURL()
		withHistory(100)(c)
		wsListener("127.0.0.1:0")(c)
		roll(c, otherRoll, "ws://"+otherRoll+"/ws")
	})

	// The control server's handlers hand their work to this goroutine,
	// which may fail the test.
	jobs := make(chan func())
	control := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var job func() string
		switch r.Method + " " + r.URL.Path {
		case "POST /stop":
			job = func() string {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := mainNode.Shutdown(ctx); err != nil {
					t.Fatalf("stop main: %v", err)
				}
				return "stopped"
			}
		case "POST /start":
			job = func() string {
				mainNode = startNode(t, mainConfig(ws, wstoken, wsroll, admin), withTestOps)
				return "started"
			}
		case "GET /token":
			q := r.URL.Query()
			job = func() string {
				key := []byte(testSecret)
				if q.Get("key") == "other" {
					key = []byte("another-secret-of-at-least-32-bytes")
				}
				ttl, err := time.ParseDuration(q.Get("ttl"))
				if err != nil {
					t.Fatalf("token ttl: %v", err)
				}
				var rooms []string
				if q.Has("rooms") {
					rooms = strings.Split(q.Get("rooms"), ",")
				}
				return mint(t, key, q.Get("user"), q.Get("name"), rooms, ttl)
			}
		default:
			http.NotFound(w, r)
			return
		}
		done := make(chan string, 1)
		select {
		case jobs <- func() { done <- job() }:
		case <-r.Context().Done():
			return
		}
		select {
		case body := <-done:
			_, _ = io.WriteString(w, body)
		case <-r.Context().Done():
		}
	}))
	defer control.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := append(nodeArgs, "--test", "--test-reporter=spec")
	cmd := exec.CommandContext(ctx, "node", append(args, tests...)...)
	cmd.Env = append(os.Environ(),
		"TETHER_WS=ws://"+ws+"/ws",
		"TETHER_WS_TOKEN=ws://"+wstoken+"/ws",
		"TETHER_WS_OTHER=ws://"+other.addr("ws")+"/ws",
		"TETHER_WS_ROLL=ws://"+wsroll+"/ws",
		"TETHER_WS_ROLL_OTHER=ws://"+otherRoll+"/ws",
		"TETHER_ADMIN=http://"+admin,
		"TETHER_CONTROL="+control.URL,
	)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for {
		select {
		case job := <-jobs:
			job()
		case err := <-exited:
			t.Logf("node --test:\n%s", out.String())
			if err != nil {
				t.Fatalf("node --test: %v", err)
			}
			return
		}
	}
}

// nodeWithWebSocket returns the flags node needs for a global WebSocket:
// none from Node.js 22 on, --experimental-websocket on 20.
func nodeWithWebSocket(t *testing.T) []string {
	t.Helper()
	probe := "process.exit(typeof WebSocket === 'function' ? 0 : 1)"
	for _, args := range [][]string{{}, {"--experimental-websocket"}} {
		if exec.Command("node", append(args, "-e", probe)...).Run() == nil {
			return args
		}
	}
	t.Fatal("node with a WebSocket (Node.js 22, or 20.10 and later) is needed for the JavaScript client's tests")
	return nil
}

// TestJSClientInBrowser loads /tether.js into a page of headless
// Chromium and uses it directly: two clients of one page join a room,
// one sends, the other gets it and whispers back.
func TestJSClientInBrowser(t *testing.T) {
	n := startNode(t, wsListener("127.0.0.1:0"))
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	page := openTab(t, startChromium(t, ctx), "page")
	defer page.close()
	// Any page of the listener's origin will do; the client's own has no
	// markup of its own to get in the way.
	page.do(chromedp.Navigate("http://" + n.addr("ws") + "/tether.js"))
	awaitJS := func(expr string) {
		t.Helper()
		if ok, err := chromedp.Run(page.ctx, chromedp.Evaluate[bool](expr, chromedp.EvalAwaitPromise)); err != nil || !ok {
			t.Fatalf("%s: %v %v", expr, ok, err)
		}
	}
	awaitJS(`import('/tether.js').then(({ TetherClient }) => {
		const url = 'ws://' + location.host + '/ws';
		window.got = { ann: [], bob: [] };
		for (const who of ['ann', 'bob']) {
			const c = window[who] = new TetherClient(url);
			c.on('message', (m) => got[who].push(m));
			c.connect();
		}
		return true;
	})`)
	page.waitJS("both clients to connect", `ann.state === 'connected' && bob.state === 'connected'`)
	awaitJS(`Promise.all([ann.join('browser', { name: 'ann' }), bob.join('browser', { name: 'bob' })])
		.then(() => ann.send('browser', { hello: 'bob' })).then(() => true)`)
	page.waitJS("bob to get ann's message", `got.bob.length === 1`)
	if ok := evalIn[bool](page, `got.bob[0].room === 'browser' && got.bob[0].from === ann.conn && got.bob[0].name === 'ann' && got.bob[0].data.hello === 'bob'`); !ok {
		t.Errorf("bob got %s", evalIn[string](page, `JSON.stringify(got.bob)`))
	}
	awaitJS(`bob.whisper(ann.conn, 'hi ann').then(() => true)`)
	page.waitJS("ann to get bob's whisper", `got.ann.length === 1 && got.ann[0].data === 'hi ann' && got.ann[0].from === bob.conn && !('room' in got.ann[0])`)
	awaitJS(`ann.members('browser').then((ms) => ms.map((m) => m.name).sort().join() === 'ann,bob')`)
	page.checkNoErrors()
}
