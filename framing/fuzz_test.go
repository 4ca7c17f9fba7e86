package framing

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// Every fuzz target checks two properties:
//
//   - Arbitrary bytes, fed in random splits, give exactly what a simple
//     whole-stream model of the format gives (frames, error, bytes held), and
//     the framer never holds more than max_frame.
//   - Round trip: payloads encoded (with AppendFrame for the TCP framers, as a
//     masked client would for WebSocket) and fed in random splits come out
//     as the same frames.
//
// The seed corpus is in testdata/fuzz/<FuzzName>/.

// cutPayloads cuts data into payloads of random lengths drawn from r.
func cutPayloads(data []byte, r *rand.Rand) [][]byte {
	var ps [][]byte
	for len(data) > 0 {
		n := r.IntN(min(len(data), 40) + 1)
		ps = append(ps, data[:n])
		data = data[n:]
	}
	return ps
}

// matchModel decodes stream, fed to fr in random splits drawn from r, and
// fails t unless fr does what a model of the format did with the whole
// stream: the frames want, then the error wantErr or, without one, tail bytes
// held.
func matchModel(t testing.TB, fr Framer, stream []byte, r *rand.Rand, bound int, want []Frame, tail int, wantErr error) {
	t.Helper()
	res := decode(t, fr, randomSplits(stream, r), bound)
	sameFrames(t, res.frames, want)
	if !errors.Is(res.err, wantErr) || (res.err == nil) != (wantErr == nil) {
		t.Fatalf("error %v, model says %v", res.err, wantErr)
	}
	if wantErr == nil && fr.Buffered() != tail {
		t.Fatalf("Buffered() = %d, model holds %d", fr.Buffered(), tail)
	}
}

// roundTrip decodes wire, fed to fr in random splits drawn from r, and fails
// t unless it gives exactly the frames sent.
func roundTrip(t testing.TB, fr Framer, wire []byte, r *rand.Rand, bound int, sent []Frame) {
	t.Helper()
	res := decode(t, fr, randomSplits(wire, r), bound)
	if res.err != nil {
		t.Fatalf("round trip: %v", res.err)
	}
	sameFrames(t, res.frames, sent)
}

// eofModel decodes a whole stream the obvious way.
func eofModel(stream, delim []byte, max int) (frames []Frame, tail int, err error) {
	for {
		i := bytes.Index(stream, delim)
		if i < 0 {
			if len(stream) >= max {
				return frames, 0, ErrFrameTooLarge
			}
			return frames, len(stream), nil
		}
		if i+len(delim) > max {
			return frames, 0, ErrFrameTooLarge
		}
		frames = append(frames, Frame{Op: OpBinary, Payload: stream[:i]})
		stream = stream[i+len(delim):]
	}
}

func FuzzEOF(f *testing.F) {
	f.Add([]byte("\r\n\r\n"), uint16(64), uint64(1), []byte("hello\r\n\r\nworld\r\n\r\n"))
	f.Add([]byte("\n"), uint16(4), uint64(2), []byte("a\nbb\n\nccccccc\n"))
	f.Add([]byte("abababab"), uint16(30), uint64(3), []byte("xababababababababy"))
	f.Fuzz(func(t *testing.T, delim []byte, maxFrame uint16, seed uint64, stream []byte) {
		delim = delim[:min(len(delim), 8)]
		if len(delim) == 0 {
			delim = []byte("\n")
		}
		max := len(delim) + 1 + int(maxFrame%512)
		r := rand.New(rand.NewPCG(seed, 0))
		mk := func() *EOF { return mustEOF(t, string(delim), max) }

		// Arbitrary bytes against the model.
		want, tail, wantErr := eofModel(stream, delim, max)
		matchModel(t, mk(), stream, r, max-1, want, tail, wantErr)

		// Round trip.
		enc := mk()
		var wire []byte
		var sent []Frame
		for _, p := range cutPayloads(stream, r) {
			// max_frame bounds receiving only: AppendFrame takes any size.
			one, err := enc.AppendFrame(nil, OpBinary, p)
			got, _, _ := eofModel(append(bytes.Clone(p), delim...), delim, len(p)+len(delim))
			roundTrips := len(got) == 1 && bytes.Equal(got[0].Payload, p)
			switch {
			case err == nil && !roundTrips:
				t.Fatalf("AppendFrame(%q) accepted a frame that decodes as %s", p, showFrames(got))
			case err != nil && roundTrips:
				t.Fatalf("AppendFrame(%q) refused a good frame: %v", p, err)
			case err != nil, len(p)+len(delim) > max: // more than this framer receives
				continue
			}
			wire = append(wire, one...)
			sent = append(sent, Frame{Op: OpBinary, Payload: p})
		}
		roundTrip(t, mk(), wire, r, max-1, sent)
	})
}

