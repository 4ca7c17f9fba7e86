package protocol

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// Limits on the other client-chosen strings of a request, in bytes.
const (
	MaxName   = 64
	MaxAvatar = 512
	MaxEpoch  = 32
	MaxToken  = 16 << 10
)

// RequestError is a request refused before any work: the error reply's
// code and message, and the request's id when it had one.
type RequestError struct {
	ID      json.RawMessage
	Code    string
	Message string
}

func (e *RequestError) Error() string { return e.Code + ": " + e.Message }

// DecodeRequest parses one client message and checks every field its op
// uses: the names and ids of protocol's Check functions, the lengths of
// name and avatar, data where an op needs it, and that the whole message
// is valid UTF-8. JSON's own decoding lets invalid UTF-8 through inside
// strings and raw values, and a room message relayed to a browser in a
// WebSocket text frame must be valid UTF-8, or the browser drops the
// connection (RFC 6455 section 8.1): such a message is refused here, so
// nothing invalid ever reaches a room. What this accepts is safe to use as
// it is; whether the connection may do it (is it in the room?) is the
// application's question.
func DecodeRequest(data []byte) (*Request, *RequestError) {
	var req Request
	if err := json.Unmarshal(data, &req); err != nil {
		return nil, &RequestError{Code: CodeBadRequest, Message: "invalid JSON: " + err.Error()}
	}
	bad := func(format string, args ...any) *RequestError {
		return &RequestError{ID: req.ID, Code: CodeBadRequest, Message: fmt.Sprintf(format, args...)}
	}
	if !utf8.Valid(data) {
		return nil, bad("message is not valid UTF-8")
	}
	switch req.Op {
	case "ping", "pong":
	case "auth", "refresh":
		// A proxy listener's backend may decide without a token (a
		// session cookie on the WebSocket upgrade): auth may carry none.
		if len(req.Token) > MaxToken {
			return nil, bad("token is %d bytes; at most %d", len(req.Token), MaxToken)
		}
		if req.Op == "refresh" && req.Token == "" {
			return nil, bad("refresh needs a token")
		}
	case "join":
		if err := CheckRoom(req.Room); err != nil {
			return nil, bad("%v", err)
		}
		if len(req.Name) > MaxName || len(req.Avatar) > MaxAvatar {
			return nil, bad("name is at most %d bytes, avatar %d", MaxName, MaxAvatar)
		}
		if req.Since != nil && len(req.Since.Epoch) > MaxEpoch {
			return nil, bad("since.epoch is at most %d bytes", MaxEpoch)
		}
	case "leave", "members":
		if err := CheckRoom(req.Room); err != nil {
			return nil, bad("%v", err)
		}
	case "history":
		if err := CheckRoom(req.Room); err != nil {
			return nil, bad("%v", err)
		}
		if req.Limit < 0 {
			return nil, bad("limit must not be negative")
		}
	case "send":
		if err := CheckRoom(req.Room); err != nil {
			return nil, bad("%v", err)
		}
		if req.Data == nil {
			return nil, bad("send needs data")
		}
	case "whisper":
		if err := CheckConn(req.To); err != nil {
			return nil, bad("to: %v", err)
		}
		if req.Data == nil {
			return nil, bad("whisper needs data")
		}
	case "":
		return nil, bad("missing op")
	default:
		return nil, &RequestError{ID: req.ID, Code: CodeUnknownOp, Message: "unknown op " + req.Op}
	}
	return &req, nil
}
