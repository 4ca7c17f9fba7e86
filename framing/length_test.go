package framing

import (
	"bytes"
	"strings"
	"testing"
)

func mustLength(t testing.TB, o LengthOptions) *Length {
	t.Helper()
	l, err := NewLength(o)
	if err != nil {
		t.Fatalf("NewLength(%+v): %v", o, err)
	}
	return l
}

// TestLengthVectors decodes packets written as PHP's pack() writes them, for
// every type code, fed whole and split, and checks that AppendFrame writes
// the same bytes.
func TestLengthVectors(t *testing.T) {
	cases := []struct {
		name    string
		typ     byte
		wire    []byte
		payload string
	}{
		{
			name:    "N pack('N', 5)",
			typ:     'N',
			wire:    []byte{0x00, 0x00, 0x00, 0x05, 'a', 'a', 'a', 'a', 'a'},
			payload: "aaaaa",
		},
		{
			name:    "V pack('V', 3)",
			typ:     'V',
			wire:    []byte{0x03, 0x00, 0x00, 0x00, 'a', 'b', 'c'},
			payload: "abc",
		},
		{
			name:    "L pack('L', 3) little endian",
			typ:     'L',
			wire:    []byte{0x03, 0x00, 0x00, 0x00, 'a', 'b', 'c'},
			payload: "abc",
		},
		{
			name:    "l pack('l', 3) little endian",
			typ:     'l',
			wire:    []byte{0x03, 0x00, 0x00, 0x00, 'a', 'b', 'c'},
			payload: "abc",
		},
		{
			name:    "n pack('n', 3)",
			typ:     'n',
			wire:    []byte{0x00, 0x03, 'a', 'b', 'c'},
			payload: "abc",
		},
		{
			name:    "v pack('v', 3)",
			typ:     'v',
			wire:    []byte{0x03, 0x00, 'a', 'b', 'c'},
			payload: "abc",
		},
		{
			name:    "S pack('S', 3) little endian",
			typ:     'S',
			wire:    []byte{0x03, 0x00, 'a', 'b', 'c'},
			payload: "abc",
		},
		{
			name:    "s pack('s', 3) little endian",
			typ:     's',
			wire:    []byte{0x03, 0x00, 'a', 'b', 'c'},
			payload: "abc",
		},
		{
			name:    "C pack('C', 3)",
			typ:     'C',
			wire:    []byte{0x03, 'a', 'b', 'c'},
			payload: "abc",
		},
		{
			name:    "c pack('c', 3)",
			typ:     'c',
			wire:    []byte{0x03, 'a', 'b', 'c'},
			payload: "abc",
		},
		{
			name:    "n pack('n', 0) empty body",
			typ:     'n',
			wire:    []byte{0x00, 0x00},
			payload: "",
		},
		{
			name:    "n pack('n', 258)",
			typ:     'n',
			wire:    append([]byte{0x01, 0x02}, strings.Repeat("x", 258)...),
			payload: strings.Repeat("x", 258),
		},
		{
			name:    "v pack('v', 258)",
			typ:     'v',
			wire:    append([]byte{0x02, 0x01}, strings.Repeat("x", 258)...),
			payload: strings.Repeat("x", 258),
		},
		{
			name:    "C pack('C', 255) unsigned",
			typ:     'C',
			wire:    append([]byte{0xFF}, strings.Repeat("y", 255)...),
			payload: strings.Repeat("y", 255),
		},
		{
			name:    "N pack('N', 65536)",
			typ:     'N',
			wire:    append([]byte{0x00, 0x01, 0x00, 0x00}, strings.Repeat("z", 65536)...),
			payload: strings.Repeat("z", 65536),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := LengthOptions{
				Type:       tc.typ,
				BodyOffset: lengthTypes[tc.typ].size,
				MaxFrame:   1 << 20,
			}
			// Three packets back to back, so that whole feeds coalesce.
			stream := bytes.Repeat(tc.wire, 3)
			want := bin(tc.payload, tc.payload, tc.payload)
			decodeSplits(t, func(t testing.TB) Framer { return mustLength(t, o) }, stream, o.MaxFrame, want, nil)
			got, err := mustLength(t, o).AppendFrame(nil, OpBinary, []byte(tc.payload))
			if err != nil {
				t.Fatalf("AppendFrame: %v", err)
			}
			if !bytes.Equal(got, tc.wire) {
				t.Fatalf("AppendFrame = % x, want % x", truncate(got), truncate(tc.wire))
			}
		})
	}
}

