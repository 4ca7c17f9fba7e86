package framing

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"unsafe"
)

// result is what a framer made of a stream: the frames (payloads copied) and
// the error that ended it, if any.
type result struct {
	frames []Frame
	err    error
}

// decode feeds chunks to fr one by one and drains Next after each. Once Next
// has reported ok == false it overwrites the chunk, as a reader reusing its
// buffer would, so a framer that kept a reference to it delivers garbage. It
// also checks that Buffered never exceeds bound, and that after the last
// chunk the framer holds no buffer when Buffered is zero.
func decode(t testing.TB, fr Framer, chunks [][]byte, bound int) result {
	t.Helper()
	var res result
	for _, c := range chunks {
		fr.Feed(c)
		for {
			f, ok, err := fr.Next()
			if err != nil {
				res.err = err
				if b := fr.Buffered(); b != 0 {
					t.Fatalf("Buffered() = %d after error %v, want 0", b, err)
				}
				return res
			}
			if !ok {
				break
			}
			res.frames = append(res.frames, Frame{Op: f.Op, Payload: bytes.Clone(f.Payload)})
			// Scribble over the payload: the framer must not read it again.
			for i := range f.Payload {
				f.Payload[i] = 0xEE
			}
		}
		if b := fr.Buffered(); b > bound {
			t.Fatalf("Buffered() = %d, exceeds bound %d", b, bound)
		}
		for i := range c {
			c[i] = 0xAA
		}
	}
	if fr.Buffered() == 0 && holdsBuffer(fr) {
		t.Fatalf("Buffered() == 0 but the framer still holds a pooled buffer")
	}
	return res
}

// holdsBuffer reports whether fr holds any pooled buffer.
func holdsBuffer(fr Framer) bool {
	switch f := fr.(type) {
	case *EOF:
		return f.pend.bp != nil || f.out.bp != nil
	case *Length:
		return f.pend.bp != nil || f.out.bp != nil
	case *WebSocket:
		return f.msg.bp != nil || f.ctl.bp != nil || f.out.bp != nil
	}
	panic(fmt.Sprintf("unknown framer %T", fr))
}

// sameFrames fails t unless got and want hold the same ops and payloads.
func sameFrames(t testing.TB, got, want []Frame) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d frames, want %d\ngot:  %s\nwant: %s", len(got), len(want), showFrames(got), showFrames(want))
	}
	for i := range got {
		if got[i].Op != want[i].Op || !bytes.Equal(got[i].Payload, want[i].Payload) {
			t.Fatalf("frame %d = %s %q, want %s %q", i, got[i].Op, got[i].Payload, want[i].Op, want[i].Payload)
		}
	}
}

// showFrames formats frames for failure messages.
func showFrames(fs []Frame) string {
	var b bytes.Buffer
	for _, f := range fs {
		fmt.Fprintf(&b, "[%s %q] ", f.Op, truncate(f.Payload))
	}
	return b.String()
}

func truncate(p []byte) []byte {
	if len(p) > 40 {
		return p[:40]
	}
	return p
}

// bin makes OpBinary frames from payload strings.
func bin(payloads ...string) []Frame {
	fs := make([]Frame, len(payloads))
	for i, p := range payloads {
		fs[i] = Frame{Op: OpBinary, Payload: []byte(p)}
	}
	return fs
}

// whole returns the stream as one chunk (a copy: decode scribbles on it).
func whole(stream []byte) [][]byte {
	return [][]byte{bytes.Clone(stream)}
}

// every splits a copy of the stream into chunks of n bytes.
func every(stream []byte, n int) [][]byte {
	var cs [][]byte
	for len(stream) > n {
		cs = append(cs, bytes.Clone(stream[:n]))
		stream = stream[n:]
	}
	return append(cs, bytes.Clone(stream))
}

// at splits a copy of the stream at the given increasing positions.
func at(stream []byte, pos ...int) [][]byte {
	var cs [][]byte
	prev := 0
	for _, p := range pos {
		cs = append(cs, bytes.Clone(stream[prev:p]))
		prev = p
	}
	return append(cs, bytes.Clone(stream[prev:]))
}

// randomSplits splits a copy of the stream into chunks of random sizes drawn
// from r (including empty chunks).
func randomSplits(stream []byte, r *rand.Rand) [][]byte {
	var cs [][]byte
	for len(stream) > 0 {
		n := r.IntN(min(len(stream), 64) + 1)
		if r.IntN(8) == 0 {
			n = r.IntN(len(stream) + 1)
		}
		cs = append(cs, bytes.Clone(stream[:n]))
		stream = stream[n:]
	}
	return append(cs, nil)
}

// within reports whether the payload points into the chunk (zero copy).
func within(payload, chunk []byte) bool {
	if len(payload) == 0 || len(chunk) == 0 {
		return false
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(payload)))
	c := uintptr(unsafe.Pointer(unsafe.SliceData(chunk)))
	return p >= c && p+uintptr(len(payload)) <= c+uintptr(len(chunk))
}

// splitCases are the ways every stream in the table tests is fed: whole (it
// comes first, decodeSplits relies on it), one byte at a time, and in small
// odd chunks.
var splitCases = []struct {
	name  string
	split func([]byte) [][]byte
}{
	{
		name:  "whole",
		split: whole,
	},
	{
		name:  "bytewise",
		split: func(b []byte) [][]byte { return every(b, 1) },
	},
	{
		name:  "chunks3",
		split: func(b []byte) [][]byte { return every(b, 3) },
	},
	{
		name:  "chunks7",
		split: func(b []byte) [][]byte { return every(b, 7) },
	},
}

// decodeSplits decodes stream fed in each of splitCases, each time with a new
// framer from mk and bound as decode's. It checks the frames and the error
// (none when target is nil, else one wrapping target) and returns the error
// of the stream fed whole.
func decodeSplits(t testing.TB, mk func(testing.TB) Framer, stream []byte, bound int, want []Frame, target error) error {
	t.Helper()
	var wholeErr error
	for i, sc := range splitCases {
		res := decode(t, mk(t), sc.split(stream), bound)
		if i == 0 {
			wholeErr = res.err
		}
		if target == nil && res.err != nil {
			t.Fatalf("%s: decode: %v", sc.name, res.err)
		}
		if target != nil {
			mustErrIs(t, res.err, target)
		}
		sameFrames(t, res.frames, want)
	}
	return wholeErr
}

// mustErrIs fails t unless err wraps target.
func mustErrIs(t testing.TB, err, target error) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", target)
	}
	if !errors.Is(err, target) {
		t.Fatalf("got error %v, want one wrapping %v", err, target)
	}
}
