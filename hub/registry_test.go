package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livevote/livevote/persistence"
)

// memoryCatalog is a map-backed Catalog for registry tests. Each put gets the
// next revision, from 1, as in a JetStream bucket. putErr, when set, fails
// every write; block, when set, makes writes wait for it to close or for ctx.
// CreateCatalog checks and writes in two steps, which is enough for tests
// that write from one goroutine.
type memoryCatalog struct {
	mu        sync.Mutex
	entries   map[string][]byte
	revisions map[string]uint64 // the revision of each key's value
	revision  uint64
	putErr    error
	block     chan struct{}
}

func newMemoryCatalog() *memoryCatalog {
	return &memoryCatalog{entries: make(map[string][]byte), revisions: make(map[string]uint64)}
}

func (c *memoryCatalog) PutCatalog(ctx context.Context, key string, value []byte) (uint64, error) {
	c.mu.Lock()
	block, putErr := c.block, c.putErr
	c.mu.Unlock()

	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if putErr != nil {
		return 0, putErr
	}

	c.mu.Lock()
	defer c.mu.Unlock()

	c.entries[key] = append([]byte(nil), value...)
	c.revision++
	c.revisions[key] = c.revision

	return c.revision, nil
}

func (c *memoryCatalog) CreateCatalog(ctx context.Context, key string, value []byte) (uint64, error) {
	c.mu.Lock()
	_, exists := c.entries[key]
	c.mu.Unlock()
	if exists {
		return 0, fmt.Errorf("%w: %q", persistence.ErrExists, key)
	}

	return c.PutCatalog(ctx, key, value)
}

func (c *memoryCatalog) UpdateCatalog(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	c.mu.Lock()
	last := c.revisions[key]
	c.mu.Unlock()
	if last != revision {
		return 0, fmt.Errorf("%w: %q is at revision %d, not %d", persistence.ErrConflict, key, last, revision)
	}

	return c.PutCatalog(ctx, key, value)
}

func (c *memoryCatalog) ListCatalog(_ context.Context, prefix string) (map[string][]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()

	found := make(map[string][]byte)
	for key, value := range c.entries {
		if strings.HasPrefix(key, prefix) {
			found[key] = append([]byte(nil), value...)
		}
	}

	return found, nil
}

func (c *memoryCatalog) setPutErr(err error) {
	c.mu.Lock()
	c.putErr = err
	c.mu.Unlock()
}

func (c *memoryCatalog) snapshot() map[string][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()

	return maps.Clone(c.entries)
}

func mustEvent(t *testing.T, r *Registry, title string) (Event, string) {
	t.Helper()

	event, token, err := r.CreateEvent(t.Context(), title)
	if err != nil {
		t.Fatalf("CreateEvent(%q): %v", title, err)
	}

	return event, token
}

func mustPoll(t *testing.T, r *Registry, eventID string, p NewPoll) Poll {
	t.Helper()

	poll, err := r.CreatePoll(t.Context(), eventID, p)
	if err != nil {
		t.Fatalf("CreatePoll(%q): %v", p.Question, err)
	}

	return poll
}

func mustOpen(t *testing.T, r *Registry, pollID string) Poll {
	t.Helper()

	poll, err := r.OpenPoll(t.Context(), pollID)
	if err != nil {
		t.Fatalf("OpenPoll(%s): %v", pollID, err)
	}

	return poll
}

func colorPoll() NewPoll {
	return NewPoll{Question: "Favourite colour?", Options: []string{"Red", "Green", "Blue"}}
}

func wantCode(t *testing.T, err error, code Code) {
	t.Helper()

	wire := AsError(err)
	if wire == nil {
		t.Fatalf("error = %v, want an *Error with code %s", err, code)
	}
	if wire.Code != code {
		t.Fatalf("error code = %s (%s), want %s", wire.Code, wire.Message, code)
	}
}

func jsonOf(t *testing.T, value any) string {
	t.Helper()

	encoded, err := json.Marshal(value)
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}

	return string(encoded)
}

