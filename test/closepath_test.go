package test

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"tether/actors/conn"
	"tether/actors/node"
	"tether/client"
	"tether/config"
	"tether/framing"
	"tether/test/check"
)

// dialSmallWindow connects to addr with a small receive buffer, so that a
// client that stops reading fills the server's queue quickly.
func dialSmallWindow(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return errors.Join(err, serr)
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// upgrade sends a WebSocket upgrade request for path, with extra bytes
// after it in the same write (the start of the stream: preread), and
// reads the response.
func upgrade(t *testing.T, c net.Conn, path string, after []byte) *rawWS {
	t.Helper()
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	req := "GET " + path + " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := c.Write(append([]byte(req), after...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	return &rawWS{Conn: c, r: br}
}

// connInfo asks the node for a connection's info.
func connInfo(t *testing.T, n *testNode, id string) *conn.Info {
	t.Helper()
	info, ok := n.ConnInfo(id)
	if !ok {
		t.Fatalf("no info for %s", id)
	}
	return info
}

// floodedWebSocket joins a raw WebSocket client with a small receive
// window to room "flood" on n's "ws" listener, then has sender fill its
// queue to at least queued bytes while it reads nothing.
func floodedWebSocket(t *testing.T, n *testNode, sender *client.Client, queued int) (victim *rawWS, id string) {
	t.Helper()
	victim = upgrade(t, dialSmallWindow(t, n.addr("ws")), "/ws", nil)
	text, welcome, err := victim.readFrame(5 * time.Second)
	if err != nil || !text {
		t.Fatal(err)
	}
	var w struct{ Conn string }
	_ = json.Unmarshal(welcome, &w)
	if _, err := victim.Write(frame(true, ws.OpText, true, []byte(`{"op":"join","room":"flood","name":"vic","id":1}`))); err != nil {
		t.Fatal(err)
	}
	if _, reply, err := victim.readFrame(5 * time.Second); err != nil || !strings.Contains(string(reply), `"ok"`) {
		t.Fatalf("join: %s %v", reply, err)
	}
	check.For(t, 10*time.Second, time.Millisecond, func() error {
		say(t, sender, "flood", floodPayload)
		if q := connInfo(t, n, w.Conn).Queued; q < queued {
			return fmt.Errorf("queued %d", q)
		}
		return nil
	})
	return victim, w.Conn
}

var floodPayload = strings.Repeat("x", 2000)

// TestNothingFollowsTheCloseFrame: a WebSocket client that reads slowly
// is kicked while its queue holds messages and more keep coming: what was
// queued before the close frame still leaves, nothing after it does (RFC
// 6455 section 5.5.1).
func TestNothingFollowsTheCloseFrame(t *testing.T) {
	n := startNode(t, wsListener("127.0.0.1:0"))
	sender := n.dial(t, "tcp")
	join(t, sender, "flood", "sam")
	victim, id := floodedWebSocket(t, n, sender, 256<<10)
	if code := api(t, n, http.MethodPost, "/api/kick", map[string]string{"conn": id}, nil); code != http.StatusOK {
		t.Fatalf("kick: %d", code)
	}
	// More messages for the room while the victim lingers.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				_ = sender.Send(client.Request{Op: "send", Room: "flood", Data: floodPayload})
			}
		}
	}()
	closeSeen, after := false, 0
	_ = victim.SetReadDeadline(time.Now().Add(15 * time.Second))
	for {
		time.Sleep(2 * time.Millisecond) // a slow reader: the window opens a little at a time
		h, err := ws.ReadHeader(victim.r)
		if err != nil {
			break // the server closed the socket
		}
		body := make([]byte, h.Length)
		if _, err := io.ReadFull(victim.r, body); err != nil {
			break
		}
		switch {
		case h.OpCode == ws.OpClose:
			code, reason := framing.ParseClose(body)
			if code != 4004 || reason != "kicked" {
				t.Errorf("close frame %d %q, want 4004 kicked", code, reason)
			}
			closeSeen = true
		case closeSeen:
			after++
		}
	}
	if !closeSeen || after > 0 {
		t.Errorf("close frame seen %v; %d frames followed it", closeSeen, after)
	}
}

