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

	Socket transport.SocketOptions

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
		Socket: transport.SocketOptions{
			Keepalive: l.TCPKeepalive.Enabled,
			Idle:      l.TCPKeepalive.Idle.D(), Interval: l.TCPKeepalive.Interval.D(), Count: l.TCPKeepalive.Count,
			UserTimeout: l.TCPUserTimeout.D(),
		},
		framing: l.Framing,
	}
	if _, err := s.NewFramer(); err != nil { // fail at start, not at the first accept
		return nil, fmt.Errorf("listeners.%s.framing: %w", l.Name, err)
	}
	return s, nil
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
