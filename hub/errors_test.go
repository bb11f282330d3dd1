package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestCodeHTTPStatus(t *testing.T) {
	t.Parallel()

	want := map[Code]int{
		CodeInvalidMessage: 400,
		CodeUnknownOption:  400,
		CodeTooLarge:       413,
		CodeUnknownEvent:   404,
		CodeUnknownPoll:    404,
		CodePollNotOpen:    409,
		CodePollClosed:     409,
		CodeAlreadyVoted:   409,
		CodeInvalidSession: 401,
		CodeUnauthorized:   401,
		CodeRateLimited:    429,
		CodeOverloaded:     503,
	}

	if len(Codes()) != len(want) {
		t.Errorf("Codes() lists %d codes, want %d", len(Codes()), len(want))
	}
	for _, code := range Codes() {
		status, ok := want[code]
		if !ok {
			t.Errorf("Codes() lists unexpected code %q", code)
			continue
		}
		if got := code.HTTPStatus(); got != status {
			t.Errorf("%s.HTTPStatus() = %d, want %d", code, got, status)
		}
	}

	if got := Code("no_such_code").HTTPStatus(); got != http.StatusInternalServerError {
		t.Errorf("unknown code HTTPStatus() = %d, want 500", got)
	}
}

func TestErrorJSON(t *testing.T) {
	t.Parallel()

	wire := Errorf(CodeRateLimited, "slow down %s", "voter").WithRetryAfter(3 * time.Second)
	encoded, err := json.Marshal(wire)
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}

	want := `{"code":"rate_limited","message":"slow down voter","retry_after_ms":3000}`
	if string(encoded) != want {
		t.Errorf("JSON = %s, want %s", encoded, want)
	}

	// The wire envelope nests the error by value too.
	envelope, err := json.Marshal(map[string]Error{"error": *wire})
	if err != nil {
		t.Fatalf("json.Marshal envelope: %v", err)
	}
	if string(envelope) != `{"error":`+want+`}` {
		t.Errorf("envelope JSON = %s", envelope)
	}

	var decoded Error
	if err := json.Unmarshal(encoded, &decoded); err != nil {
		t.Fatalf("json.Unmarshal: %v", err)
	}
	if decoded.Code != CodeRateLimited || decoded.Message != "slow down voter" {
		t.Errorf("decoded = %+v", decoded)
	}
}

func TestErrorMatching(t *testing.T) {
	t.Parallel()

	closed := Errorf(CodePollClosed, "poll %s is closed", "p1")
	wrapped := fmt.Errorf("vote: %w", closed)

	if !errors.Is(wrapped, ErrPollClosed) {
		t.Error("errors.Is(wrapped poll_closed, ErrPollClosed) = false")
	}
	if errors.Is(wrapped, ErrPollNotOpen) {
		t.Error("errors.Is(wrapped poll_closed, ErrPollNotOpen) = true")
	}
	if got := AsError(wrapped); got != closed {
		t.Errorf("AsError(wrapped) = %v, want the original error", got)
	}
	if got := AsError(errors.New("plain")); got != nil {
		t.Errorf("AsError(plain error) = %v, want nil", got)
	}
	if got := AsError(nil); got != nil {
		t.Errorf("AsError(nil) = %v, want nil", got)
	}

	if got := closed.Error(); got != `poll_closed: poll p1 is closed` {
		t.Errorf("Error() = %q", got)
	}

	retry := closed.WithRetryAfter(time.Second)
	if closed.RetryAfter != 0 || retry.RetryAfter != time.Second || retry.Code != closed.Code {
		t.Errorf("WithRetryAfter changed the original or lost the code: %+v, %+v", closed, retry)
	}
}

func TestQuoteCutsLongValues(t *testing.T) {
	t.Parallel()

	if got := quote("short"); got != `"short"` {
		t.Errorf("quote(short) = %s", got)
	}

	exact := strings.Repeat("é", maxQuotedRunes)
	if got := quote(exact); got != `"`+exact+`"` {
		t.Errorf("quote of %d runes was cut: %s", maxQuotedRunes, got)
	}

	long := strings.Repeat("é", maxQuotedRunes+1)
	if got := quote(long); got != `"`+exact+`"...` {
		t.Errorf("quote of %d runes = %s, want the first %d and ...", maxQuotedRunes+1, got, maxQuotedRunes)
	}
}