// lengthModel decodes a whole stream the obvious way, reading the length
// field byte by byte.
func lengthModel(stream []byte, o LengthOptions) (frames []Frame, tail int, err error) {
	size, signed, big := 4, false, false
	switch o.Type {
	case 'c', 'C':
		size = 1
	case 's', 'S', 'n', 'v':
		size = 2
	}
	signed = o.Type == 'c' || o.Type == 's' || o.Type == 'l'
	big = o.Type == 'n' || o.Type == 'N'
	for len(stream) >= o.BodyOffset {
		field := stream[o.LengthOffset : o.LengthOffset+size]
		var u uint64
		for i := range size {
			b := field[i]
			if big {
				u = u<<8 | uint64(b)
			} else {
				u |= uint64(b) << (8 * i)
			}
		}
		n := int64(u)
		if signed && u>>(8*size-1) != 0 {
			n -= 1 << (8 * size)
		}
		if n < 0 {
			return frames, 0, ErrBadFrame
		}
		total := int64(o.BodyOffset) + n
		if total > int64(o.MaxFrame) {
			return frames, 0, ErrFrameTooLarge
		}
		if int64(len(stream)) < total {
			break
		}
		frames = append(frames, Frame{Op: OpBinary, Payload: stream[o.BodyOffset:total]})
		stream = stream[total:]
	}
	return frames, len(stream), nil
}

func FuzzLength(f *testing.F) {
	f.Add(byte('N'), uint8(0), uint8(0), uint16(200), uint64(1), []byte("\x00\x00\x00\x05aaaaa\x00\x00\x00\x01b"))
	f.Add(byte('c'), uint8(0), uint8(0), uint16(100), uint64(2), []byte("\x03abc\xff"))
	f.Add(byte('v'), uint8(2), uint8(2), uint16(50), uint64(3), []byte("\xab\xcd\x05\x00\x00\x00hello"))
	f.Fuzz(func(t *testing.T, typ, lengthOffset, bodyExtra uint8, maxFrame uint16, seed uint64, stream []byte) {
		const codes = "cCsSnNlLvV"
		o := LengthOptions{Type: codes[int(typ)%len(codes)], LengthOffset: int(lengthOffset % 8)}
		o.BodyOffset = o.LengthOffset + lengthTypes[o.Type].size + int(bodyExtra%8)
		o.MaxFrame = o.BodyOffset + 1 + int(maxFrame%1024)
		r := rand.New(rand.NewPCG(seed, 0))

		// Arbitrary bytes against the model.
		want, tail, wantErr := lengthModel(stream, o)
		matchModel(t, mustLength(t, o), stream, r, o.MaxFrame, want, tail, wantErr)

		// Round trip.
		enc := mustLength(t, o)
		var wire []byte
		var sent []Frame
		for _, p := range cutPayloads(stream, r) {
			// max_frame bounds receiving only: AppendFrame takes what the
			// length field can say.
			one, err := enc.AppendFrame(nil, OpBinary, p)
			fits := int64(len(p)) <= lengthTypes[o.Type].max
			if (err == nil) != fits {
				t.Fatalf("AppendFrame(%d bytes) = %v, fits = %v", len(p), err, fits)
			}
			if err != nil || o.BodyOffset+len(p) > o.MaxFrame { // more than this framer receives
				continue
			}
			got, _, _ := lengthModel(one, o)
			if len(got) != 1 || !bytes.Equal(got[0].Payload, p) {
				t.Fatalf("model decodes AppendFrame(%q) as %s", p, showFrames(got))
			}
			wire = append(wire, one...)
			sent = append(sent, Frame{Op: OpBinary, Payload: p})
		}
		roundTrip(t, mustLength(t, o), wire, r, o.MaxFrame, sent)
	})
}

