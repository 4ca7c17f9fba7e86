package framing

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// clientFrame encodes one frame as a browser would, with gobwas/ws's header
// writer and cipher: an implementation independent of the one under test.
func clientFrame(t testing.TB, op ws.OpCode, fin bool, payload []byte) []byte {
	t.Helper()
	return rawFrame(t, ws.Header{
		Fin:    fin,
		OpCode: op,
		Masked: true,
		Mask:   ws.NewMask(),
		Length: int64(len(payload)),
	}, payload)
}

// rawFrame encodes a frame with header h, masking payload if h says so.
func rawFrame(t testing.TB, h ws.Header, payload []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := ws.WriteHeader(&buf, h); err != nil {
		t.Fatalf("ws.WriteHeader: %v", err)
	}
	p := bytes.Clone(payload)
	if h.Masked {
		ws.Cipher(p, h.Mask, 0)
	}
	buf.Write(p)
	return buf.Bytes()
}

func text(s string) Frame     { return Frame{Op: OpText, Payload: []byte(s)} }
func binFrame(s string) Frame { return Frame{Op: OpBinary, Payload: []byte(s)} }

func ctl(op Op, s string) Frame { return Frame{Op: op, Payload: []byte(s)} }

// wsDecode decodes stream fed in every split case to a framer with MaxFrame
// max, checks the frames and the error, and returns the error of the stream
// fed whole.
func wsDecode(t *testing.T, max int, stream []byte, want []Frame, target error) error {
	t.Helper()
	mk := func(testing.TB) Framer { return NewWebSocket(WebSocketOptions{MaxFrame: max}) }
	return decodeSplits(t, mk, stream, max+ws.MaxHeaderSize+125, want, target)
}

func TestWebSocketMasked(t *testing.T) {
	stream := append(clientFrame(t, ws.OpText, true, []byte("hello")), clientFrame(t, ws.OpBinary, true, []byte{0, 1, 2, 255})...)
	stream = append(stream, clientFrame(t, ws.OpText, true, nil)...)
	wsDecode(t, 1024, stream, []Frame{text("hello"), binFrame("\x00\x01\x02\xff"), text("")}, nil)
}

// TestWebSocketWsutil decodes what gobwas/ws's high-level client writer sends.
func TestWebSocketWsutil(t *testing.T) {
	var buf bytes.Buffer
	msgs := []Frame{text("héllo"), binFrame(strings.Repeat("b", 300)), text(strings.Repeat("t", 70000))}
	for _, m := range msgs {
		if err := wsutil.WriteClientMessage(&buf, ws.OpCode(m.Op), m.Payload); err != nil {
			t.Fatal(err)
		}
	}
	if err := wsutil.WriteClientMessage(&buf, ws.OpPing, []byte("are you there")); err != nil {
		t.Fatal(err)
	}
	wsDecode(t, 1<<20, buf.Bytes(), append(msgs, ctl(OpPing, "are you there")), nil)
}

func TestWebSocketUnmasked(t *testing.T) {
	stream := rawFrame(t, ws.Header{Fin: true, OpCode: ws.OpText, Length: 2}, []byte("hi"))
	err := wsDecode(t, 1024, stream, nil, ErrBadFrame)
	if !errors.Is(err, ws.ErrProtocolMaskRequired) {
		t.Fatalf("error %v does not wrap ws.ErrProtocolMaskRequired", err)
	}
}

// TestWebSocketLengths covers the 7-, 16- and 64-bit length encodings at
// their boundaries.
func TestWebSocketLengths(t *testing.T) {
	cases := []struct {
		n      int
		header int // bytes, mask included
	}{
		{
			n:      0,
			header: 6,
		},
		{
			n:      125,
			header: 6,
		},
		{
			n:      126,
			header: 8,
		},
		{
			n:      65535,
			header: 8,
		},
		{
			n:      65536,
			header: 14,
		},
		{
			n:      200000,
			header: 14,
		},
	}
	for _, tc := range cases {
		payload := bytes.Repeat([]byte("0123456789abcdef"), tc.n/16+1)[:tc.n]
		fr := clientFrame(t, ws.OpBinary, true, payload)
		if got := len(fr) - tc.n; got != tc.header {
			t.Fatalf("length %d: header of %d bytes, want %d", tc.n, got, tc.header)
		}
		stream := append(bytes.Clone(fr), fr...)
		want := []Frame{binFrame(string(payload)), binFrame(string(payload))}
		for _, split := range [][][]byte{whole(stream), every(stream, 1), every(stream, 1000), at(stream, 3, 9)} {
			res := decode(t, NewWebSocket(WebSocketOptions{MaxFrame: 1 << 20}), split, 1<<20)
			if res.err != nil {
				t.Fatalf("length %d: %v", tc.n, res.err)
			}
			sameFrames(t, res.frames, want)
		}
	}
}