// TestLengthBadLength checks the runtime errors, with the offending value in
// the message, reported as soon as the header is in (the body never arrives).
func TestLengthBadLength(t *testing.T) {
	cases := []struct {
		name   string
		typ    byte
		header []byte
		max    int
		target error
		detail string
	}{
		{
			name:   "c 0xFF is -1",
			typ:    'c',
			header: []byte{0xFF},
			max:    1000,
			target: ErrBadFrame,
			detail: "negative length -1",
		},
		{
			name:   "s 0xFFFF is -1",
			typ:    's',
			header: []byte{0xFF, 0xFF},
			max:    1000,
			target: ErrBadFrame,
			detail: "negative length -1",
		},
		{
			name:   "s 0x8000 is -32768",
			typ:    's',
			header: []byte{0x00, 0x80},
			max:    1000,
			target: ErrBadFrame,
			detail: "negative length -32768",
		},
		{
			name:   "l 0xFFFFFFFF is -1",
			typ:    'l',
			header: []byte{0xFF, 0xFF, 0xFF, 0xFF},
			max:    1000,
			target: ErrBadFrame,
			detail: "negative length -1",
		},
		{
			name:   "C 0xFF is 255, too large",
			typ:    'C',
			header: []byte{0xFF},
			max:    100,
			target: ErrFrameTooLarge,
			detail: "length 255",
		},
		{
			name:   "S 0xFFFF is 65535, too large",
			typ:    'S',
			header: []byte{0xFF, 0xFF},
			max:    1000,
			target: ErrFrameTooLarge,
			detail: "length 65535",
		},
		{
			name:   "L 0x80000000 is positive, too large",
			typ:    'L',
			header: []byte{0x00, 0x00, 0x00, 0x80},
			max:    1000,
			target: ErrFrameTooLarge,
			detail: "length 2147483648",
		},
		{
			name:   "N 0xFFFFFFFF too large",
			typ:    'N',
			header: []byte{0xFF, 0xFF, 0xFF, 0xFF},
			max:    1 << 20,
			target: ErrFrameTooLarge,
			detail: "length 4294967295",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := LengthOptions{
				Type:       tc.typ,
				BodyOffset: lengthTypes[tc.typ].size,
				MaxFrame:   tc.max,
			}
			for _, sc := range splitCases {
				res := decode(t, mustLength(t, o), sc.split(tc.header), tc.max)
				mustErrIs(t, res.err, tc.target)
				if !strings.Contains(res.err.Error(), tc.detail) {
					t.Fatalf("error %q does not say %q", res.err, tc.detail)
				}
			}
		})
	}
}

// TestLengthOffsets uses a header with other fields around the length: they
// are skipped, and AppendFrame writes them as zeros.
func TestLengthOffsets(t *testing.T) {
	o := LengthOptions{Type: 'n', LengthOffset: 2, BodyOffset: 8, MaxFrame: 64}
	pkt := func(id byte, body string) []byte {
		h := []byte{0xAB, id, 0x00, byte(len(body)), 0xDE, 0xAD, 0xBE, 0xEF}
		return append(h, body...)
	}
	var stream []byte
	var want []Frame
	for i, body := range []string{"hello", "", "tether", strings.Repeat("m", 56)} {
		stream = append(stream, pkt(byte(i), body)...)
		want = append(want, bin(body)...)
	}
	decodeSplits(t, func(t testing.TB) Framer { return mustLength(t, o) }, stream, o.MaxFrame, want, nil)
	got, err := mustLength(t, o).AppendFrame([]byte("prefix"), OpText, []byte("hello"))
	if err != nil {
		t.Fatalf("AppendFrame: %v", err)
	}
	wantWire := append([]byte("prefix"), 0, 0, 0, 5, 0, 0, 0, 0, 'h', 'e', 'l', 'l', 'o')
	if !bytes.Equal(got, wantWire) {
		t.Fatalf("AppendFrame = % x, want % x", got, wantWire)
	}
}

