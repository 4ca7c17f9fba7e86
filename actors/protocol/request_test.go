package protocol

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzDecodeRequest: whatever bytes a client sends, DecodeRequest either
// refuses them with bad_request or unknown_op (carrying the request's id
// when it had one), or accepts a request every field of which is safe to
// use as it is: a known op, the whole message valid UTF-8, rooms and
// connection ids that pass their checks (so no subject NATS would refuse
// can come of them), names and avatars within their lengths, data where
// the op needs it. An accepted request encoded again decodes the same.
// The seed corpus (testdata/fuzz/FuzzDecodeRequest) has every op.
func FuzzDecodeRequest(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		req, bad := DecodeRequest(data)
		if bad != nil {
			if req != nil || (bad.Code != CodeBadRequest && bad.Code != CodeUnknownOp) || bad.Message == "" {
				t.Fatalf("refusal %+v with request %+v", bad, req)
			}
			if bad.ID != nil && !json.Valid(bad.ID) {
				t.Fatalf("refusal carries an id that is not JSON: %q", bad.ID)
			}
			return
		}
		if !utf8.Valid(data) {
			t.Fatalf("accepted invalid UTF-8: %q", data)
		}
		checkAccepted(t, req)
		again, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		req2, bad := DecodeRequest(again)
		if bad != nil {
			t.Fatalf("%q re-encoded as %q is refused: %v", data, again, bad)
		}
		if req2.Op != req.Op || req2.Room != req.Room || req2.To != req.To || req2.Name != req.Name ||
			req2.Avatar != req.Avatar || req2.Echo != req.Echo || req2.Token != req.Token || !sameJSON(req2.Data, req.Data) || !sameJSON(req2.ID, req.ID) {
			t.Fatalf("round trip changed the request: %+v then %+v", req, req2)
		}
	})
}

func checkAccepted(t *testing.T, req *Request) {
	t.Helper()
	switch req.Op {
	case "ping", "pong":
	case "join", "leave", "members", "send":
		if err := CheckRoom(req.Room); err != nil {
			t.Fatalf("accepted %s with room %q: %v", req.Op, req.Room, err)
		}
		if strings.ContainsAny(req.Room, " \t\r\n.*>") || len(req.Room) > MaxRoomName {
			t.Fatalf("room %q would break a subject", req.Room)
		}
		if req.Op == "join" && (len(req.Name) > MaxName || len(req.Avatar) > MaxAvatar) {
			t.Fatalf("join with name %d and avatar %d bytes", len(req.Name), len(req.Avatar))
		}
		if req.Op == "send" && req.Data == nil {
			t.Fatal("send without data")
		}
	case "history":
		if err := CheckRoom(req.Room); err != nil || req.Limit < 0 {
			t.Fatalf("accepted history of %q, limit %d: %v", req.Room, req.Limit, err)
		}
	case "auth", "refresh":
		if len(req.Token) > MaxToken || (req.Op == "refresh" && req.Token == "") {
			t.Fatalf("accepted %s with a token of %d bytes", req.Op, len(req.Token))
		}
	case "whisper":
		if err := CheckConn(req.To); err != nil || req.Data == nil {
			t.Fatalf("accepted whisper to %q, data %q: %v", req.To, req.Data, err)
		}
		if strings.ContainsAny(NodeOf(req.To), " \t\r\n.*>") || NodeOf(req.To) == "" {
			t.Fatalf("to %q has a node that would break a subject", req.To)
		}
	default:
		t.Fatalf("accepted unknown op %q", req.Op)
	}
	if req.Data != nil && !json.Valid(req.Data) {
		t.Fatalf("data is not JSON: %q", req.Data)
	}
}

func sameJSON(a, b json.RawMessage) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	var ca, cb bytes.Buffer
	return json.Compact(&ca, a) == nil && json.Compact(&cb, b) == nil && bytes.Equal(ca.Bytes(), cb.Bytes())
}

// TestDecodeRequest pins what each kind of bad input is told.
func TestDecodeRequest(t *testing.T) {
	cases := []struct {
		in, code, message string
	}{
		{`{"op":"join","room":"lobby","id":1}`, "", ""},
		{`{"op":"join","room":"` + strings.Repeat("r", 65) + `","id":1}`, CodeBadRequest, "room is 65 bytes; at most 64"},
		{`{"op":"join","room":"a.b"}`, CodeBadRequest, "holds '.', '*' or '>'"},
		{`{"op":"join","room":"a b"}`, CodeBadRequest, "space or a control character"},
		{`{"op":"join","room":"r","name":"` + strings.Repeat("n", 65) + `"}`, CodeBadRequest, "name is at most 64 bytes"},
		{`{"op":"send","room":"r"}`, CodeBadRequest, "send needs data"},
		{`{"op":"send","room":"r","data":"` + "\xff" + `","id":9}`, CodeBadRequest, "not valid UTF-8"},
		{`{"op":"whisper","to":"` + strings.Repeat("x", 5000) + `.1","data":1}`, CodeBadRequest, "connection id is 5002 bytes; at most 128"},
		{`{"op":"whisper","to":"a*.1","data":1}`, CodeBadRequest, "is not <node>.<id>"},
		{`{"op":"whisper","to":"a.1.2","data":1}`, CodeBadRequest, "is not <node>.<id>"},
		{`{"op":"whisper","to":"a.1"}`, CodeBadRequest, "whisper needs data"},
		{`{"op":"members"}`, CodeBadRequest, "room is missing"},
		{`{"id":4}`, CodeBadRequest, "missing op"},
		{`{"op":"dance","id":4}`, CodeUnknownOp, "unknown op dance"},
		{`{"op":`, CodeBadRequest, "invalid JSON"},
	}
	for _, c := range cases {
		req, bad := DecodeRequest([]byte(c.in))
		switch {
		case c.code == "" && bad != nil:
			t.Errorf("%.60s: refused %v", c.in, bad)
		case c.code == "" && req == nil:
			t.Errorf("%.60s: no request", c.in)
		case c.code != "" && (bad == nil || bad.Code != c.code || !strings.Contains(bad.Message, c.message)):
			t.Errorf("%.60s: %+v, want %s %q", c.in, bad, c.code, c.message)
		}
	}
	// The id comes back with a refusal, so a client can match it.
	if _, bad := DecodeRequest([]byte(`{"op":"send","room":"a.b","id":"x7"}`)); bad == nil || string(bad.ID) != `"x7"` {
		t.Errorf("refusal without the id: %+v", bad)
	}
}
