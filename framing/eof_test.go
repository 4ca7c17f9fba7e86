package framing

import (
	"strings"
	"testing"
)

func mustEOF(t testing.TB, delim string, max int) *EOF {
	t.Helper()
	e, err := NewEOF(EOFOptions{Delimiter: []byte(delim), MaxFrame: max})
	if err != nil {
		t.Fatalf("NewEOF(%q, %d): %v", delim, max, err)
	}
	return e
}

// TestEOFFrames decodes streams with 1-, 2-, 4- and 8-byte delimiters, fed
// whole and split, including empty frames and delimiters that overlap
// themselves.
func TestEOFFrames(t *testing.T) {
	cases := []struct {
		name   string
		delim  string
		stream string
		want   []string
	}{
		{
			name:   "1-byte newline",
			delim:  "\n",
			stream: "a\nbb\n\nccc\n",
			want:   []string{"a", "bb", "", "ccc"},
		},
		{
			name:   "2-byte CRLF",
			delim:  "\r\n",
			stream: "GET\r\n\r\nx\ry\r\n",
			want:   []string{"GET", "", "x\ry"},
		},
		{
			name:   "4-byte CRLFCRLF",
			delim:  "\r\n\r\n",
			stream: "a\r\nb\r\n\r\n\r\n\r\nc\r\n\r\r\n\r\n",
			want:   []string{"a\r\nb", "", "c\r\n\r"},
		},
		{
			name:   "8-byte",
			delim:  "--END--\n",
			stream: "one--END--\ntwo--END-three--END--\n--END--\n",
			want:   []string{"one", "two--END-three", ""},
		},
		{
			name:   "8-byte self-overlapping",
			delim:  "abababab",
			stream: "xabababababyabababab",
			want:   []string{"x", "aby"},
		},
		{
			name:   "partial delimiter left at the end",
			delim:  "\r\n\r\n",
			stream: "done\r\n\r\npending\r\n\r",
			want:   []string{"done"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mk := func(t testing.TB) Framer { return mustEOF(t, tc.delim, 64) }
			decodeSplits(t, mk, []byte(tc.stream), 64, bin(tc.want...), nil)
		})
	}
}

// TestEOFDelimiterSplit splits a stream at every pair of positions, so the
// delimiter is cut in every possible way, also across three Feeds.
func TestEOFDelimiterSplit(t *testing.T) {
	for _, delim := range []string{"\n", "\r\n\r\n", "12345678"} {
		stream := []byte("alpha" + delim + "b" + delim + delim + "gamma" + delim)
		want := bin("alpha", "b", "", "gamma")
		for i := 0; i <= len(stream); i++ {
			for j := i; j <= len(stream); j++ {
				res := decode(t, mustEOF(t, delim, 64), at(stream, i, j), 64)
				if res.err != nil {
					t.Fatalf("%q split %d,%d: %v", delim, i, j, res.err)
				}
				sameFrames(t, res.frames, want)
			}
		}
	}
}

// TestEOFMaxFrame: max_frame counts the delimiter. A frame of exactly
// max_frame bytes on the wire is accepted; one of max_frame+1 bytes is
// ErrFrameTooLarge, and the framer never holds max_frame bytes.
func TestEOFMaxFrame(t *testing.T) {
	for _, delim := range []string{"\n", "\r\n", "\r\n\r\n", "ABCDEFGH"} {
		const max = 16
		exact := strings.Repeat("x", max-len(delim)) + delim
		over := strings.Repeat("x", max-len(delim)+1) + delim
		for _, sc := range splitCases {
			res := decode(t, mustEOF(t, delim, max), sc.split([]byte(exact+exact)), max-1)
			if res.err != nil {
				t.Fatalf("%q %s: frame of exactly max_frame: %v", delim, sc.name, res.err)
			}
			p := exact[:max-len(delim)]
			sameFrames(t, res.frames, bin(p, p))

			res = decode(t, mustEOF(t, delim, max), sc.split([]byte(exact+over)), max-1)
			mustErrIs(t, res.err, ErrFrameTooLarge)
			sameFrames(t, res.frames, bin(p))
		}
		// The error comes as soon as max_frame bytes hold no delimiter,
		// before the rest of the frame arrives.
		e := mustEOF(t, delim, max)
		for i := range max - 1 {
			e.Feed([]byte{'y'})
			if _, ok, err := e.Next(); ok || err != nil {
				t.Fatalf("%q byte %d: ok=%v err=%v", delim, i, ok, err)
			}
		}
		e.Feed([]byte{'y'})
		_, _, err := e.Next()
		mustErrIs(t, err, ErrFrameTooLarge)
		if e.Buffered() != 0 || holdsBuffer(e) {
			t.Fatalf("%q: framer holds a buffer after the error", delim)
		}
	}
}