// TestLengthMaxFrame: a packet of exactly MaxFrame bytes (header included) is
// accepted, one byte more is ErrFrameTooLarge as soon as its header is in.
func TestLengthMaxFrame(t *testing.T) {
	o := LengthOptions{Type: 'N', BodyOffset: 4, MaxFrame: 9}
	exact := []byte{0, 0, 0, 5, 'a', 'b', 'c', 'd', 'e'}
	for _, sc := range splitCases {
		res := decode(t, mustLength(t, o), sc.split(exact), o.MaxFrame)
		if res.err != nil {
			t.Fatalf("%s: packet of exactly max_frame: %v", sc.name, res.err)
		}
		sameFrames(t, res.frames, bin("abcde"))
	}
	over := []byte{0, 0, 0, 6}
	for _, sc := range splitCases {
		res := decode(t, mustLength(t, o), sc.split(over), o.MaxFrame)
		mustErrIs(t, res.err, ErrFrameTooLarge)
		if !strings.Contains(res.err.Error(), "length 6") {
			t.Fatalf("error %q does not name the length", res.err)
		}
	}
	// max_frame bounds what is received only: what is sent may be larger.
	l := mustLength(t, o)
	if got, err := l.AppendFrame(nil, OpBinary, []byte("abcdefgh")); err != nil || len(got) != 12 {
		t.Fatalf("AppendFrame over max_frame: %q %v", got, err)
	}
}

// TestLengthEverySplit splits two packets at every pair of positions.
func TestLengthEverySplit(t *testing.T) {
	o := LengthOptions{Type: 'v', LengthOffset: 1, BodyOffset: 5, MaxFrame: 100}
	l := mustLength(t, o)
	stream, _ := l.AppendFrame(nil, OpBinary, []byte("first packet"))
	stream, _ = l.AppendFrame(stream, OpBinary, []byte("second"))
	want := bin("first packet", "second")
	for i := 0; i <= len(stream); i++ {
		for j := i; j <= len(stream); j++ {
			res := decode(t, mustLength(t, o), at(stream, i, j), o.MaxFrame)
			if res.err != nil {
				t.Fatalf("split %d,%d: %v", i, j, res.err)
			}
			sameFrames(t, res.frames, want)
		}
	}
}

// TestLengthPartialBuffer checks Buffered and the pooled buffer through the
// life of a packet split in three.
func TestLengthPartialBuffer(t *testing.T) {
	l := mustLength(t, LengthOptions{Type: 'N', BodyOffset: 4, MaxFrame: 1024})
	wire, _ := l.AppendFrame(nil, OpBinary, []byte("0123456789"))
	steps := []struct {
		feed     []byte
		frame    string
		buffered int
	}{
		{
			feed:     wire[:2],
			buffered: 2,
		},
		{
			feed:     wire[2:9],
			buffered: 9,
		},
		{
			feed:     wire[9:],
			frame:    "0123456789",
			buffered: 0,
		},
	}
	for i, s := range steps {
		l.Feed(bytes.Clone(s.feed))
		f, ok, err := l.Next()
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if s.frame != "" {
			if !ok || string(f.Payload) != s.frame {
				t.Fatalf("step %d: got ok=%v %q, want %q", i, ok, f.Payload, s.frame)
			}
			if l.out.bp == nil {
				t.Fatalf("step %d: payload from the pending buffer, but no buffer lent out", i)
			}
			_, ok, err = l.Next()
			if ok || err != nil {
				t.Fatalf("step %d: second Next ok=%v err=%v", i, ok, err)
			}
		} else if ok {
			t.Fatalf("step %d: unexpected frame %q", i, f.Payload)
		}
		if got := l.Buffered(); got != s.buffered {
			t.Fatalf("step %d: Buffered() = %d, want %d", i, got, s.buffered)
		}
		if (s.buffered == 0) == holdsBuffer(l) {
			t.Fatalf("step %d: holds buffer = %v with %d bytes buffered", i, holdsBuffer(l), s.buffered)
		}
	}
}

