// Package auth answers who a client is (DESIGN.md section 11): it
// verifies tokens (JWT), asks a proxy backend, and says which rooms an
// identity may join. It holds no connection state: the chat application
// asks it and keeps the answer.
package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"tether/actors/protocol"
	"tether/config"
)

// Identity is who an authenticated connection is: from a token's claims
// or a proxy backend's answer.
type Identity struct {
	// User is the user id (the sub claim), bound to the connection: the
	// admin API pushes to it.
	User string
	// Name and Avatar are what the connection's room events and whispers
	// show; the client cannot choose others. An empty Name shows User.
	Name, Avatar string
	// Rooms are glob patterns of the rooms the identity may join ('*'
	// matches any run of characters). nil: the claim is absent, and only
	// rooms anyone may join are open to it.
	Rooms []string
	// Expires is when the identity ends (the exp claim); zero: never.
	Expires time.Time
}

// Limits on what a token or a backend may say.
const (
	// MaxToken bounds a token's length in bytes.
	MaxToken = protocol.MaxToken
	// MaxRoomPatterns bounds the rooms claim.
	MaxRoomPatterns = 256
	// MaxRoomPattern bounds one pattern, in bytes.
	MaxRoomPattern = 128
)

// Errors of Verify, which the chat application turns into close reasons.
var (
	// ErrExpired: the token's exp has passed.
	ErrExpired = errors.New("token expired")
	// ErrInvalid: anything else wrong with a token (signature, algorithm,
	// format, claims).
	ErrInvalid = errors.New("invalid token")
)

// Verifier verifies tokens with one key. The key fixes the algorithm: an
// HMAC secret accepts HS256 only, an RSA key RS256 only, a P-256 key
// ES256 only. A token naming another algorithm ("none", or HS256 signed
// with the bytes of a public key) is refused before any signature check.
type Verifier struct {
	key    any // []byte, *rsa.PublicKey or *ecdsa.PublicKey
	parser *jwt.Parser
}

// NewVerifier reads the key of cfg (exactly one of the secret and the
// public key file is set: config.Validate checks it).
func NewVerifier(cfg config.JWT) (*Verifier, error) {
	if cfg.HMACSecret != "" {
		return newVerifier([]byte(cfg.HMACSecret), jwt.SigningMethodHS256.Alg()), nil
	}
	key, err := ReadPublicKey(cfg.PublicKeyFile)
	if err != nil {
		return nil, err
	}
	switch key.(type) {
	case *rsa.PublicKey:
		return newVerifier(key, jwt.SigningMethodRS256.Alg()), nil
	default:
		return newVerifier(key, jwt.SigningMethodES256.Alg()), nil
	}
}

func newVerifier(key any, alg string) *Verifier {
	// No leeway for exp: the connection's deadline is exp itself, so a
	// token accepted must still have time left.
	return &Verifier{key: key, parser: jwt.NewParser(jwt.WithValidMethods([]string{alg}))}
}

// ReadPublicKey reads a PEM public key (PKIX, or an RSA key in PKCS#1, or
// a certificate's key): RSA, or ECDSA on P-256.
func ReadPublicKey(file string) (any, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block", file)
	}
	var key any
	switch block.Type {
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = cert.PublicKey
		}
	default:
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("%s: an RSA key of %d bits; at least 2048", file, k.N.BitLen())
		}
		return k, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%s: an ECDSA key on %s; ES256 needs P-256", file, k.Curve.Params().Name)
		}
		return k, nil
	}
	return nil, fmt.Errorf("%s: a %T key; want RSA (RS256) or P-256 ECDSA (ES256)", file, key)
}

// claims are the token's claims tether reads.
type claims struct {
	jwt.RegisteredClaims
	Name   string   `json:"name,omitempty"`
	Avatar string   `json:"avatar,omitempty"`
	Rooms  []string `json:"rooms,omitempty"`
}

