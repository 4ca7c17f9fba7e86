package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"

	"tether/actors/cluster"
	"tether/actors/conn"
	"tether/client"
	"tether/config"
	"tether/framing"
	"tether/test/check"
)

// TestSubjectInputsCannotCutNodeOffNATS: ids, room names and user ids
// that would become NATS subjects are checked before use. A 5,000-byte
// connection id (which once made the server answer "maximum control line
// exceeded" and nats.go close the node's connection for good) and ids with
// wildcards are refused with bad_request, by the client protocol and the
// admin API alike, and the node stays in the cluster: a whisper across
// nodes still arrives, stats still answer, no NATS disconnect is counted.
func TestSubjectInputsCannotCutNodeOffNATS(t *testing.T) {
	ns := startNATS(t, -1)
	nodes := startCluster(t, ns.ClientURL(), "a", "b")
	a, b := nodes[0], nodes[1]
	ca, cb := a.dial(t, "tcp"), b.dial(t, "tcp")

	long := strings.Repeat("x", 5000) + ".1"
	for _, to := range []string{long, "b*.1", "b>.1", "b .1", "a.b.c\x00", "\xff\xfe.1"} {
		ev, err := ca.Call(client.Request{Op: "whisper", To: to, Data: "psst"})
		if err == nil || ev.Code != "bad_request" {
			t.Errorf("whisper to %.40q: %+v %v, want bad_request", to, ev, err)
		}
	}
	for _, path := range []string{"/api/conns/" + long, "/api/conns/b*.1"} {
		if code := api(t, a, http.MethodGet, path, nil, nil); code != http.StatusBadRequest {
			t.Errorf("GET %.50s: %d, want 400", path, code)
		}
	}
	for _, body := range []map[string]any{
		{"conn": long, "data": "x"}, {"user": strings.Repeat("u", 5000), "data": "x"}, {"room": strings.Repeat("r", 5000), "data": "x"},
	} {
		if code := api(t, a, http.MethodPost, "/api/push", body, nil); code != http.StatusBadRequest {
			t.Errorf("push %.60v: %d, want 400", body, code)
		}
	}

	// Still in the cluster: a whisper crosses, stats answer for both nodes.
	if _, err := ca.Call(client.Request{Op: "whisper", To: cb.ID(), Data: "still here"}); err != nil {
		t.Fatalf("whisper across nodes after the attempts: %v", err)
	}
	if ev, err := cb.Expect("message", 5*time.Second); err != nil || string(ev.Data) != `"still here"` {
		t.Fatalf("whisper: %+v %v", ev, err)
	}
	var stats []map[string]any
	if code := api(t, a, http.MethodGet, "/api/stats", nil, &stats); code != http.StatusOK || len(stats) != 2 {
		t.Fatalf("stats: %d %v", code, stats)
	}
	if v := counterValue(t, a, "tether_nats_disconnects_total"); v != 0 {
		t.Errorf("nats disconnects on a: %v", v)
	}
	check.Never(t, 300*time.Millisecond, 50*time.Millisecond, func() error {
		if code := api(t, a, http.MethodGet, "/readyz", nil, nil); code != http.StatusOK {
			return fmt.Errorf("readyz %d", code)
		}
		return nil
	})
}

// readFrame reads the next data frame the server sends a raw WebSocket
// client, and says whether it was text.
func (c *rawWS) readFrame(timeout time.Duration) (text bool, payload []byte, err error) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	for {
		h, err := ws.ReadHeader(c.r)
		if err != nil {
			return false, nil, err
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(c.r, payload); err != nil {
			return false, nil, err
		}
		switch h.OpCode {
		case ws.OpText, ws.OpBinary:
			return h.OpCode == ws.OpText, payload, nil
		case ws.OpClose:
			code, reason := framing.ParseClose(payload)
			return false, nil, fmt.Errorf("closed: %d %s", code, reason)
		}
	}
}

