package hub

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits on events and polls. Lengths count Unicode code points after
// surrounding white space is trimmed. Text must be valid UTF-8 without control
// characters (Unicode category Cc, which includes tab and line breaks).
const (
	// MaxTitleLength is the maximum length of an event title, in characters.
	// A title has at least 1 character.
	MaxTitleLength = 200
	// MaxQuestionLength is the maximum length of a poll question, in
	// characters. A question has at least 1 character.
	MaxQuestionLength = 300
	// MinPollOptions is the minimum number of options in a poll.
	MinPollOptions = 2
	// MaxPollOptions is the maximum number of options in a poll. Option ids
	// are "o1" to "o10" in the order given.
	MaxPollOptions = 10
	// MaxOptionLabelLength is the maximum length of an option label, in
	// characters. A label has at least 1 character, and labels of one poll
	// differ from each other ignoring case.
	MaxOptionLabelLength = 100
	// MaxPollsPerEvent is the maximum number of polls in one event.
	MaxPollsPerEvent = 100
)

// PollKind is the number of options a voter picks: one, or one or more.
type PollKind string

// Poll kinds.
const (
	// PollSingle polls take exactly one option per vote. An empty kind in
	// NewPoll means PollSingle.
	PollSingle PollKind = "single"
	// PollMultiple polls take one or more distinct options per vote.
	PollMultiple PollKind = "multiple"
)

// PollState is a poll's place in its life: draft, then open, then closed.
type PollState string

// Poll states.
const (
	// PollDraft polls are visible but take no votes.
	PollDraft PollState = "draft"
	// PollOpen polls take votes.
	PollOpen PollState = "open"
	// PollClosed polls take no more votes and cannot be opened again.
	PollClosed PollState = "closed"
)

// Option is one choice of a poll.
type Option struct {
	ID    string `json:"id"`
	Label string `json:"label"`
}

// Poll is a question with options, owned by an event.
type Poll struct {
	ID          string   `json:"id"`
	Event       string   `json:"event"`
	Question    string   `json:"question"`
	Options     []Option `json:"options"`
	Kind        PollKind `json:"kind"`
	AllowChange bool     `json:"allow_change"`
	// ResultsVisible reports whether audience sockets and the public results
	// endpoint get the poll's results. While it is false, results documents
	// go only to presenters.
	ResultsVisible bool       `json:"results_visible"`
	State          PollState  `json:"state"`
	CreatedAt      time.Time  `json:"created_at"`
	OpenedAt       *time.Time `json:"opened_at,omitempty"`
	ClosedAt       *time.Time `json:"closed_at,omitempty"`
}

// Event is a session of polls that an audience joins with its join code.
type Event struct {
	ID        string    `json:"id"`
	Code      string    `json:"code"`
	Title     string    `json:"title"`
	CreatedAt time.Time `json:"created_at"`

	// Polls lists the event's polls in creation order. It is filled in the
	// copies that Registry returns, never nil there.
	Polls []Poll `json:"polls"`
}

// NewPoll is a request to create a poll.
type NewPoll struct {
	Question    string   `json:"question"`
	Options     []string `json:"options"`
	Kind        PollKind `json:"kind"`
	AllowChange bool     `json:"allow_change"`
	// ResultsVisible sets whether the audience sees the results from the
	// start. Nil means true: results are shown unless the presenter hides them.
	ResultsVisible *bool `json:"results_visible,omitempty"`
}

// validateText returns s trimmed of surrounding white space, or an *Error with
// CodeInvalidMessage that names the field, the value and the limit when s is
// not valid UTF-8, is empty, is longer than maxLength characters or contains a
// control character.
func validateText(field, s string, maxLength int) (string, error) {
	if !utf8.ValidString(s) {
		return "", Errorf(CodeInvalidMessage, "%s %s is not valid UTF-8; send UTF-8 text", field, quote(s))
	}

	trimmed := strings.TrimSpace(s)
	length := utf8.RuneCountInString(trimmed)
	if length == 0 {
		return "", Errorf(CodeInvalidMessage, "%s is empty; send 1 to %d characters", field, maxLength)
	}
	if length > maxLength {
		return "", Errorf(CodeInvalidMessage, "%s %s has %d characters; the maximum is %d", field, quote(trimmed), length, maxLength)
	}

	for position, r := range []rune(trimmed) {
		if unicode.IsControl(r) {
			return "", Errorf(CodeInvalidMessage, "%s %s contains the control character %U at character %d; remove it", field, quote(trimmed), r, position+1)
		}
	}

	return trimmed, nil
}

// validateTitle returns the trimmed event title or an *Error naming the problem.
func validateTitle(title string) (string, error) {
	return validateText("title", title, MaxTitleLength)
}

// validateNewPoll returns p with its text trimmed and its kind filled in, or
// an *Error with CodeInvalidMessage naming the first invalid value and the
// limit it breaks.
func validateNewPoll(p NewPoll) (NewPoll, error) {
	question, err := validateText("question", p.Question, MaxQuestionLength)
	if err != nil {
		return NewPoll{}, err
	}

	kind := p.Kind
	if kind == "" {
		kind = PollSingle
	}
	if kind != PollSingle && kind != PollMultiple {
		return NewPoll{}, Errorf(CodeInvalidMessage, "kind %s is not a poll kind; use %q or %q", quote(string(kind)), PollSingle, PollMultiple)
	}

	if len(p.Options) < MinPollOptions || len(p.Options) > MaxPollOptions {
		return NewPoll{}, Errorf(CodeInvalidMessage, "a poll needs %d to %d options, not %d", MinPollOptions, MaxPollOptions, len(p.Options))
	}

	labels := make([]string, len(p.Options))
	for i, option := range p.Options {
		label, err := validateText(fmt.Sprintf("option %d", i+1), option, MaxOptionLabelLength)
		if err != nil {
			return NewPoll{}, err
		}

		for j := range i {
			if strings.EqualFold(labels[j], label) {
				return NewPoll{}, Errorf(CodeInvalidMessage, "option %d %s repeats option %d (labels are compared ignoring case); make each label different", i+1, quote(label), j+1)
			}
		}
		labels[i] = label
	}

	visible := true
	if p.ResultsVisible != nil {
		visible = *p.ResultsVisible
	}

	return NewPoll{Question: question, Options: labels, Kind: kind, AllowChange: p.AllowChange, ResultsVisible: &visible}, nil
}

// optionID returns the id of the option at index (0-based): "o1" for the first.
func optionID(index int) string {
	return fmt.Sprintf("o%d", index+1)
}

// clonePoll returns a deep copy of p, so callers cannot change the registry's copy.
func clonePoll(p Poll) Poll {
	p.Options = append([]Option(nil), p.Options...)
	if p.OpenedAt != nil {
		openedAt := *p.OpenedAt
		p.OpenedAt = &openedAt
	}
	if p.ClosedAt != nil {
		closedAt := *p.ClosedAt
		p.ClosedAt = &closedAt
	}

	return p
}
