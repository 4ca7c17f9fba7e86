package protocol

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Every name or id a client or the admin API gives that becomes part of a
// NATS subject (a room name, a user id, a connection id, whose node is a
// subject token) is checked here, before any use, and nowhere else
// (DESIGN.md section 11). A subject NATS would refuse (too long for its
// control line, a space, a wildcard) once made nats.go close the node's
// connection for good; these checks keep any input from reaching one,
// or another subject than its own.

// Name limits, in bytes.
const (
	MaxRoomName = 64
	MaxUserID   = 128
	MaxConnID   = 128
	MaxNodeID   = MaxConnID - 2 // room for ".x"
)

// CheckRoom returns nil when s may name a room: 1 to 64 bytes of UTF-8,
// printable, without spaces, '.', '*' or '>'.
func CheckRoom(s string) error { return checkName("room", s, MaxRoomName) }

// CheckUser returns nil when s may be a user id: 1 to 128 bytes of UTF-8,
// printable, without spaces, '.', '*' or '>'.
func CheckUser(s string) error { return checkName("user", s, MaxUserID) }

func checkName(what, s string, max int) error {
	switch {
	case s == "":
		return fmt.Errorf("%s is missing", what)
	case len(s) > max:
		return fmt.Errorf("%s is %d bytes; at most %d", what, len(s), max)
	case !utf8.ValidString(s):
		return fmt.Errorf("%s is not valid UTF-8", what)
	case strings.ContainsAny(s, ".*>"):
		return fmt.Errorf("%s %q holds '.', '*' or '>'", what, s)
	}
	for _, r := range s {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return fmt.Errorf("%s %q holds a space or a control character", what, s)
		}
	}
	return nil
}

// CheckConn returns nil when s may be a connection id: "<node id>.<part>",
// at most 128 bytes, each of the two parts ASCII letters, digits, '-' and
// '_' (what node names allow, config.Node.Name).
func CheckConn(s string) error {
	if s == "" {
		return errors.New("connection id is missing")
	}
	if len(s) > MaxConnID {
		return fmt.Errorf("connection id is %d bytes; at most %d", len(s), MaxConnID)
	}
	node, part, ok := strings.Cut(s, ".")
	if !ok || node == "" || part == "" || !idToken(node) || !idToken(part) {
		return fmt.Errorf("connection id %q is not <node>.<id> of letters, digits, '-' and '_'", s)
	}
	return nil
}

func idToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// connIDBits is the randomness of a connection id's part after its node:
// 96 bits (12 bytes) from crypto/rand, as 16 characters of base64url
// (letters, digits, '-' and '_': the very alphabet CheckConn and node names
// allow, 6 bits a character, so 16 characters carry 96 bits where 16 of
// hex would carry 64). Ids are capabilities: a client who knows one can
// whisper to it, and the admin API acts on it, so nobody may derive one
// from another (DESIGN.md section 11). And a node never reuses an id: at
// 96 bits, a repeat within a billion connections has a chance of about
// one in 10^11.
const connIDBits = 96

// NewConnID returns a new id for a connection of node: "<node>.<part>",
// the part random (connIDBits), so NodeOf routes it and CheckConn accepts
// it when node is a node id.
func NewConnID(node string) string {
	var raw [connIDBits / 8]byte
	var part [connIDBits / 6]byte
	rand.Read(raw[:]) // never fails: it crashes the program instead (Go 1.24)
	base64.RawURLEncoding.Encode(part[:], raw[:])
	return node + "." + string(part[:]) // one allocation: the id
}

// NodeOf returns the node id in a connection id that CheckConn accepts.
func NodeOf(connID string) string {
	node, _, _ := strings.Cut(connID, ".")
	return node
}
