package framing

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// WebSocket close codes (RFC 6455 §7.4.1) the server sends or reads.
const (
	CloseNormal          uint16 = 1000
	CloseGoingAway       uint16 = 1001
	CloseProtocolError   uint16 = 1002
	CloseUnsupportedData uint16 = 1003
	// CloseNoStatus is what ParseClose reports for a close frame without a
	// body. It never appears on the wire.
	CloseNoStatus        uint16 = 1005
	CloseInvalidPayload  uint16 = 1007
	ClosePolicyViolation uint16 = 1008
	CloseMessageTooBig   uint16 = 1009
	CloseInternalError   uint16 = 1011
)

// DefaultMaxFrame is the message size limit of a WebSocket framer whose
// options leave MaxFrame at zero (the config default of max_frame).
const DefaultMaxFrame = 2 << 20

// WebSocketOptions configures a WebSocket framer.
type WebSocketOptions struct {
	// MaxFrame bounds the payload of one message, after reassembly of its
	// fragments; headers are not counted. A frame whose header announces more
	// is ErrFrameTooLarge before any of its payload is buffered. Control
	// frames are bounded by RFC 6455 to 125 bytes instead. Zero or less means
	// DefaultMaxFrame.
	MaxFrame int
}

// WebSocket is the server side of RFC 6455 framing, after the upgrade. It
// requires client frames to be masked and unmasks them in place, reassembles
// fragmented messages, returns control frames (also those that arrive between
// fragments) as soon as they are whole, checks text messages and close
// reasons for UTF-8 and close codes for validity. It negotiates no extension,
// so RSV bits must be zero. Create it with NewWebSocket.
type WebSocket struct {
	// Fields are ordered to pack: every connection holds one.
	hdr     [ws.MaxHeaderSize]byte // a header split across Feeds
	hdrN    uint8                  // bytes of it in hdr
	inFrame bool                   // the frame being read has its header parsed:
	fin     bool
	op      ws.OpCode
	msgOp   Op // the op of the message being assembled, 0 if none
	mask    [4]byte
	left    int // payload bytes still to come
	seen    int // payload bytes already read, the offset into the mask
	max     int

	input

	msg buffer // the payload so far of the message being assembled, unmasked
	ctl buffer // the payload so far of a control frame split across Feeds
}

// NewWebSocket returns a WebSocket framer.
func NewWebSocket(o WebSocketOptions) *WebSocket {
	if o.MaxFrame <= 0 {
		o.MaxFrame = DefaultMaxFrame
	}
	return &WebSocket{max: o.MaxFrame}
}

// Next implements Framer. It returns whole messages (OpText, OpBinary) and
// control frames (OpClose, OpPing, OpPong); the connection answers pings and
// closes. A text message is checked for UTF-8 when it is complete.
func (w *WebSocket) Next() (Frame, bool, error) {
	if err := w.begin(); err != nil {
		return Frame{}, false, err
	}
	for {
		if !w.inFrame {
			ok, err := w.readHeader()
			if err != nil {
				return w.fail(err)
			}
			if !ok {
				w.p = nil
				return Frame{}, false, nil
			}
		}
		if w.op.IsControl() {
			return w.nextControl()
		}
		// A whole unfragmented message in p: deliver it in place.
		if w.fin && w.op != ws.OpContinuation && w.seen == 0 && len(w.p) >= w.left {
			payload := w.p[:w.left:w.left]
			w.p = w.p[w.left:]
			ws.Cipher(payload, w.mask, 0)
			w.inFrame = false
			w.msgOp = 0
			return w.message(Op(w.op), payload)
		}
		// Otherwise gather the payload into msg, unmasked. This is also how
		// fragments are reassembled.
		limit := w.max
		if w.fin {
			limit = w.msg.len() + w.left
		}
		if !w.gather(&w.msg, limit) {
			return Frame{}, false, nil
		}
		w.inFrame = false
		if !w.fin {
			continue // the next fragment, or a control frame
		}
		payload := w.msg.bytes()
		op := w.msgOp
		w.msgOp = 0
		w.out.set(w.msg.take())
		return w.message(op, payload)
	}
}

// gather appends what p holds of the current frame's payload to b
// (growing it up to limit), unmasked, and reports whether the payload is
// complete; when it is not, p is used up and Next waits for more.
func (w *WebSocket) gather(b *buffer, limit int) bool {
	n := min(w.left, len(w.p))
	ws.Cipher(b.append(w.p[:n], limit), w.mask, w.seen)
	w.p = w.p[n:]
	w.left -= n
	w.seen += n
	if w.left > 0 {
		w.p = nil
		return false
	}
	return true
}

