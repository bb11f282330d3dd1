package hub

import (
	"errors"
	"strings"
	"testing"
)

func TestJoinCodeAlphabet(t *testing.T) {
	t.Parallel()

	if len(JoinCodeAlphabet) != 30 {
		t.Errorf("alphabet has %d characters, want 30", len(JoinCodeAlphabet))
	}

	for _, excluded := range "0O1ILU" {
		if strings.ContainsRune(JoinCodeAlphabet, excluded) {
			t.Errorf("alphabet contains %q", excluded)
		}
	}

	seen := make(map[rune]bool)
	for _, r := range JoinCodeAlphabet {
		if seen[r] {
			t.Errorf("alphabet repeats %q", r)
		}
		seen[r] = true
	}
}

func TestNewJoinCode(t *testing.T) {
	t.Parallel()

	const codes = 3000
	seen := make(map[string]bool)
	counts := make(map[rune]int)

	for range codes {
		code := NewJoinCode()
		if len(code) != JoinCodeLength {
			t.Fatalf("NewJoinCode() = %q, want %d characters", code, JoinCodeLength)
		}

		normalized, err := NormalizeJoinCode(code)
		if err != nil {
			t.Fatalf("NormalizeJoinCode(NewJoinCode() = %q): %v", code, err)
		}
		if normalized != code {
			t.Fatalf("NormalizeJoinCode(%q) = %q, want it unchanged", code, normalized)
		}

		seen[code] = true
		for _, r := range code {
			counts[r]++
		}
	}

	// 3000 draws from 729 million codes repeat with probability below 1%.
	if len(seen) < codes-1 {
		t.Errorf("%d distinct codes out of %d", len(seen), codes)
	}

	// 18,000 characters give each of 30 characters 600 on average (standard
	// deviation about 24); every character must occur, none far too often.
	for _, r := range JoinCodeAlphabet {
		if counts[r] < 450 || counts[r] > 750 {
			t.Errorf("character %q occurs %d times in 18000, want about 600", r, counts[r])
		}
	}
}

func TestNormalizeJoinCode(t *testing.T) {
	t.Parallel()

	valid := map[string]string{
		"ABC234":      "ABC234",
		"abc234":      "ABC234",
		"  xyz789 \n": "XYZ789",
		"abc-234":     "ABC234",
		"ABC 234":     "ABC234",
		"\tAbC2 3-4":  "ABC234",
	}
	for input, want := range valid {
		got, err := NormalizeJoinCode(input)
		if err != nil {
			t.Errorf("NormalizeJoinCode(%q): %v", input, err)
			continue
		}
		if got != want {
			t.Errorf("NormalizeJoinCode(%q) = %q, want %q", input, got, want)
		}
	}

	invalid := map[string]string{
		"":          "0 characters",
		"ABC23":     "5 characters",
		"ABC2345":   "7 characters",
		"ABC0EF":    "digit 0",
		"abcoef":    "letter O",
		"ABC1EF":    "digit 1",
		"ABCIEF":    "letter I",
		"abclef":    "letter L",
		"ABCUEF":    "letter U",
		"ABC#EF":    `'#'`,
		"ABCÉEF":    `'É'`,
		"ABC\x00EF": `'\x00'`,
		"ABC\xffEF": `'�'`,
	}
	for input, want := range invalid {
		got, err := NormalizeJoinCode(input)
		if !errors.Is(err, ErrInvalidMessage) {
			t.Errorf("NormalizeJoinCode(%q) = %q, %v; want invalid_message", input, got, err)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("NormalizeJoinCode(%q) error %q does not mention %s", input, err, want)
		}
	}
}

func TestNormalizeJoinCodeLongInput(t *testing.T) {
	t.Parallel()

	_, err := NormalizeJoinCode(strings.Repeat("A", 10_000))
	if !errors.Is(err, ErrInvalidMessage) {
		t.Fatalf("error = %v, want invalid_message", err)
	}
	if len(err.Error()) > 300 {
		t.Errorf("error message is %d bytes for a 10,000-byte code, want it cut short", len(err.Error()))
	}
}
