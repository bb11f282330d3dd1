package hub

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"sync"

	"github.com/google/uuid"
)

// Session token layout: base64url without padding of the 16 raw bytes of the
// session's UUID followed by the first sessionTagBytes bytes of
// HMAC-SHA256(key, sessionDomain || UUID bytes).
const (
	// MinSessionKeyBytes is the shortest session signing key accepted.
	MinSessionKeyBytes = 32
	// SessionTokenLength is the length of every session token, in characters.
	SessionTokenLength = 43

	sessionTagBytes = 16
	sessionRawBytes = 16 + sessionTagBytes
)

// sessionDomain separates session tags from any other HMAC made with the same key.
var sessionDomain = []byte("livevote session v1\x00")

var sessionEncoding = base64.RawURLEncoding.Strict()

// Sessions issues and verifies signed, opaque voter sessions. A session id is
// a random UUID. Its token carries the id and a 128-bit HMAC-SHA256 tag, so the
// server keeps no per-session state and a client without the key can neither
// forge a token nor pick an id. Sessions is safe for concurrent use.
type Sessions struct {
	macs sync.Pool // of hash.Hash, HMAC-SHA256 keyed with the signing key
}

// NewSessions returns a session signer keyed by key, which must be at least
// MinSessionKeyBytes secret random bytes (NewRandomKey makes one). Tokens stay
// valid as long as the key does, so the key belongs in stored state. The error
// wraps ErrInvalidConfig and names the key length.
func NewSessions(key []byte) (*Sessions, error) {
	if len(key) < MinSessionKeyBytes {
		return nil, fmt.Errorf("%w: session key is %d bytes; use at least %d random bytes", ErrInvalidConfig, len(key), MinSessionKeyBytes)
	}

	keyCopy := append([]byte(nil), key...)
	sessions := &Sessions{}
	sessions.macs.New = func() any {
		return hmac.New(sha256.New, keyCopy)
	}

	return sessions, nil
}

// New returns a fresh session: its id, a random version 4 UUID in canonical
// text form, and the token that the client presents to prove it.
func (s *Sessions) New() (id string, token string) {
	raw := uuid.New()

	return raw.String(), s.sign(raw)
}

// Verify returns the session id that token carries. Any token that is not
// exactly one New would issue for that id under this key, whether malformed,
// truncated, tampered with or signed with another key, gets an *Error with
// CodeInvalidSession. The tag is compared in constant time.
func (s *Sessions) Verify(token string) (id string, err error) {
	if len(token) != SessionTokenLength {
		return "", Errorf(CodeInvalidSession, "session token has %d characters, want %d; request a new session with POST /api/sessions", len(token), SessionTokenLength)
	}

	var raw [sessionRawBytes]byte
	n, decodeErr := sessionEncoding.Decode(raw[:], []byte(token))
	if decodeErr != nil || n != sessionRawBytes {
		return "", Errorf(CodeInvalidSession, "session token is not valid base64url; request a new session with POST /api/sessions")
	}

	var sessionID uuid.UUID
	copy(sessionID[:], raw[:16])
	tag := s.tag(sessionID)
	if subtle.ConstantTimeCompare(tag[:], raw[16:]) != 1 {
		return "", Errorf(CodeInvalidSession, "session token signature does not match; request a new session with POST /api/sessions")
	}

	return sessionID.String(), nil
}

// sign returns the token of the session id.
func (s *Sessions) sign(id uuid.UUID) string {
	var raw [sessionRawBytes]byte
	copy(raw[:16], id[:])
	tag := s.tag(id)
	copy(raw[16:], tag[:])

	return sessionEncoding.EncodeToString(raw[:])
}

// tag returns the truncated HMAC of the session id.
func (s *Sessions) tag(id uuid.UUID) [sessionTagBytes]byte {
	mac := s.macs.Get().(hash.Hash)
	mac.Reset()
	mac.Write(sessionDomain)
	mac.Write(id[:])

	var sum [sha256.Size]byte
	mac.Sum(sum[:0])
	s.macs.Put(mac)

	var tag [sessionTagBytes]byte
	copy(tag[:], sum[:sessionTagBytes])

	return tag
}

// SecretKeyBytes is the size of a key from NewRandomKey and of the random part
// of a token from NewSecretToken.
const SecretKeyBytes = 32

// NewRandomKey returns SecretKeyBytes bytes from crypto/rand, long enough for
// a session signing key or a ring salt.
func NewRandomKey() []byte {
	key := make([]byte, SecretKeyBytes)
	_, _ = rand.Read(key) // crypto/rand.Read never returns an error since Go 1.24.

	return key
}

// NewSecretToken returns a presenter token: SecretKeyBytes random bytes as
// base64url without padding (43 characters). Store only HashToken of it.
func NewSecretToken() string {
	return base64.RawURLEncoding.EncodeToString(NewRandomKey())
}

// HashToken returns the SHA-256 of token in lowercase hex (64 characters), the
// form in which presenter tokens are stored.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))

	return hex.EncodeToString(sum[:])
}

// TokenMatches reports whether token hashes to hash, comparing in constant
// time. An empty token or hash never matches.
func TokenMatches(hash, token string) bool {
	if hash == "" || token == "" {
		return false
	}

	return subtle.ConstantTimeCompare([]byte(HashToken(token)), []byte(hash)) == 1
}
