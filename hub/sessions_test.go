package hub

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
)

// fuzzSessionKey is the fixed key of FuzzVerifySession, so the seed corpus in
// testdata holds tokens that verify.
var fuzzSessionKey = bytes.Repeat([]byte("k"), MinSessionKeyBytes)

func mustSessions(t testing.TB, key []byte) *Sessions {
	t.Helper()

	sessions, err := NewSessions(key)
	if err != nil {
		t.Fatalf("NewSessions: %v", err)
	}

	return sessions
}

func TestNewSessionsRejectsShortKey(t *testing.T) {
	t.Parallel()

	for _, key := range [][]byte{nil, make([]byte, MinSessionKeyBytes-1)} {
		sessions, err := NewSessions(key)
		if !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("NewSessions(%d-byte key) error = %v, want ErrInvalidConfig", len(key), err)
		}
		if sessions != nil {
			t.Errorf("NewSessions(%d-byte key) returned a signer", len(key))
		}
	}
}

func TestSessionRoundTrip(t *testing.T) {
	t.Parallel()

	sessions := mustSessions(t, NewRandomKey())
	id, token := sessions.New()

	parsed, err := uuid.Parse(id)
	if err != nil {
		t.Fatalf("session id %q is not a UUID: %v", id, err)
	}
	if parsed.Version() != 4 {
		t.Errorf("session id %q has UUID version %d, want 4", id, parsed.Version())
	}
	if len(token) != SessionTokenLength {
		t.Errorf("token length = %d, want %d", len(token), SessionTokenLength)
	}
	if strings.Contains(token, id) {
		t.Errorf("token %q contains the id in text form", token)
	}

	got, err := sessions.Verify(token)
	if err != nil {
		t.Fatalf("Verify(fresh token): %v", err)
	}
	if got != id {
		t.Errorf("Verify returned id %q, want %q", got, id)
	}
}

func TestSessionIDsUnique(t *testing.T) {
	t.Parallel()

	sessions := mustSessions(t, NewRandomKey())
	seen := make(map[string]bool)

	for range 1000 {
		id, token := sessions.New()
		if seen[id] || seen[token] {
			t.Fatalf("New returned a repeated id or token: %s", id)
		}
		seen[id] = true
		seen[token] = true
	}
}

func TestSessionVerifyRejects(t *testing.T) {
	t.Parallel()

	sessions := mustSessions(t, NewRandomKey())
	other := mustSessions(t, NewRandomKey())
	_, token := sessions.New()
	_, foreign := other.New()

	flipped := []byte(token)
	flipped[5] ^= 0x01
	tagFlipped := []byte(token)
	if tagFlipped[30] == 'A' {
		tagFlipped[30] = 'B'
	} else {
		tagFlipped[30] = 'A'
	}

	// The last character carries 4 data bits and 2 unused bits, so lenient
	// decoding accepts a second spelling of the same bytes; Verify must not.
	lastIndex := strings.Index(base64Alphabet, token[SessionTokenLength-1:])
	malleable := token[:SessionTokenLength-1] + string(base64Alphabet[lastIndex^0x01])

	cases := map[string]string{
		"empty":             "",
		"truncated":         token[:SessionTokenLength-1],
		"extended":          token + "A",
		"id bit flipped":    string(flipped),
		"tag changed":       string(tagFlipped),
		"other key":         foreign,
		"padding bits set":  malleable,
		"standard alphabet": strings.Repeat("+", SessionTokenLength),
		"with newline":      token[:20] + "\n" + token[21:],
		"uuid text":         uuid.NewString(),
		"non-ascii":         strings.Repeat("é", 21) + "A",
		"all zero bytes":    strings.Repeat("A", SessionTokenLength),
	}

	for name, bad := range cases {
		id, err := sessions.Verify(bad)
		if !errors.Is(err, ErrInvalidSession) {
			t.Errorf("%s: Verify error = %v, want invalid_session", name, err)
		}
		if id != "" {
			t.Errorf("%s: Verify returned id %q with an error", name, id)
		}
	}
}

// base64Alphabet is the base64url alphabet in value order.
const base64Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

func TestSessionsConcurrent(t *testing.T) {
	t.Parallel()

	sessions := mustSessions(t, NewRandomKey())
	var wg sync.WaitGroup
	errs := make(chan error, 8)

	for range 8 {
		wg.Go(func() {
			for range 200 {
				id, token := sessions.New()
				got, err := sessions.Verify(token)
				if err != nil || got != id {
					errs <- errors.New("Verify(" + token + ") = " + got + ", want " + id)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)

	for err := range errs {
		t.Error(err)
	}
}

func TestSecretTokenHashing(t *testing.T) {
	t.Parallel()

	token := NewSecretToken()
	if len(token) != 43 {
		t.Errorf("NewSecretToken length = %d, want 43", len(token))
	}
	if token == NewSecretToken() {
		t.Error("NewSecretToken returned the same token twice")
	}

	hash := HashToken(token)
	if len(hash) != 64 {
		t.Errorf("HashToken length = %d, want 64", len(hash))
	}
	if strings.Contains(hash, token) {
		t.Error("HashToken output contains the token")
	}

	if !TokenMatches(hash, token) {
		t.Error("TokenMatches(hash, token) = false for the token's own hash")
	}
	if TokenMatches(hash, token+"x") {
		t.Error("TokenMatches accepted a different token")
	}
	if TokenMatches(hash, "") {
		t.Error("TokenMatches accepted an empty token")
	}
	if TokenMatches("", token) {
		t.Error("TokenMatches accepted an empty hash")
	}
	if TokenMatches(strings.ToUpper(hash), token) {
		t.Error("TokenMatches accepted an upper-case hash, want the stored lowercase form only")
	}
}

// FuzzVerifySession checks that Verify never panics and accepts only the one
// canonical token of each session id.
func FuzzVerifySession(f *testing.F) {
	sessions := mustSessions(f, fuzzSessionKey)
	_, token := sessions.New()
	f.Add(token)
	f.Add("")
	f.Add(strings.Repeat("A", SessionTokenLength))

	f.Fuzz(func(t *testing.T, token string) {
		id, err := sessions.Verify(token)
		if err != nil {
			if !errors.Is(err, ErrInvalidSession) {
				t.Fatalf("Verify(%q) error = %v, want invalid_session", token, err)
			}
			if id != "" {
				t.Fatalf("Verify(%q) returned id %q with an error", token, id)
			}
			return
		}

		parsed, parseErr := uuid.Parse(id)
		if parseErr != nil {
			t.Fatalf("Verify(%q) returned id %q that is not a UUID", token, id)
		}
		if canonical := sessions.sign(parsed); canonical != token {
			t.Fatalf("Verify accepted %q, but the token of id %s is %q", token, id, canonical)
		}
	})
}

func TestSessionTokenGolden(t *testing.T) {
	t.Parallel()

	// Tokens live on phones across restarts and releases, so the format of a
	// known id under a known key must not change.
	const (
		id    = "6f1c2a4e-8b3d-4c5a-9e7f-0a1b2c3d4e5f"
		token = "bxwqTos9TFqefwobLD1OX4UxCsCfOTbxtCaKJP4flgg"
	)
	sessions := mustSessions(t, fuzzSessionKey)

	if got := sessions.sign(uuid.MustParse(id)); got != token {
		t.Errorf("sign(%s) = %q, want %q", id, got, token)
	}

	got, err := sessions.Verify(token)
	if err != nil {
		t.Fatalf("Verify(golden token): %v", err)
	}
	if got != id {
		t.Errorf("Verify(golden token) = %q, want %q", got, id)
	}
}
