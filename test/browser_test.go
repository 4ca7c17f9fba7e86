package test

import (
	"context"
	"fmt"
	neturl "net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"tether/config"
	"tether/test/check"
)

// chromiumPath is Debian's chromium, which .ci/run installs.
const chromiumPath = "/usr/bin/chromium"

// TestChatPageInBrowser drives the embedded chat page in headless Chromium:
// alice and bob join "lobby" in two tabs, see each other, exchange a
// message, and alice sees bob leave when his tab closes.
func TestChatPageInBrowser(t *testing.T) {
	n := startNode(t, wsListener("127.0.0.1:0"))
	page := "http://" + n.addr("ws") + "/"

	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	browser := startChromium(t, ctx)

	alice := openTab(t, browser, "alice")
	bob := openTab(t, browser, "bob")
	defer alice.close()
	defer bob.close()

	// Both join lobby, from ?room= and ?name=, each with an avatar.
	alice.join(page+"?room=lobby&name=alice", "avatar-fox", "")
	bob.join(page+"?room=lobby&name=bob", "avatar-panda", "chat-join.png")

	// Each sees the other in the member list.
	alice.waitMembers("alice", "bob")
	bob.waitMembers("alice", "bob")

	// alice types a message and presses Enter; bob sees it with her name,
	// as text (the markup in it is not interpreted).
	hello := "hello bob <b>&amp;</b> 👋"
	alice.do(chromedp.SendKeys(chromedp.ID("composer-input"), hello), pressEnter())
	bob.waitMessage(chatLine{Name: "alice", Text: hello, Own: false, Timed: true})
	alice.waitMessage(chatLine{Name: "alice", Text: hello, Own: true, Timed: true})
	if v := evalIn[string](alice, `document.getElementById('composer-input').value`); v != "" {
		t.Errorf("alice's composer holds %q after sending, want it empty", v)
	}
	if n := evalIn[int](bob, `document.querySelectorAll('#messages .msg-text *').length`); n != 0 {
		t.Errorf("bob's message texts hold %d elements; user text must stay text", n)
	}

	// bob answers with the Send button.
	reply := "hi alice! all good here"
	bob.do(
		chromedp.SendKeys(chromedp.ID("composer-input"), reply),
		chromedp.Click(chromedp.ID("send-button")),
	)
	alice.waitMessage(chatLine{Name: "bob", Text: reply, Own: false, Timed: true})

	bob.checkNoErrors()

	// Closing bob's tab closes his connection: alice sees him leave.
	bob.close()
	alice.waitMembers("alice")
	alice.waitSystem("bob left (client_closed)")

	shot := alice.screenshot("chat-page.png")
	t.Logf("screenshot of alice's page: %s", shot)

	// The same page at phone width.
	alice.do(chromedp.EmulateViewport(390, 780, chromedp.EmulateScale(2)))
	alice.waitJS("the member list to fold away at phone width",
		`document.getElementById('sidebar').getBoundingClientRect().right <= 0`)
	shot = alice.screenshot("chat-page-phone.png")
	t.Logf("screenshot at phone width: %s", shot)
	alice.do(chromedp.Click(chromedp.ID("members-toggle")))
	alice.waitJS("the member list to slide in",
		`document.getElementById('sidebar').getBoundingClientRect().left >= 0`)
	alice.screenshot("chat-page-phone-members.png")

	alice.checkNoErrors()
}