// TestInvalidUTF8NeverReachesATextFrame: raw invalid UTF-8 in a request
// (from a TCP client, or in a WebSocket binary frame, which RFC 6455 does
// not check) is refused with bad_request, in a send, a whisper and an
// admin push alike, so a browser in the room never gets a text frame it
// must fail the connection on. A relay worker's push that is not UTF-8
// reaches a WebSocket client as a binary frame.
func TestInvalidUTF8NeverReachesATextFrame(t *testing.T) {
	n := startNode(t, wsListener("127.0.0.1:0"))
	browser := n.dialWS(t)
	tcp := n.dial(t, "tcp")
	join(t, browser, "r", "bea")
	join(t, tcp, "r", "tom")

	bad := []string{ // raw bytes: \xed\xa0\x80 is a UTF-16 surrogate, \xc3 a cut sequence
		`{"op":"send","room":"r","data":"` + "\xff\xfe" + `","id":9}`,
		`{"op":"send","room":"r","data":{"k":"` + "\xc3" + `"},"id":9}`,
		`{"op":"whisper","to":"` + browser.ID() + `","data":"` + "\xed\xa0\x80" + `","id":9}`,
		`{"op":"join","room":"r","name":"` + "\xff" + `","id":9}`,
	}
	for _, req := range bad {
		if err := tcp.SendRaw([]byte(req)); err != nil {
			t.Fatal(err)
		}
		ev, err := tcp.Expect("error", 5*time.Second)
		if err != nil || ev.Code != "bad_request" || string(ev.ID) != "9" || !strings.Contains(ev.Message, "UTF-8") {
			t.Fatalf("%q: %+v %v, want bad_request about UTF-8 with id 9", req, ev, err)
		}
	}

	// The same bytes in a WebSocket binary frame.
	raw, err := dialRawWS(t, n, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := raw.readFrame(5 * time.Second); err != nil { // welcome
		t.Fatal(err)
	}
	if _, err := raw.Write(frame(true, ws.OpBinary, true, []byte(`{"op":"whisper","to":"`+browser.ID()+`","data":"`+"\xff"+`","id":9}`))); err != nil {
		t.Fatal(err)
	}
	text, reply, err := raw.readFrame(5 * time.Second)
	if err != nil || !text || !strings.Contains(string(reply), `"bad_request"`) {
		t.Fatalf("binary frame with invalid UTF-8: text %v %s %v", text, reply, err)
	}

	// The admin API's push.
	resp, err := http.Post("http://"+n.HTTPAddr().String()+"/api/push", "application/json",
		strings.NewReader(`{"room":"r","data":"`+"\xff"+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("push of invalid UTF-8: %s, want 400", resp.Status)
	}

	// The browser is still there and in the room.
	say(t, tcp, "r", "after")
	expectMessage(t, browser, "r", tcp.ID(), "after")
	if err := browser.Ping(); err != nil {
		t.Fatalf("the WebSocket client was hurt: %v", err)
	}
}

// TestRelayPushOfBinaryReachesWebSocketAsBinary: relay clients may speak
// binary; what a worker pushes that is not UTF-8 goes out in a binary
// frame, valid UTF-8 in a text frame.
func TestRelayPushOfBinaryReachesWebSocketAsBinary(t *testing.T) {
	ns := startNATS(t, -1)
	n := startNode(t, func(c *config.Config) {
		c.NATS.URL = ns.ClientURL()
		wsListener("127.0.0.1:0")(c)
		c.Listeners[1].App = config.AppRelay
	})
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	events, err := nc.SubscribeSync("tether.events.ws")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	raw, err := dialRawWS(t, n, nil)
	if err != nil {
		t.Fatal(err)
	}
	connect, err := events.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	id := connect.Header.Get(cluster.HeaderConn)
	for _, c := range []struct {
		body []byte
		text bool
	}{{[]byte{0xff, 0x00, 0x01}, false}, {[]byte("héllo"), true}} {
		m := nats.NewMsg("tether.node." + n.ID())
		m.Header.Set(cluster.HeaderKind, cluster.KindDeliver)
		m.Header.Set(cluster.HeaderConn, id)
		m.Data = c.body
		if _, err := nc.RequestMsg(m, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		text, payload, err := raw.readFrame(5 * time.Second)
		if err != nil || text != c.text || string(payload) != string(c.body) {
			t.Fatalf("push %q: text %v payload %q %v, want text %v", c.body, text, payload, err, c.text)
		}
	}
}

// TestOneClientCannotStarveClusterRequests: clients flooding members
// requests for rooms with no member on their node (each a gather that
// holds a subscription for its window) get busy past their own limit;
// meanwhile another client's members request crosses the cluster and is
// answered, and the admin API's cluster-wide listings answer, from slots
// of their own.
func TestOneClientCannotStarveClusterRequests(t *testing.T) {
	ns := startNATS(t, -1)
	nodes := startCluster(t, ns.ClientURL(), "a", "b")
	a, b := nodes[0], nodes[1]
	join(t, b.dial(t, "tcp"), "shared", "bob")

	const attackers = 3
	stop := make(chan struct{})
	busy := make(chan int, attackers)
	for i := range attackers {
		c := a.dial(t, "tcp")
		go func() { // answers, read so that the flood is never pushed back
			n := 0
			for {
				ev, err := c.Recv()
				if err != nil {
					busy <- n
					return
				}
				if ev.Code == "busy" {
					n++
				}
			}
		}()
		go func() {
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					c.Close()
					return
				case <-time.After(5 * time.Millisecond):
				}
				var burst []byte
				for j := range 4 { // 800 requests a second from each
					burst = append(burst, packN(fmt.Sprintf(`{"op":"members","id":1,"room":"nobody-%d-%d-%d"}`, i, seq, j))...)
				}
				if _, err := c.Conn().Write(burst); err != nil {
					return
				}
			}
		}()
	}

	victim := a.dial(t, "tcp")
	deadline := time.Now().Add(2 * time.Second)
	for rounds := 0; time.Now().Before(deadline) || rounds < 3; rounds++ {
		ev, err := victim.Call(client.Request{Op: "members", Room: "shared"})
		if err != nil || len(ev.Members) != 1 || ev.Members[0].Name != "bob" {
			t.Fatalf("round %d: another client's members across the cluster: %+v %v", rounds, ev, err)
		}
		var rooms []map[string]any
		if code := api(t, a, http.MethodGet, "/api/rooms", nil, &rooms); code != http.StatusOK || len(rooms) != 1 {
			t.Fatalf("round %d: /api/rooms %d %v", rounds, code, rooms)
		}
		var stats []map[string]any
		if code := api(t, a, http.MethodGet, "/api/stats", nil, &stats); code != http.StatusOK || len(stats) != 2 {
			t.Fatalf("round %d: /api/stats %d %v", rounds, code, stats)
		}
	}
	close(stop)
	total := 0
	for range attackers {
		total += <-busy
	}
	if total == 0 {
		t.Error("the flooding clients never got busy")
	}
}

// readCloseReason reads pack('N') frames from a raw TCP client until the
// server's final {"op":"close"} and returns its reason.
func readCloseReason(c net.Conn, timeout time.Duration) (string, error) {
	for {
		msg, err := readPackN(c, timeout)
		if err != nil {
			return "", err
		}
		var ev struct{ Op, Reason string }
		if json.Unmarshal([]byte(msg), &ev) == nil && ev.Op == "close" {
			return ev.Reason, nil
		}
	}
}

// TestUnfinishedFramesAreBoundedPerNode: connections holding unfinished
// frames past node.max_partial_bytes are closed, the largest holders
// first, with reason memory_limit, until the rest fits; the others and a
// bystander go on. (Which holders close depends on the order the node
// reads them in; the package test of conn.Budget pins the choice.)
func TestUnfinishedFramesAreBoundedPerNode(t *testing.T) {
	const limit, holders, size = 1 << 20, 10, 150_000 // six fit, four do not
	n := startNode(t, func(c *config.Config) {
		c.Node.MaxPartialBytes = limit
		c.Listeners[0].Framing.MaxFrame = 256 << 10
	})
	bystander := n.dial(t, "tcp")
	frame := packN(strings.Repeat("x", 200_000))
	conns := make([]net.Conn, holders)
	for i := range conns {
		c, _ := dialRaw(t, n.addr("tcp"))
		if _, err := c.Write(frame[:4+size]); err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	var closed float64
	check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		closed = counterValue(t, n, `tether_closes_total{listener="tcp",reason="memory_limit"}`)
		held := gaugeValue(t, n, "tether_partial_frame_bytes")
		if closed < holders-6 || held != (holders-closed)*(4+size) { // the length field is held too
			return fmt.Errorf("%v closed with memory_limit, %v bytes held", closed, held)
		}
		return nil
	})
	if held := gaugeValue(t, n, "tether_partial_frame_bytes"); held > limit {
		t.Fatalf("%v bytes of partial frames held; the limit is %d", held, limit)
	}
	survivors := 0
	for i, c := range conns {
		// The closed ones were told why; the survivors finish their
		// frames and are answered.
		if reply, err := readPackN(c, 200*time.Millisecond); err == nil {
			if reply != `{"op":"close","reason":"memory_limit"}` {
				t.Fatalf("holder %d: %q", i, reply)
			}
			continue
		}
		if _, err := c.Write(frame[4+size:]); err != nil {
			t.Fatalf("holder %d: %v", i, err)
		}
		reply, err := readPackN(c, 5*time.Second)
		if err != nil || !strings.Contains(reply, `"bad_request"`) {
			t.Fatalf("holder %d: %q %v, want an answer", i, reply, err)
		}
		survivors++
	}
	if survivors != holders-int(closed) || survivors == 0 {
		t.Errorf("%d survivors, %v closed", survivors, closed)
	}
	if err := bystander.Ping(); err != nil {
		t.Fatalf("bystander: %v", err)
	}
}

