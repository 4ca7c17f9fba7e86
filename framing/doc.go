// Package framing turns a byte stream into messages and messages into bytes.
//
// A connection owns one Framer per socket. Its reader hands the framer
// whatever a read returned (half a frame, or ten frames at once) with Feed,
// then calls Next until it reports ok == false:
//
//	fr.Feed(buf[:n])
//	for {
//		f, ok, err := fr.Next()
//		if err != nil {
//			// close the connection: frame_too_large or bad_frame
//		}
//		if !ok {
//			break // fr holds no reference to buf any more
//		}
//		handle(f) // f.Payload is valid until the next Next, Feed or Reset
//	}
//
// There are three framers, matching what Swoole and RFC 6455 do:
//
//   - EOF (NewEOF) is Swoole's open_eof_split with package_eof: every
//     occurrence of a 1 to 8 byte delimiter ends a frame, even one split
//     across two reads, and the frame is delivered without it.
//   - Length (NewLength) is Swoole's open_length_check: a header of
//     body_offset bytes holds the length of the body at length_offset, in one
//     of the PHP pack codes c C s S n N l L v V (s S l L are little endian
//     here, see LengthOptions.Type). The length counts the body only, so a
//     packet is body_offset + length bytes; the body alone is delivered.
//   - WebSocket (NewWebSocket) is the server side of RFC 6455 after the
//     upgrade: masked client frames, fragmented messages reassembled, control
//     frames returned as they come, UTF-8 and close codes checked. It
//     delivers text, binary, close, ping and pong frames; the connection
//     answers pings and closes (AppendClose, ParseClose, CloseCodeFor).
//
// # Memory and copies
//
// A frame that lies wholly inside the slice given to Feed is returned in
// place: its Payload points into that slice (a WebSocket payload is unmasked
// in place first). Only when Next runs out of whole frames is the unconsumed
// tail copied, into a buffer taken from a pool shared by all framers; that
// buffer grows as bytes arrive (never on a length a peer merely announces)
// and goes back to the pool as soon as its frame has been delivered, at the
// next call of Next, Feed or Reset. So an idle framer holds no buffer
// (Buffered() == 0), and steady-state decoding does not allocate.
//
// Validity of the bytes, precisely:
//   - Feed(p): the framer may read p, and write it (WebSocket unmasking),
//     until Next reports ok == false or an error. Then the caller may reuse p.
//   - Frame.Payload: valid until the next call of Next, Feed or Reset on the
//     same framer, and, when it points into p, until the caller reuses p.
//     Copy it to keep it longer (for example to send it to another actor).
//
// # max_frame
//
// No framer ever holds more than max_frame bytes of a partial frame, and an
// oversize frame is reported as soon as that is known:
//   - EOF: max_frame bounds a frame on the wire, delimiter included (Swoole's
//     rule for package_max_length). A frame of exactly max_frame bytes is
//     accepted; once max_frame bytes of a frame have arrived without a whole
//     delimiter, Next returns ErrFrameTooLarge.
//   - Length: max_frame bounds the whole packet, header included (Swoole's
//     package_max_length). The length is checked as soon as the header has
//     arrived: body_offset + length > max_frame is ErrFrameTooLarge, a
//     negative length (signed codes) ErrBadFrame.
//   - WebSocket: max_frame bounds the payload of a message after reassembly;
//     frame headers are not counted. A frame whose header would take the
//     message past it is ErrFrameTooLarge before its payload is buffered.
//     Control frames are bounded by RFC 6455 to 125 bytes; one may be held
//     in addition to a message being assembled.
//
// max_frame bounds what is received, not what is sent: AppendFrame frames
// any payload the format can say (a length field's largest value, any
// size for EOF and WebSocket), so that a member list or a page of history
// larger than the frames a client may send still goes out.
//
// Buffers come from power-of-two size classes, so the memory behind a
// partial frame is max_frame rounded up to a power of two at most (exactly
// max_frame for the default 64 KiB).
//
// # Errors
//
// Errors from Next wrap ErrFrameTooLarge or ErrBadFrame (ErrBadUTF8 wraps
// ErrBadFrame) with detail, so use errors.Is. They are final: the stream is
// broken, only that connection closes, with reason frame_too_large or
// bad_frame, and on WebSocket with the close code CloseCodeFor(err).
//
// AppendFrame encodes frames for sending: the TCP framers accept OpText and
// OpBinary alike (TCP knows one kind of message) and refuse payloads the peer
// would decode differently (a payload holding the delimiter, a length that
// does not fit the type, a frame over max_frame); the WebSocket framer writes
// unmasked final server frames.
//
// The package imports only the standard library and github.com/gobwas/ws,
// whose header types, checks and masking cipher the WebSocket framer uses.
package framing