func TestCreateEventValidation(t *testing.T) {
	t.Parallel()

	cases := []struct {
		name    string
		title   string
		mention string
	}{
		{"empty", "", "empty"},
		{"white space only", "  \t ", "empty"},
		{"too long", strings.Repeat("a", MaxTitleLength+1), "201 characters; the maximum is 200"},
		{"too long in runes", strings.Repeat("é", MaxTitleLength+1), "201 characters"},
		{"control character", "Town\x07hall", "U+0007"},
		{"line break inside", "Town\nhall", "U+000A"},
		{"invalid UTF-8", "Town \xff hall", "not valid UTF-8"},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			catalog := newMemoryCatalog()
			registry := NewRegistry(catalog, nil)
			_, token, err := registry.CreateEvent(t.Context(), tc.title)
			wantCode(t, err, CodeInvalidMessage)

			if !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("error %q does not mention %q", err, tc.mention)
			}
			if token != "" {
				t.Errorf("CreateEvent returned token %q with an error", token)
			}
			if n := len(catalog.snapshot()); n != 0 {
				t.Errorf("catalog holds %d entries after a rejected event", n)
			}
		})
	}
}

func TestCreateEventTrimsAndCountsRunes(t *testing.T) {
	t.Parallel()

	registry := NewRegistry(newMemoryCatalog(), nil)

	// 200 two-byte characters are 400 bytes but within the limit.
	longest := strings.Repeat("é", MaxTitleLength)
	event, _ := mustEvent(t, registry, "  "+longest+"\n")
	if event.Title != longest {
		t.Errorf("title = %q, want it trimmed to %d characters", event.Title, MaxTitleLength)
	}

	emoji, _ := mustEvent(t, registry, "All hands 👍🏽")
	if emoji.Title != "All hands 👍🏽" {
		t.Errorf("title = %q, want the emoji kept", emoji.Title)
	}
}

func TestCreatePollValidation(t *testing.T) {
	t.Parallel()

	labels := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("Choice %d", i+1)
		}
		return out
	}

	cases := []struct {
		name    string
		poll    NewPoll
		mention string
	}{
		{"empty question", NewPoll{Question: " ", Options: labels(2)}, "question is empty"},
		{"question too long", NewPoll{Question: strings.Repeat("q", MaxQuestionLength+1), Options: labels(2)}, "301 characters; the maximum is 300"},
		{"question control character", NewPoll{Question: "Why\x00?", Options: labels(2)}, "U+0000"},
		{"question invalid UTF-8", NewPoll{Question: "Why\xc3?", Options: labels(2)}, "not valid UTF-8"},
		{"one option", NewPoll{Question: "Q", Options: labels(1)}, "needs 2 to 10 options, not 1"},
		{"no options", NewPoll{Question: "Q"}, "needs 2 to 10 options, not 0"},
		{"eleven options", NewPoll{Question: "Q", Options: labels(MaxPollOptions + 1)}, "needs 2 to 10 options, not 11"},
		{"empty label", NewPoll{Question: "Q", Options: []string{"Yes", "  "}}, "option 2 is empty"},
		{"label too long", NewPoll{Question: "Q", Options: []string{"Yes", strings.Repeat("n", MaxOptionLabelLength+1)}}, "101 characters; the maximum is 100"},
		{"label control character", NewPoll{Question: "Q", Options: []string{"Yes", "N\to"}}, "U+0009"},
		{"label invalid UTF-8", NewPoll{Question: "Q", Options: []string{"\xffYes", "No"}}, "option 1"},
		{"labels repeat ignoring case", NewPoll{Question: "Q", Options: []string{"Yes", "No", " yes "}}, `option 3 "yes" repeats option 1`},
		{"unknown kind", NewPoll{Question: "Q", Options: labels(2), Kind: "ranked"}, `kind "ranked"`},
	}

	registry := NewRegistry(newMemoryCatalog(), nil)
	event, _ := mustEvent(t, registry, "Validation")

	// Cleanups of the parent run after all its parallel subtests finish.
	t.Cleanup(func() {
		if polls := registry.Polls(); len(polls) != 0 {
			t.Errorf("registry holds %d polls after only invalid requests", len(polls))
		}
	})

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			_, err := registry.CreatePoll(t.Context(), event.ID, tc.poll)
			wantCode(t, err, CodeInvalidMessage)

			if !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("error %q does not mention %q", err, tc.mention)
			}
		})
	}
}