// Verify checks token's signature and claims and returns its identity.
// Its errors wrap ErrExpired or ErrInvalid with what was wrong.
func (v *Verifier) Verify(token string) (*Identity, error) {
	if len(token) > MaxToken {
		return nil, fmt.Errorf("%w: %d bytes; at most %d", ErrInvalid, len(token), MaxToken)
	}
	var c claims
	if _, err := v.parser.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return v.key, nil }); err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) {
			return nil, fmt.Errorf("%w: %v", ErrExpired, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	id := &Identity{User: c.Subject, Name: c.Name, Avatar: c.Avatar, Rooms: c.Rooms}
	if c.ExpiresAt != nil {
		id.Expires = c.ExpiresAt.Time
	}
	if err := id.Check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return id, nil
}

// Check returns an error when the identity says what tether cannot take:
// a user id that is not one (protocol.CheckUser: it becomes part of a
// subject), a name or avatar too long, too many or too long room
// patterns.
func (id *Identity) Check() error {
	if err := protocol.CheckUser(id.User); err != nil {
		return fmt.Errorf("sub: %v", err)
	}
	if len(id.Name) > protocol.MaxName || len(id.Avatar) > protocol.MaxAvatar {
		return fmt.Errorf("name is at most %d bytes, avatar %d", protocol.MaxName, protocol.MaxAvatar)
	}
	if len(id.Rooms) > MaxRoomPatterns {
		return fmt.Errorf("rooms holds %d patterns; at most %d", len(id.Rooms), MaxRoomPatterns)
	}
	for _, p := range id.Rooms {
		if p == "" || len(p) > MaxRoomPattern {
			return fmt.Errorf("rooms: a pattern of %d bytes; 1 to %d", len(p), MaxRoomPattern)
		}
	}
	return nil
}

// MayJoin says whether the identity's rooms claim lets it join room. open
// says whether the room's namespace lets anyone join: then an identity
// without the claim may, and one with it only where a pattern matches.
func (id *Identity) MayJoin(room string, open bool) bool {
	if id.Rooms == nil {
		return open
	}
	for _, p := range id.Rooms {
		if Match(p, room) {
			return true
		}
	}
	return false
}

// Match reports whether room matches pattern, where '*' matches any run
// of characters (none included) and everything else itself: "team:*"
// matches every room of the team namespace, "*" every room.
func Match(pattern, room string) bool {
	// The classic two-pointer wildcard match: linear in practice, with
	// one backtrack point (the last '*').
	p, r := 0, 0
	star, mark := -1, 0
	for r < len(room) {
		switch {
		case p < len(pattern) && pattern[p] != '*' && pattern[p] == room[r]:
			p++
			r++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, r
			p++
		case star >= 0:
			mark++
			p, r = star+1, mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// Mint signs a token for id with key, valid for ttl (0: no exp; a
// negative ttl makes a token expired already, for tests): an
// HMAC secret ([]byte) signs HS256, an RSA private key RS256, a P-256
// private key ES256. It is for `tether token` and for tests; a real
// deployment mints tokens in its own backend.
func Mint(key any, id *Identity, ttl time.Duration) (string, error) {
	var method jwt.SigningMethod
	switch k := key.(type) {
	case []byte:
		method = jwt.SigningMethodHS256
	case *rsa.PrivateKey:
		method = jwt.SigningMethodRS256
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return "", errors.New("ES256 needs a P-256 key")
		}
		method = jwt.SigningMethodES256
	default:
		return "", fmt.Errorf("cannot sign with a %T", key)
	}
	now := time.Now()
	c := claims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: id.User, IssuedAt: jwt.NewNumericDate(now)},
		Name:             id.Name, Avatar: id.Avatar, Rooms: id.Rooms,
	}
	if ttl != 0 {
		c.ExpiresAt = jwt.NewNumericDate(now.Add(ttl))
	}
	return jwt.NewWithClaims(method, c).SignedString(key)
}

// ReadPrivateKey reads a PEM private key for Mint: RSA or P-256 ECDSA
// (PKCS#1, SEC 1 or PKCS#8).
func ReadPrivateKey(file string) (any, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	if k, err := jwt.ParseRSAPrivateKeyFromPEM(data); err == nil {
		return k, nil
	}
	if k, err := jwt.ParseECPrivateKeyFromPEM(data); err == nil {
		return k, nil
	}
	return nil, fmt.Errorf("%s: not a PEM RSA or ECDSA private key", file)
}
