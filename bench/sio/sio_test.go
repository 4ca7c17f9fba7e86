package sio

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The client against the real server the bench measures
// (bench/peer/server.js, installed by bench/peer/install when needed),
// with pings every 100 ms so that the client must answer them to stay.
func startServer(t *testing.T) *Server {
	t.Helper()
	s, err := StartServer("../peer", "--ping-interval", "100", "--ping-timeout", "200")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

func dial(t *testing.T, s *Server) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, s.URL, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func join(t *testing.T, c *Conn, room string) {
	t.Helper()
	args, err := c.Call("join", room, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(args) != 1 || string(args[0]) != `{"ok":true}` {
		t.Fatalf("join ack %s", args)
	}
}

type message struct {
	Room string          `json:"room"`
	From string          `json:"from"`
	Data json.RawMessage `json:"data"`
	Time time.Time       `json:"time"`
}

// pump reads c's packets (answering pings meanwhile) into a channel.
func pump(c *Conn) <-chan *Packet {
	ch := make(chan *Packet, 16)
	go func() {
		defer close(ch)
		for {
			pk, err := c.Next()
			if err != nil {
				return
			}
			ch <- pk
		}
	}()
	return ch
}

func expectMessage(t *testing.T, ch <-chan *Packet) message {
	t.Helper()
	var pk *Packet
	select {
	case p, ok := <-ch:
		if !ok {
			t.Fatal("connection closed")
		}
		pk = p
	case <-time.After(5 * time.Second):
		t.Fatal("no message within 5s")
	}
	if pk.Type != '2' || pk.Event != "message" || len(pk.Args) != 1 {
		t.Fatalf("got %c %q %s, want a message event", pk.Type, pk.Event, pk.Args)
	}
	var m message
	if err := json.Unmarshal(pk.Args[0], &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRoomSendAndBroadcast(t *testing.T) {
	s := startServer(t)
	a, b, outsider := dial(t, s), dial(t, s), dial(t, s)
	if a.Open.SID == "" || a.SID == "" || a.Open.PingInterval != 100 {
		t.Fatalf("open %+v sid %q", a.Open, a.SID)
	}
	join(t, a, "r")
	join(t, b, "r")
	join(t, outsider, "other")
	as, bs, outs := pump(a), pump(b), pump(outsider)

	// Past several ping intervals: the server closes a client that does
	// not answer within interval + timeout.
	time.Sleep(time.Second)

	// A room send reaches the other member, not the sender.
	if err := a.Emit("send", map[string]any{"room": "r", "data": map[string]int{"seq": 1}}); err != nil {
		t.Fatal(err)
	}
	m := expectMessage(t, bs)
	if m.Room != "r" || m.From != a.SID || string(m.Data) != `{"seq":1}` || time.Since(m.Time) > 5*time.Second {
		t.Fatalf("b got %+v", m)
	}

	// POST /broadcast reaches every member, from "".
	res, err := http.Post(s.URL+"/broadcast", "application/json", strings.NewReader(`{"room":"r","data":{"seq":2}}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("broadcast: %s", res.Status)
	}
	for _, ch := range []<-chan *Packet{as, bs} {
		m := expectMessage(t, ch)
		if m.From != "" || string(m.Data) != `{"seq":2}` {
			t.Fatalf("got %+v", m)
		}
	}
	// The outsider's next event is the one to its own room: it got none
	// of r's.
	if _, err := http.Post(s.URL+"/broadcast", "application/json", strings.NewReader(`{"room":"other","data":3}`)); err != nil {
		t.Fatal(err)
	}
	if m := expectMessage(t, outs); m.Room != "other" || string(m.Data) != "3" {
		t.Fatalf("outsider got %+v", m)
	}
	res, err = http.Post(s.URL+"/broadcast", "application/json", strings.NewReader(`nope`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 400 {
		t.Fatalf("bad body: %s", res.Status)
	}
}

func TestLocalAddress(t *testing.T) {
	s := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, s.URL, Options{Local: []byte{127, 9, 8, 7}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.Conn().LocalAddr().String(); !strings.HasPrefix(got, "127.9.8.7:") {
		t.Fatalf("local address %s", got)
	}
}

func TestEncodeDecode(t *testing.T) {
	p, err := EncodeEvent(-1, "send", map[string]string{"room": "r"})
	if err != nil || string(p) != `42["send",{"room":"r"}]` {
		t.Fatalf("%s %v", p, err)
	}
	p, _ = EncodeEvent(12, "join", "r")
	if string(p) != `4212["join","r"]` {
		t.Fatalf("%s", p)
	}
	pk, err := Decode([]byte(`4312[{"ok":true}]`))
	if err != nil || pk.Type != '3' || pk.ID != 12 || len(pk.Args) != 1 || !bytes.Equal(pk.Args[0], []byte(`{"ok":true}`)) {
		t.Fatalf("%+v %v", pk, err)
	}
	pk, err = Decode([]byte(`42["message",1,"two"]`))
	if err != nil || pk.Event != "message" || pk.ID != -1 || len(pk.Args) != 2 {
		t.Fatalf("%+v %v", pk, err)
	}
	for _, bad := range []string{`42`, `40{}`, `42[1]`, `42[`} {
		if _, err := Decode([]byte(bad)); err == nil {
			t.Errorf("%s decoded", bad)
		}
	}
	for in, want := range map[string]string{
		"http://127.0.0.1:9700": "ws://127.0.0.1:9700/socket.io/?EIO=4&transport=websocket",
		"127.0.0.1:9700":        "ws://127.0.0.1:9700/socket.io/?EIO=4&transport=websocket",
		"https://h:1/x/":        "wss://h:1/x/?EIO=4&transport=websocket",
	} {
		if got, err := URL(in); err != nil || got != want {
			t.Errorf("URL(%s) = %s %v", in, got, err)
		}
	}
}
