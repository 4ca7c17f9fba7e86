package test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"tether/actors/conn"
	"tether/config"
	"tether/framing"
)

// rawWS is a WebSocket client that writes whatever bytes a test wants.
type rawWS struct {
	net.Conn
	r io.Reader
}

// dialRawWS upgrades a connection to the "ws" listener with extra headers.
func dialRawWS(t *testing.T, n *testNode, header http.Header) (*rawWS, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, br, _, err := ws.Dialer{Header: ws.HandshakeHeaderHTTP(header)}.Dial(ctx, "ws://"+n.addr("ws")+"/ws")
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	var r io.Reader = c
	if br != nil {
		r = io.MultiReader(br, c)
	}
	return &rawWS{Conn: c, r: r}, nil
}

// frame builds one client frame by hand: fin, opcode, mask bit, payload.
func frame(fin bool, op ws.OpCode, masked bool, payload []byte) []byte {
	h := ws.Header{Fin: fin, OpCode: op, Length: int64(len(payload)), Masked: masked}
	p := append([]byte(nil), payload...)
	if masked {
		h.Mask = ws.NewMask()
		ws.Cipher(p, h.Mask, 0)
	}
	var b strings.Builder
	_ = ws.WriteHeader(&b, h)
	return append([]byte(b.String()), p...)
}

// closeCode reads server frames until the close frame and returns its code.
func (c *rawWS) closeCode(timeout time.Duration) (uint16, string, error) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	for {
		h, err := ws.ReadHeader(c.r)
		if err != nil {
			return 0, "", err
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(c.r, payload); err != nil {
			return 0, "", err
		}
		if h.OpCode == ws.OpClose {
			code, reason := framing.ParseClose(payload)
			return code, reason, nil
		}
	}
}

// TestWebSocketBadInput: each kind of bad input gets the RFC's answer (a
// close code, or an HTTP status before the upgrade) and touches no other
// connection.
func TestWebSocketBadInput(t *testing.T) {
	n := startNode(t, func(c *config.Config) {
		wsListener("127.0.0.1:0")(c)
		ws := &c.Listeners[len(c.Listeners)-1]
		ws.Framing.MaxFrame = 1024
		ws.HandshakeTimeout = config.Duration(time.Second)
		ws.AllowedOrigins = []string{"https://chat.example"}
	})
	bystander := n.dialWS(t)
	alive := func(what string) {
		t.Helper()
		if err := bystander.Ping(); err != nil {
			t.Fatalf("after %s the bystander is hurt: %v", what, err)
		}
	}

	frames := []struct {
		name   string
		bytes  []byte
		code   uint16
		reason conn.Reason
	}{
		{"unmasked client frame", frame(true, ws.OpText, false, []byte(`{"op":"ping"}`)), framing.CloseProtocolError, conn.ReasonBadFrame},
		{"oversize frame", frame(true, ws.OpText, true, make([]byte, 2000)), framing.CloseMessageTooBig, conn.ReasonFrameTooLarge},
		{"oversize fragmented message", append(frame(false, ws.OpText, true, make([]byte, 800)), frame(true, ws.OpContinuation, true, make([]byte, 800))...), framing.CloseMessageTooBig, conn.ReasonFrameTooLarge},
		{"invalid UTF-8 text", frame(true, ws.OpText, true, []byte{'{', 0xff, 0xfe, '}'}), framing.CloseInvalidPayload, conn.ReasonBadFrame},
		{"fragmented control frame", frame(false, ws.OpPing, true, []byte("x")), framing.CloseProtocolError, conn.ReasonBadFrame},
		{"control frame over 125 bytes", frame(true, ws.OpPing, true, make([]byte, 126)), framing.CloseProtocolError, conn.ReasonBadFrame},
	}
	for _, f := range frames {
		t.Run(f.name, func(t *testing.T) {
			c, err := dialRawWS(t, n, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write(f.bytes); err != nil {
				t.Fatal(err)
			}
			code, reason, err := c.closeCode(5 * time.Second)
			if err != nil || code != f.code || reason != f.reason.String() {
				t.Fatalf("close %d %q (%v), want %d %q", code, reason, err, f.code, f.reason)
			}
			alive(f.name)
		})
	}

	t.Run("client close is answered", func(t *testing.T) {
		c, err := dialRawWS(t, n, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(frame(true, ws.OpClose, true, ws.NewCloseFrameBody(ws.StatusGoingAway, "bye"))); err != nil {
			t.Fatal(err)
		}
		if code, _, err := c.closeCode(5 * time.Second); err != nil || code != uint16(ws.StatusGoingAway) {
			t.Fatalf("close echo: %d %v", code, err)
		}
	})

	t.Run("malformed JSON is an error reply, not a close", func(t *testing.T) {
		c := n.dialWS(t)
		if err := c.SendRaw([]byte(`{"op":`)); err != nil {
			t.Fatal(err)
		}
		if ev, err := c.Expect("error", 5*time.Second); err != nil || ev.Code != "bad_request" {
			t.Fatalf("%+v %v", ev, err)
		}
		if err := c.Ping(); err != nil {
			t.Fatalf("closed after malformed JSON: %v", err)
		}
	})

	t.Run("handshake without upgrade headers", func(t *testing.T) {
		resp, err := http.Get("http://" + n.addr("ws") + "/ws")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("status %s, want 400", resp.Status)
		}
		alive("a plain GET")
	})

	t.Run("origin not allowed", func(t *testing.T) {
		_, err := dialRawWS(t, n, http.Header{"Origin": {"https://evil.example"}})
		var rej ws.StatusError
		if !errors.As(err, &rej) || int(rej) != http.StatusForbidden {
			t.Fatalf("want 403, got %v", err)
		}
		if _, err := dialRawWS(t, n, http.Header{"Origin": {"https://chat.example"}}); err != nil {
			t.Fatalf("allowed origin refused: %v", err)
		}
		alive("a refused origin")
	})

	t.Run("slowloris handshake", func(t *testing.T) {
		c, err := net.Dial("tcp", n.addr("ws"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		if _, err := c.Write([]byte("GET /ws HTTP/1.1\r\nHost: x\r\n")); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { // one header byte every 200ms: never a whole request
			defer close(done)
			for _, b := range []byte("Upgrade: websocket\r\nConnection: Upgrade\r\n") {
				if _, err := c.Write([]byte{b}); err != nil {
					return
				}
				time.Sleep(200 * time.Millisecond) // the attacker's pace
			}
		}()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		status, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.HasPrefix(status, "HTTP/1.1 408") {
			t.Fatalf("got %q (%v), want 408 Request Timeout", status, err)
		}
		if after := time.Since(start); after > 2500*time.Millisecond {
			t.Errorf("answered after %s, handshake_timeout is 1s", after)
		}
		if _, err := waitClosed(c, 3*time.Second); err != nil {
			t.Fatal(err)
		}
		c.Close()
		<-done
		alive("a slowloris client")
	})
}