// nextControl reads the payload of the current control frame.
func (w *WebSocket) nextControl() (Frame, bool, error) {
	var payload []byte
	if w.seen == 0 && len(w.p) >= w.left {
		payload = w.p[:w.left:w.left]
		w.p = w.p[w.left:]
		ws.Cipher(payload, w.mask, 0)
	} else {
		if !w.gather(&w.ctl, w.seen+w.left) {
			return Frame{}, false, nil
		}
		payload = w.ctl.bytes()
		w.out.set(w.ctl.take())
	}
	w.inFrame = false
	op := Op(w.op)
	if op == OpClose {
		if err := checkClose(payload); err != nil {
			return w.fail(err)
		}
	}
	return Frame{Op: op, Payload: payload}, true, nil
}

// message delivers a whole data message after checking text for UTF-8.
func (w *WebSocket) message(op Op, payload []byte) (Frame, bool, error) {
	if op == OpText && !utf8.Valid(payload) {
		return w.fail(fmt.Errorf(
			"%w: text message of %d bytes",
			ErrBadUTF8, len(payload),
		))
	}
	return Frame{Op: op, Payload: payload}, true, nil
}

// readHeader parses the next frame header from p (or from hdr when it is
// split across Feeds) and validates it. ok is false when more bytes are needed.
//
// The header is parsed from the byte slice here rather than with
// ws.ReadHeader, which takes an io.Reader and allocates its buffer on every
// call (BenchmarkGobwasReadHeader shows 1 alloc per header).
func (w *WebSocket) readHeader() (ok bool, err error) {
	var b []byte
	if w.hdrN == 0 && len(w.p) >= 2 {
		if n := headerLen(w.p[0], w.p[1]); len(w.p) >= n {
			b = w.p[:n]
			w.p = w.p[n:]
		}
	}
	if b == nil {
		// Gather the header in hdr: first the two bytes that tell its size.
		if w.hdrN < 2 {
			c := copy(w.hdr[w.hdrN:2], w.p)
			w.hdrN += uint8(c)
			w.p = w.p[c:]
			if w.hdrN < 2 {
				return false, nil
			}
		}
		n := headerLen(w.hdr[0], w.hdr[1])
		c := copy(w.hdr[w.hdrN:n], w.p)
		w.hdrN += uint8(c)
		w.p = w.p[c:]
		if int(w.hdrN) < n {
			return false, nil
		}
		b = w.hdr[:n]
		w.hdrN = 0
	}
	h, err := parseHeader(b)
	if err != nil {
		return false, err
	}
	state := ws.StateServerSide
	if w.msgOp != 0 {
		state = state.Set(ws.StateFragmented)
	}
	if err := ws.CheckHeader(h, state); err != nil {
		return false, fmt.Errorf("%w: %w", ErrBadFrame, err)
	}
	if h.OpCode.IsData() {
		// len(msg) <= max, so this cannot overflow.
		if room := w.max - w.msg.len(); h.Length > int64(room) {
			return false, fmt.Errorf(
				"%w: message of %d bytes exceeds max_frame %d",
				ErrFrameTooLarge, int64(w.msg.len())+h.Length, w.max,
			)
		}
		if h.OpCode != ws.OpContinuation {
			w.msgOp = Op(h.OpCode)
		}
	}
	w.inFrame = true
	w.fin = h.Fin
	w.op = h.OpCode
	w.mask = h.Mask
	w.left = int(h.Length) // <= max for data, <= 125 for control
	w.seen = 0
	return true, nil
}

// headerLen returns the size of a header from its first two bytes.
func headerLen(b0, b1 byte) int {
	n := 2
	if b1&0x80 != 0 {
		n += 4
	}
	switch b1 & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	return n
}

// parseHeader decodes a whole header (headerLen bytes) into ws.Header.
func parseHeader(b []byte) (ws.Header, error) {
	h := ws.Header{
		Fin:    b[0]&0x80 != 0,
		Rsv:    (b[0] >> 4) & 0x7,
		OpCode: ws.OpCode(b[0] & 0x0f),
		Masked: b[1]&0x80 != 0,
	}
	rest := b[2:]
	switch n := b[1] & 0x7f; n {
	case 126:
		h.Length = int64(binary.BigEndian.Uint16(rest))
		rest = rest[2:]
	case 127:
		u := binary.BigEndian.Uint64(rest)
		if u>>63 != 0 {
			return h, fmt.Errorf(
				"%w: 64-bit payload length with the most significant bit set",
				ErrBadFrame,
			)
		}
		h.Length = int64(u)
		rest = rest[8:]
	default:
		h.Length = int64(n)
	}
	if h.Masked {
		copy(h.Mask[:], rest)
	}
	return h, nil
}