func TestCreatePollFields(t *testing.T) {
	t.Parallel()

	registry := NewRegistry(newMemoryCatalog(), nil)
	event, _ := mustEvent(t, registry, "Fields")

	poll := mustPoll(t, registry, event.ID, NewPoll{
		Question: "  Which days?  ",
		Options:  []string{" Monday", "Tuesday ", "Wednesday"},
		Kind:     PollMultiple,
	})

	if poll.Question != "Which days?" {
		t.Errorf("question = %q, want it trimmed", poll.Question)
	}
	wantOptions := []Option{{"o1", "Monday"}, {"o2", "Tuesday"}, {"o3", "Wednesday"}}
	if jsonOf(t, poll.Options) != jsonOf(t, wantOptions) {
		t.Errorf("options = %+v, want %+v", poll.Options, wantOptions)
	}
	if poll.Kind != PollMultiple || poll.State != PollDraft || poll.Event != event.ID {
		t.Errorf("poll = %+v, want a multiple-choice draft of event %s", poll, event.ID)
	}
	if poll.OpenedAt != nil || poll.ClosedAt != nil {
		t.Errorf("draft poll has opened_at %v, closed_at %v", poll.OpenedAt, poll.ClosedAt)
	}

	single := mustPoll(t, registry, event.ID, NewPoll{Question: "Q", Options: []string{"A", "B"}})
	if single.Kind != PollSingle {
		t.Errorf("kind of a poll without kind = %q, want %q", single.Kind, PollSingle)
	}

	ten := make([]string, MaxPollOptions)
	for i := range ten {
		ten[i] = strings.Repeat("x", MaxOptionLabelLength-1) + fmt.Sprint(i)
	}
	largest := mustPoll(t, registry, event.ID, NewPoll{Question: strings.Repeat("q", MaxQuestionLength), Options: ten})
	if got := largest.Options[MaxPollOptions-1].ID; got != "o10" {
		t.Errorf("tenth option id = %q, want o10", got)
	}
}

func TestCreatePollUnknownEvent(t *testing.T) {
	t.Parallel()

	registry := NewRegistry(newMemoryCatalog(), nil)
	_, err := registry.CreatePoll(t.Context(), "no-such-event", colorPoll())
	wantCode(t, err, CodeUnknownEvent)
}

func TestCreatePollLimitPerEvent(t *testing.T) {
	t.Parallel()

	registry := NewRegistry(newMemoryCatalog(), nil)
	event, _ := mustEvent(t, registry, "Many polls")

	for range MaxPollsPerEvent {
		mustPoll(t, registry, event.ID, colorPoll())
	}

	_, err := registry.CreatePoll(t.Context(), event.ID, colorPoll())
	wantCode(t, err, CodeInvalidMessage)
	if !strings.Contains(err.Error(), "100 polls") {
		t.Errorf("error %q does not name the limit of 100 polls", err)
	}
}

func TestPollStateMachine(t *testing.T) {
	t.Parallel()

	registry := NewRegistry(newMemoryCatalog(), nil)
	event, _ := mustEvent(t, registry, "States")
	poll := mustPoll(t, registry, event.ID, colorPoll())

	_, err := registry.CheckVote(poll.ID, []string{"o1"})
	wantCode(t, err, CodePollNotOpen)

	opened := mustOpen(t, registry, poll.ID)
	if opened.State != PollOpen || opened.OpenedAt == nil {
		t.Fatalf("opened poll = %+v, want state open with opened_at", opened)
	}
	if _, err := registry.CheckVote(poll.ID, []string{"o1"}); err != nil {
		t.Fatalf("CheckVote on an open poll: %v", err)
	}

	// Opening again changes nothing, not even the opening time.
	again := mustOpen(t, registry, poll.ID)
	if again.State != PollOpen || !again.OpenedAt.Equal(*opened.OpenedAt) {
		t.Errorf("second OpenPoll = %+v, want the poll unchanged", again)
	}

	closed, err := registry.ClosePoll(t.Context(), poll.ID)
	if err != nil {
		t.Fatalf("ClosePoll: %v", err)
	}
	if closed.State != PollClosed || closed.ClosedAt == nil || closed.OpenedAt == nil {
		t.Fatalf("closed poll = %+v, want state closed with opened_at and closed_at", closed)
	}

	_, err = registry.CheckVote(poll.ID, []string{"o1"})
	wantCode(t, err, CodePollClosed)

	_, err = registry.OpenPoll(t.Context(), poll.ID)
	wantCode(t, err, CodePollClosed)

	closedAgain, err := registry.ClosePoll(t.Context(), poll.ID)
	if err != nil {
		t.Fatalf("second ClosePoll: %v", err)
	}
	if !closedAgain.ClosedAt.Equal(*closed.ClosedAt) {
		t.Errorf("second ClosePoll moved closed_at from %v to %v", closed.ClosedAt, closedAgain.ClosedAt)
	}

	stored, err := registry.Poll(poll.ID)
	if err != nil {
		t.Fatalf("Poll: %v", err)
	}
	if stored.State != PollClosed {
		t.Errorf("Poll state = %s, want closed", stored.State)
	}
}