// TestTrickledFrameIsIdle: a frame left unfinished for idle_timeout
// closes the connection with reason idle, however often a byte of it
// arrives; a byte a second once kept such a connection open for ever.
func TestTrickledFrameIsIdle(t *testing.T) {
	n := startNode(t, func(c *config.Config) {
		c.Listeners[0].Heartbeat.IdleTimeout = config.Duration(time.Second)
		c.Listeners[0].Heartbeat.CheckInterval = 0
	})
	c, id := dialRaw(t, n.addr("tcp"))
	frame := packN(`{"op":"ping","pad":"` + strings.Repeat("x", 100) + `"}`)
	start := time.Now()
	go func() {
		for i := range frame[:len(frame)-1] {
			if _, err := c.Write(frame[i : i+1]); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	if reason := n.closeReason(t, id, 5*time.Second); reason != conn.ReasonIdle {
		t.Fatalf("trickling client closed with %q, want idle", reason)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("closed after %s; idle_timeout is 1s", took)
	}
}

// TestDescriptorLimitLeavesTheNodeAnswering: with the process's descriptor
// limit at 300, node.max_connections derives from it (minus
// node.descriptor_reserve), so a flood of 400 connections is refused
// past the cap at accept while /healthz, the admin API (over NATS, in the
// same process) and the accepted connections keep working. Before, the
// default cap of 100,000 let clients take every descriptor: the admin
// server and NATS failed with "too many open files".
func TestDescriptorLimitLeavesTheNodeAnswering(t *testing.T) {
	tcpPort, httpPort, natsPort := freePort(t), freePort(t), freePort(t)
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", tcpPort)
	p := startServeProcess(t, fmt.Sprintf(`node: {name: fd, descriptor_reserve: 64}
http: {address: "127.0.0.1:%d"}
nats: {embedded: {port: %d}}
listeners:
  - {name: tcp, protocol: tcp, address: %q}
`, httpPort, natsPort, tcpAddr), tcpAddr, "ulimit -n 300")
	first := dialRetry(t, tcpAddr)
	const cap = 300 - 64

	var conns []net.Conn
	welcomed := 1 // first
	for i := range 400 {
		c, err := net.DialTimeout("tcp", tcpAddr, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for _, c := range conns {
		if _, err := readPackN(c, 5*time.Second); err == nil {
			welcomed++
		}
	}
	if welcomed != cap {
		t.Errorf("%d connections welcomed, want the derived cap %d", welcomed, cap)
	}
	get := func(path string) int {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", httpPort, path))
		if err != nil {
			t.Fatalf("GET %s at the descriptor cap: %v", path, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, p := range []string{"/healthz", "/readyz", "/api/stats", "/metrics"} {
		if code := get(p); code != http.StatusOK {
			t.Errorf("GET %s at the descriptor cap: %d", p, code)
		}
	}
	if err := first.Ping(); err != nil {
		t.Fatalf("an accepted connection: %v", err)
	}
	if !strings.Contains(p.logs.String(), `"max_connections":236`) {
		t.Errorf("the log does not say the derived cap")
	}
}

// TestWebSocketHandshakesCountTowardLimits: sockets still in the HTTP
// handshake count toward max_per_ip and max_connections: 30 sockets from
// one address that never send their upgrade request hold 10 descriptors,
// not 30, with max_per_ip 10; the rest are closed at accept.
func TestWebSocketHandshakesCountTowardLimits(t *testing.T) {
	n := startNode(t, func(c *config.Config) {
		wsListener("127.0.0.1:0")(c)
		ws := &c.Listeners[1]
		ws.Limits.MaxPerIP = 10
		ws.Limits.MaxConnections = 15
		ws.HandshakeTimeout = config.Duration(30 * time.Second)
	})
	dial := func(ip string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", n.addr("ws"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	refused := func(c net.Conn) bool {
		_, err := waitClosed(c, 300*time.Millisecond)
		return err == nil
	}
	open := 0
	for range 30 {
		if !refused(dial("127.0.0.1")) {
			open++
		}
	}
	if open != 10 {
		t.Fatalf("%d handshaking sockets from one IP kept open, want max_per_ip 10", open)
	}
	open = 0
	for i := range 10 {
		if !refused(dial(fmt.Sprintf("127.0.0.%d", 2+i))) {
			open++
		}
	}
	if open != 5 {
		t.Fatalf("%d more from other IPs kept open, want 5 (max_connections 15)", open)
	}
	if got := counterValue(t, n, `tether_rejects_total{listener="ws",why="max_per_ip"}`); got != 20 {
		t.Errorf("max_per_ip rejects %v, want 20", got)
	}
	if got := counterValue(t, n, `tether_rejects_total{listener="ws",why="max_connections"}`); got != 5 {
		t.Errorf("max_connections rejects %v, want 5", got)
	}
}

// TestShutdownReportsMembersAsServerShutdown: a node stopping cleanly
// (SIGTERM, Shutdown) with 500 members in a room shared with another
// node: the other node reports every one of them left with reason
// server_shutdown. Its goodbye used to overtake some of their leaves
// (another NATS subscription, another goroutine) and report them
// node_down.
func TestShutdownReportsMembersAsServerShutdown(t *testing.T) {
	ns := startNATS(t, -1)
	nodes := startCluster(t, ns.ClientURL(), "a", "b")
	a, b := nodes[0], nodes[1]
	watcher := b.dial(t, "tcp")
	join(t, watcher, "big", "w")
	const members = 500
	var conns []net.Conn
	for i := range members {
		c, err := net.Dial("tcp", a.addr("tcp"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(packN(fmt.Sprintf(`{"op":"join","room":"big","name":"m%d"}`, i))); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	joined := 0
	for joined < members {
		ev, err := watcher.Expect("joined", 10*time.Second)
		if err != nil {
			t.Fatalf("after %d joined: %v", joined, err)
		}
		joined++
		_ = ev
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	reasons := map[string]int{}
	for left := 0; left < members; left++ {
		ev, err := watcher.Expect("left", 10*time.Second)
		if err != nil {
			t.Fatalf("after %d left (%v): %v", left, reasons, err)
		}
		reasons[ev.Reason]++
	}
	if reasons["server_shutdown"] != members {
		t.Errorf("left reasons %v, want %d server_shutdown", reasons, members)
	}
}
