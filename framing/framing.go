package framing

import (
	"errors"
	"fmt"
)

// Op is the kind of a frame. Its values equal the RFC 6455 opcodes so that a
// WebSocket frame needs no translation; the TCP framers deliver OpBinary.
type Op byte

// The frame kinds. Continuation (opcode 0) is not among them: the WebSocket
// framer reassembles fragments and delivers whole messages only.
const (
	OpText   Op = 1
	OpBinary Op = 2
	OpClose  Op = 8
	OpPing   Op = 9
	OpPong   Op = 10
)

// String returns the lower-case name of the op, for logs and errors.
func (op Op) String() string {
	switch op {
	case OpText:
		return "text"
	case OpBinary:
		return "binary"
	case OpClose:
		return "close"
	case OpPing:
		return "ping"
	case OpPong:
		return "pong"
	}
	return fmt.Sprintf("op(%d)", byte(op))
}

// IsControl reports whether op is a WebSocket control frame (close, ping,
// pong): the connection answers those itself instead of passing them to the
// application.
func (op Op) IsControl() bool { return op == OpClose || op == OpPing || op == OpPong }

// Frame is one whole message cut from the stream.
type Frame struct {
	// Op is OpBinary for the TCP framers; for WebSocket any of the five ops.
	Op Op
	// Payload is the message body. It may point into the slice given to Feed
	// or into a buffer of the framer, so it is valid only until the next call
	// of Next, Feed or Reset on the same framer (and, when it points into the
	// fed slice, until the caller reuses that slice). Copy it to keep it.
	Payload []byte
}

// Framer cuts a byte stream into frames and encodes frames for sending.
//
// A Framer belongs to one connection and is not safe for concurrent use. The
// reading loop is:
//
//	fr.Feed(buf[:n])
//	for {
//		f, ok, err := fr.Next()
//		if err != nil { /* close: CloseCodeFor(err), reason frame_too_large or bad_frame */ }
//		if !ok { break } // buf may be reused now
//		handle(f)        // f.Payload is valid until the next Next
//	}
type Framer interface {
	// Feed hands the framer the next bytes of the stream. The framer may refer
	// to p (and unmask WebSocket payloads in place) until Next reports
	// ok == false; after that it holds no reference to p, so the caller may
	// reuse p. Call Next until it reports ok == false (or an error) before
	// the next Feed: Feed panics if bytes of p are still unread, since those
	// frames would be lost. After an error Feed does nothing.
	Feed(p []byte)
	// Next returns the next whole frame. ok is false when more bytes are
	// needed: the unconsumed tail of p has then been copied into a pooled
	// buffer. An error is final: the stream is broken, the connection must be
	// closed, and every later Next returns the same error.
	Next() (f Frame, ok bool, err error)
	// AppendFrame appends payload, encoded as one frame of kind op, to dst.
	// It does not modify payload and does not touch the decoding state, so it
	// may be called between Feed and Next.
	AppendFrame(dst []byte, op Op, payload []byte) ([]byte, error)
	// Buffered reports how many bytes of a partial frame the framer holds.
	// After Next has reported ok == false, a zero means the framer holds no
	// buffer at all (buffers go back to a pool): an idle connection costs
	// only the framer struct.
	Buffered() int
	// Reset drops any partial frame and any error, returns buffers to the
	// pool and makes the framer ready for a new stream. Call it when the
	// connection ends so its buffers are reused.
	Reset()
}

// Errors reported by Next and AppendFrame. Runtime errors wrap them with
// detail, so test them with errors.Is.
var (
	// ErrFrameTooLarge means a frame exceeds max_frame. The connection closes
	// with reason frame_too_large (WebSocket close code 1009).
	ErrFrameTooLarge = errors.New("framing: frame too large")
	// ErrBadFrame means the stream is malformed. The connection closes with
	// reason bad_frame (WebSocket close code 1002).
	ErrBadFrame = errors.New("framing: bad frame")
	// ErrBadUTF8 means a WebSocket text message or close reason is not valid
	// UTF-8. It wraps ErrBadFrame, because the connection closes it as
	// bad_frame too, but the WebSocket close code is 1007.
	ErrBadUTF8 = fmt.Errorf("%w: invalid UTF-8", ErrBadFrame)
)

// Compile-time checks that every framer implements Framer.
var (
	_ Framer = (*EOF)(nil)
	_ Framer = (*Length)(nil)
	_ Framer = (*WebSocket)(nil)
)

// checkDataOp rejects ops that have no encoding on a TCP framer: TCP framing
// knows one kind of message, so OpText and OpBinary are both accepted and
// encoded the same way, and control ops are an error.
func checkDataOp(kind string, op Op) error {
	if op == OpText || op == OpBinary {
		return nil
	}
	return fmt.Errorf(
		"%w: %s framing cannot encode a %s frame",
		ErrBadFrame, kind, op,
	)
}

// input is what every framer keeps of its stream: the unconsumed part of
// the last Feed, the sticky error, and the buffer behind the last
// returned Payload. Feed, and the start of Next (begin), are the same for
// every framer.
type input struct {
	p   []byte // the unconsumed part of the last Feed; nil once Next ran out
	out lent   // buffer behind the last returned Payload
	err error  // sticky error
}

// Feed implements Framer.
func (in *input) Feed(p []byte) {
	in.out.release()
	if in.err != nil {
		return
	}
	if len(in.p) > 0 {
		panic("framing: Feed called before Next reported ok == false")
	}
	in.p = p
}

// begin starts a Next: the last Payload's buffer goes back to the pool,
// and a sticky error is returned again.
func (in *input) begin() error {
	in.out.release()
	return in.err
}
