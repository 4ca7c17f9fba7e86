package test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"tether/actors/node"
	"tether/config"
)

// TestAdminUI drives the admin web UI in headless Chromium against a node
// with an admin token: a wrong token is refused, the right one opens the
// dashboard, which lists the node, draws its charts, shows the rooms
// largest first, finds connections by id and by user, and kicks one.
func TestAdminUI(t *testing.T) {
	const token = "admin-s3cret"
	n := startNode(t, func(c *config.Config) { c.HTTP.Token = token })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := openTab(t, startChromium(t, ctx), "admin")
	defer admin.close()
	admin.do(recordCSPViolations(), chromedp.Navigate("http://"+n.HTTPAddr().String()+"/ui/"))

	// The API wants the token: the page asks for it, and says so when a
	// wrong one is typed.
	admin.do(
		chromedp.WaitVisible(chromedp.ID("login-form")),
		chromedp.SendKeys(chromedp.ID("token-input"), "wrong-token"),
		chromedp.Click(chromedp.ID("login-button")),
	)
	admin.waitJS("the refusal", `document.getElementById('login-error').textContent === "Token refused: that is not this node's http.token."`)
	admin.screenshot("admin-ui-token-refused.png")
	admin.do(
		chromedp.SetValue(chromedp.ID("token-input"), token),
		chromedp.Click(chromedp.ID("login-button")),
		chromedp.WaitVisible(chromedp.ID("dash-view")),
	)
	if got := evalIn[string](admin, `sessionStorage.getItem('tether.admin.token') + ' ' + location.href`); got != token+" http://"+n.HTTPAddr().String()+"/ui/" {
		t.Errorf("token in sessionStorage and the URL: %q; want the token kept in the tab, not in the URL", got)
	}

	// The node is listed, alive, connected to NATS.
	admin.waitJS("the node's row", fmt.Sprintf(`[...document.querySelectorAll('#nodes tbody tr')].some(tr =>
		tr.cells[0].textContent === %q + 'this node' && tr.cells[1].textContent === 'alive' && tr.cells[5].textContent === 'connected')`, n.ID()))

	// Clients join two rooms: the larger one comes first.
	ada, bob, cy := n.dial(t, "tcp"), n.dial(t, "tcp"), n.dial(t, "tcp")
	join(t, ada, "lobby", "ada")
	join(t, bob, "lobby", "bob")
	join(t, cy, "ops", "cy")
	say(t, ada, "lobby", "hello")
	admin.waitJS("the rooms, largest first", `JSON.stringify([...document.querySelectorAll('#rooms tbody tr')].map(tr =>
		[tr.cells[0].textContent, tr.cells[1].textContent])) === '[["lobby","2"],["ops","1"]]'`)

	// Each chart is a uPlot canvas with samples; the connections chart's
	// legend has the three connections of listener tcp.
	admin.waitJS("three charts with samples", `['connections', 'rates', 'closes'].every(c => {
		const el = document.getElementById('chart-' + c);
		const canvas = el.querySelector('.uplot canvas');
		return canvas && canvas.width > 0 && Number(el.dataset.points) >= 2;
	})`)
	admin.waitJS("3 tcp connections in the legend", `[...document.querySelectorAll('#chart-connections .u-legend .u-series')].some(s =>
		s.querySelector('.u-label').textContent === 'tcp' && s.querySelector('.u-value').textContent === '3')`)

	// Find ada by her connection id.
	findConn(admin, "id", ada.ID())
	admin.waitJS("ada's card", fmt.Sprintf(`(() => {
		const cards = document.querySelectorAll('#found li');
		return cards.length === 1 && cards[0].dataset.conn === %q &&
			cards[0].querySelector('.conn-state').textContent === 'open' && cards[0].textContent.includes('lobby');
	})()`, ada.ID()))

	// Bind bob to a user through the API; find him by the user, kick him.
	if code := api(t, n, "POST", "/api/bind", node.APIRequest{Conn: bob.ID(), User: "u-bob"}, nil); code != 200 {
		t.Fatalf("bind: %d", code)
	}
	findConn(admin, "user", "u-bob")
	card := fmt.Sprintf(`document.querySelector('#found li[data-conn=%q]')`, bob.ID())
	admin.waitJS("bob's card", fmt.Sprintf(`document.querySelectorAll('#found li').length === 1 && %s?.textContent.includes('u-bob')`, card))
	kick := chromedp.CSS(fmt.Sprintf(`#found li[data-conn=%q] .kick-button`, bob.ID()))
	admin.do(chromedp.Click(kick))
	admin.waitJS("the kick button to ask again", card+`.querySelector('.kick-button').textContent === 'Click again to kick'`)
	admin.do(chromedp.Click(kick))
	admin.waitJS("bob's card to say kicked", card+`.querySelector('.conn-state').textContent === 'closed: kicked'`)
	if r := n.closeReason(t, bob.ID(), 5*time.Second); r.String() != "kicked" {
		t.Errorf("bob's connection closed with %s, want kicked", r)
	}
	// The kick shows in the closes chart, and in the connections one.
	admin.waitJS("a kick in the closes chart", `[...document.querySelectorAll('#chart-closes .u-legend .u-series')].some(s =>
		s.querySelector('.u-label').textContent === 'kicked')`)
	admin.waitJS("2 tcp connections in the legend", `[...document.querySelectorAll('#chart-connections .u-legend .u-series')].some(s =>
		s.querySelector('.u-label').textContent === 'tcp' && s.querySelector('.u-value').textContent === '2')`)
	admin.waitJS("one member left in lobby", `[...document.querySelectorAll('#rooms tbody tr')].some(tr =>
		tr.cells[0].textContent === 'lobby' && tr.cells[1].textContent === '1')`)

	admin.screenshot("admin-ui.png")
	if v := evalIn[[]string](admin, `window.cspViolations`); len(v) > 0 {
		t.Errorf("the page broke its Content-Security-Policy: %q", v)
	}
	admin.checkNoErrors()
}

// findConn looks up connections in the page, by "id" or "user".
func findConn(tb *tab, by, q string) {
	tb.t.Helper()
	tb.do(
		chromedp.Click(chromedp.CSS(`label[for="find-by-`+by+`"]`)),
		chromedp.SetValue(chromedp.ID("find-input"), q),
		chromedp.Click(chromedp.ID("find-button")),
	)
}

// recordCSPViolations has every page of the tab collect what its
// Content-Security-Policy blocked in window.cspViolations, from before its
// first script runs.
func recordCSPViolations() chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: `
			window.cspViolations = [];
			document.addEventListener('securitypolicyviolation', e => window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));`})
		return err
	})
}
