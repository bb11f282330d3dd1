package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Code is a stable, machine-readable wire error code. Clients branch on the
// code, while the message beside it is for people and may change.
type Code string

// The wire error codes. [Code.HTTPStatus] gives the HTTP status of each.
const (
	// CodeInvalidMessage rejects a request or frame whose shape or values are
	// invalid (400).
	CodeInvalidMessage Code = "invalid_message"
	// CodeUnknownOption rejects a vote for an option the poll does not have (400).
	CodeUnknownOption Code = "unknown_option"
	// CodeTooLarge rejects a body or frame over the size limit (413).
	CodeTooLarge Code = "too_large"
	// CodeUnknownEvent reports that no event has the given join code or id (404).
	CodeUnknownEvent Code = "unknown_event"
	// CodeUnknownPoll reports that no poll has the given id (404).
	CodeUnknownPoll Code = "unknown_poll"
	// CodePollNotOpen rejects a vote for a poll that is still a draft (409).
	CodePollNotOpen Code = "poll_not_open"
	// CodePollClosed rejects a vote for, or the reopening of, a closed poll (409).
	CodePollClosed Code = "poll_closed"
	// CodeAlreadyVoted rejects a second vote by a voter on a poll that does not
	// allow changes (409).
	CodeAlreadyVoted Code = "already_voted"
	// CodeInvalidSession rejects a missing, malformed or forged voter session (401).
	CodeInvalidSession Code = "invalid_session"
	// CodeUnauthorized rejects a presenter request without the event's token (401).
	CodeUnauthorized Code = "unauthorized"
	// CodeRateLimited rejects a request over the caller's rate. The response
	// carries a Retry-After header (429).
	CodeRateLimited Code = "rate_limited"
	// CodeOverloaded rejects work the server cannot take now, such as a failed
	// append. The client retries with the same vote id after Retry-After (503).
	CodeOverloaded Code = "overloaded"
)

// codeStatus is the single table of wire codes and their HTTP statuses.
var codeStatus = map[Code]int{
	CodeInvalidMessage: http.StatusBadRequest,
	CodeUnknownOption:  http.StatusBadRequest,
	CodeTooLarge:       http.StatusRequestEntityTooLarge,
	CodeUnknownEvent:   http.StatusNotFound,
	CodeUnknownPoll:    http.StatusNotFound,
	CodePollNotOpen:    http.StatusConflict,
	CodePollClosed:     http.StatusConflict,
	CodeAlreadyVoted:   http.StatusConflict,
	CodeInvalidSession: http.StatusUnauthorized,
	CodeUnauthorized:   http.StatusUnauthorized,
	CodeRateLimited:    http.StatusTooManyRequests,
	CodeOverloaded:     http.StatusServiceUnavailable,
}

// Sentinel errors, one per code, for errors.Is. An [*Error] matches a sentinel
// when the codes are equal, whatever the messages.
var (
	ErrInvalidMessage = &Error{Code: CodeInvalidMessage, Message: "invalid message"}
	ErrUnknownOption  = &Error{Code: CodeUnknownOption, Message: "unknown option"}
	ErrTooLarge       = &Error{Code: CodeTooLarge, Message: "message too large"}
	ErrUnknownEvent   = &Error{Code: CodeUnknownEvent, Message: "event not found"}
	ErrUnknownPoll    = &Error{Code: CodeUnknownPoll, Message: "poll not found"}
	ErrPollNotOpen    = &Error{Code: CodePollNotOpen, Message: "poll is not open"}
	ErrPollClosed     = &Error{Code: CodePollClosed, Message: "poll is closed"}
	ErrAlreadyVoted   = &Error{Code: CodeAlreadyVoted, Message: "already voted"}
	ErrInvalidSession = &Error{Code: CodeInvalidSession, Message: "invalid session"}
	ErrUnauthorized   = &Error{Code: CodeUnauthorized, Message: "unauthorized"}
	ErrRateLimited    = &Error{Code: CodeRateLimited, Message: "rate limited"}
	ErrOverloaded     = &Error{Code: CodeOverloaded, Message: "overloaded"}
)

// ErrInvalidConfig reports a constructor argument out of its documented range,
// such as a short key or salt. It is a setup error, never sent to a client.
var ErrInvalidConfig = errors.New("hub: invalid configuration")

// Codes returns every wire error code, in the order of the table above.
func Codes() []Code {
	return []Code{
		CodeInvalidMessage, CodeUnknownOption, CodeTooLarge,
		CodeUnknownEvent, CodeUnknownPoll,
		CodePollNotOpen, CodePollClosed, CodeAlreadyVoted,
		CodeInvalidSession, CodeUnauthorized,
		CodeRateLimited, CodeOverloaded,
	}
}

// HTTPStatus returns the HTTP status of a response to an error with this
// code, or 500 Internal Server Error for a code outside the table.
func (c Code) HTTPStatus() int {
	status, ok := codeStatus[c]
	if !ok {
		return http.StatusInternalServerError
	}

	return status
}

// Error is a failure that is sent to a client: a stable code and a message that
// names the bad value and the fix.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`

	// RetryAfter is how long the client should wait before retrying, for
	// CodeRateLimited and CodeOverloaded. Zero means no hint. Transport sends it
	// as the Retry-After header, and it is not part of the JSON form.
	RetryAfter time.Duration `json:"-"`
}

// Errorf returns an error with the code and a message formatted as by fmt.Sprintf.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Error returns the code and the message, such as
// `poll_closed: poll "p1" is closed`.
func (e *Error) Error() string {
	if e == nil {
		return "<nil>"
	}

	return string(e.Code) + ": " + e.Message
}

// Is reports whether target is an *Error with the same code, so that
// errors.Is(err, ErrPollClosed) holds for every poll_closed error.
func (e *Error) Is(target error) bool {
	other, ok := target.(*Error)
	if !ok || e == nil || other == nil {
		return false
	}

	return e.Code == other.Code
}

// WithRetryAfter returns a copy of the error that carries the retry hint d.
func (e *Error) WithRetryAfter(d time.Duration) *Error {
	copied := *e
	copied.RetryAfter = d

	return &copied
}

// MarshalJSON encodes the error as {"code":"...","message":"..."}, the object
// that the wire contract nests under "error". An error with a retry hint also
// carries "retry_after_ms", so WebSocket clients, which see no Retry-After
// header, get it as a number too.
func (e Error) MarshalJSON() ([]byte, error) {
	var retryAfterMs int64
	if e.RetryAfter > 0 {
		retryAfterMs = max(e.RetryAfter.Milliseconds(), 1)
	}
	return json.Marshal(struct {
		Code         Code   `json:"code"`
		Message      string `json:"message"`
		RetryAfterMs int64  `json:"retry_after_ms,omitempty"`
	}{e.Code, e.Message, retryAfterMs})
}

// AsError returns the *Error in err's chain, or nil when err carries none. A
// nil result means an internal failure, and the caller decides how to
// respond, usually with CodeOverloaded or a plain 500.
func AsError(err error) *Error {
	var wire *Error
	if errors.As(err, &wire) {
		return wire
	}

	return nil
}

// maxQuotedRunes bounds how much of a client-supplied value an error message
// repeats, so a huge value cannot inflate the response.
const maxQuotedRunes = 64

// quote returns s as a Go-quoted string, cut to maxQuotedRunes runes with "..."
// appended when longer.
func quote(s string) string {
	count := 0
	for i := range s {
		if count == maxQuotedRunes {
			return fmt.Sprintf("%q...", s[:i])
		}
		count++
	}

	return fmt.Sprintf("%q", s)
}