func TestCloseDraftPoll(t *testing.T) {
	t.Parallel()

	registry := NewRegistry(newMemoryCatalog(), nil)
	event, _ := mustEvent(t, registry, "Draft close")
	poll := mustPoll(t, registry, event.ID, colorPoll())

	closed, err := registry.ClosePoll(t.Context(), poll.ID)
	if err != nil {
		t.Fatalf("ClosePoll(draft): %v", err)
	}
	if closed.State != PollClosed || closed.ClosedAt == nil {
		t.Errorf("closed draft = %+v, want state closed with closed_at", closed)
	}
	if closed.OpenedAt != nil {
		t.Errorf("closed draft has opened_at %v, want none", closed.OpenedAt)
	}

	_, err = registry.OpenPoll(t.Context(), poll.ID)
	wantCode(t, err, CodePollClosed)
}

func TestUnknownPoll(t *testing.T) {
	t.Parallel()

	registry := NewRegistry(newMemoryCatalog(), nil)

	_, err := registry.Poll("missing")
	wantCode(t, err, CodeUnknownPoll)

	_, err = registry.OpenPoll(t.Context(), "missing")
	wantCode(t, err, CodeUnknownPoll)

	_, err = registry.ClosePoll(t.Context(), "missing")
	wantCode(t, err, CodeUnknownPoll)

	_, err = registry.CheckVote("missing", []string{"o1"})
	wantCode(t, err, CodeUnknownPoll)
}

func TestCheckVoteOptions(t *testing.T) {
	t.Parallel()

	registry := NewRegistry(newMemoryCatalog(), nil)
	event, _ := mustEvent(t, registry, "Options")
	single := mustOpen(t, registry, mustPoll(t, registry, event.ID, colorPoll()).ID)
	multiple := mustOpen(t, registry, mustPoll(t, registry, event.ID, NewPoll{
		Question: "Which?", Options: []string{"A", "B", "C"}, Kind: PollMultiple,
	}).ID)

	cases := []struct {
		name    string
		poll    Poll
		options []string
		code    Code
		mention string
	}{
		{"no options", single, nil, CodeInvalidMessage, "options is empty"},
		{"empty list", multiple, []string{}, CodeInvalidMessage, "options is empty"},
		{"unknown option", single, []string{"o9"}, CodeUnknownOption, `"o9"`},
		{"option label instead of id", single, []string{"Red"}, CodeUnknownOption, `"Red"`},
		{"duplicate option", multiple, []string{"o1", "o1"}, CodeInvalidMessage, "twice"},
		{"two options in single", single, []string{"o1", "o2"}, CodeInvalidMessage, "has 2 options; choose exactly 1"},
		{"more options than the poll", multiple, []string{"o1", "o2", "o3", "o1"}, CodeInvalidMessage, "has 4 options but poll"},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			_, err := registry.CheckVote(tc.poll.ID, tc.options)
			wantCode(t, err, tc.code)

			if !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("error %q does not mention %q", err, tc.mention)
			}
		})
	}

	valid := map[string][]string{
		"single one":     {"o3"},
		"multiple one":   {"o2"},
		"multiple all":   {"o3", "o1", "o2"},
		"multiple a few": {"o1", "o3"},
	}
	for name, options := range valid {
		poll := multiple
		if strings.HasPrefix(name, "single") {
			poll = single
		}

		checked, err := registry.CheckVote(poll.ID, options)
		if err != nil {
			t.Errorf("%s: CheckVote(%v): %v", name, options, err)
			continue
		}
		if checked.ID != poll.ID {
			t.Errorf("%s: CheckVote returned poll %s, want %s", name, checked.ID, poll.ID)
		}
	}
}

