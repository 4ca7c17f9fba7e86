package conn

import "tether/framing"

// Reason is why a connection closed. It is one enum for logs, metrics,
// connection info, the WebSocket close frame and the `left` event.
type Reason uint8

// The close reasons of DESIGN.md section 3.
const (
	ReasonNone           Reason = iota // still open
	ReasonClientClosed                 // the peer closed (FIN, reset, or a WebSocket close frame)
	ReasonServerClosed                 // the server closed it (admin close, relay worker)
	ReasonIdle                         // nothing received for heartbeat.idle_timeout
	ReasonNoPong                       // pings unanswered for ping_not_response_limit intervals
	ReasonKeepalive                    // the kernel's keepalive probes went unanswered
	ReasonUserTimeout                  // data stayed unacknowledged past tcp_user_timeout
	ReasonFrameTooLarge                // a frame over framing.max_frame
	ReasonBadFrame                     // bytes that are no valid frame
	ReasonSlowConsumer                 // the outbound queue was full
	ReasonWriteTimeout                 // a write waited longer than limits.write_timeout
	ReasonServerShutdown               // the node is stopping
	ReasonKicked                       // kicked through the admin API
	ReasonPanic                        // handling its messages panicked past the retry budget
	ReasonMemoryLimit                  // it held the most of node.max_partial_bytes when the node reached it
	ReasonUnauthorized                 // not authenticated in time, or its token or the backend refused it
	ReasonTokenExpired                 // its token (or the backend's answer) expired without a refresh
	ReasonRateLimited                  // it went on past limits.messages_per_second
)

var reasonNames = [...]string{
	ReasonNone:           "",
	ReasonClientClosed:   "client_closed",
	ReasonServerClosed:   "server_closed",
	ReasonIdle:           "idle",
	ReasonNoPong:         "no_pong",
	ReasonKeepalive:      "keepalive",
	ReasonUserTimeout:    "user_timeout",
	ReasonFrameTooLarge:  "frame_too_large",
	ReasonBadFrame:       "bad_frame",
	ReasonSlowConsumer:   "slow_consumer",
	ReasonWriteTimeout:   "write_timeout",
	ReasonServerShutdown: "server_shutdown",
	ReasonKicked:         "kicked",
	ReasonPanic:          "panic",
	ReasonMemoryLimit:    "memory_limit",
	ReasonUnauthorized:   "unauthorized",
	ReasonTokenExpired:   "token_expired",
	ReasonRateLimited:    "rate_limited",
}

// Reasons lists every close reason, for metrics and documentation.
func Reasons() []Reason {
	out := make([]Reason, 0, len(reasonNames)-1)
	for r := ReasonClientClosed; int(r) < len(reasonNames); r++ {
		out = append(out, r)
	}
	return out
}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "unknown"
}

// MarshalText writes the reason's name, so JSON carries "idle", not 3.
func (r Reason) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// CloseServiceRestart is the WebSocket close code of server_shutdown:
// 1012, "service restart" (the IANA registry of RFC 6455's codes). Its
// reason is the reconnect hint as JSON (actor.go, closeWS).
const CloseServiceRestart = 1012

// WebSocketCode is the close code a WebSocket client receives. Reasons
// the RFC has a code for use it; tether's own use 4000-4099 (the range
// RFC 6455 leaves to applications), so a client can tell them apart.
func (r Reason) WebSocketCode() uint16 {
	switch r {
	case ReasonClientClosed, ReasonServerClosed:
		return framing.CloseNormal
	case ReasonServerShutdown:
		return CloseServiceRestart
	case ReasonFrameTooLarge:
		return framing.CloseMessageTooBig
	case ReasonBadFrame:
		return framing.CloseProtocolError
	case ReasonPanic:
		return framing.CloseInternalError
	case ReasonIdle:
		return 4000
	case ReasonNoPong:
		return 4001
	case ReasonSlowConsumer:
		return 4002
	case ReasonWriteTimeout:
		return 4003
	case ReasonKicked:
		return 4004
	case ReasonMemoryLimit:
		return 4005
	case ReasonUnauthorized:
		return 4006
	case ReasonTokenExpired:
		return 4007
	case ReasonRateLimited:
		return 4008
	}
	// keepalive and user_timeout: the peer is gone and reads nothing.
	return framing.CloseGoingAway
}
