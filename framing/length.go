package framing

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// LengthOptions configures a Length framer (Swoole open_length_check).
type LengthOptions struct {
	// Type is the PHP pack code of the length field (Swoole
	// package_length_type):
	//
	//	c  signed 8-bit          C  unsigned 8-bit
	//	s  signed 16-bit LE      S  unsigned 16-bit LE
	//	n  unsigned 16-bit BE    v  unsigned 16-bit LE
	//	l  signed 32-bit LE      L  unsigned 32-bit LE
	//	N  unsigned 32-bit BE    V  unsigned 32-bit LE
	//
	// PHP's s, S, l and L use the machine's byte order. tether fixes them to
	// little endian, the order of the x86 and ARM hosts PHP peers run on, so
	// both ends agree whatever machine tether runs on.
	Type byte
	// LengthOffset is where the length field starts (Swoole
	// package_length_offset), >= 0.
	LengthOffset int
	// BodyOffset is where the body starts (Swoole package_body_offset), at or
	// after the end of the length field. The length counts the body only, so
	// a whole packet is BodyOffset + length bytes.
	BodyOffset int
	// MaxFrame bounds a whole packet, header included (Swoole
	// package_max_length). It must exceed BodyOffset.
	MaxFrame int
}

// Length cuts a stream into packets that carry their own length, like
// Swoole's open_length_check: a header of BodyOffset bytes holds the body
// length at LengthOffset, and the body follows. Next delivers the body only;
// the other header bytes are read past and not delivered. Create it with
// NewLength.
type Length struct {
	typ        byte
	size       int // bytes of the length field
	lenOff     int
	bodyOff    int
	max        int
	maxPayload int64 // the largest length the type can encode

	input
	pend  buffer // the partial packet, header included
	total int    // size of the partial packet once its header is in pend, else 0
}

// lengthTypes maps each pack code to its size in bytes and the largest length
// it can encode (the signed codes lose half their range to negative values,
// which are errors).
var lengthTypes = map[byte]struct {
	size int
	max  int64
}{
	'c': {1, 1<<7 - 1},
	'C': {1, 1<<8 - 1},
	's': {2, 1<<15 - 1},
	'S': {2, 1<<16 - 1},
	'n': {2, 1<<16 - 1},
	'v': {2, 1<<16 - 1},
	'l': {4, 1<<31 - 1},
	'L': {4, 1<<32 - 1},
	'N': {4, 1<<32 - 1},
	'V': {4, 1<<32 - 1},
}

// NewLength returns a Length framer, or an error naming the option that is
// wrong.
func NewLength(o LengthOptions) (*Length, error) {
	t, ok := lengthTypes[o.Type]
	if !ok {
		return nil, fmt.Errorf(
			"framing: length option Type %q is not one of c C s S n N l L v V",
			o.Type,
		)
	}
	if o.LengthOffset < 0 {
		return nil, fmt.Errorf(
			"framing: length option LengthOffset must be >= 0, got %d",
			o.LengthOffset,
		)
	}
	if o.BodyOffset < o.LengthOffset+t.size {
		return nil, fmt.Errorf(
			"framing: length option BodyOffset must be >= LengthOffset %d + %d (the size of type %q), got %d",
			o.LengthOffset, t.size, o.Type, o.BodyOffset,
		)
	}
	if o.MaxFrame <= o.BodyOffset {
		return nil, fmt.Errorf(
			"framing: length option MaxFrame must exceed BodyOffset %d, got %d",
			o.BodyOffset, o.MaxFrame,
		)
	}
	return &Length{
		typ:        o.Type,
		size:       t.size,
		lenOff:     o.LengthOffset,
		bodyOff:    o.BodyOffset,
		max:        o.MaxFrame,
		maxPayload: t.max,
	}, nil
}

// Next implements Framer. The length is checked as soon as the header has
// arrived, before any of the body is buffered: a negative length (signed
// types) is ErrBadFrame, a packet larger than MaxFrame is ErrFrameTooLarge.
func (l *Length) Next() (Frame, bool, error) {
	if err := l.begin(); err != nil {
		return Frame{}, false, err
	}
	if l.pend.len() > 0 {
		return l.nextPending()
	}
	// Fast path: the packet starts in p; deliver it in place if it is whole.
	if len(l.p) >= l.bodyOff {
		total, err := l.packetSize(l.p)
		if err != nil {
			return l.fail(err)
		}
		if len(l.p) >= total {
			payload := l.p[l.bodyOff:total:total]
			l.p = l.p[total:]
			return Frame{Op: OpBinary, Payload: payload}, true, nil
		}
		l.total = total
	}
	// Keep the partial packet; nextPending takes it from here.
	l.pend.append(l.p, l.limit())
	l.p = nil
	return Frame{}, false, nil
}

