package framing

import (
	"bytes"
	"fmt"
)

// EOFOptions configures an EOF framer (Swoole open_eof_split + package_eof).
type EOFOptions struct {
	// Delimiter ends every frame (Swoole package_eof), 1 to 8 bytes, for
	// example "\r\n\r\n". It is not part of the delivered payload.
	Delimiter []byte
	// MaxFrame bounds one frame on the wire, delimiter included (Swoole's
	// package_max_length): a frame of exactly MaxFrame bytes is accepted, one
	// of MaxFrame+1 bytes is ErrFrameTooLarge. It must exceed len(Delimiter).
	MaxFrame int
}

// EOF cuts a stream at a delimiter, like Swoole's open_eof_split: every
// occurrence of the delimiter ends a frame, and each frame is delivered once,
// without the delimiter. Create it with NewEOF.
type EOF struct {
	delim []byte
	max   int

	input
	pend buffer // the partial frame: holds no complete delimiter, < max bytes
}

// NewEOF returns an EOF framer, or an error naming the option that is wrong.
func NewEOF(o EOFOptions) (*EOF, error) {
	if n := len(o.Delimiter); n < 1 || n > 8 {
		return nil, fmt.Errorf(
			"framing: eof option Delimiter must be 1 to 8 bytes, got %d",
			n,
		)
	}
	if o.MaxFrame <= len(o.Delimiter) {
		return nil, fmt.Errorf(
			"framing: eof option MaxFrame must exceed the delimiter length %d, got %d",
			len(o.Delimiter), o.MaxFrame,
		)
	}
	return &EOF{delim: bytes.Clone(o.Delimiter), max: o.MaxFrame}, nil
}

// Next implements Framer. A frame ends at the first delimiter; a frame whose
// first MaxFrame bytes hold no whole delimiter is ErrFrameTooLarge as soon as
// those bytes have arrived, so the framer never holds MaxFrame bytes.
func (e *EOF) Next() (Frame, bool, error) {
	if err := e.begin(); err != nil {
		return Frame{}, false, err
	}
	if e.pend.len() > 0 {
		return e.nextPending()
	}
	// Fast path: the frame starts in p. Search only as far as a frame may
	// reach, so a flood without a delimiter is not scanned twice.
	d := len(e.delim)
	i := bytes.Index(e.p[:min(len(e.p), e.max)], e.delim)
	if i >= 0 {
		payload := e.p[:i:i]
		e.p = e.p[i+d:]
		return Frame{Op: OpBinary, Payload: payload}, true, nil
	}
	if len(e.p) >= e.max {
		return e.fail(len(e.p))
	}
	e.pend.append(e.p, e.max)
	e.p = nil
	return Frame{}, false, nil
}

// nextPending continues the partial frame held in pend with the bytes of p.
func (e *EOF) nextPending() (Frame, bool, error) {
	pend := e.pend.bytes()
	d := len(e.delim)
	// A delimiter may straddle pend and p: its first k bytes end pend and
	// the rest starts p. A larger k starts earlier, so try it first. pend holds
	// no whole delimiter, so the first match is the end of the frame.
	for k := min(d-1, len(pend)); k >= 1; k-- {
		if !bytes.HasSuffix(pend, e.delim[:k]) {
			continue
		}
		rest := e.delim[k:]
		if len(e.p) < len(rest) {
			if bytes.HasPrefix(rest, e.p) {
				// Undecided until more bytes arrive; p is shorter than
				// the delimiter, so it holds no whole delimiter either.
				return e.hold()
			}
			continue
		}
		if !bytes.HasPrefix(e.p, rest) {
			continue
		}
		if wire := len(pend) - k + d; wire > e.max {
			return e.fail(wire)
		}
		e.p = e.p[len(rest):]
		return e.deliver(len(pend) - k)
	}
	// Otherwise the delimiter lies wholly in p, as far as the frame may reach.
	i := bytes.Index(e.p[:min(len(e.p), e.max-len(pend))], e.delim)
	if i < 0 {
		return e.hold()
	}
	// i+d <= len(p) <= max-len(pend): the frame fits.
	e.pend.append(e.p[:i], e.max)
	e.p = e.p[i+d:]
	return e.deliver(e.pend.len())
}

// hold appends all of p to the partial frame and reports that more bytes are
// needed, or fails if the frame has reached MaxFrame without a delimiter.
func (e *EOF) hold() (Frame, bool, error) {
	if n := e.pend.len() + len(e.p); n >= e.max {
		return e.fail(n)
	}
	e.pend.append(e.p, e.max)
	e.p = nil
	return Frame{}, false, nil
}

// deliver returns the first n bytes of pend as a frame and lends the buffer
// out until the next call.
func (e *EOF) deliver(n int) (Frame, bool, error) {
	payload := e.pend.bytes()[:n:n]
	e.out.set(e.pend.take())
	return Frame{Op: OpBinary, Payload: payload}, true, nil
}

// fail makes the framer broken: n bytes of one frame arrived without a
// delimiter within MaxFrame.
func (e *EOF) fail(n int) (Frame, bool, error) {
	e.err = fmt.Errorf(
		"%w: %d bytes without a delimiter reach max_frame %d",
		ErrFrameTooLarge, n, e.max,
	)
	e.p = nil
	e.pend.release()
	return Frame{}, false, e.err
}

// AppendFrame implements Framer: it appends payload and the delimiter. op must
// be OpBinary or OpText (TCP knows one kind of message). It returns
// ErrBadFrame if the delimiter would occur before the end of the frame: inside
// payload, or straddling the payload's end and the delimiter (payload "x\r\n"
// followed by the delimiter "\r\n\r\n"); the peer would cut the frame there.
// It returns ErrFrameTooLarge if the frame exceeds MaxFrame, since a peer with
// the same options would reject it.
func (e *EOF) AppendFrame(dst []byte, op Op, payload []byte) ([]byte, error) {
	if err := checkDataOp("eof", op); err != nil {
		return dst, err
	}
	d := len(e.delim)
	if i := bytes.Index(payload, e.delim); i >= 0 {
		return dst, fmt.Errorf(
			"%w: payload holds the delimiter at byte %d",
			ErrBadFrame, i,
		)
	}
	for k := min(d-1, len(payload)); k >= 1; k-- {
		if bytes.HasSuffix(payload, e.delim[:k]) && bytes.Equal(e.delim[k:], e.delim[:d-k]) {
			return dst, fmt.Errorf(
				"%w: payload end and delimiter form a delimiter at byte %d",
				ErrBadFrame, len(payload)-k,
			)
		}
	}
	dst = append(dst, payload...)
	return append(dst, e.delim...), nil
}

// Buffered implements Framer.
func (e *EOF) Buffered() int { return e.pend.len() }

// Reset implements Framer.
func (e *EOF) Reset() {
	e.out.release()
	e.pend.release()
	e.p = nil
	e.err = nil
}