// TestChatPageReconnects stops the node under an open page and starts
// another on the same address: the page shows the close reason, counts down
// to its next attempt, reconnects, joins its room again and can talk.
func TestChatPageReconnects(t *testing.T) {
	first := startNode(t, wsListener("127.0.0.1:0"))
	addr := first.addr("ws")

	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	alice := openTab(t, startChromium(t, ctx), "alice")
	defer alice.close()
	alice.join("http://"+addr+"/?room=lobby&name=alice", "avatar-owl", "")
	alice.waitMembers("alice")
	before := evalIn[string](alice, `document.getElementById('me-conn').textContent`)

	stop, cancelStop := context.WithTimeout(ctx, 10*time.Second)
	defer cancelStop()
	if err := first.Shutdown(stop); err != nil {
		t.Fatal(err)
	}
	alice.waitSystem("Disconnected (server_shutdown), reconnecting…")
	alice.waitJS("the state pill to count down",
		`/^reconnecting in \d+s$/.test(document.getElementById('state').textContent)`)

	startNode(t, wsListener(addr))
	alice.waitJS("the state pill to read online", `document.getElementById('state').textContent === 'online'`)
	alice.waitSystem("Reconnected, back in #lobby: messages sent meanwhile could not be recovered (this room keeps no history)")
	alice.waitMembers("alice")
	after := evalIn[string](alice, `document.getElementById('me-conn').textContent`)
	if after == before {
		t.Errorf("connection id %q did not change across the reconnect", after)
	}

	// Joined again for real: a message comes back from the server.
	text := "still here"
	alice.do(chromedp.SendKeys(chromedp.ID("composer-input"), text), pressEnter())
	alice.waitMessage(chatLine{Name: "alice", Text: text, Own: true, Timed: true})
	alice.checkNoErrors()
}

// TestChatPageRecoversWhatItMissed: the page in a room with history
// loses its node; while it is away another node's member sends three
// messages; when the page is back it joins with since and shows the three,
// once each, in order, and says it recovered them.
func TestChatPageRecoversWhatItMissed(t *testing.T) {
	ns := startJetStreamNATS(t, -1, "")
	onNATS := func(addr string) func(*config.Config) {
		return func(c *config.Config) {
			wsListener(addr)(c)
			c.NATS.URL = ns.ClientURL()
			withHistory(100)(c)
		}
	}
	first := startNode(t, onNATS("127.0.0.1:0"))
	addr := first.addr("ws")
	bob := startNode(t, onNATS("127.0.0.1:0")).dialWS(t)
	join(t, bob, "news:lobby", "bob")

	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	alice := openTab(t, startChromium(t, ctx), "alice")
	defer alice.close()
	alice.join("http://"+addr+"/?room=news:lobby&name=alice", "avatar-owl", "")
	alice.waitMembers("alice", "bob")
	say(t, bob, "news:lobby", "before")
	alice.waitMessage(chatLine{Name: "bob", Text: "before", Timed: true})

	stop, cancelStop := context.WithTimeout(ctx, 10*time.Second)
	defer cancelStop()
	if err := first.Shutdown(stop); err != nil {
		t.Fatal(err)
	}
	alice.waitSystem("Disconnected (server_shutdown), reconnecting…")
	for i := 1; i <= 3; i++ {
		say(t, bob, "news:lobby", fmt.Sprintf("missed %d", i))
	}
	startNode(t, onNATS(addr))
	alice.waitSystem("Reconnected, back in #news:lobby: recovered 3 missed messages")
	texts := evalIn[[]string](alice, `[...document.querySelectorAll('#messages li.msg .msg-text')].map(e => e.textContent)`)
	if want := []string{"before", "missed 1", "missed 2", "missed 3"}; !slices.Equal(texts, want) {
		t.Errorf("messages shown: %q, want %q", texts, want)
	}
	alice.checkNoErrors()
}

