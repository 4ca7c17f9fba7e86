package framing

import (
	"bytes"
	"testing"

	"github.com/gobwas/ws"
)

// contractCase is one framer with a good frame and a broken stream.
type contractCase struct {
	name string
	make func(t testing.TB) Framer
	good func(t testing.TB, payload []byte) []byte // wire bytes of one frame
	bad  []byte                                    // a stream that is an error
}

func contractCases() []contractCase {
	return []contractCase{
		{
			name: "eof",
			make: func(t testing.TB) Framer { return mustEOF(t, "\r\n", 64) },
			good: func(t testing.TB, p []byte) []byte { return append(bytes.Clone(p), "\r\n"...) },
			bad:  bytes.Repeat([]byte("x"), 64),
		},
		{
			name: "length",
			make: func(t testing.TB) Framer {
				return mustLength(t, LengthOptions{Type: 'n', BodyOffset: 2, MaxFrame: 64})
			},
			good: func(t testing.TB, p []byte) []byte { return append([]byte{0, byte(len(p))}, p...) },
			bad:  []byte{0xFF, 0xFF},
		},
		{
			name: "websocket",
			make: func(t testing.TB) Framer { return NewWebSocket(WebSocketOptions{MaxFrame: 64}) },
			good: func(t testing.TB, p []byte) []byte { return clientFrame(t, ws.OpBinary, true, p) },
			bad:  []byte{0x82, 0x05, 'h', 'e', 'l', 'l', 'o'}, // unmasked
		},
	}
}

// TestFramerContract checks the rules of the Framer interface that every
// framer shares.
func TestFramerContract(t *testing.T) {
	for _, tc := range contractCases() {
		t.Run(tc.name, func(t *testing.T) {
			fr := tc.make(t)
			frame := tc.good(t, []byte("payload"))

			// A partial frame is held; Reset drops it and its buffer, and
			// the framer then reads a new stream from the start.
			fr.Feed(bytes.Clone(frame[:len(frame)-1]))
			if _, ok, err := fr.Next(); ok || err != nil {
				t.Fatalf("partial frame: ok=%v err=%v", ok, err)
			}
			if fr.Buffered() == 0 || !holdsBuffer(fr) {
				t.Fatalf("partial frame: Buffered() = %d, holds buffer %v", fr.Buffered(), holdsBuffer(fr))
			}
			fr.Reset()
			if fr.Buffered() != 0 || holdsBuffer(fr) {
				t.Fatal("Reset kept the partial frame")
			}
			res := decode(t, fr, whole(frame), 64)
			if res.err != nil {
				t.Fatal(res.err)
			}
			sameFrames(t, res.frames, bin("payload"))

			// Errors are final: Next repeats the error, Feed is ignored,
			// and nothing is held. Reset clears the error.
			fr.Feed(bytes.Clone(tc.bad))
			_, _, err1 := fr.Next()
			if err1 == nil {
				t.Fatal("bad stream: no error")
			}
			fr.Feed(bytes.Clone(frame))
			if _, ok, err2 := fr.Next(); ok || err2 != err1 {
				t.Fatalf("after the error: ok=%v err=%v, want %v again", ok, err2, err1)
			}
			if fr.Buffered() != 0 || holdsBuffer(fr) {
				t.Fatal("broken framer holds a buffer")
			}
			fr.Reset()
			res = decode(t, fr, whole(frame), 64)
			if res.err != nil {
				t.Fatalf("after Reset: %v", res.err)
			}
			sameFrames(t, res.frames, bin("payload"))

			// Feeding again before Next has run out would lose frames.
			two := append(bytes.Clone(frame), frame...)
			fr.Feed(two)
			if _, ok, _ := fr.Next(); !ok {
				t.Fatal("no frame")
			}
			func() {
				defer func() {
					if recover() == nil {
						t.Fatal("Feed with unread bytes did not panic")
					}
				}()
				fr.Feed(frame)
			}()
		})
	}
}

// TestPayloadValidity pins down how long a Payload stays valid: a frame
// completed in a pooled buffer keeps its bytes until the next Next, even if
// another framer is busy with the pool meanwhile.
func TestPayloadValidity(t *testing.T) {
	for _, tc := range contractCases() {
		t.Run(tc.name, func(t *testing.T) {
			fr, other := tc.make(t), tc.make(t)
			frame := tc.good(t, []byte("0123456789"))
			fr.Feed(bytes.Clone(frame[:8])) // header and part of the payload
			fr.Next()
			rest := bytes.Clone(frame[8:])
			fr.Feed(rest)
			f, ok, err := fr.Next()
			if !ok || err != nil {
				t.Fatalf("ok=%v err=%v", ok, err)
			}
			if within(f.Payload, rest) || !holdsBuffer(fr) {
				t.Fatal("payload not from a pooled buffer")
			}
			// Another connection takes and fills pooled buffers.
			for range 10 {
				other.Feed(bytes.Clone(frame[:5]))
				other.Next()
				other.Reset()
			}
			if string(f.Payload) != "0123456789" {
				t.Fatalf("payload changed to %q before the next Next", f.Payload)
			}
		})
	}
}