// TestEOFMaxFrameStraddle: the delimiter of a frame of exactly max_frame bytes
// straddles two Feeds.
func TestEOFMaxFrameStraddle(t *testing.T) {
	e := mustEOF(t, "\r\n\r\n", 10)
	res := decode(t, e, at([]byte("123456\r\n\r\n"), 7), 9)
	if res.err != nil {
		t.Fatalf("decode: %v", res.err)
	}
	sameFrames(t, res.frames, bin("123456"))
	e = mustEOF(t, "\r\n\r\n", 10)
	res = decode(t, e, at([]byte("1234567\r\n\r\n"), 8), 9)
	mustErrIs(t, res.err, ErrFrameTooLarge)
}

func TestEOFAppendFrame(t *testing.T) {
	e := mustEOF(t, "\r\n\r\n", 16)
	got, err := e.AppendFrame([]byte("x"), OpText, []byte("hello"))
	if err != nil || string(got) != "xhello\r\n\r\n" {
		t.Fatalf("AppendFrame = %q, %v", got, err)
	}
	if _, err := e.AppendFrame(nil, OpBinary, []byte("123456789012")); err != nil {
		t.Fatalf("frame of exactly max_frame: %v", err)
	}
	cases := []struct {
		name    string
		payload string
		op      Op
		target  error
	}{
		{
			name:    "holds the delimiter",
			payload: "a\r\n\r\nb",
			op:      OpBinary,
			target:  ErrBadFrame,
		},
		{
			name:    "end and delimiter form a delimiter",
			payload: "ab\r\n",
			op:      OpBinary,
			target:  ErrBadFrame,
		},
		{
			name:    "control op",
			payload: "ping",
			op:      OpPing,
			target:  ErrBadFrame,
		},
	}
	for _, tc := range cases {
		_, err := e.AppendFrame(nil, tc.op, []byte(tc.payload))
		mustErrIs(t, err, tc.target)
	}
	// A payload ending in part of the delimiter is fine when the two cannot
	// combine: "\r" then "\r\n\r\n" still ends at the appended delimiter.
	for _, p := range []string{"ab\r", "ab\r\n\r", "\n"} {
		wire, err := e.AppendFrame(nil, OpBinary, []byte(p))
		if err != nil {
			t.Fatalf("AppendFrame(%q): %v", p, err)
		}
		res := decode(t, mustEOF(t, "\r\n\r\n", 16), whole(wire), 15)
		if res.err != nil {
			t.Fatalf("decode %q: %v", wire, res.err)
		}
		sameFrames(t, res.frames, bin(p))
	}
}

func TestEOFOptionErrors(t *testing.T) {
	cases := []struct {
		name string
		o    EOFOptions
		want string
	}{
		{
			name: "empty delimiter",
			o:    EOFOptions{MaxFrame: 10},
			want: "Delimiter",
		},
		{
			name: "9-byte delimiter",
			o:    EOFOptions{Delimiter: []byte("123456789"), MaxFrame: 100},
			want: "Delimiter",
		},
		{
			name: "max frame not above the delimiter",
			o:    EOFOptions{Delimiter: []byte("\r\n"), MaxFrame: 2},
			want: "MaxFrame",
		},
	}
	for _, tc := range cases {
		_, err := NewEOF(tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: NewEOF = %v, want an error naming %s", tc.name, err, tc.want)
		}
	}
	// The delimiter is copied: changing the caller's slice changes nothing.
	d := []byte("\n")
	e, _ := NewEOF(EOFOptions{Delimiter: d, MaxFrame: 10})
	d[0] = 'x'
	res := decode(t, e, whole([]byte("a\nx")), 9)
	sameFrames(t, res.frames, bin("a"))
}
