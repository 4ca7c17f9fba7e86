package conn

import (
	"fmt"
	"time"

	"tether/config"
	"tether/framing"
	"tether/transport"
)

// Settings are a listener's connection settings, shared read-only by all
// its connections. Reload replaces the pointer; nothing mutates one.
type Settings struct {
	Listener  string
	WebSocket bool // the protocol: WebSocket frames, or TCP with Framing

	// Heartbeat (DESIGN.md section 3); 0 turns a mode off.
	IdleTimeout   time.Duration
	CheckInterval time.Duration
	PingInterval  time.Duration
	PingLimit     int
	PingData      []byte

	OutboundQueue int           // bytes
	WriteTimeout  time.Duration // 0: none
	DropWhenFull  bool          // on_full: drop instead of closing
	WriteDelay    time.Duration
	Delayer       *transport.Delayer // nil when WriteDelay is 0: write at once

	Socket transport.SocketOptions

	// Rate limits the messages a connection sends (limits.messages_per_
	// second and burst); the zero Rate is no limit.
	Rate Rate

	// Encoder frames outbound messages in the listener's format. Fan-outs
	// build each message's frame once per Encoder, so it stays the same
	// across reloads (framing does not change live).
	Encoder *framing.Encoder

	framing config.Framing
}

// NewSettings derives connection settings from a validated listener.
func NewSettings(l *config.Listener) (*Settings, error) {
	s := &Settings{
		Listener:      l.Name,
		WebSocket:     l.Protocol == config.ProtocolWebSocket,
		IdleTimeout:   l.Heartbeat.IdleTimeout.D(),
		CheckInterval: l.Heartbeat.CheckInterval.D(),
		PingInterval:  l.Heartbeat.PingInterval.D(),
		PingLimit:     l.Heartbeat.PingNotResponseLimit,
		PingData:      []byte(l.Heartbeat.PingData),
		OutboundQueue: int(l.Limits.OutboundQueue),
		WriteTimeout:  l.Limits.WriteTimeout.D(),
		DropWhenFull:  l.Limits.OnFull == config.OnFullDrop,
		WriteDelay:    l.Limits.WriteDelay.D(),
		Socket: transport.SocketOptions{
			Keepalive: l.TCPKeepalive.Enabled,
			Idle:      l.TCPKeepalive.Idle.D(), Interval: l.TCPKeepalive.Interval.D(), Count: l.TCPKeepalive.Count,
			UserTimeout: l.TCPUserTimeout.D(),
		},
		Rate:    NewRate(l.Limits.MessagesPerSecond, l.Limits.Burst),
		framing: l.Framing,
	}
	enc, err := s.NewFramer() // fails at start, not at the first accept
	if err != nil {
		return nil, fmt.Errorf("listeners.%s.framing: %w", l.Name, err)
	}
	s.Encoder = framing.NewEncoder(enc)
	if s.WriteDelay > 0 {
		s.Delayer = transport.NewDelayer(s.WriteDelay)
	}
	return s, nil
}

// Reloaded returns the settings of a reload of the same listener: it
// keeps s's encoder (framing does not change live) and, when the write
// delay is the same, s's delayer.
func (s *Settings) Reloaded(next *Settings) *Settings {
	next.Encoder = s.Encoder
	if next.WriteDelay == s.WriteDelay {
		next.Delayer = s.Delayer
	}
	return next
}

// NewFramer returns a fresh framer for one connection.
func (s *Settings) NewFramer() (framing.Framer, error) {
	f := s.framing
	switch f.Type {
	case config.FramingWebSocket:
		return framing.NewWebSocket(framing.WebSocketOptions{MaxFrame: int(f.MaxFrame)}), nil
	case config.FramingEOF:
		return framing.NewEOF(framing.EOFOptions{Delimiter: []byte(f.EOF), MaxFrame: int(f.MaxFrame)})
	default:
		return framing.NewLength(framing.LengthOptions{
			Type: f.LengthType[0], LengthOffset: f.LengthOffset, BodyOffset: f.BodyOffset, MaxFrame: int(f.MaxFrame),
		})
	}
}