// TestChatPageFollowsTheHint: the page's node stops; its reconnect hint
// names the other node (its public_url), so the page says it moves to
// another node, connects there, joins its room again with since and
// shows the message it missed.
func TestChatPageFollowsTheHint(t *testing.T) {
	ns := startJetStreamNATS(t, -1, "")
	onNATS := func(addr, public string) func(*config.Config) {
		return func(c *config.Config) {
			wsListener(addr)(c)
			c.Listeners[len(c.Listeners)-1].PublicURL = public
			c.NATS.URL = ns.ClientURL()
			c.Cluster.HeartbeatInterval = config.Duration(200 * time.Millisecond)
			withHistory(100)(c)
		}
	}
	bAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	b := startNode(t, onNATS(bAddr, "ws://"+bAddr+"/ws"))
	first := startNode(t, func(c *config.Config) {
		onNATS("127.0.0.1:0", "")(c)
		// Time for bob's message to come while the page is away.
		c.Shutdown.RetryDelay, c.Shutdown.RetryJitter = config.Duration(2*time.Second), 0
	})
	bob := b.dialWS(t)
	join(t, bob, "news:lobby", "bob")
	check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		if got := gaugeValue(t, first, "tether_cluster_nodes_alive"); got != 1 {
			return fmt.Errorf("the page's node sees %v other nodes", got)
		}
		return nil
	})

	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	alice := openTab(t, startChromium(t, ctx), "alice")
	defer alice.close()
	alice.join("http://"+first.addr("ws")+"/?room=news:lobby&name=alice", "avatar-owl", "")
	alice.waitMembers("alice", "bob")

	stop, cancelStop := context.WithTimeout(ctx, 10*time.Second)
	defer cancelStop()
	if err := first.Shutdown(stop); err != nil {
		t.Fatal(err)
	}
	alice.waitSystem("Disconnected (server_shutdown), reconnecting to another node…")
	say(t, bob, "news:lobby", "while moving")
	alice.waitSystem("Reconnected, back in #news:lobby: recovered 1 missed message")
	alice.waitMessage(chatLine{Name: "bob", Text: "while moving", Timed: true})
	alice.waitJS("the page to say it is on node b", fmt.Sprintf(`document.getElementById('state').title.endsWith(%q)`, "on node "+b.ID()))
	alice.checkNoErrors()
}

// startChromium starts headless Chromium with a fresh profile and the flags
// that keep it off the network, and returns a chromedp context for it.
// Canceling ctx stops it.
func startChromium(t *testing.T, ctx context.Context) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("install chromium (.ci/run does): %v", err)
	}
	profile, err := os.MkdirTemp("", "tether-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Chromium's children can write to the profile for a moment
		// after the browser has stopped.
		check.For(t, 5*time.Second, 100*time.Millisecond, func() error { return os.RemoveAll(profile) })
	})
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("lang", "en-US"),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1100, 720),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	browser, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
	})
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return browser
}

// tab is one page of the browser, as one user.
type tab struct {
	t    *testing.T
	user string
	ctx  context.Context
	stop context.CancelFunc
	once sync.Once

	mu     sync.Mutex
	errors []string // exceptions and console errors of the page
}

func openTab(t *testing.T, browser context.Context, user string) *tab {
	t.Helper()
	ctx, stop := chromedp.NewContext(browser)
	tb := &tab{t: t, user: user, ctx: ctx, stop: stop}
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("%s: open tab: %v", user, err)
	}
	if err := chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg = ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				msg += " " + ev.ExceptionDetails.Exception.Description
			}
		case *runtime.EventConsoleAPICalled:
			if ev.Type != runtime.ConsoleAPICalledTypeError {
				return
			}
			msg = "console.error"
			for _, a := range ev.Args {
				msg += " " + string(a.Value) + a.Description
			}
		default:
			return
		}
		tb.mu.Lock()
		tb.errors = append(tb.errors, msg)
		tb.mu.Unlock()
	}); err != nil {
		t.Fatalf("%s: listen: %v", user, err)
	}
	return tb
}

// close closes the tab; the page's WebSocket goes with it.
func (tb *tab) close() {
	tb.once.Do(func() {
		if err := chromedp.Cancel(tb.ctx); err != nil {
			tb.t.Logf("%s: close tab: %v", tb.user, err)
		}
	})
}

// do runs actions in the tab and fails the test on error.
func (tb *tab) do(steps ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	if err := chromedp.Do(tb.ctx, steps...); err != nil {
		tb.t.Fatalf("%s: %v", tb.user, err)
	}
}