func TestEventLookup(t *testing.T) {
	t.Parallel()

	registry := NewRegistry(newMemoryCatalog(), nil)
	event, _ := mustEvent(t, registry, "Lookup")
	poll := mustPoll(t, registry, event.ID, colorPoll())

	if len(event.Code) != JoinCodeLength {
		t.Errorf("join code %q has %d characters, want %d", event.Code, len(event.Code), JoinCodeLength)
	}
	if event.Polls == nil || len(event.Polls) != 0 {
		t.Errorf("new event polls = %#v, want an empty, non-nil list", event.Polls)
	}

	lower := strings.ToLower(event.Code[:3]) + "-" + event.Code[3:]
	byCode, err := registry.EventByCode(lower)
	if err != nil {
		t.Fatalf("EventByCode(%q): %v", lower, err)
	}
	if byCode.ID != event.ID {
		t.Errorf("EventByCode(%q) = event %s, want %s", lower, byCode.ID, event.ID)
	}
	if len(byCode.Polls) != 1 || byCode.Polls[0].ID != poll.ID {
		t.Errorf("EventByCode polls = %+v, want the one poll %s", byCode.Polls, poll.ID)
	}

	byID, err := registry.EventByID(event.ID)
	if err != nil {
		t.Fatalf("EventByID: %v", err)
	}
	if jsonOf(t, byID) != jsonOf(t, byCode) {
		t.Errorf("EventByID = %s, EventByCode = %s, want equal", jsonOf(t, byID), jsonOf(t, byCode))
	}

	_, err = registry.EventByID("missing")
	wantCode(t, err, CodeUnknownEvent)

	_, err = registry.EventByCode("ZZZZZZ")
	if event.Code != "ZZZZZZ" {
		wantCode(t, err, CodeUnknownEvent)
	}

	_, err = registry.EventByCode("ABC0EF")
	wantCode(t, err, CodeUnknownEvent)
	if !strings.Contains(err.Error(), "digit 0") {
		t.Errorf("error %q does not explain the digit 0", err)
	}
}

func TestReturnedCopiesAreIndependent(t *testing.T) {
	t.Parallel()

	registry := NewRegistry(newMemoryCatalog(), nil)
	event, _ := mustEvent(t, registry, "Copies")
	poll := mustPoll(t, registry, event.ID, colorPoll())
	opened := mustOpen(t, registry, poll.ID)

	opened.Options[0].Label = "changed"
	*opened.OpenedAt = time.Time{}
	fetched, _ := registry.EventByID(event.ID)
	fetched.Polls[0].Options[1].ID = "changed"

	stored, err := registry.Poll(poll.ID)
	if err != nil {
		t.Fatalf("Poll: %v", err)
	}
	if stored.Options[0].Label != "Red" || stored.Options[1].ID != "o2" {
		t.Errorf("registry options = %+v after callers changed their copies", stored.Options)
	}
	if stored.OpenedAt.IsZero() {
		t.Error("registry opened_at changed through a caller's copy")
	}
}

func TestAuthorize(t *testing.T) {
	t.Parallel()

	registry := NewRegistry(newMemoryCatalog(), nil)
	event, token := mustEvent(t, registry, "Auth")
	other, otherToken := mustEvent(t, registry, "Other")

	if err := registry.Authorize(event.ID, token); err != nil {
		t.Errorf("Authorize(own token): %v", err)
	}
	if err := registry.Authorize(other.ID, otherToken); err != nil {
		t.Errorf("Authorize(other event's own token): %v", err)
	}

	wantCode(t, registry.Authorize(event.ID, ""), CodeUnauthorized)
	wantCode(t, registry.Authorize(event.ID, otherToken), CodeUnauthorized)
	wantCode(t, registry.Authorize(event.ID, token[:len(token)-1]), CodeUnauthorized)
	wantCode(t, registry.Authorize(event.ID, HashToken(token)), CodeUnauthorized)
	wantCode(t, registry.Authorize("missing", token), CodeUnknownEvent)
}

