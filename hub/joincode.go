package hub

import (
	"crypto/rand"
	"strings"
)

// JoinCodeLength is the number of characters in an event's join code.
const JoinCodeLength = 6

// JoinCodeAlphabet is the 30 characters a join code is made of: the digits 2
// to 9 and the capital letters without I, L, O and U. The characters left out
// are easily read as another (0 and O, 1, I and L) or misread on a screen
// (U and V). Six characters give 30^6, about 729 million codes.
const JoinCodeAlphabet = "23456789ABCDEFGHJKMNPQRSTVWXYZ"

// joinCodeConfusable names, for each character a join code never contains,
// what the reader probably saw.
var joinCodeConfusable = map[rune]string{
	'0': "digit 0", 'O': "letter O", '1': "digit 1",
	'I': "letter I", 'L': "letter L", 'U': "letter U",
}

// NewJoinCode returns a random join code of JoinCodeLength characters from
// JoinCodeAlphabet, drawn from crypto/rand without bias. The caller checks it
// against codes in use.
func NewJoinCode() string {
	const alphabetSize = len(JoinCodeAlphabet)

	// Bytes at or above the largest multiple of 30 (240) are dropped, so every
	// character is equally likely.
	const limit = 256 / alphabetSize * alphabetSize

	code := make([]byte, 0, JoinCodeLength)
	var random [16]byte
	for len(code) < JoinCodeLength {
		_, _ = rand.Read(random[:]) // crypto/rand.Read never returns an error since Go 1.24.
		for _, b := range random {
			if int(b) < limit && len(code) < JoinCodeLength {
				code = append(code, JoinCodeAlphabet[int(b)%alphabetSize])
			}
		}
	}

	return string(code)
}

// NormalizeJoinCode returns s as a canonical join code: surrounding space
// trimmed, spaces and hyphens inside removed (people type "abc def" or
// "ABC-DEF"), and lower case raised to upper case. The error is an *Error
// with CodeInvalidMessage that names the value and what is wrong with it: the
// wrong length, a character that join codes never use (0, O, 1, I, L, U), or
// any other character outside JoinCodeAlphabet.
func NormalizeJoinCode(s string) (string, error) {
	cleaned := strings.Map(func(r rune) rune {
		if r == ' ' || r == '-' {
			return -1
		}

		return r
	}, strings.TrimSpace(s))
	code := strings.ToUpper(cleaned)

	if length := len([]rune(code)); length != JoinCodeLength {
		return "", Errorf(CodeInvalidMessage, "join code %s has %d characters; a join code has %d letters and digits", quote(s), length, JoinCodeLength)
	}

	for _, r := range code {
		if strings.ContainsRune(JoinCodeAlphabet, r) {
			continue
		}

		if name, ok := joinCodeConfusable[r]; ok {
			return "", Errorf(CodeInvalidMessage, "join code %s contains the %s, which join codes never use; check the code for a similar character (join codes use %s)", quote(s), name, JoinCodeAlphabet)
		}

		return "", Errorf(CodeInvalidMessage, "join code %s contains %q, which join codes never use; join codes use only %s", quote(s), r, JoinCodeAlphabet)
	}

	return code, nil
}