func TestWebSocketLengthMSB(t *testing.T) {
	stream := []byte{0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}
	wsDecode(t, 1024, stream, nil, ErrBadFrame)
}

// TestWebSocketFragments reassembles a message whose fragments have a ping
// and a pong between them; the control frames come out first.
func TestWebSocketFragments(t *testing.T) {
	var stream []byte
	stream = append(stream, clientFrame(t, ws.OpText, false, []byte("Hel"))...)
	stream = append(stream, clientFrame(t, ws.OpPing, true, []byte("p1"))...)
	stream = append(stream, clientFrame(t, ws.OpContinuation, false, []byte("lo, "))...)
	stream = append(stream, clientFrame(t, ws.OpContinuation, false, nil)...)
	stream = append(stream, clientFrame(t, ws.OpPong, true, nil)...)
	stream = append(stream, clientFrame(t, ws.OpContinuation, true, []byte("world"))...)
	stream = append(stream, clientFrame(t, ws.OpBinary, false, []byte{1})...)
	stream = append(stream, clientFrame(t, ws.OpContinuation, true, []byte{2})...)
	// A message of empty fragments only.
	stream = append(stream, clientFrame(t, ws.OpText, false, nil)...)
	stream = append(stream, clientFrame(t, ws.OpContinuation, true, nil)...)
	want := []Frame{ctl(OpPing, "p1"), ctl(OpPong, ""), text("Hello, world"), binFrame("\x01\x02"), text("")}
	wsDecode(t, 1024, stream, want, nil)
	for i := 0; i <= len(stream); i++ {
		res := decode(t, NewWebSocket(WebSocketOptions{MaxFrame: 1024}), at(stream, i), 2000)
		if res.err != nil {
			t.Fatalf("split at %d: %v", i, res.err)
		}
		sameFrames(t, res.frames, want)
	}
}

// TestWebSocketMaxFrame: a message of exactly MaxFrame bytes is accepted;
// one byte more is ErrFrameTooLarge from the header alone, for a single
// frame and for a reassembled message.
func TestWebSocketMaxFrame(t *testing.T) {
	const max = 300
	exact := bytes.Repeat([]byte("e"), max)
	wsDecode(t, max, clientFrame(t, ws.OpBinary, true, exact), []Frame{binFrame(string(exact))}, nil)
	frag := append(clientFrame(t, ws.OpBinary, false, exact[:100]), clientFrame(t, ws.OpContinuation, true, exact[100:])...)
	wsDecode(t, max, frag, []Frame{binFrame(string(exact))}, nil)

	over := clientFrame(t, ws.OpBinary, true, append(exact, 'x'))
	for _, sc := range splitCases {
		w := NewWebSocket(WebSocketOptions{MaxFrame: max})
		res := decode(t, w, sc.split(over[:8]), 8) // the header only
		mustErrIs(t, res.err, ErrFrameTooLarge)
	}
	first := clientFrame(t, ws.OpText, false, exact[:200])
	second := clientFrame(t, ws.OpContinuation, true, exact[:101])
	stream := append(first, second[:8]...)
	for _, sc := range splitCases {
		res := decode(t, NewWebSocket(WebSocketOptions{MaxFrame: max}), sc.split(stream), max)
		mustErrIs(t, res.err, ErrFrameTooLarge)
		if !strings.Contains(res.err.Error(), "301") {
			t.Fatalf("error %q does not give the message size", res.err)
		}
	}
	// A 64-bit length far beyond any limit is refused the same way.
	huge := []byte{0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4}
	wsDecode(t, max, huge, nil, ErrFrameTooLarge)
	if got := NewWebSocket(WebSocketOptions{}).max; got != DefaultMaxFrame {
		t.Fatalf("zero MaxFrame gives %d, want DefaultMaxFrame", got)
	}
}

