package test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"tether/actors/conn"
	"tether/actors/node"
	"tether/client"
	"tether/config"
	"tether/test/check"
	"tether/test/testca"
)

// tlsNode is a test node serving TLS with a certificate of its CA on the
// "tcp" listener, on a websocket listener "wss" and on the admin server,
// with a plain websocket listener "ws" beside them.
type tlsNode struct {
	*testNode
	ca                *testca.CA
	certFile, keyFile string
}

// startTLSNode starts a tlsNode, its certificate of serial 2 from a new
// CA, its configuration then changed by mutate.
func startTLSNode(t *testing.T, mutate func(*config.Config)) *tlsNode {
	t.Helper()
	ca := testca.New(t)
	certFile, keyFile := ca.Issue(t, 2)
	n := startNode(t, func(c *config.Config) {
		files := config.TLS{CertFile: certFile, KeyFile: keyFile}
		c.Listeners[0].TLS = files
		wss := config.DefaultListener(config.ProtocolWebSocket)
		wss.Name, wss.Address, wss.TLS = "wss", "127.0.0.1:0", files
		ws := config.DefaultListener(config.ProtocolWebSocket)
		ws.Name, ws.Address = "ws", "127.0.0.1:0"
		c.Listeners = append(c.Listeners, wss, ws)
		c.HTTP.TLS = files
		if mutate != nil {
			mutate(c)
		}
	})
	return &tlsNode{testNode: n, ca: ca, certFile: certFile, keyFile: keyFile}
}

// dialTLS connects a client that trusts the CA to the "tcp" listener.
func (n *tlsNode) dialTLS(t *testing.T) *client.Client {
	t.Helper()
	return n.dialWith(t, "tcp", client.TCPOptions{TLS: n.ca.ClientConfig()})
}

// dialWSS connects a client that trusts the CA to the "wss" listener.
func (n *tlsNode) dialWSS(t *testing.T) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.DialWebSocketWith(ctx, "wss://"+n.addr("wss")+"/ws", client.WebSocketOptions{TLS: n.ca.ClientConfig()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// httpsClient trusts ca alone, and makes a connection per request.
func httpsClient(ca *testca.CA) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: ca.ClientConfig(), DisableKeepAlives: true}}
}