// wsModel decodes a whole stream with gobwas/ws's header reader and checks,
// reassembling messages in the plainest way.
func wsModel(stream []byte, max int) (frames []Frame, err error) {
	r := bytes.NewReader(stream)
	var msgOp ws.OpCode
	var msg []byte
	for {
		h, err := ws.ReadHeader(r)
		if errors.Is(err, ws.ErrHeaderLengthMSB) {
			return frames, ErrBadFrame
		}
		if err != nil {
			return frames, nil // the stream ends inside a header
		}
		state := ws.StateServerSide
		if msgOp != 0 {
			state |= ws.StateFragmented
		}
		if ws.CheckHeader(h, state) != nil {
			return frames, ErrBadFrame
		}
		if h.OpCode.IsData() && int64(len(msg))+h.Length > int64(max) {
			return frames, ErrFrameTooLarge
		}
		if int64(r.Len()) < h.Length {
			return frames, nil // the stream ends inside a payload
		}
		p := make([]byte, h.Length)
		r.Read(p)
		ws.Cipher(p, h.Mask, 0)
		switch {
		case h.OpCode == ws.OpClose && len(p) > 0:
			if len(p) == 1 {
				return frames, ErrBadFrame
			}
			// RFC 6455 §7.4: the codes an endpoint may send.
			code := int(p[0])<<8 | int(p[1])
			valid := (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) || (code >= 3000 && code <= 4999)
			if !valid {
				return frames, ErrBadFrame
			}
			if !utf8.Valid(p[2:]) {
				return frames, ErrBadUTF8
			}
			fallthrough
		case h.OpCode.IsControl():
			frames = append(frames, Frame{Op: Op(h.OpCode), Payload: p})
			continue
		case h.OpCode != ws.OpContinuation:
			msgOp = h.OpCode
		}
		msg = append(msg, p...)
		if !h.Fin {
			continue
		}
		if msgOp == ws.OpText && !utf8.Valid(msg) {
			return frames, ErrBadUTF8
		}
		frames = append(frames, Frame{Op: Op(msgOp), Payload: msg})
		msgOp, msg = 0, nil
	}
}

func FuzzWebSocket(f *testing.F) {
	seed := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	f.Add(uint16(100), uint64(1), seed(
		clientFrame(f, ws.OpText, false, []byte("Hel")),
		clientFrame(f, ws.OpPing, true, []byte("p")),
		clientFrame(f, ws.OpContinuation, true, []byte("lo")),
	))
	f.Add(uint16(10), uint64(2), seed(clientFrame(f, ws.OpBinary, true, make([]byte, 300))))
	f.Add(uint16(100), uint64(3), seed(clientFrame(f, ws.OpClose, true, []byte("\x03\xe8bye"))))
	f.Add(uint16(100), uint64(4), []byte("\x81\x05hello"))
	f.Fuzz(func(t *testing.T, maxFrame uint16, seed uint64, stream []byte) {
		max := 1 + int(maxFrame%1024)
		bound := max + ws.MaxHeaderSize + ws.MaxControlFramePayloadSize
		r := rand.New(rand.NewPCG(seed, 0))

		// Arbitrary bytes against the model. The framer unmasks in place,
		// so both get their own copy.
		want, wantErr := wsModel(bytes.Clone(stream), max)
		res := decode(t, NewWebSocket(WebSocketOptions{MaxFrame: max}), randomSplits(stream, r), bound)
		sameFrames(t, res.frames, want)
		if CloseCodeFor(res.err) != CloseCodeFor(wantErr) {
			t.Fatalf("error %v, model says %v", res.err, wantErr)
		}

		// Round trip: messages cut from stream, fragmented at random with
		// control frames between the fragments, masked as a client does.
		var wire []byte
		var sent []Frame
		for _, p := range cutPayloads(stream, r) {
			p = p[:min(len(p), max)]
			op := ws.OpBinary
			if utf8.Valid(p) && r.IntN(2) == 0 {
				op = ws.OpText
			}
			rest := p
			for first := true; ; first = false {
				n := len(rest)
				if r.IntN(3) == 0 {
					n = r.IntN(len(rest) + 1)
				}
				fop := op
				if !first {
					fop = ws.OpContinuation
				}
				fin := n == len(rest)
				wire = append(wire, clientFrame(t, fop, fin, rest[:n])...)
				rest = rest[n:]
				if fin {
					break
				}
				if r.IntN(2) == 0 {
					ping := p[:min(len(p), 125)]
					wire = append(wire, clientFrame(t, ws.OpPing, true, ping)...)
					sent = append(sent, Frame{Op: OpPing, Payload: ping})
				}
			}
			sent = append(sent, Frame{Op: Op(op), Payload: p})
		}
		wire = append(wire, clientFrame(t, ws.OpClose, true, []byte("\x03\xe8done"))...)
		sent = append(sent, Frame{Op: OpClose, Payload: []byte("\x03\xe8done")})
		roundTrip(t, NewWebSocket(WebSocketOptions{MaxFrame: max}), wire, r, bound, sent)
	})
}
