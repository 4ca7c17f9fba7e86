package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"tether/config"
)

var secret = []byte("a-test-secret-of-at-least-32-bytes!")

func hsVerifier(t testing.TB) *Verifier {
	v, err := NewVerifier(config.JWT{HMACSecret: string(secret)})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, room string
		want          bool
	}{
		{"lobby", "lobby", true},
		{"lobby", "lobby2", false},
		{"team:*", "team:red", true},
		{"team:*", "team:", true},
		{"team:*", "teams:red", false},
		{"*", "anything:at/all", true},
		{"*:admin", "team:admin", true},
		{"*:admin", "team:admins", false},
		{"a*b*c", "aXbYbZc", true},
		{"a*b*c", "aXbYbZ", false},
		{"", "", true},
		{"", "x", false},
		{"**", "", true},
	} {
		if got := Match(tc.pattern, tc.room); got != tc.want {
			t.Errorf("Match(%q, %q) = %v; want %v", tc.pattern, tc.room, got, tc.want)
		}
	}
}

func TestMayJoin(t *testing.T) {
	open := &Identity{User: "u"}
	if !open.MayJoin("lobby", true) || open.MayJoin("vip:gold", false) {
		t.Fatal("without a rooms claim: every open room and no closed one")
	}
	claimed := &Identity{User: "u", Rooms: []string{"lobby", "vip:*"}}
	if !claimed.MayJoin("vip:gold", false) || !claimed.MayJoin("lobby", true) || claimed.MayJoin("other", true) {
		t.Fatal("with a rooms claim: exactly the rooms it names, open or not")
	}
}

// TestVerifyRoundTrip: what Mint signs, Verify reads back, for each
// algorithm a key can fix.
func TestVerifyRoundTrip(t *testing.T) {
	dir := t.TempDir()
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id := &Identity{User: "ann", Name: "Ann", Avatar: "a.png", Rooms: []string{"lobby", "team:*"}}
	for _, tc := range []struct {
		name    string
		sign    any
		public  any
		wantAlg string
	}{{"rs256", rsaKey, &rsaKey.PublicKey, "RS256"}, {"es256", ecKey, &ecKey.PublicKey, "ES256"}, {"hs256", secret, nil, "HS256"}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.JWT{HMACSecret: string(secret)}
			if tc.public != nil {
				der, _ := x509.MarshalPKIXPublicKey(tc.public)
				cfg = config.JWT{PublicKeyFile: filepath.Join(dir, tc.name+".pem")}
				if err := os.WriteFile(cfg.PublicKeyFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			v, err := NewVerifier(cfg)
			if err != nil {
				t.Fatal(err)
			}
			token, err := Mint(tc.sign, id, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if alg := tokenAlg(t, token); alg != tc.wantAlg {
				t.Fatalf("signed %s; want %s", alg, tc.wantAlg)
			}
			got, err := v.Verify(token)
			if err != nil {
				t.Fatal(err)
			}
			if got.User != id.User || got.Name != id.Name || got.Avatar != id.Avatar || !slices.Equal(got.Rooms, id.Rooms) ||
				time.Until(got.Expires) < 59*time.Minute {
				t.Fatalf("read back %+v; want %+v expiring in an hour", got, id)
			}
		})
	}
}

func TestVerifyRefuses(t *testing.T) {
	v := hsVerifier(t)
	expired, _ := Mint(secret, &Identity{User: "ann"}, -time.Second)
	if _, err := v.Verify(expired); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired: %v; want ErrExpired", err)
	}
	for name, token := range map[string]string{
		"too long":      strings.Repeat("a", MaxToken+1),
		"bad sub":       mustMint(t, &Identity{User: "a.b"}),
		"long name":     mustMint(t, &Identity{User: "ann", Name: strings.Repeat("n", 65)}),
		"empty pattern": mustMint(t, &Identity{User: "ann", Rooms: []string{""}}),
	} {
		if _, err := v.Verify(token); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v; want ErrInvalid", name, err)
		}
	}
}

func mustMint(t testing.TB, id *Identity) string {
	token, err := Mint(secret, id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return token
}

func tokenAlg(t testing.TB, token string) string {
	head, _, _ := strings.Cut(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		t.Fatal(err)
	}
	var h struct{ Alg string }
	_ = json.Unmarshal(raw, &h)
	return h.Alg
}

// FuzzVerify: whatever a client sends as a token, Verify neither panics
// nor takes anything but an HS256 token whose signature is ours, with
// claims tether can use.
func FuzzVerify(f *testing.F) {
	v := hsVerifier(f)
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "x"}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	expired, _ := Mint(secret, &Identity{User: "ann"}, -time.Minute)
	for _, seed := range []string{mustMint(f, &Identity{User: "ann", Rooms: []string{"lobby"}}), none, expired, "", "a.b.c", "e30.e30.", "eyJhbGciOiJIUzI1NiJ9..."} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, token string) {
		id, err := v.Verify(token)
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrExpired) {
				t.Fatalf("an error that is neither invalid nor expired: %v", err)
			}
			return
		}
		if err := id.Check(); err != nil {
			t.Fatalf("took an identity tether cannot use: %v", err)
		}
		if alg := tokenAlg(t, token); alg != "HS256" {
			t.Fatalf("took a token signed %s", alg)
		}
		parts := strings.Split(token, ".")
		sig, err := base64.RawURLEncoding.DecodeString(parts[2])
		if err != nil || jwt.SigningMethodHS256.Verify(parts[0]+"."+parts[1], sig, secret) != nil {
			t.Fatalf("took a token whose signature is not ours: %q", token)
		}
	})
}

// FuzzClaims: whatever claims a token carries (a token minted by a
// backend we trust, but with any content), Verify either refuses them or
// reads back exactly what was signed, and the rooms match only what
// their patterns say.
func FuzzClaims(f *testing.F) {
	v := hsVerifier(f)
	f.Add("ann", "Ann", "lobby,team:*", "team:red")
	f.Add("a.b", "", "", "x")
	f.Add("u", strings.Repeat("n", 70), "*", "")
	f.Fuzz(func(t *testing.T, user, name, rooms, room string) {
		if !utf8.ValidString(user) || !utf8.ValidString(name) || !utf8.ValidString(rooms) {
			t.Skip("JSON carries UTF-8 only: a signer's invalid bytes become U+FFFD")
		}
		id := &Identity{User: user, Name: name}
		if rooms != "" {
			id.Rooms = strings.Split(rooms, ",")
		}
		token, err := Mint(secret, id, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		got, err := v.Verify(token)
		if err != nil {
			if id.Check() == nil {
				t.Fatalf("refused valid claims %+v: %v", id, err)
			}
			return
		}
		if got.User != user || got.Name != name || !slices.Equal(got.Rooms, id.Rooms) {
			t.Fatalf("read back %+v; signed %+v", got, id)
		}
		want := false
		for _, p := range id.Rooms {
			want = want || Match(p, room)
		}
		if got.MayJoin(room, false) != want {
			t.Fatalf("MayJoin(%q) with %q = %v", room, id.Rooms, !want)
		}
	})
}

// BenchmarkVerify is what a token costs a connect on top of the upgrade
// (the connect benchmark, `tether bench connect`, measures the whole).
func BenchmarkVerify(b *testing.B) {
	v := hsVerifier(b)
	token := mustMint(b, &Identity{User: "user-1234", Name: "Ann", Rooms: []string{"lobby", "team:*"}})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(token); err != nil {
			b.Fatal(err)
		}
	}
}