func TestWebSocketUTF8(t *testing.T) {
	// "é" is C3 A9: split between two fragments it is still valid.
	split := append(clientFrame(t, ws.OpText, false, []byte("caf\xC3")), clientFrame(t, ws.OpContinuation, true, []byte("\xA9!"))...)
	wsDecode(t, 1024, split, []Frame{text("café!")}, nil)

	bad := clientFrame(t, ws.OpText, true, []byte("ok\xFFno"))
	err := wsDecode(t, 1024, bad, nil, ErrBadUTF8)
	if !errors.Is(err, ErrBadFrame) || CloseCodeFor(err) != CloseInvalidPayload {
		t.Fatalf("bad UTF-8: err %v, close code %d; want ErrBadFrame too and 1007", err, CloseCodeFor(err))
	}
	badFrag := append(clientFrame(t, ws.OpText, false, []byte("ok")), clientFrame(t, ws.OpContinuation, true, []byte("\xC3"))...)
	wsDecode(t, 1024, badFrag, nil, ErrBadUTF8)
	// Binary messages are not checked.
	wsDecode(t, 1024, clientFrame(t, ws.OpBinary, true, []byte{0xFF}), []Frame{binFrame("\xff")}, nil)
}

// TestWebSocketProtocolErrors covers every header rule of RFC 6455 the
// framer enforces; each case must end in ErrBadFrame.
func TestWebSocketProtocolErrors(t *testing.T) {
	type protoCase struct {
		name   string
		stream func(t testing.TB) []byte
		want   []Frame // frames before the error
	}
	cases := []protoCase{
		{
			name: "fragmented ping",
			stream: func(t testing.TB) []byte {
				return clientFrame(t, ws.OpPing, false, []byte("x"))
			},
		},
		{
			name: "ping of 126 bytes",
			stream: func(t testing.TB) []byte {
				return clientFrame(t, ws.OpPing, true, make([]byte, 126))
			},
		},
		{
			name: "close of 126 bytes",
			stream: func(t testing.TB) []byte {
				return clientFrame(t, ws.OpClose, true, append([]byte{0x03, 0xE8}, make([]byte, 124)...))
			},
		},
		{
			name: "continuation without a start",
			stream: func(t testing.TB) []byte {
				return clientFrame(t, ws.OpContinuation, true, []byte("x"))
			},
		},
		{
			name: "new message inside a fragmented one",
			stream: func(t testing.TB) []byte {
				return append(clientFrame(t, ws.OpText, false, []byte("a")), clientFrame(t, ws.OpBinary, true, []byte("b"))...)
			},
		},
		{
			name: "continuation after a finished message",
			stream: func(t testing.TB) []byte {
				return append(clientFrame(t, ws.OpText, true, []byte("a")), clientFrame(t, ws.OpContinuation, true, []byte("b"))...)
			},
			want: []Frame{text("a")},
		},
	}
	for _, rsv := range []byte{1, 2, 4, 7} {
		cases = append(cases, protoCase{
			name: "rsv " + string('0'+rsv),
			stream: func(t testing.TB) []byte {
				return rawFrame(t, ws.Header{Fin: true, Rsv: rsv, OpCode: ws.OpText, Masked: true, Length: 1}, []byte("x"))
			},
		})
	}
	for _, op := range []ws.OpCode{3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF} {
		cases = append(cases, protoCase{
			name: "reserved opcode " + string("0123456789ABCDEF"[op]),
			stream: func(t testing.TB) []byte {
				return clientFrame(t, op, true, []byte("x"))
			},
		})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := wsDecode(t, 1024, tc.stream(t), tc.want, ErrBadFrame)
			if CloseCodeFor(err) != CloseProtocolError {
				t.Fatalf("close code for %v = %d, want 1002", err, CloseCodeFor(err))
			}
		})
	}
}

func TestWebSocketClose(t *testing.T) {
	closeFrame := func(t testing.TB, code uint16, reason string) []byte {
		p := binary.BigEndian.AppendUint16(nil, code)
		return clientFrame(t, ws.OpClose, true, append(p, reason...))
	}
	for _, code := range []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999} {
		stream := closeFrame(t, code, "bye")
		p := binary.BigEndian.AppendUint16(nil, code)
		wsDecode(t, 1024, stream, []Frame{ctl(OpClose, string(p)+"bye")}, nil)
	}
	for _, code := range []uint16{0, 999, 1004, 1005, 1006, 1012, 1013, 1014, 1015, 1016, 2000, 2999, 5000, 65535} {
		wsDecode(t, 1024, closeFrame(t, code, ""), nil, ErrBadFrame)
	}
	wsDecode(t, 1024, clientFrame(t, ws.OpClose, true, nil), []Frame{ctl(OpClose, "")}, nil)
	wsDecode(t, 1024, clientFrame(t, ws.OpClose, true, []byte{0x03}), nil, ErrBadFrame)
	wsDecode(t, 1024, closeFrame(t, 1000, "bad \xFF"), nil, ErrBadUTF8)
	// A bad code wins over a bad reason (found by FuzzWebSocket).
	for _, code := range []uint16{999, 5000} {
		err := wsDecode(t, 1024, closeFrame(t, code, "\xFF"), nil, ErrBadFrame)
		if CloseCodeFor(err) != CloseProtocolError {
			t.Fatalf("code %d with a bad reason: %v, want a protocol error", code, err)
		}
	}
	// A close frame between fragments is returned at once.
	stream := append(clientFrame(t, ws.OpText, false, []byte("a")), closeFrame(t, 1001, "")...)
	wsDecode(t, 1024, stream, []Frame{ctl(OpClose, "\x03\xe9")}, nil)
}