func TestLoadRestoresState(t *testing.T) {
	t.Parallel()

	catalog := newMemoryCatalog()
	first := NewRegistry(catalog, nil)

	event, token := mustEvent(t, first, "Restart")
	other, _ := mustEvent(t, first, "Other")
	draft := mustPoll(t, first, event.ID, colorPoll())
	open := mustPoll(t, first, event.ID, NewPoll{Question: "Q2", Options: []string{"A", "B"}, Kind: PollMultiple, AllowChange: true})
	closed := mustPoll(t, first, other.ID, NewPoll{Question: "Q3", Options: []string{"A", "B"}})
	mustOpen(t, first, open.ID)
	mustOpen(t, first, closed.ID)
	if _, err := first.ClosePoll(t.Context(), closed.ID); err != nil {
		t.Fatalf("ClosePoll: %v", err)
	}

	second := NewRegistry(catalog, nil)
	if err := second.Load(t.Context()); err != nil {
		t.Fatalf("Load: %v", err)
	}

	if got, want := jsonOf(t, second.Polls()), jsonOf(t, first.Polls()); got != want {
		t.Errorf("polls after Load:\n%s\nwant\n%s", got, want)
	}
	for _, id := range []string{event.ID, other.ID} {
		before, _ := first.EventByID(id)
		after, err := second.EventByID(id)
		if err != nil {
			t.Fatalf("EventByID(%s) after Load: %v", id, err)
		}
		if jsonOf(t, after) != jsonOf(t, before) {
			t.Errorf("event after Load = %s, want %s", jsonOf(t, after), jsonOf(t, before))
		}
	}

	if _, err := second.EventByCode(event.Code); err != nil {
		t.Errorf("EventByCode(%s) after Load: %v", event.Code, err)
	}
	if err := second.Authorize(event.ID, token); err != nil {
		t.Errorf("Authorize after Load: %v", err)
	}
	if _, err := second.CheckVote(open.ID, []string{"o1", "o2"}); err != nil {
		t.Errorf("CheckVote on the open poll after Load: %v", err)
	}
	_, err := second.CheckVote(draft.ID, []string{"o1"})
	wantCode(t, err, CodePollNotOpen)
	_, err = second.CheckVote(closed.ID, []string{"o1"})
	wantCode(t, err, CodePollClosed)

	for key, value := range catalog.snapshot() {
		if strings.Contains(string(value), token) {
			t.Errorf("catalog entry %s contains the presenter token", key)
		}
	}
}

func TestLoadKeepsPollOrder(t *testing.T) {
	t.Parallel()

	catalog := newMemoryCatalog()
	first := NewRegistry(catalog, nil)
	frozen := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	first.now = func() time.Time { return frozen }

	event, _ := mustEvent(t, first, "Frozen clock")
	var want []string
	for i := range 20 {
		poll := mustPoll(t, first, event.ID, NewPoll{Question: fmt.Sprintf("Q%d", i), Options: []string{"A", "B"}})
		want = append(want, poll.ID)
	}

	second := NewRegistry(catalog, nil)
	if err := second.Load(t.Context()); err != nil {
		t.Fatalf("Load: %v", err)
	}

	for name, registry := range map[string]*Registry{"before": first, "after Load": second} {
		loaded, err := registry.EventByID(event.ID)
		if err != nil {
			t.Fatalf("EventByID %s: %v", name, err)
		}

		var got []string
		for _, poll := range loaded.Polls {
			got = append(got, poll.ID)
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("poll order %s = %v, want creation order %v", name, got, want)
		}
	}
}

func TestLoadRejectsBadCatalog(t *testing.T) {
	t.Parallel()

	valid := newMemoryCatalog()
	source := NewRegistry(valid, nil)
	event, _ := mustEvent(t, source, "Source")
	poll := mustPoll(t, source, event.ID, colorPoll())
	entries := valid.snapshot()
	eventKey, pollKey := eventKeyPrefix+event.ID, pollKeyPrefix+poll.ID

	cases := map[string]func(map[string][]byte){
		"corrupt event": func(m map[string][]byte) { m[eventKey] = []byte("{not json") },
		"corrupt poll":  func(m map[string][]byte) { m[pollKey] = []byte(`{"id":`) },
		"orphan poll":   func(m map[string][]byte) { delete(m, eventKey) },
		"id mismatch":   func(m map[string][]byte) { m[pollKeyPrefix+"other"] = m[pollKey] },
		"bad state": func(m map[string][]byte) {
			m[pollKey] = []byte(strings.Replace(string(m[pollKey]), `"draft"`, `"paused"`, 1))
		},
		"duplicate join code": func(m map[string][]byte) {
			m[eventKeyPrefix+"twin"] = []byte(strings.Replace(string(m[eventKey]), event.ID, "twin", 1))
		},
	}

	for name, corrupt := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()

			catalog := newMemoryCatalog()
			catalog.entries = maps.Clone(entries)
			corrupt(catalog.entries)

			registry := NewRegistry(catalog, nil)
			kept, _ := mustEvent(t, registry, "Kept")

			err := registry.Load(t.Context())
			if !errors.Is(err, ErrCatalog) {
				t.Fatalf("Load error = %v, want ErrCatalog", err)
			}
			if _, err := registry.EventByID(kept.ID); err != nil {
				t.Errorf("event created before a failed Load is gone: %v", err)
			}
		})
	}
}