// TestLingerIsBoundedWithoutWriteTimeout: with write_timeout 0, a kicked
// connection whose peer reads a little of its queue and then nothing gets
// 5 seconds from the kick for its last writes, not a fresh wait per write
// (nor none: a write with no deadline waits for ever on a zero window).
func TestLingerIsBoundedWithoutWriteTimeout(t *testing.T) {
	n := startNode(t, func(c *config.Config) {
		wsListener("127.0.0.1:0")(c)
		c.Listeners[1].Limits.WriteTimeout = 0
		c.Listeners[1].Limits.OutboundQueue = 4 << 20
	})
	sender := n.dial(t, "tcp")
	join(t, sender, "flood", "sam")
	victim, id := floodedWebSocket(t, n, sender, 1<<20)
	if code := api(t, n, http.MethodPost, "/api/kick", map[string]string{"conn": id}, nil); code != http.StatusOK {
		t.Fatalf("kick: %d", code)
	}
	kicked := time.Now()
	// Read until the write in flight at the kick is done and the next one
	// has begun (the queue shrinks), then nothing more.
	q0 := connInfo(t, n, id).Queued
	buf := make([]byte, 16<<10)
	for read := 0; connInfo(t, n, id).Queued >= q0; read += len(buf) {
		if _, err := io.ReadFull(victim, buf); err != nil || read > 64<<20 {
			t.Fatalf("after %d bytes: %v", read, err)
		}
	}
	info := n.closeReason(t, id, 10*time.Second)
	if info != conn.ReasonKicked {
		t.Fatalf("reason %s, want kicked", info)
	}
	if lingered := connInfo(t, n, id).Closed.Sub(kicked); lingered > 7*time.Second {
		t.Errorf("the kicked connection lingered %s with write_timeout 0; the bound is 5s", lingered)
	}
}

// TestOversizeFrameWhileSendingIsToldWhy: a client still sending an
// oversize frame when the server closes it reads everything the server
// sent it, the close reason last, and an orderly end of stream. Without a
// lingering close, closing a socket with unread input sends a reset that
// throws away what the kernel still held for the client (here: room
// messages the client had not read yet, and the close reason behind
// them).
func TestOversizeFrameWhileSendingIsToldWhy(t *testing.T) {
	n := startNode(t, nil) // max_frame 64KiB
	sender := n.dial(t, "tcp")
	join(t, sender, "r", "sam")
	for round := range 3 {
		c := dialSmallWindow(t, n.addr("tcp"))
		if _, err := readPackN(c, 5*time.Second); err != nil { // welcome
			t.Fatal(err)
		}
		if _, err := c.Write(packN(`{"op":"join","room":"r","name":"big","id":1}`)); err != nil {
			t.Fatal(err)
		}
		if reply, err := readPackN(c, 5*time.Second); err != nil || reply != `{"op":"ok","id":1}` {
			t.Fatalf("join: %q %v", reply, err)
		}
		// Messages the client does not read yet: they wait in the kernel.
		const messages = 10
		for i := range messages {
			say(t, sender, "r", fmt.Sprintf("m%d-%s", i, strings.Repeat("z", 1000)))
		}
		// A simple client: it writes its whole message, then reads.
		_, _ = c.Write(packN(strings.Repeat("y", 4<<20))) // fails if the server resets
		got := 0
		var last string
		for {
			msg, err := readPackN(c, 5*time.Second)
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Fatalf("round %d: after %d messages (last %.40q): %v, want the close reason and EOF", round, got, last, err)
				}
				break
			}
			if strings.HasPrefix(msg, `{"op":"left"`) { // the last round's client, maybe
				continue
			}
			got++
			last = msg
		}
		if got != messages+1 || last != `{"op":"close","reason":"frame_too_large"}` {
			t.Fatalf("round %d: read %d messages, the last %.60q; want %d and the close reason", round, got, last, messages+1)
		}
	}
}

// TestPanicOnAPrereadFrameDoesNotStall: frames that arrive in the same
// packet as the WebSocket upgrade request are handled like any others:
// one that panics is skipped and the next one is answered.
func TestPanicOnAPrereadFrameDoesNotStall(t *testing.T) {
	n := startNode(t, wsListener("127.0.0.1:0"), func(o *node.Options) {
		o.WrapApp = func(_ string, next conn.NewApp) conn.NewApp {
			return func(c *conn.Actor) conn.App { return panicky{next(c)} }
		}
	})
	c, err := net.Dial("tcp", n.addr("ws"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	frames := append(frame(true, ws.OpText, true, []byte("panic")), frame(true, ws.OpText, true, []byte(`{"op":"ping","id":7}`))...)
	raw := upgrade(t, c, "/ws", frames)
	for {
		_, msg, err := raw.readFrame(5 * time.Second)
		if err != nil {
			t.Fatalf("after a panic on a preread frame: %v", err)
		}
		if string(msg) == `{"op":"pong","id":7}` {
			break
		}
	}
	// And the connection goes on.
	if _, err := raw.Write(frame(true, ws.OpText, true, []byte(`{"op":"ping","id":8}`))); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := raw.readFrame(5 * time.Second); err != nil || string(msg) != `{"op":"pong","id":8}` {
		t.Fatalf("next ping: %s %v", msg, err)
	}
}