// serial is the serial number of the certificate c's server presented.
func serial(t *testing.T, c *client.Client) int64 {
	t.Helper()
	tc, ok := c.Conn().(*tls.Conn)
	if !ok {
		t.Fatalf("%T is not a TLS connection", c.Conn())
	}
	return tc.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// TestTLSClientsShareARoom: a TCP-over-TLS client, a plain WebSocket
// client and a wss client join one room and hear each other; the wss
// listener serves its page over https. A client that does not trust the
// certificate, and one that speaks no TLS, fail alone: every other
// connection goes on.
func TestTLSClientsShareARoom(t *testing.T) {
	n := startTLSNode(t, nil)
	tcp := n.dialTLS(t)
	ws := n.dialWS(t)
	wss := n.dialWSS(t)

	info, ok := n.ConnInfo(tcp.ID())
	if !ok || info.RemoteAddr != "127.0.0.1" || info.RemotePort != tcp.Conn().LocalAddr().(*net.TCPAddr).Port {
		t.Errorf("the TLS connection's info %+v does not name the client %s", info, tcp.Conn().LocalAddr())
	}

	join(t, tcp, "lobby", "tara")
	join(t, ws, "lobby", "wendy")
	join(t, wss, "lobby", "sam")
	say(t, tcp, "lobby", "hello from tls")
	expectMessage(t, ws, "lobby", tcp.ID(), "hello from tls")
	expectMessage(t, wss, "lobby", tcp.ID(), "hello from tls")
	say(t, wss, "lobby", "hello from wss")
	expectMessage(t, tcp, "lobby", wss.ID(), "hello from wss")
	expectMessage(t, ws, "lobby", wss.ID(), "hello from wss")
	say(t, ws, "lobby", "hello from ws")
	expectMessage(t, tcp, "lobby", ws.ID(), "hello from ws")
	expectMessage(t, wss, "lobby", ws.ID(), "hello from ws")

	resp, err := httpsClient(n.ca).Get("https://" + n.addr("wss") + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "<html") {
		t.Errorf("https page: %d %.80q", resp.StatusCode, page)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := client.DialTCP(ctx, n.addr("tcp"), client.TCPOptions{TLS: &tls.Config{}}); err == nil ||
		!strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Errorf("a client without the CA: %v", err)
	}
	if _, err := client.DialWebSocketWith(ctx, "wss://"+n.addr("wss")+"/ws", client.WebSocketOptions{}); err == nil {
		t.Error("a wss client without the CA connected")
	}
	// Plain bytes on the TLS port: the handshake fails, the socket closes.
	plain, err := net.Dial("tcp", n.addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := plain.Write(packN(`{"op":"ping","id":1}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := waitClosed(plain, 5*time.Second); err != nil {
		t.Errorf("a client without TLS: %v", err)
	}
	for _, c := range []*client.Client{tcp, ws, wss} {
		if err := c.Ping(); err != nil {
			t.Fatalf("%s after the failed handshakes: %v", c.ID(), err)
		}
	}
	say(t, tcp, "lobby", "still here")
	expectMessage(t, wss, "lobby", tcp.ID(), "still here")
}

// TestTLSSlowReaderIsClosed: a TLS client that reads nothing from a busy
// room is closed slow_consumer (or write_timeout), as a plain one is: the
// bridge's pair is small and hides nothing from the connection's bounds.
// The room's other member and the clients of another room are served
// throughout.
func TestTLSSlowReaderIsClosed(t *testing.T) {
	n := startTLSNode(t, func(c *config.Config) {
		c.Listeners[0].Limits.OutboundQueue = 64 << 10
		c.Listeners[0].Limits.WriteTimeout = config.Duration(5 * time.Second)
	})
	raw, err := net.Dial("tcp", n.addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	_ = raw.(*net.TCPConn).SetReadBuffer(4096) // a small window: the kernel holds little for it
	hog, err := client.Wrap(raw, client.TCPOptions{TLS: n.ca.ClientConfig()}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer hog.Close()
	sender, listener := n.dialTLS(t), n.dialWSS(t)
	join(t, hog, "flood", "hog")
	join(t, sender, "flood", "sender")
	join(t, listener, "flood", "listener")
	others := make([]*client.Client, 10)
	for i := range others {
		others[i] = n.dialTLS(t)
		join(t, others[i], "calm", fmt.Sprintf("o%d", i))
	}

	big := strings.Repeat("x", 8<<10)
	for i := 0; ; i++ {
		info, ok := n.ConnInfo(hog.ID())
		if ok && info.Closed != nil {
			if info.Reason != conn.ReasonSlowConsumer && info.Reason != conn.ReasonWriteTimeout {
				t.Fatalf("hog closed %s, want slow_consumer or write_timeout", info.Reason)
			}
			break
		}
		if i == 5000 {
			t.Fatal("the hog is still open after 5000 messages of 8KiB")
		}
		say(t, sender, "flood", big)
		if _, err := listener.Expect("message", 5*time.Second); err != nil {
			t.Fatalf("the room's reader, message %d: %v", i, err)
		}
		if i%50 == 0 {
			say(t, others[0], "calm", "tick")
			for _, o := range others[1:] {
				expectMessage(t, o, "calm", others[0].ID(), "tick")
			}
		}
	}
	say(t, sender, "flood", "after")
	expectMessage(t, listener, "flood", sender.ID(), "after")
}

// TestWSSUpgradeKeepsPrereadAndAnswers408: over wss, a frame sent in the
// same write as the upgrade request (read by the HTTP server with the
// request) still reaches the connection, and a request still incomplete
// at handshake_timeout gets its 408 over TLS, as on a plain listener.
func TestWSSUpgradeKeepsPrereadAndAnswers408(t *testing.T) {
	n := startTLSNode(t, func(c *config.Config) {
		c.Listeners[1].HandshakeTimeout = config.Duration(500 * time.Millisecond)
	})
	dialTLS := func() *tls.Conn {
		t.Helper()
		raw, err := net.Dial("tcp", n.addr("wss"))
		if err != nil {
			t.Fatal(err)
		}
		cfg := n.ca.ClientConfig()
		cfg.ServerName = "127.0.0.1"
		c := tls.Client(raw, cfg)
		t.Cleanup(func() { c.Close() })
		return c
	}

	c := upgrade(t, dialTLS(), "/ws", frame(true, ws.OpText, true, []byte(`{"op":"ping","id":7}`)))
	for _, want := range []string{`"op":"welcome"`, `"id":7`} {
		if _, msg, err := c.readFrame(5 * time.Second); err != nil || !strings.Contains(string(msg), want) {
			t.Fatalf("want %s, got %s %v", want, msg, err)
		}
	}

	slow := dialTLS()
	if _, err := slow.Write([]byte("GET /ws HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = slow.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(slow), nil)
	if err != nil || resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("an incomplete request over TLS: %v %v", resp, err)
	}
}

// openFDs counts the process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

// TestTLSClosesLeaveNothing: TLS connections closed every way (by the
// client, kicked by the server, a client reset) give back every
// descriptor and goroutine: the counts return to what they were.
func TestTLSClosesLeaveNothing(t *testing.T) {
	n := startTLSNode(t, nil)
	warm := n.dialTLS(t) // the pollers and pools exist before the baseline
	if err := warm.Ping(); err != nil {
		t.Fatal(err)
	}
	warm.Close()
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if g := gaugeValue(t, n.testNode, "tether_connections"); g != 0 {
			return fmt.Errorf("%v connections open", g)
		}
		return nil
	})
	// No collection while counting: the finalizers of sockets lost
	// unclosed would close them, and hide the leak.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	fds, goroutines := openFDs(t), runtime.NumGoroutine()

	const each = 10
	var clients []*client.Client
	for range each {
		clients = append(clients, n.dialTLS(t), n.dialWSS(t))
	}
	for _, c := range clients {
		if err := c.Ping(); err != nil {
			t.Fatal(err)
		}
	}
	if got := openFDs(t); got < fds+2*each*3 {
		t.Fatalf("%d descriptors with %d TLS connections open, %d before: want 3 each at least", got, 2*each, fds)
	}
	for i, c := range clients {
		switch i % 3 {
		case 0: // the client closes (close_notify)
			c.Close()
		case 1: // the server kicks it: a lingering close through the bridge
			if _, err := n.Call(context.Background(), "kick", &node.APIRequest{Conn: c.ID()}); err != nil {
				t.Fatal(err)
			}
			go func() { _, _ = io.Copy(io.Discard, c.Conn()); c.Close() }()
		case 2: // the client's socket resets
			tc := c.Conn().(*tls.Conn).NetConn().(*net.TCPConn)
			_ = tc.SetLinger(0)
			tc.Close()
		}
	}
	check.For(t, 20*time.Second, 50*time.Millisecond, func() error {
		if g := gaugeValue(t, n.testNode, "tether_connections"); g != 0 {
			return fmt.Errorf("%v connections open", g)
		}
		if got := openFDs(t); got > fds {
			return fmt.Errorf("%d descriptors open, %d before", got, fds)
		}
		// The test's own goroutines (the kicked clients' readers) end
		// too; a few goroutines come and go in the node (timers, NATS).
		if got := runtime.NumGoroutine(); got > goroutines+3 {
			return fmt.Errorf("%d goroutines, %d before", got, goroutines)
		}
		return nil
	})
}

// TestTLSCertificateReload: a renewed certificate (same CA, another
// serial) written over the files and reloaded reaches new connections on
// every TLS listener and the admin server, while an open connection goes
// on; files that do not load on a reload keep the certificate in use.
func TestTLSCertificateReload(t *testing.T) {
	n := startTLSNode(t, nil)
	old := n.dialTLS(t)
	if got := serial(t, old); got != 2 {
		t.Fatalf("serial %d, want 2", got)
	}
	join(t, old, "r", "old")
	adminSerial := func() int64 {
		t.Helper()
		resp, err := httpsClient(n.ca).Get("https://" + n.HTTPAddr().String() + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.TLS.PeerCertificates[0].SerialNumber.Int64()
	}

	n.ca.Write(t, n.certFile, n.keyFile, 3)
	n.Reload(n.Config())
	for name, c := range map[string]*client.Client{"tcp": n.dialTLS(t), "wss": n.dialWSS(t)} {
		if got := serial(t, c); got != 3 {
			t.Errorf("%s: a new connection got serial %d, want 3", name, got)
		}
	}
	if got := adminSerial(); got != 3 {
		t.Errorf("admin server: serial %d after the reload, want 3", got)
	}
	fresh := n.dialTLS(t)
	join(t, fresh, "r", "fresh")
	say(t, old, "r", "from before")
	expectMessage(t, fresh, "r", old.ID(), "from before")
	say(t, fresh, "r", "from after")
	expectMessage(t, old, "r", fresh.ID(), "from after")

	if err := os.WriteFile(n.certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.Reload(n.Config())
	if got := serial(t, n.dialTLS(t)); got != 3 {
		t.Errorf("after a bad reload: serial %d, want 3 kept", got)
	}
	if got := adminSerial(); got != 3 {
		t.Errorf("admin server after a bad reload: serial %d, want 3 kept", got)
	}
	if len(n.logLines(`"certificate not reloaded; keeping the one in use"`, `"key":"listeners.tcp.tls"`)) != 1 ||
		len(n.logLines(`"certificate not reloaded; keeping the one in use"`, `"key":"http.tls"`)) != 1 {
		t.Errorf("bad files not logged once per certificate:\n%s", strings.Join(n.logLines("certificate"), "\n"))
	}
}

// TestServeOverTLS runs tether serve with TLS everywhere: `tether status`
// reads the admin API over https trusting the configured certificate,
// /healthz answers https clients with the CA (and not plain http), and
// `tether reload` (SIGHUP) gives new connections the renewed
// certificate while an open one goes on.
func TestServeOverTLS(t *testing.T) {
	ca := testca.New(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	ca.Write(t, certFile, keyFile, 2)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	tlsKeys := fmt.Sprintf("{cert_file: %q, key_file: %q}", certFile, keyFile)
	p := startServeProcessIn(t, dir, fmt.Sprintf(`node: {name: tls}
log: {format: json}
http: {address: %q, tls: %s}
nats: {embedded: {port: -1}}
listeners:
  - {name: tcp, address: %q, tls: %s}
`, httpAddr, tlsKeys, tcpAddr, tlsKeys), tcpAddr)
	conf := filepath.Join(dir, "tether.yaml")

	var status string
	check.For(t, 20*time.Second, 100*time.Millisecond, func() error {
		out, stderr, code := tether(t, dir, "status", "-c", conf)
		if code != 0 || !strings.Contains(out, "node tls-") {
			return fmt.Errorf("status: code %d, %q %q", code, out, stderr)
		}
		status = out
		return nil
	})
	if !strings.Contains(status, "http  "+httpAddr) {
		t.Errorf("status over https:\n%s", status)
	}
	resp, err := httpsClient(ca).Get("https://" + httpAddr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz over https: %d", resp.StatusCode)
	}
	if resp, err := http.Get("http://" + httpAddr + "/healthz"); err == nil && resp.StatusCode == http.StatusOK {
		resp.Body.Close()
		t.Error("the admin server answered plain http")
	}

	dial := func() *client.Client {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := client.DialTCP(ctx, tcpAddr, client.TCPOptions{TLS: ca.ClientConfig()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	old := dial()
	join(t, old, "r", "old")
	ca.Write(t, certFile, keyFile, 3)
	if out, stderr, code := tether(t, dir, "reload", "-c", conf); code != 0 {
		t.Fatalf("reload: %d %s %s", code, out, stderr)
	}
	var fresh *client.Client
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		c := dial()
		if got := serial(t, c); got != 3 {
			c.Close()
			return fmt.Errorf("serial %d after the reload, want 3", got)
		}
		fresh = c
		return nil
	})
	join(t, fresh, "r", "fresh")
	say(t, old, "r", "still here")
	expectMessage(t, fresh, "r", old.ID(), "still here")
	if out, stderr, code := tether(t, dir, "push", "-c", conf, "--room", "r", "over https"); code != 0 {
		t.Fatalf("push over https: %d %s %s", code, out, stderr)
	}
	for _, c := range []*client.Client{old, fresh} {
		if ev, err := c.Expect("message", 5*time.Second); err != nil || !strings.Contains(string(ev.Data), "over https") {
			t.Fatalf("push: %+v %v", ev, err)
		}
	}
	p.stop(t)
}

// TestTLSNodeCapCountsThreeDescriptors: with a TLS listener, the derived
// node.max_connections is a third of the descriptors left for
// connections, since each TLS connection holds three.
func TestTLSNodeCapCountsThreeDescriptors(t *testing.T) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	ca := testca.New(t)
	certFile, keyFile := ca.Issue(t, 2)
	for _, c := range []struct {
		name string
		tls  bool
		want int
	}{
		{"plain", false, int(rl.Cur) - 256},
		{"tls", true, (int(rl.Cur) - 256) / 3},
	} {
		n := startNode(t, func(cfg *config.Config) {
			cfg.Node.DescriptorReserve = 256
			if c.tls {
				cfg.Listeners[0].TLS = config.TLS{CertFile: certFile, KeyFile: keyFile}
			}
		})
		if got := n.logLines(`"connections capped"`, fmt.Sprintf(`"max_connections":%d,`, c.want)); len(got) != 1 {
			t.Errorf("%s: want the cap %d logged; got %q", c.name, c.want, n.logLines(`"connections capped"`))
		}
	}
}

// TestTLSDeadPeerWithoutFIN: the liveness socket options reach the TCP
// socket under a TLS connection: a TLS peer whose link goes down is
// closed by the kernel's keepalive (TCP over TLS) or by TCP_USER_TIMEOUT
// (wss, pinged by the server) within the same bounds as a plain one.
// The bridge cannot tell why the socket ended: both are reported
// client_closed (the documented limit).
func TestTLSDeadPeerWithoutFIN(t *testing.T) {
	ns := newPeerNamespace(t)
	ca := testca.New(t)
	certFile, keyFile := ca.Issue(t, 2)
	files := config.TLS{CertFile: certFile, KeyFile: keyFile}
	n := startNode(t, func(c *config.Config) {
		c.Listeners = []config.Listener{
			deadPeerListener(ns, "keepalive", config.ProtocolTCP, true),
			deadPeerListener(ns, "wss", config.ProtocolWebSocket, false),
		}
		c.Listeners[0].TLS, c.Listeners[1].TLS = files, files
	})
	cfg := ca.ClientConfig()
	cfg.ServerName = "127.0.0.1" // the certificate's name; the node is at the namespace's address
	kaClient, err := ns.inside(func(ctx context.Context) (*client.Client, error) {
		return client.DialTCP(ctx, n.addr("keepalive"), client.TCPOptions{TLS: cfg})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer kaClient.Close()
	wssClient, err := ns.inside(func(ctx context.Context) (*client.Client, error) {
		return client.DialWebSocketWith(ctx, "wss://"+n.addr("wss")+"/ws", client.WebSocketOptions{TLS: cfg})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer wssClient.Close()

	pulled := ns.pullCable()
	for _, c := range []struct {
		c     *client.Client
		limit time.Duration
	}{
		{kaClient, keepaliveLimit},
		{wssClient, userTimeoutLimit},
	} {
		if r := n.closeReason(t, c.c.ID(), c.limit+2*time.Second); r != conn.ReasonClientClosed {
			t.Errorf("%s: reason %s, want client_closed", c.c.ID(), r)
		}
		if info, _ := n.ConnInfo(c.c.ID()); info.Closed.Sub(pulled) > c.limit {
			t.Errorf("%s: closed %s after the cable was pulled, want within %s", c.c.ID(), info.Closed.Sub(pulled), c.limit)
		}
	}
}