func TestCatalogWriteFailure(t *testing.T) {
	t.Parallel()

	catalog := newMemoryCatalog()
	registry := NewRegistry(catalog, nil)
	event, _ := mustEvent(t, registry, "Failing")
	poll := mustPoll(t, registry, event.ID, colorPoll())
	diskFull := errors.New("disk full")
	catalog.setPutErr(diskFull)

	_, _, err := registry.CreateEvent(t.Context(), "Lost")
	if !errors.Is(err, ErrCatalog) || !errors.Is(err, diskFull) {
		t.Errorf("CreateEvent error = %v, want ErrCatalog wrapping the catalog's error", err)
	}
	if AsError(err) != nil {
		t.Errorf("catalog failure mapped to wire error %v, want an internal error", AsError(err))
	}

	_, err = registry.CreatePoll(t.Context(), event.ID, colorPoll())
	if !errors.Is(err, ErrCatalog) {
		t.Errorf("CreatePoll error = %v, want ErrCatalog", err)
	}

	_, err = registry.OpenPoll(t.Context(), poll.ID)
	if !errors.Is(err, ErrCatalog) {
		t.Errorf("OpenPoll error = %v, want ErrCatalog", err)
	}

	// Nothing that failed to store is visible.
	stored, _ := registry.Poll(poll.ID)
	if stored.State != PollDraft {
		t.Errorf("poll state = %s after a failed OpenPoll, want draft", stored.State)
	}
	if polls := registry.Polls(); len(polls) != 1 {
		t.Errorf("registry holds %d polls after a failed CreatePoll, want 1", len(polls))
	}
}