// nextPending continues the partial packet held in pend with the bytes of p.
func (l *Length) nextPending() (Frame, bool, error) {
	if l.total == 0 {
		// Complete the header first, then learn the size.
		n := min(l.bodyOff-l.pend.len(), len(l.p))
		l.pend.append(l.p[:n], l.bodyOff)
		l.p = l.p[n:]
		if l.pend.len() < l.bodyOff {
			l.p = nil
			return Frame{}, false, nil
		}
		total, err := l.packetSize(l.pend.bytes())
		if err != nil {
			return l.fail(err)
		}
		l.total = total
	}
	n := min(l.total-l.pend.len(), len(l.p))
	l.pend.append(l.p[:n], l.total)
	l.p = l.p[n:]
	if l.pend.len() < l.total {
		l.p = nil
		return Frame{}, false, nil
	}
	payload := l.pend.bytes()[l.bodyOff:l.total:l.total]
	l.total = 0
	l.out.set(l.pend.take())
	return Frame{Op: OpBinary, Payload: payload}, true, nil
}

// limit is the most the partial packet will hold: its size once known, else
// its header.
func (l *Length) limit() int {
	if l.total > 0 {
		return l.total
	}
	return l.bodyOff
}

// packetSize reads the length field of the header at the start of b (which
// holds at least BodyOffset bytes) and returns the size of the whole packet.
func (l *Length) packetSize(b []byte) (int, error) {
	n := l.readLength(b[l.lenOff : l.lenOff+l.size])
	if n < 0 {
		return 0, fmt.Errorf(
			"%w: negative length %d (type %q)",
			ErrBadFrame, n, l.typ,
		)
	}
	if n > int64(l.max-l.bodyOff) {
		return 0, fmt.Errorf(
			"%w: length %d + body_offset %d exceeds max_frame %d",
			ErrFrameTooLarge, n, l.bodyOff, l.max,
		)
	}
	return l.bodyOff + int(n), nil
}

// readLength decodes the length field b according to the pack code.
func (l *Length) readLength(b []byte) int64 {
	switch l.typ {
	case 'c':
		return int64(int8(b[0]))
	case 'C':
		return int64(b[0])
	case 's':
		return int64(int16(binary.LittleEndian.Uint16(b)))
	case 'S', 'v':
		return int64(binary.LittleEndian.Uint16(b))
	case 'n':
		return int64(binary.BigEndian.Uint16(b))
	case 'l':
		return int64(int32(binary.LittleEndian.Uint32(b)))
	case 'L', 'V':
		return int64(binary.LittleEndian.Uint32(b))
	default: // 'N'
		return int64(binary.BigEndian.Uint32(b))
	}
}

// putLength encodes n into the length field b according to the pack code.
// n fits the type (AppendFrame checks it).
func (l *Length) putLength(b []byte, n int) {
	switch l.typ {
	case 'c', 'C':
		b[0] = byte(n)
	case 's', 'S', 'v':
		binary.LittleEndian.PutUint16(b, uint16(n))
	case 'n':
		binary.BigEndian.PutUint16(b, uint16(n))
	case 'l', 'L', 'V':
		binary.LittleEndian.PutUint32(b, uint32(n))
	default: // 'N'
		binary.BigEndian.PutUint32(b, uint32(n))
	}
}

// fail makes the framer broken.
func (l *Length) fail(err error) (Frame, bool, error) {
	l.err = err
	l.p = nil
	l.total = 0
	l.pend.release()
	return Frame{}, false, err
}

// AppendFrame implements Framer: it appends a BodyOffset-byte header, zero
// except for the length of payload at LengthOffset, then payload. op must be
// OpBinary or OpText (TCP knows one kind of message). It returns
// ErrFrameTooLarge if the length does not fit the type or the packet exceeds
// MaxFrame.
func (l *Length) AppendFrame(dst []byte, op Op, payload []byte) ([]byte, error) {
	if err := checkDataOp("length", op); err != nil {
		return dst, err
	}
	n := len(payload)
	if int64(n) > l.maxPayload {
		return dst, fmt.Errorf(
			"%w: length %d does not fit type %q (at most %d)",
			ErrFrameTooLarge, n, l.typ, l.maxPayload,
		)
	}
	start := len(dst)
	dst = slices.Grow(dst, l.bodyOff+n)
	dst = dst[:start+l.bodyOff]
	clear(dst[start:])
	l.putLength(dst[start+l.lenOff:], n)
	return append(dst, payload...), nil
}

// Buffered implements Framer.
func (l *Length) Buffered() int { return l.pend.len() }

// Reset implements Framer.
func (l *Length) Reset() {
	l.out.release()
	l.pend.release()
	l.p = nil
	l.total = 0
	l.err = nil
}