// TestWebSocketBuffered follows Buffered through a split header, a split
// control frame inside a fragmented message, and the end of the message.
func TestWebSocketBuffered(t *testing.T) {
	f1 := clientFrame(t, ws.OpBinary, false, []byte("abcdef"))
	ping := clientFrame(t, ws.OpPing, true, []byte("xyz"))
	f2 := clientFrame(t, ws.OpContinuation, true, []byte("gh"))
	w := NewWebSocket(WebSocketOptions{MaxFrame: 100})
	next := func() (Frame, bool) {
		f, ok, err := w.Next()
		if err != nil {
			t.Fatal(err)
		}
		return f, ok
	}
	w.Feed(bytes.Clone(f1[:3])) // part of the header
	if _, ok := next(); ok || w.Buffered() != 3 {
		t.Fatalf("after 3 header bytes: Buffered() = %d", w.Buffered())
	}
	w.Feed(bytes.Clone(f1[3:]))
	if _, ok := next(); ok || w.Buffered() != 6 {
		t.Fatalf("after fragment 1: Buffered() = %d, want 6", w.Buffered())
	}
	w.Feed(bytes.Clone(ping[:8])) // header and 2 of 3 payload bytes
	if _, ok := next(); ok || w.Buffered() != 8 {
		t.Fatalf("inside the ping: Buffered() = %d, want 8", w.Buffered())
	}
	w.Feed(bytes.Clone(append(ping[8:], f2...)))
	if f, ok := next(); !ok || f.Op != OpPing || string(f.Payload) != "xyz" {
		t.Fatalf("want the ping, got ok=%v %s %q", ok, f.Op, f.Payload)
	}
	if f, ok := next(); !ok || f.Op != OpBinary || string(f.Payload) != "abcdefgh" {
		t.Fatalf("want the message, got ok=%v %s %q", ok, f.Op, f.Payload)
	}
	if _, ok := next(); ok || w.Buffered() != 0 || holdsBuffer(w) {
		t.Fatalf("at the end: Buffered() = %d, holds buffer %v", w.Buffered(), holdsBuffer(w))
	}
}

// TestWebSocketAppendFrame decodes server frames with gobwas/ws's reader.
func TestWebSocketAppendFrame(t *testing.T) {
	w := NewWebSocket(WebSocketOptions{MaxFrame: 100})
	for _, n := range []int{0, 1, 125, 126, 65535, 65536, 100000} {
		for _, op := range []Op{OpText, OpBinary} {
			payload := bytes.Repeat([]byte("x"), n)
			wire, err := w.AppendFrame([]byte("pre"), op, payload)
			if err != nil {
				t.Fatalf("AppendFrame %s %d: %v", op, n, err)
			}
			if string(wire[:3]) != "pre" {
				t.Fatal("dst prefix lost")
			}
			f, err := readServerFrame(wire[3:])
			if err != nil {
				t.Fatalf("read frame %d: %v", n, err)
			}
			if !f.Header.Fin || f.Header.Masked || f.Header.OpCode != ws.OpCode(op) || !bytes.Equal(f.Payload, payload) {
				t.Fatalf("decoded %+v, want final unmasked %s of %d bytes", f.Header, op, n)
			}
			if err := ws.CheckHeader(f.Header, ws.StateClientSide); err != nil {
				t.Fatalf("client rejects header: %v", err)
			}
		}
	}
	for _, op := range []Op{OpPing, OpPong, OpClose} {
		if _, err := w.AppendFrame(nil, op, make([]byte, 125)); err != nil {
			t.Fatalf("%s of 125 bytes: %v", op, err)
		}
		_, err := w.AppendFrame(nil, op, make([]byte, 126))
		mustErrIs(t, err, ErrBadFrame)
	}
	_, err := w.AppendFrame(nil, Op(0), nil)
	mustErrIs(t, err, ErrBadFrame)
	_, err = w.AppendFrame(nil, Op(3), nil)
	mustErrIs(t, err, ErrBadFrame)
}

