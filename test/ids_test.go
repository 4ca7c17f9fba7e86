package test

import (
	"encoding/base64"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"tether/actors/protocol"
)

// TestConnectionIDsAreNotGuessable: the part of a connection id after its
// node is 96 random bits, so an attacker who holds every other of 20
// connections finds none of the 10 others from its own ids: counting from
// them, the old sequence, or mixing them. Sequential ids were found by 30
// guesses, every live one within 10 ms.
func TestConnectionIDsAreNotGuessable(t *testing.T) {
	n := startNode(t, nil)
	const conns = 20
	var parts, known []string // known: the attacker's, every other one
	for i := range conns {
		id := n.dial(t, "tcp").ID()
		if err := protocol.CheckConn(id); err != nil || protocol.NodeOf(id) != n.ID() {
			t.Fatalf("id %q: %v, node %q, want %q", id, err, protocol.NodeOf(id), n.ID())
		}
		part := strings.TrimPrefix(id, n.ID()+".")
		// 16 characters of base64url are 96 bits; fewer than 11 could
		// not hold 64.
		raw, err := base64.RawURLEncoding.DecodeString(part)
		if err != nil || len(raw)*8 < 64 {
			t.Errorf("id %q: its part %q is not 64 or more bits of base64url (%v)", id, part, err)
		}
		parts = append(parts, part)
		if i%2 == 0 {
			known = append(known, part)
		}
	}
	// A counter's values share their leading characters; random ones
	// share 5 with a chance of 2^-30 a pair.
	for i, a := range parts {
		for _, b := range parts[i+1:] {
			if len(commonPrefix(a, b)) >= 5 {
				t.Errorf("parts %q and %q share a prefix, as a counter's would", a, b)
			}
		}
	}

	guesses := map[string]bool{} // parts, the attacker's own left out
	guess := func(part string) {
		if !slices.Contains(known, part) {
			guesses[part] = true
		}
	}
	for k := 1; k <= conns+30; k++ { // the old sequence and past it
		guess(strconv.Itoa(k))
	}
	for _, part := range known {
		for d := -30; d <= 30; d++ { // a part counted up and down in its own alphabet
			guess(addToPart(part, d))
		}
	}
	for i, a := range known { // parts cut and joined, and reversed
		guess(reverse(a))
		for _, b := range known[i+1:] {
			guess(a[:len(a)/2] + b[len(b)/2:])
			guess(b[:len(b)/2] + a[len(a)/2:])
		}
	}
	found := 0
	for g := range guesses {
		if code := api(t, n, "GET", "/api/conns/"+n.ID()+"."+g, nil, nil); code != http.StatusNotFound {
			found++
			t.Errorf("GET /api/conns/%s.%s: %d, want 404", n.ID(), g, code)
		}
	}
	t.Logf("%d guesses from %d ids, %d of the %d others found", len(guesses), len(known), found, conns-len(known))
}

func commonPrefix(a, b string) string {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return a[:i]
}

func reverse(s string) string {
	b := []byte(s)
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return string(b)
}

// base64URL is the alphabet of the ids' random part, in order.
const base64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// addToPart reads part as a number in base64url digits and adds d to it
// (|d| < 64), carrying or borrowing into the digits before the last.
func addToPart(part string, d int) string {
	b := []byte(part)
	carry := d
	for i := len(b) - 1; i >= 0 && carry != 0; i-- {
		v := strings.IndexByte(base64URL, b[i])
		if v < 0 {
			return part // not base64url: nothing to count in
		}
		v += carry
		carry = 0
		for v < 0 {
			v += 64
			carry--
		}
		for v >= 64 {
			v -= 64
			carry++
		}
		b[i] = base64URL[v]
	}
	return string(b)
}