// join opens the page, waits for the connection, picks the avatar and
// joins the room the URL names. A screenshot name saves the filled form.
func (tb *tab) join(url, avatarID, screenshot string) {
	tb.t.Helper()
	tb.do(chromedp.Navigate(url), chromedp.WaitVisible(chromedp.ID("join-form")))
	tb.waitJS("the state pill to read online", `document.querySelector('#join-form .state-pill').textContent === 'online'`)
	tb.do(chromedp.Click(chromedp.CSS(`label[for="` + avatarID + `"]`)))
	if screenshot != "" {
		tb.screenshot(screenshot)
	}
	tb.do(
		chromedp.Click(chromedp.ID("join-button")),
		chromedp.WaitVisible(chromedp.ID("chat-view")),
	)
	tb.waitJS("the state pill to read online", `document.getElementById('state').textContent === 'online'`)
	u, err := neturl.Parse(url)
	if err != nil {
		tb.t.Fatal(err)
	}
	want := u.Query().Get("room")
	if got := evalIn[string](tb, `document.getElementById('room-name').textContent`); got != want {
		tb.t.Errorf("%s: room name shows %q, want %q", tb.user, got, want)
	}
}

// pressEnter presses Enter in the focused element as a keyboard does: a
// keyDown that carries the text "\r", which the page's keydown handler can
// cancel, and a keyUp. (SendKeys with kb.Enter adds a separate char event,
// which inserts a newline into a textarea even when keydown was cancelled.)
func pressEnter() chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		key := input.DispatchKeyEventParams{
			Type: input.DispatchKeyEventTypeKeyDown, Key: "Enter", Code: "Enter",
			Text: "\r", UnmodifiedText: "\r", WindowsVirtualKeyCode: 13, NativeVirtualKeyCode: 13,
		}
		if _, err := cdp.Call(ctx, t, input.DispatchKeyEvent, key); err != nil {
			return err
		}
		key.Type, key.Text, key.UnmodifiedText = input.DispatchKeyEventTypeKeyUp, "", ""
		_, err := cdp.Call(ctx, t, input.DispatchKeyEvent, key)
		return err
	})
}

// evalIn evaluates a JavaScript expression in the tab.
func evalIn[T any](tb *tab, expr string) T {
	tb.t.Helper()
	v, err := chromedp.Run(tb.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		tb.t.Fatalf("%s: %s: %v", tb.user, expr, err)
	}
	return v
}

// poll retries f until it returns nil, with the tab's view of the failure.
func (tb *tab) poll(what string, f func() error) {
	tb.t.Helper()
	check.For(tb.t, 15*time.Second, 50*time.Millisecond, func() error {
		if err := f(); err != nil {
			return fmt.Errorf("%s: waiting for %s: %w", tb.user, what, err)
		}
		return nil
	})
}

// waitJS waits until a JavaScript expression is true in the tab.
func (tb *tab) waitJS(what, expr string) {
	tb.t.Helper()
	tb.poll(what, func() error {
		ok, err := chromedp.Run(tb.ctx, chromedp.Evaluate[bool](expr))
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%s is false", expr)
		}
		return nil
	})
}

// waitMembers waits until the member list holds exactly these names.
func (tb *tab) waitMembers(names ...string) {
	tb.t.Helper()
	want := slices.Sorted(slices.Values(names))
	tb.poll(fmt.Sprintf("members %v", want), func() error {
		got, err := chromedp.Run(tb.ctx, chromedp.Evaluate[[]string](
			`[...document.querySelectorAll('#members li[data-conn]')].map(li => li.querySelector('.member-name').firstChild.textContent)`))
		if err != nil {
			return err
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("member list shows %q", got)
		}
		return nil
	})
}

// chatLine is one message as the page shows it.
type chatLine struct {
	Name  string `json:"name"`
	Text  string `json:"text"`
	Own   bool   `json:"own"`   // shown as one's own message
	Timed bool   `json:"timed"` // with a <time> that has a datetime
}

// waitMessage waits until the message list shows the message.
func (tb *tab) waitMessage(want chatLine) {
	tb.t.Helper()
	tb.poll(fmt.Sprintf("message %+v", want), func() error {
		got, err := chromedp.Run(tb.ctx, chromedp.Evaluate[[]chatLine](
			`[...document.querySelectorAll('#messages li.msg')].map(li => ({
				name: li.querySelector('.msg-name').textContent,
				text: li.querySelector('.msg-text').textContent,
				own: li.classList.contains('own'),
				timed: !!li.querySelector('time.msg-time[datetime]')?.textContent,
			}))`))
		if err != nil {
			return err
		}
		if !slices.Contains(got, want) {
			return fmt.Errorf("message list shows %+v", got)
		}
		return nil
	})
}

