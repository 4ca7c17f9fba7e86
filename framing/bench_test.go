package framing

import (
	"bytes"
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

// The decoding benchmarks count one op per frame: ns/op is ns per frame,
// MB/s counts wire bytes (headers and delimiters included) and allocs/op is
// allocations per frame. The stream of 128-byte frames is fed in chunks as a
// socket read would return them: 16 KiB reads holding many frames with one
// frame split across every chunk boundary, 1460-byte reads (one TCP segment),
// and 100-byte reads that split every frame.

const benchFrames = 1000 // frames in one pass over the stream

// benchPayload is a 128-byte chat message, plain ASCII JSON.
var benchPayload = func() []byte {
	p := `{"op":"send","room":"lobby","data":"` + strings.Repeat("x", 128) + `"}`
	p = p[:126] + `"}`
	return []byte(p)
}()

// chunked cuts stream into chunks of n bytes (the last may be shorter).
func chunked(stream []byte, n int) [][]byte {
	var cs [][]byte
	for len(stream) > 0 {
		k := min(n, len(stream))
		cs = append(cs, stream[:k])
		stream = stream[k:]
	}
	return cs
}

// encodeStream encodes benchFrames copies of benchPayload with enc.
func encodeStream(tb testing.TB, enc func(dst []byte) ([]byte, error)) []byte {
	var stream []byte
	for range benchFrames {
		var err error
		if stream, err = enc(stream); err != nil {
			tb.Fatal(err)
		}
	}
	return stream
}

func lengthStream(tb testing.TB) (Framer, []byte) {
	l := mustLength(tb, LengthOptions{Type: 'N', BodyOffset: 4, MaxFrame: 2 << 20})
	return l, encodeStream(tb, func(dst []byte) ([]byte, error) {
		return l.AppendFrame(dst, OpBinary, benchPayload)
	})
}

func eofStream(tb testing.TB) (Framer, []byte) {
	e := mustEOF(tb, "\r\n\r\n", 2<<20)
	return e, encodeStream(tb, func(dst []byte) ([]byte, error) {
		return e.AppendFrame(dst, OpBinary, benchPayload)
	})
}

func wsStream(tb testing.TB, op ws.OpCode) (Framer, []byte) {
	return NewWebSocket(WebSocketOptions{MaxFrame: 2 << 20}), encodeStream(tb, func(dst []byte) ([]byte, error) {
		return append(dst, clientFrame(tb, op, true, benchPayload)...), nil
	})
}

// wsBinaryStream is wsStream of binary frames.
func wsBinaryStream(tb testing.TB) (Framer, []byte) { return wsStream(tb, ws.OpBinary) }

// drain feeds every chunk to fr and reads all frames; it returns how many.
// With readBuf set, each chunk is first copied into it, as read(2) would.
func drain(tb testing.TB, fr Framer, chunks [][]byte, readBuf []byte) int {
	n := 0
	for _, c := range chunks {
		if readBuf != nil {
			c = readBuf[:copy(readBuf, c)]
		}
		fr.Feed(c)
		for {
			_, ok, err := fr.Next()
			if err != nil {
				tb.Fatal(err)
			}
			if !ok {
				break
			}
			n++
		}
	}
	return n
}

// benchDecode runs b.N frames through fr, one pass over the chunks after
// another. A WebSocket framer unmasks the chunks in place; that is harmless
// for binary frames, and text frames pass a readBuf to decode a fresh copy.
func benchDecode(b *testing.B, fr Framer, stream []byte, chunk int, readBuf []byte) {
	chunks := chunked(stream, chunk)
	if got := drain(b, fr, chunks, readBuf); got != benchFrames { // warm up the pool
		b.Fatalf("decoded %d frames, want %d", got, benchFrames)
	}
	b.SetBytes(int64(len(stream) / benchFrames))
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; {
		n += drain(b, fr, chunks, readBuf)
	}
}

var benchChunks = []struct {
	name string
	size int
}{
	{
		name: "16KiB",
		size: 16 << 10,
	},
	{
		name: "1460B",
		size: 1460,
	},
	{
		name: "100B",
		size: 100,
	},
}

// benchEachChunk runs benchDecode on a fresh framer and stream from mk for
// each of benchChunks, in sub-benchmarks named prefix and the chunk size.
func benchEachChunk(b *testing.B, prefix string, mk func(testing.TB) (Framer, []byte)) {
	for _, c := range benchChunks {
		b.Run(prefix+c.name, func(b *testing.B) {
			fr, stream := mk(b)
			benchDecode(b, fr, stream, c.size, nil)
		})
	}
}

func BenchmarkLengthN128(b *testing.B) {
	benchEachChunk(b, "", lengthStream)
}

func BenchmarkEOFCRLFCRLF128(b *testing.B) {
	benchEachChunk(b, "", eofStream)
}

func BenchmarkWebSocketMasked128(b *testing.B) {
	benchEachChunk(b, "binary/", wsBinaryStream)
	// Text frames are UTF-8 checked; each chunk is copied into a read
	// buffer first (its cost is included), because unmasking in place
	// would leave the next pass with garbage.
	b.Run("text+copy/16KiB", func(b *testing.B) {
		fr, stream := wsStream(b, ws.OpText)
		benchDecode(b, fr, stream, 16<<10, make([]byte, 16<<10))
	})
}

// BenchmarkAppendFrame encodes one 128-byte frame into a reused buffer.
func BenchmarkAppendFrame(b *testing.B) {
	framers := []struct {
		name string
		fr   Framer
	}{
		{
			name: "length-N",
			fr:   mustLength(b, LengthOptions{Type: 'N', BodyOffset: 4, MaxFrame: 2 << 20}),
		},
		{
			name: "eof-CRLFCRLF",
			fr:   mustEOF(b, "\r\n\r\n", 2<<20),
		},
		{
			name: "websocket",
			fr:   NewWebSocket(WebSocketOptions{}),
		},
	}
	for _, f := range framers {
		b.Run(f.name, func(b *testing.B) {
			dst := make([]byte, 0, 256)
			b.ReportAllocs()
			b.SetBytes(int64(len(benchPayload)))
			for b.Loop() {
				var err error
				if dst, err = f.fr.AppendFrame(dst[:0], OpText, benchPayload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGobwasReadHeader is the measurement behind parsing WebSocket
// headers by hand: ws.ReadHeader allocates its buffer on every call.
func BenchmarkGobwasReadHeader(b *testing.B) {
	fr := clientFrame(b, ws.OpBinary, true, benchPayload)
	hdr := fr[:len(fr)-len(benchPayload)]
	r := bytes.NewReader(hdr)
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(hdr)
		if _, err := ws.ReadHeader(r); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSteadyStateAllocs asserts what the benchmarks show: once the pool is
// warm, decoding allocates nothing, in whole or split chunks.
func TestSteadyStateAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	streams := []struct {
		name string
		make func(testing.TB) (Framer, []byte)
	}{
		{
			name: "length",
			make: lengthStream,
		},
		{
			name: "eof",
			make: eofStream,
		},
		{
			name: "websocket",
			make: wsBinaryStream,
		},
	}
	for _, s := range streams {
		for _, c := range benchChunks {
			fr, stream := s.make(t)
			chunks := chunked(stream, c.size)
			drain(t, fr, chunks, nil)
			allocs := testing.AllocsPerRun(20, func() {
				if n := drain(t, fr, chunks, nil); n != benchFrames {
					t.Fatalf("decoded %d frames, want %d", n, benchFrames)
				}
			})
			if allocs != 0 {
				t.Errorf("%s %s: %v allocations per %d frames, want 0", s.name, c.name, allocs, benchFrames)
			}
		}
	}
}
