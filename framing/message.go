package framing

import (
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// Encoder frames outbound messages in one wire format: a listener's
// framing, shared by all its connections. It is safe for concurrent use.
// A fan-out asks each Message for its frame per Encoder, so a message to
// a thousand members is framed once per format, not once per member.
type Encoder struct {
	f  Framer // used for AppendFrame only, which reads nothing but its options
	ws bool
}

// NewEncoder returns an encoder framing as f does. f must not be used for
// decoding afterwards.
func NewEncoder(f Framer) *Encoder {
	_, ws := f.(*WebSocket)
	return &Encoder{f: f, ws: ws}
}

// AppendMessage appends payload framed as one message: a frame of the
// TCP framing, or on WebSocket a text frame, or a binary one when payload
// is not UTF-8 (what a relay worker pushes may be anything, and a browser
// fails the connection on a text frame that is not UTF-8).
func (e *Encoder) AppendMessage(dst, payload []byte) ([]byte, error) {
	op := OpText
	if e.ws && !utf8.Valid(payload) {
		op = OpBinary
	}
	return e.f.AppendFrame(dst, op, payload)
}

// Message is one outbound message, shared by every receiver of a
// fan-out: its frame in each wire format is built once, on first use,
// and every receiver's queue takes a reference to the same bytes, which
// nobody modifies. Safe for concurrent use.
type Message struct {
	Payload []byte

	first atomic.Pointer[framed] // the first format asked for: the common case, without a lock
	mu    sync.Mutex
	more  []*framed
}

type framed struct {
	enc   *Encoder
	frame []byte
	err   error
}

// NewMessage returns a message of payload, which must not be modified
// afterwards.
func NewMessage(payload []byte) *Message { return &Message{Payload: payload} }

// Frame returns the message framed by e, building it on first use.
func (m *Message) Frame(e *Encoder) ([]byte, error) {
	if f := m.first.Load(); f != nil && f.enc == e {
		return f.frame, f.err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if f := m.first.Load(); f != nil && f.enc == e {
		return f.frame, f.err
	}
	for _, f := range m.more {
		if f.enc == e {
			return f.frame, f.err
		}
	}
	f := &framed{enc: e}
	f.frame, f.err = e.AppendMessage(nil, m.Payload)
	if m.first.Load() == nil {
		m.first.Store(f)
	} else {
		m.more = append(m.more, f)
	}
	return f.frame, f.err
}