// TestCoalescedZeroCopy feeds many whole frames at once: all come out in
// place, pointing into the fed slice (a masked WebSocket frame is unmasked
// there), and nothing is buffered.
func TestCoalescedZeroCopy(t *testing.T) {
	// Ten binary frames of 10 to 19 bytes, written by the framer itself.
	appended := func(t testing.TB, fr Framer) ([]byte, []Frame) {
		var stream []byte
		var want []Frame
		for i := range 10 {
			p := bytes.Repeat([]byte{byte('a' + i)}, 10+i)
			var err error
			if stream, err = fr.AppendFrame(stream, OpBinary, p); err != nil {
				t.Fatalf("AppendFrame %d: %v", i, err)
			}
			want = append(want, Frame{Op: OpBinary, Payload: p})
		}
		return stream, want
	}
	cases := []struct {
		name   string
		make   func(t testing.TB) Framer
		stream func(t testing.TB, fr Framer) ([]byte, []Frame)
	}{
		{
			name:   "eof",
			make:   func(t testing.TB) Framer { return mustEOF(t, "\r\n\r\n", 1024) },
			stream: appended,
		},
		{
			name: "length",
			make: func(t testing.TB) Framer {
				return mustLength(t, LengthOptions{Type: 'N', BodyOffset: 4, MaxFrame: 1024})
			},
			stream: appended,
		},
		{
			name: "websocket",
			make: func(t testing.TB) Framer { return NewWebSocket(WebSocketOptions{MaxFrame: 1024}) },
			// Ten masked text frames of 100 to 109 bytes and a ping, as a
			// browser sends them.
			stream: func(t testing.TB, _ Framer) ([]byte, []Frame) {
				var stream []byte
				var want []Frame
				for i := range 10 {
					p := bytes.Repeat([]byte{byte('a' + i)}, 100+i)
					stream = append(stream, clientFrame(t, ws.OpText, true, p)...)
					want = append(want, Frame{Op: OpText, Payload: p})
				}
				stream = append(stream, clientFrame(t, ws.OpPing, true, []byte("ping"))...)
				return stream, append(want, Frame{Op: OpPing, Payload: []byte("ping")})
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fr := tc.make(t)
			stream, want := tc.stream(t, fr)
			fr.Feed(stream)
			for i, w := range want {
				f, ok, err := fr.Next()
				if err != nil || !ok {
					t.Fatalf("Next %d: ok=%v err=%v", i, ok, err)
				}
				if !within(f.Payload, stream) {
					t.Fatalf("frame %d was copied, want it in place", i)
				}
				if f.Op != w.Op || !bytes.Equal(f.Payload, w.Payload) {
					t.Fatalf("frame %d = %s %q, want %s %q", i, f.Op, f.Payload, w.Op, w.Payload)
				}
			}
			if _, ok, err := fr.Next(); ok || err != nil || fr.Buffered() != 0 || holdsBuffer(fr) {
				t.Fatalf("after the last frame: ok=%v err=%v buffered=%d holds buffer %v", ok, err, fr.Buffered(), holdsBuffer(fr))
			}
		})
	}
}

func TestOp(t *testing.T) {
	cases := []struct {
		op      Op
		name    string
		control bool
	}{
		{
			op:   OpText,
			name: "text",
		},
		{
			op:   OpBinary,
			name: "binary",
		},
		{
			op:      OpClose,
			name:    "close",
			control: true,
		},
		{
			op:      OpPing,
			name:    "ping",
			control: true,
		},
		{
			op:      OpPong,
			name:    "pong",
			control: true,
		},
		{
			op:   Op(3),
			name: "op(3)",
		},
	}
	for _, tc := range cases {
		if tc.op.String() != tc.name || tc.op.IsControl() != tc.control {
			t.Fatalf("%d: String() = %q, IsControl() = %v", byte(tc.op), tc.op.String(), tc.op.IsControl())
		}
	}
	same := OpText == Op(ws.OpText) && OpBinary == Op(ws.OpBinary) && OpClose == Op(ws.OpClose) &&
		OpPing == Op(ws.OpPing) && OpPong == Op(ws.OpPong)
	if !same {
		t.Fatal("Op values differ from the RFC 6455 opcodes")
	}
}