func TestWriteWaitHonoursContext(t *testing.T) {
	t.Parallel()

	catalog := newMemoryCatalog()
	registry := NewRegistry(catalog, nil)
	event, _ := mustEvent(t, registry, "Blocked")
	poll := mustPoll(t, registry, event.ID, colorPoll())

	release := make(chan struct{})
	catalog.block = release
	stuck := make(chan error, 1)
	go func() {
		_, err := registry.OpenPoll(context.Background(), poll.ID)
		stuck <- err
	}()

	// Reads go on while a write waits on the catalog.
	deadline := time.Now().Add(5 * time.Second)
	for len(registry.writes) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if _, err := registry.EventByID(event.ID); err != nil {
		t.Errorf("EventByID during a blocked write: %v", err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	_, err := registry.ClosePoll(ctx, poll.ID)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ClosePoll behind a blocked write: error = %v, want context.DeadlineExceeded", err)
	}

	close(release)
	if err := <-stuck; err != nil {
		t.Errorf("blocked OpenPoll: %v", err)
	}
}

func TestJoinCodeCollisions(t *testing.T) {
	t.Parallel()

	registry := NewRegistry(newMemoryCatalog(), nil)
	codes := []string{"AAAAAA", "AAAAAA", "BBBBBB"}
	var mu sync.Mutex
	registry.newJoinCode = func() string {
		mu.Lock()
		defer mu.Unlock()

		if len(codes) == 0 {
			return "AAAAAA"
		}
		code := codes[0]
		codes = codes[1:]
		return code
	}

	first, _ := mustEvent(t, registry, "First")
	second, _ := mustEvent(t, registry, "Second")
	if first.Code != "AAAAAA" || second.Code != "BBBBBB" {
		t.Errorf("codes = %s, %s; want AAAAAA then BBBBBB after a collision", first.Code, second.Code)
	}

	_, _, err := registry.CreateEvent(t.Context(), "Third")
	if !errors.Is(err, ErrJoinCodesExhausted) {
		t.Errorf("CreateEvent with only taken codes: error = %v, want ErrJoinCodesExhausted", err)
	}
}

func TestRegistryWithoutCatalog(t *testing.T) {
	t.Parallel()

	registry := NewRegistry(nil, nil)
	event, _ := mustEvent(t, registry, "Memory only")
	poll := mustOpen(t, registry, mustPoll(t, registry, event.ID, colorPoll()).ID)

	if _, err := registry.CheckVote(poll.ID, []string{"o1"}); err != nil {
		t.Errorf("CheckVote: %v", err)
	}
	if err := registry.Load(t.Context()); err != nil {
		t.Errorf("Load without catalog: %v", err)
	}
	if _, err := registry.EventByID(event.ID); err != nil {
		t.Errorf("EventByID after Load without catalog: %v", err)
	}
}

func TestRegistryConcurrent(t *testing.T) {
	t.Parallel()

	catalog := newMemoryCatalog()
	registry := NewRegistry(catalog, nil)
	event, _ := mustEvent(t, registry, "Concurrent")
	ctx := t.Context()

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	report := func(err error) {
		if err != nil && AsError(err) == nil {
			select {
			case errs <- err:
			default:
			}
		}
	}

	for w := range 4 {
		wg.Go(func() {
			for i := range 10 {
				poll, err := registry.CreatePoll(ctx, event.ID, NewPoll{Question: fmt.Sprintf("W%d Q%d", w, i), Options: []string{"A", "B"}})
				report(err)
				if err != nil {
					return
				}
				_, err = registry.OpenPoll(ctx, poll.ID)
				report(err)
				if i%2 == 0 {
					_, err = registry.ClosePoll(ctx, poll.ID)
					report(err)
				}
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			for range 200 {
				for _, poll := range registry.Polls() {
					_, err := registry.CheckVote(poll.ID, []string{"o1"})
					report(err)
				}
				_, err := registry.EventByCode(event.Code)
				report(err)
			}
		})
	}
	wg.Wait()
	close(errs)

	for err := range errs {
		t.Errorf("unexpected error: %v", err)
	}

	if polls := registry.Polls(); len(polls) != 40 {
		t.Fatalf("registry holds %d polls, want 40", len(polls))
	}

	// The catalog saw every change in the same order as memory.
	reloaded := NewRegistry(catalog, nil)
	if err := reloaded.Load(ctx); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got, want := jsonOf(t, reloaded.Polls()), jsonOf(t, registry.Polls()); got != want {
		t.Errorf("catalog and memory differ after concurrent changes:\n%s\n%s", got, want)
	}
}

// TestRefusedCatalogValueKeepsChangesPossible stores, as a writer with a
// stale copy would, an open poll over the closed one. The watch refuses
// that value, and the next change of the poll must still go through and
// put the closed poll back in the catalog, not be refused as a conflict
// with every retry.
func TestRefusedCatalogValueKeepsChangesPossible(t *testing.T) {
	ctx := t.Context()
	catalog := newMemoryCatalog()
	r := NewRegistry(catalog, nil)
	event, _ := mustEvent(t, r, "Stale writer")
	poll := mustPoll(t, r, event.ID, NewPoll{Question: "Q?", Options: []string{"A", "B"}})
	open, err := r.OpenPoll(ctx, poll.ID)
	if err != nil {
		t.Fatalf("OpenPoll: %v", err)
	}
	if _, err := r.ClosePoll(ctx, poll.ID); err != nil {
		t.Fatalf("ClosePoll: %v", err)
	}

	key := pollKeyPrefix + poll.ID
	staleValue, err := json.Marshal(open)
	if err != nil {
		t.Fatal(err)
	}
	staleRevision, err := catalog.PutCatalog(ctx, key, staleValue)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.applyCatalogChange(key, staleValue, staleRevision); !errors.Is(err, ErrCatalog) {
		t.Fatalf("applying the stale open value: %v, want an ErrCatalog refusal", err)
	}

	if _, err := r.SetResultsVisible(ctx, poll.ID, false); err != nil {
		t.Fatalf("SetResultsVisible after the refused value: %v", err)
	}
	var stored Poll
	if err := json.Unmarshal(catalog.snapshot()[key], &stored); err != nil {
		t.Fatal(err)
	}
	if stored.State != PollClosed || stored.ResultsVisible {
		t.Errorf("catalog holds %s with results visible %t, want the closed poll with hidden results", stored.State, stored.ResultsVisible)
	}
}