func TestAppendParseClose(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes: cut at a rune boundary
	cases := []struct {
		code       uint16
		reason     string
		wantCode   uint16
		wantReason string
	}{
		{
			code:       CloseNormal,
			reason:     "bye",
			wantCode:   CloseNormal,
			wantReason: "bye",
		},
		{
			code:       CloseGoingAway,
			reason:     "",
			wantCode:   CloseGoingAway,
			wantReason: "",
		},
		{
			code:       CloseMessageTooBig,
			reason:     long,
			wantCode:   CloseMessageTooBig,
			wantReason: strings.Repeat("é", 61),
		},
		{
			code:       0,
			reason:     "ignored",
			wantCode:   CloseNoStatus,
			wantReason: "",
		},
		{
			code:       CloseNoStatus,
			reason:     "ignored",
			wantCode:   CloseNoStatus,
			wantReason: "",
		},
	}
	for _, tc := range cases {
		wire := AppendClose(nil, tc.code, tc.reason)
		f, err := readServerFrame(wire)
		if err != nil {
			t.Fatal(err)
		}
		if f.Header.OpCode != ws.OpClose || !f.Header.Fin || len(f.Payload) > 125 || !utf8.Valid(f.Payload[min(2, len(f.Payload)):]) {
			t.Fatalf("AppendClose(%d) = %+v %q", tc.code, f.Header, f.Payload)
		}
		code, reason := ParseClose(f.Payload)
		if code != tc.wantCode || reason != tc.wantReason {
			t.Fatalf("ParseClose(AppendClose(%d, %q)) = %d %q, want %d %q", tc.code, truncate([]byte(tc.reason)), code, reason, tc.wantCode, tc.wantReason)
		}
		if len(f.Payload) >= 2 {
			gc, gr := ws.ParseCloseFrameData(f.Payload)
			if err := ws.CheckCloseFrameData(gc, gr); err != nil {
				t.Fatalf("gobwas rejects our close frame: %v", err)
			}
		}
	}
}

func TestCloseCodeFor(t *testing.T) {
	cases := []struct {
		err  error
		want uint16
	}{
		{
			err:  nil,
			want: CloseNormal,
		},
		{
			err:  ErrFrameTooLarge,
			want: CloseMessageTooBig,
		},
		{
			err:  ErrBadUTF8,
			want: CloseInvalidPayload,
		},
		{
			err:  ErrBadFrame,
			want: CloseProtocolError,
		},
		{
			err:  errors.New("other"),
			want: CloseInternalError,
		},
	}
	for _, tc := range cases {
		if got := CloseCodeFor(tc.err); got != tc.want {
			t.Fatalf("CloseCodeFor(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
	if !errors.Is(ErrBadUTF8, ErrBadFrame) {
		t.Fatal("ErrBadUTF8 does not wrap ErrBadFrame")
	}
}

// TestCipher checks gobwas/ws's masking, which the framer trusts, against the
// byte-by-byte definition of RFC 6455 §5.3 at every length and offset.
func TestCipher(t *testing.T) {
	mask := [4]byte{0x12, 0x34, 0x56, 0x78}
	for n := range 200 {
		for off := range 4 {
			p := make([]byte, n)
			for i := range p {
				p[i] = byte(i * 7)
			}
			want := bytes.Clone(p)
			for i := range want {
				want[i] ^= mask[(off+i)%4]
			}
			ws.Cipher(p, mask, off)
			if !bytes.Equal(p, want) {
				t.Fatalf("ws.Cipher length %d offset %d differs from RFC 6455", n, off)
			}
		}
	}
}

// readServerFrame decodes one frame with gobwas/ws's header reader, the
// independent implementation the encoder is checked against.
func readServerFrame(wire []byte) (ws.Frame, error) {
	r := bytes.NewReader(wire)
	h, err := ws.ReadHeader(r)
	if err != nil {
		return ws.Frame{}, err
	}
	if h.Length > int64(r.Len()) {
		return ws.Frame{}, fmt.Errorf("header says %d bytes, %d follow", h.Length, r.Len())
	}
	payload := make([]byte, h.Length)
	_, err = io.ReadFull(r, payload)
	return ws.Frame{Header: h, Payload: payload}, err
}