// waitSystem waits until a system line of the message list reads text.
func (tb *tab) waitSystem(text string) {
	tb.t.Helper()
	tb.poll(fmt.Sprintf("system line %q", text), func() error {
		got, err := chromedp.Run(tb.ctx, chromedp.Evaluate[[]string](
			`[...document.querySelectorAll('#messages li.system')].map(li => li.textContent)`))
		if err != nil {
			return err
		}
		if !slices.Contains(got, text) {
			return fmt.Errorf("system lines are %q", got)
		}
		return nil
	})
}

// screenshot saves a full-page PNG of the tab in test/artifacts and
// returns its path.
func (tb *tab) screenshot(name string) string {
	tb.t.Helper()
	png, err := chromedp.Run(tb.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		tb.t.Fatalf("%s: screenshot: %v", tb.user, err)
	}
	dir, err := filepath.Abs("artifacts")
	if err != nil {
		tb.t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		tb.t.Fatal(err)
	}
	return path
}

// checkNoErrors fails the test if the page threw or logged an error.
func (tb *tab) checkNoErrors() {
	tb.t.Helper()
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if len(tb.errors) > 0 {
		tb.t.Errorf("%s: the page reported errors:\n%s", tb.user, strings.Join(tb.errors, "\n"))
	}
}

// TestChatPageWithToken: on a token listener the page takes its token
// from ?token= and shows the token's name, whatever the form says; a page
// without one asks for it, says so when a pasted token is refused, and
// joins with a good one.
func TestChatPageWithToken(t *testing.T) {
	n := startNode(t, tokenListeners(config.JWT{HMACSecret: testSecret}))
	page := "http://" + n.addr("ws") + "/"
	key := []byte(testSecret)
	bob := n.dialWS(t)
	if _, err := bob.Authenticate(mint(t, key, "u-bob", "Bob", nil, time.Hour)); err != nil {
		t.Fatal(err)
	}
	join(t, bob, "lobby", "bob")

	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	browser := startChromium(t, ctx)
	alice := openTab(t, browser, "alice")
	defer alice.close()
	alice.join(page+"?room=lobby&name=mallory&token="+neturl.QueryEscape(mint(t, key, "u-alice", "Alice", []string{"lobby"}, time.Hour)), "avatar-owl", "")
	alice.waitMembers("Alice", "Bob")
	say(t, bob, "lobby", "hello alice")
	alice.waitMessage(chatLine{Name: "Bob", Text: "hello alice", Timed: true})
	if ev, err := bob.Expect("joined", 5*time.Second); err != nil || ev.Name != "Alice" {
		t.Fatalf("bob sees %+v %v; want Alice, the token's name", ev, err)
	}
	alice.checkNoErrors()

	carol := openTab(t, browser, "carol")
	defer carol.close()
	carol.do(chromedp.Navigate(page+"?room=lobby&name=carol"), chromedp.WaitVisible(chromedp.ID("token-field")))
	carol.do(
		chromedp.SendKeys(chromedp.ID("join-token"), mint(t, []byte("another-secret-of-at-least-32-bytes"), "u-carol", "Carol", nil, time.Hour)),
		chromedp.Click(chromedp.ID("join-button")),
	)
	carol.waitJS("the refusal to show", `document.getElementById('join-error').textContent.startsWith('Token refused')`)
	carol.do(
		chromedp.SetValue(chromedp.ID("join-token"), mint(t, key, "u-carol", "Carol", nil, time.Hour)),
		chromedp.Click(chromedp.ID("join-button")),
		chromedp.WaitVisible(chromedp.ID("chat-view")),
	)
	carol.waitMembers("Alice", "Bob", "Carol")
	carol.screenshot("chat-token.png")
}
