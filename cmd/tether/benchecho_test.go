package main

import (
	"bufio"
	"encoding/binary"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go serveEcho(ln)
	return ln.Addr().String()
}

func dialEcho(t *testing.T, addr string) *echoClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &echoClient{c: c, r: bufio.NewReader(c), sample: newReservoir(10)}
}

// The bare server speaks the chat protocol's ping and pong over the
// length framing: a welcome first, a pong with the ping's id, nothing
// for what is not a ping.
func TestEchoServer(t *testing.T) {
	c := dialEcho(t, startEcho(t))
	p, err := c.readFrame()
	if err != nil || !strings.HasPrefix(string(p), `{"op":"welcome","conn":"bare.`) {
		t.Fatalf("welcome %q %v", p, err)
	}
	var req []byte
	req = appendLengthFrame(req, []byte(`{"op":"send","room":"r","data":1}`)) // no answer
	req = appendLengthFrame(req, []byte(`not json`))                          // no answer
	req = appendLengthFrame(req, []byte(`{"op":"ping","id":"a7"}`))
	req = appendLengthFrame(req, []byte(`{"op":"ping"}`))
	if _, err := c.c.Write(req); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`{"op":"pong","id":"a7"}`, `{"op":"pong"}`} {
		p, err := c.readFrame()
		if err != nil || string(p) != want {
			t.Fatalf("got %q %v, want %s", p, err, want)
		}
	}
}

func TestPingFrame(t *testing.T) {
	f := pingFrame(128)
	if n := binary.BigEndian.Uint32(f); int(n) != len(f)-4 || n != 128 {
		t.Fatalf("length %d, body %d", n, len(f)-4)
	}
	if !strings.HasPrefix(string(f[4:]), `{"op":"ping","id":1,"data":"xxx`) {
		t.Fatalf("%q", f[4:])
	}
	if f := pingFrame(0); string(f[4:]) != `{"op":"ping","id":1}` {
		t.Fatalf("%q", f[4:])
	}
}

// The bench's client loop against the bare server: round trips counted
// and sampled until the end.
func TestEchoLoop(t *testing.T) {
	c := dialEcho(t, startEcho(t))
	if _, err := c.readFrame(); err != nil {
		t.Fatal(err)
	}
	var done atomic.Int64
	if err := c.loop(pingFrame(128), time.Now().Add(200*time.Millisecond), &done); err != nil {
		t.Fatal(err)
	}
	if done.Load() < 10 || len(c.sample.values) != 10 || c.sample.seen != int(done.Load()) {
		t.Fatalf("%d round trips, %d sampled of %d", done.Load(), len(c.sample.values), c.sample.seen)
	}
	for _, v := range c.sample.values {
		if v <= 0 || v > 1000 {
			t.Fatalf("round trip %v ms", v)
		}
	}
}