// checkClose validates the payload of a close frame: empty, or a valid code
// followed by a UTF-8 reason.
func checkClose(payload []byte) error {
	if len(payload) == 0 {
		return nil
	}
	if len(payload) == 1 {
		return fmt.Errorf("%w: close frame body of 1 byte", ErrBadFrame)
	}
	code, reason := ws.ParseCloseFrameDataUnsafe(payload)
	if code > 4999 {
		// ws.CheckCloseFrameData lets codes above 4999 through, but RFC 6455
		// §7.4.2 defines none (Autobahn case 7.9 requires failing them).
		// Checked first so that a bad code wins over a bad reason, as it
		// does inside ws.CheckCloseFrameData.
		return fmt.Errorf("%w: close code %d is undefined", ErrBadFrame, code)
	}
	err := ws.CheckCloseFrameData(code, reason)
	switch {
	case errors.Is(err, ws.ErrProtocolInvalidUTF8):
		return fmt.Errorf("%w: close reason", ErrBadUTF8)
	case err != nil:
		return fmt.Errorf("%w: close code %d: %w", ErrBadFrame, code, err)
	}
	return nil
}

// fail makes the framer broken.
func (w *WebSocket) fail(err error) (Frame, bool, error) {
	w.err = err
	w.p = nil
	w.release()
	return Frame{}, false, err
}

// release drops all partial state and buffers.
func (w *WebSocket) release() {
	w.hdrN = 0
	w.inFrame = false
	w.msgOp = 0
	w.msg.release()
	w.ctl.release()
	w.out.release()
}

// AppendFrame implements Framer: it appends one unmasked, final (FIN) server
// frame. Control frames (OpClose, OpPing, OpPong) may carry at most 125 bytes
// (ErrBadFrame otherwise). Data frames are not bounded by MaxFrame, which
// limits what the server accepts, not what it sends. Text payloads are not
// checked for UTF-8: that is the caller's promise.
func (w *WebSocket) AppendFrame(dst []byte, op Op, payload []byte) ([]byte, error) {
	switch op {
	case OpText, OpBinary:
	case OpClose, OpPing, OpPong:
		if len(payload) > ws.MaxControlFramePayloadSize {
			return dst, fmt.Errorf(
				"%w: %s frame of %d bytes exceeds 125",
				ErrBadFrame, op, len(payload),
			)
		}
	default:
		return dst, fmt.Errorf("%w: unknown %s", ErrBadFrame, op)
	}
	dst = appendHeader(dst, op, len(payload))
	return append(dst, payload...), nil
}

// appendHeader appends the header of an unmasked final frame. ws.WriteHeader
// needs an io.Writer and would make its buffer escape, so the few bytes are
// written here; ws.HeaderSize sizes the growth.
func appendHeader(dst []byte, op Op, n int) []byte {
	h := ws.Header{Fin: true, OpCode: ws.OpCode(op), Length: int64(n)}
	dst = slices.Grow(dst, ws.HeaderSize(h)+n)
	b0 := 0x80 | byte(op)
	switch {
	case n <= 125:
		return append(dst, b0, byte(n))
	case n <= 0xffff:
		return append(dst, b0, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, b0, 127)
		return binary.BigEndian.AppendUint64(dst, uint64(n))
	}
}

// AppendClose appends a whole server close frame with code and reason. Code 0
// or CloseNoStatus sends a close frame without a body, which is how RFC 6455
// says "no status". The reason is cut to the 123 bytes a control frame leaves
// it, at a UTF-8 boundary; it should be valid UTF-8, since the peer checks.
func AppendClose(dst []byte, code uint16, reason string) []byte {
	if code == 0 || code == CloseNoStatus {
		return appendHeader(dst, OpClose, 0)
	}
	n := min(len(reason), ws.MaxControlFramePayloadSize-2)
	for n < len(reason) && n > 0 && !utf8.RuneStart(reason[n]) {
		n--
	}
	reason = reason[:n]
	dst = appendHeader(dst, OpClose, 2+n)
	dst = binary.BigEndian.AppendUint16(dst, code)
	return append(dst, reason...)
}

// ParseClose returns the code and reason of a close frame payload (as
// returned by Next, so already validated). An empty payload gives
// CloseNoStatus, as RFC 6455 §7.1.5 says.
func ParseClose(payload []byte) (code uint16, reason string) {
	if len(payload) < 2 {
		return CloseNoStatus, ""
	}
	c, r := ws.ParseCloseFrameData(payload)
	return uint16(c), r
}

// CloseCodeFor returns the WebSocket close code for an error from Next:
// 1009 for ErrFrameTooLarge, 1007 for ErrBadUTF8, 1002 for other
// ErrBadFrame, 1000 for nil and 1011 for anything else.
func CloseCodeFor(err error) uint16 {
	switch {
	case err == nil:
		return CloseNormal
	case errors.Is(err, ErrFrameTooLarge):
		return CloseMessageTooBig
	case errors.Is(err, ErrBadUTF8):
		return CloseInvalidPayload
	case errors.Is(err, ErrBadFrame):
		return CloseProtocolError
	}
	return CloseInternalError
}

// Buffered implements Framer: bytes of a partial header, of a partial control
// frame and of a message being assembled.
func (w *WebSocket) Buffered() int { return int(w.hdrN) + w.ctl.len() + w.msg.len() }

// Reset implements Framer.
func (w *WebSocket) Reset() {
	w.release()
	w.p = nil
	w.err = nil
}