func TestLengthOptionErrors(t *testing.T) {
	cases := []struct {
		name string
		o    LengthOptions
		want string
	}{
		{
			name: "unknown type",
			o:    LengthOptions{Type: 'q', BodyOffset: 4, MaxFrame: 10},
			want: "Type",
		},
		{
			name: "zero type",
			o:    LengthOptions{BodyOffset: 4, MaxFrame: 10},
			want: "Type",
		},
		{
			name: "negative length offset",
			o:    LengthOptions{Type: 'N', LengthOffset: -1, BodyOffset: 4, MaxFrame: 10},
			want: "LengthOffset",
		},
		{
			name: "body offset inside the length field",
			o:    LengthOptions{Type: 'N', LengthOffset: 2, BodyOffset: 5, MaxFrame: 10},
			want: "BodyOffset",
		},
		{
			name: "max frame not above body offset",
			o:    LengthOptions{Type: 'N', BodyOffset: 4, MaxFrame: 4},
			want: "MaxFrame",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewLength(tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewLength(%+v) = %v, want an error naming %s", tc.o, err, tc.want)
			}
		})
	}
	// Boundaries that are valid.
	for _, o := range []LengthOptions{
		{Type: 'N', LengthOffset: 0, BodyOffset: 4, MaxFrame: 5},
		{Type: 'c', LengthOffset: 3, BodyOffset: 4, MaxFrame: 5},
	} {
		if _, err := NewLength(o); err != nil {
			t.Fatalf("NewLength(%+v): %v", o, err)
		}
	}
}

func TestLengthAppendErrors(t *testing.T) {
	c := mustLength(t, LengthOptions{Type: 'C', BodyOffset: 1, MaxFrame: 1 << 20})
	if _, err := c.AppendFrame(nil, OpBinary, make([]byte, 255)); err != nil {
		t.Fatalf("C with 255 bytes: %v", err)
	}
	_, err := c.AppendFrame(nil, OpBinary, make([]byte, 256))
	mustErrIs(t, err, ErrFrameTooLarge)
	sc := mustLength(t, LengthOptions{Type: 'c', BodyOffset: 1, MaxFrame: 1 << 20})
	_, err = sc.AppendFrame(nil, OpBinary, make([]byte, 128))
	mustErrIs(t, err, ErrFrameTooLarge)
	s := mustLength(t, LengthOptions{Type: 's', BodyOffset: 2, MaxFrame: 1 << 20})
	_, err = s.AppendFrame(nil, OpBinary, make([]byte, 32768))
	mustErrIs(t, err, ErrFrameTooLarge)
	_, err = c.AppendFrame(nil, OpPing, nil)
	mustErrIs(t, err, ErrBadFrame)
	dst := []byte("keep")
	got, _ := c.AppendFrame(dst, OpClose, nil)
	if string(got) != "keep" {
		t.Fatalf("AppendFrame error changed dst to %q", got)
	}
}

// TestLengthStickyError: after an error Next keeps returning it, Feed does
// nothing, and Reset makes the framer usable again.
func TestLengthStickyError(t *testing.T) {
	l := mustLength(t, LengthOptions{Type: 'c', BodyOffset: 1, MaxFrame: 100})
	l.Feed([]byte{0xFF, 'x'})
	_, _, err1 := l.Next()
	mustErrIs(t, err1, ErrBadFrame)
	l.Feed([]byte{1, 'a'})
	if _, ok, err2 := l.Next(); ok || err2 != err1 {
		t.Fatalf("after error: ok=%v err=%v, want the same error", ok, err2)
	}
	l.Reset()
	l.Feed([]byte{1, 'a'})
	f, ok, err := l.Next()
	if !ok || err != nil || string(f.Payload) != "a" {
		t.Fatalf("after Reset: %q ok=%v err=%v", f.Payload, ok, err)
	}
}

func TestFeedBeforeDrainPanics(t *testing.T) {
	l := mustLength(t, LengthOptions{Type: 'C', BodyOffset: 1, MaxFrame: 100})
	l.Feed([]byte{1, 'a', 1, 'b'})
	if _, ok, _ := l.Next(); !ok {
		t.Fatal("no frame")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("Feed with unread frames did not panic")
		}
	}()
	l.Feed([]byte{1, 'c'})
}
