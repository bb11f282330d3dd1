package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/livevote/livevote/persistence"
)

// Catalog stores the registry's events and polls as JSON values under keys of
// the form "event.<id>" and "poll.<id>". The persistence layer implements it
// with durable storage.
type Catalog interface {
	// PutCatalog stores value under key, replacing any earlier value, and
	// returns once the value is durable. It returns the value's revision,
	// which is higher than the revision of every earlier put to the catalog.
	PutCatalog(ctx context.Context, key string, value []byte) (uint64, error)
	// UpdateCatalog stores value under key only when the key's latest value
	// has revision. When another write came between, it stores nothing and
	// returns an error wrapping persistence.ErrConflict.
	UpdateCatalog(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
	// CreateCatalog stores value under key only when the key has no value
	// yet, across every process that shares the catalog. When it has one, it
	// stores nothing and returns an error wrapping persistence.ErrExists.
	CreateCatalog(ctx context.Context, key string, value []byte) (uint64, error)
	// ListCatalog returns every key that starts with prefix, with its value.
	ListCatalog(ctx context.Context, prefix string) (map[string][]byte, error)
}

// Catalog key prefixes of the registry's records. A "code.<join code>" key
// holds the id of the event that reserved the code; the registry writes it
// before the event and never reads it back.
const (
	eventKeyPrefix    = "event."
	pollKeyPrefix     = "poll."
	joinCodeKeyPrefix = "code."
)

// maxJoinCodeAttempts bounds the draws of a fresh join code when the first
// ones are taken. With 729 million codes, ten collisions in a row mean the code
// space is nearly full.
const maxJoinCodeAttempts = 10

var (
	// ErrCatalog wraps a failure to read or write the Catalog, or a stored
	// record that Load cannot use. A change whose write failed is not applied
	// in memory, though a write that failed only in its acknowledgement (a
	// timeout) may still be in the catalog after a restart.
	ErrCatalog = errors.New("hub: catalog access failed")
	// ErrJoinCodesExhausted reports that no unused join code was found.
	ErrJoinCodesExhausted = errors.New("hub: no unused join code found")
)

// storedEvent is an event as the catalog holds it. Only the SHA-256 of the
// presenter token is stored.
type storedEvent struct {
	ID        string    `json:"id"`
	Code      string    `json:"code"`
	Title     string    `json:"title"`
	CreatedAt time.Time `json:"created_at"`
	TokenHash string    `json:"presenter_token_sha256"`
}

// Registry holds the events and polls in memory and writes each change through
// to a Catalog before it becomes visible, so a Registry built with Load after a
// restart has the same state. Registry is safe for concurrent use. Changes run
// one at a time, and reads never wait for a catalog write.
type Registry struct {
	catalog     Catalog
	logger      *slog.Logger
	now         func() time.Time
	newJoinCode func() string

	// writes is a one-slot semaphore that serializes changes across the
	// catalog write and the update in memory, so both apply changes in the same
	// order. Unlike a mutex, waiting for it gives up with the context.
	// Lock order: writes, then mu.
	writes chan struct{}

	mu         sync.RWMutex
	events     map[string]storedEvent // by event id
	codes      map[string]string      // join code -> event id
	polls      map[string]Poll        // by poll id
	eventPolls map[string][]string    // event id -> poll ids in creation order
	// revisions holds the catalog revision of the value in memory, by
	// catalog key. A key that is missing or 0 has an unknown revision: Load
	// reads values without their revisions, and a registry without a
	// catalog has none.
	revisions map[string]uint64
}

// NewRegistry returns an empty registry that writes through to cat. A nil cat
// keeps everything in memory only, so nothing survives a restart. A nil logger
// discards log output. Call Load to read back stored events and polls.
func NewRegistry(cat Catalog, logger *slog.Logger) *Registry {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cat == nil {
		logger.Warn("registry has no catalog; events and polls will not survive a restart")
	}

	return &Registry{
		catalog:     cat,
		logger:      logger,
		now:         func() time.Time { return time.Now().UTC() },
		newJoinCode: NewJoinCode,
		writes:      make(chan struct{}, 1),
		events:      make(map[string]storedEvent),
		codes:       make(map[string]string),
		polls:       make(map[string]Poll),
		eventPolls:  make(map[string][]string),
		revisions:   make(map[string]uint64),
	}
}

// lockWrites acquires the write semaphore, giving up with ctx's error.
func (r *Registry) lockWrites(ctx context.Context) error {
	select {
	case r.writes <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("hub: wait for registry write: %w", ctx.Err())
	}
}

func (r *Registry) unlockWrites() {
	<-r.writes
}

// put stores value as JSON under key and returns its catalog revision.
// Without a catalog it does nothing and returns revision 0.
func (r *Registry) put(ctx context.Context, key string, value any) (uint64, error) {
	if r.catalog == nil {
		return 0, nil
	}

	encoded, err := json.Marshal(value)
	if err != nil {
		return 0, fmt.Errorf("hub: encode %s: %w", key, err)
	}

	revision, err := r.catalog.PutCatalog(ctx, key, encoded)
	if err != nil {
		r.logger.Error("catalog write failed", "key", key, "error", err)

		return 0, fmt.Errorf("%w: put %s: %w", ErrCatalog, key, err)
	}

	return revision, nil
}

// changedMeanwhileRetry is the retry hint of a change refused because
// another hub changed the same record first. The watch of the catalog
// usually brings that change within milliseconds.
const changedMeanwhileRetry = 500 * time.Millisecond

// update stores value as JSON under key like put, but only over the value
// at revision, so that a change made from a stale copy cannot replace a
// newer value that another hub stored. Revision 0 means that the registry
// does not know the revision of its copy, as after Load; the write then
// replaces any value. A rejected write returns an *Error with
// CodeOverloaded, so that the client sends the change again.
func (r *Registry) update(ctx context.Context, key string, value any, revision uint64) (uint64, error) {
	if r.catalog == nil || revision == 0 {
		return r.put(ctx, key, value)
	}

	encoded, err := json.Marshal(value)
	if err != nil {
		return 0, fmt.Errorf("hub: encode %s: %w", key, err)
	}

	next, err := r.catalog.UpdateCatalog(ctx, key, encoded, revision)
	if errors.Is(err, persistence.ErrConflict) {
		r.logger.Info("catalog record changed by another hub meanwhile; change refused", "key", key, "revision", revision)
		e := Errorf(CodeOverloaded, "%s was changed on another hub at the same time; send the change again", strings.TrimPrefix(key, pollKeyPrefix))
		e.RetryAfter = changedMeanwhileRetry

		return 0, e
	}
	if err != nil {
		r.logger.Error("catalog write failed", "key", key, "error", err)

		return 0, fmt.Errorf("%w: update %s: %w", ErrCatalog, key, err)
	}

	return next, nil
}

// CreateEvent creates an event with a fresh join code and returns it with its
// presenter token. Only the token's SHA-256 is kept, so the token cannot be
// shown again. An invalid title gets an *Error with CodeInvalidMessage.
func (r *Registry) CreateEvent(ctx context.Context, title string) (Event, string, error) {
	title, err := validateTitle(title)
	if err != nil {
		return Event{}, "", err
	}

	err = r.lockWrites(ctx)
	if err != nil {
		return Event{}, "", err
	}
	defer r.unlockWrites()

	id := uuid.NewString()
	code, err := r.reserveJoinCode(ctx, id)
	if err != nil {
		return Event{}, "", err
	}

	token := NewSecretToken()
	stored := storedEvent{
		ID:        id,
		Code:      code,
		Title:     title,
		CreatedAt: r.now(),
		TokenHash: HashToken(token),
	}

	key := eventKeyPrefix + stored.ID
	revision, err := r.put(ctx, key, stored)
	if err != nil {
		return Event{}, "", err
	}

	r.mu.Lock()
	r.events[stored.ID] = stored
	r.codes[stored.Code] = stored.ID
	r.revisions[key] = revision
	r.mu.Unlock()

	r.logger.Debug("event created", "event", stored.ID, "code", stored.Code)

	return eventOf(stored, nil), token, nil
}

// reserveJoinCode returns a join code that no event uses, reserved for the
// event id in the catalog. The caller holds writes, so no other event of
// this registry can take the code before it is stored. The reservation is a
// create-only write, so of several hubs that share the catalog and draw the
// same code at once, only one gets it and the others draw again.
//
// NOTE: events stored before join codes were reserved have no reservation.
// This registry still avoids their codes, because it holds every event of
// the catalog in memory, but another hub could reserve such a code in the moment
// before its watch delivers the event.
func (r *Registry) reserveJoinCode(ctx context.Context, eventID string) (string, error) {
	taken := make(map[string]bool)
	for range maxJoinCodeAttempts {
		code, ok := r.unusedJoinCode(taken)
		if !ok {
			continue
		}
		if r.catalog == nil {
			return code, nil
		}

		_, err := r.catalog.CreateCatalog(ctx, joinCodeKeyPrefix+code, []byte(eventID))
		if errors.Is(err, persistence.ErrExists) {
			r.logger.Info("join code reserved by another hub; drawing another", "code", code, "event", eventID)
			taken[code] = true
			continue
		}
		if err != nil {
			r.logger.Error("join code reservation failed", "code", code, "event", eventID, "error", err)
			return "", fmt.Errorf("%w: reserve join code %s: %w", ErrCatalog, code, err)
		}

		return code, nil
	}

	r.mu.RLock()
	events := len(r.codes)
	r.mu.RUnlock()

	return "", fmt.Errorf("%w after %d attempts with %d events", ErrJoinCodesExhausted, maxJoinCodeAttempts, events)
}

// unusedJoinCode draws one join code and reports whether no event of this
// registry uses it and it is not in taken.
func (r *Registry) unusedJoinCode(taken map[string]bool) (string, bool) {
	code := r.newJoinCode()

	r.mu.RLock()
	defer r.mu.RUnlock()

	_, used := r.codes[code]

	return code, !used && !taken[code]
}

// EventByCode returns the event with the join code, with its polls. The code
// is normalized first, so "abc-def" finds "ABCDEF". An unknown or malformed
// code gets an *Error with CodeUnknownEvent.
func (r *Registry) EventByCode(code string) (Event, error) {
	normalized, err := NormalizeJoinCode(code)
	if err != nil {
		return Event{}, &Error{Code: CodeUnknownEvent, Message: AsError(err).Message}
	}

	r.mu.RLock()
	defer r.mu.RUnlock()

	id, ok := r.codes[normalized]
	if !ok {
		return Event{}, Errorf(CodeUnknownEvent, "no event has join code %s; check the code", normalized)
	}

	return r.eventLocked(id), nil
}

// EventByID returns the event with the id, with its polls. An unknown id gets
// an *Error with CodeUnknownEvent.
func (r *Registry) EventByID(id string) (Event, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()

	if _, ok := r.events[id]; !ok {
		return Event{}, Errorf(CodeUnknownEvent, "no event has id %s", quote(id))
	}

	return r.eventLocked(id), nil
}

// eventLocked returns a copy of the known event id with its polls. The caller
// holds mu.
func (r *Registry) eventLocked(id string) Event {
	pollIDs := r.eventPolls[id]
	polls := make([]Poll, len(pollIDs))
	for i, pollID := range pollIDs {
		polls[i] = clonePoll(r.polls[pollID])
	}

	return eventOf(r.events[id], polls)
}

func eventOf(stored storedEvent, polls []Poll) Event {
	if polls == nil {
		polls = []Poll{}
	}

	return Event{ID: stored.ID, Code: stored.Code, Title: stored.Title, CreatedAt: stored.CreatedAt, Polls: polls}
}

// Authorize returns nil when token is the presenter token of the event. An
// unknown event gets an *Error with CodeUnknownEvent; a missing or wrong token
// gets CodeUnauthorized. The token is compared by its hash in constant time.
func (r *Registry) Authorize(eventID, token string) error {
	r.mu.RLock()
	stored, ok := r.events[eventID]
	r.mu.RUnlock()

	if !ok {
		return Errorf(CodeUnknownEvent, "no event has id %s", quote(eventID))
	}
	if token == "" {
		return Errorf(CodeUnauthorized, "presenter token is missing; send it as Authorization: Bearer <token>")
	}
	if !TokenMatches(stored.TokenHash, token) {
		return Errorf(CodeUnauthorized, "presenter token is not the token of event %s; use the token returned when the event was created", eventID)
	}

	return nil
}

// Load replaces the registry's contents with the events and polls stored in
// the catalog, as after a restart. A record that cannot be decoded, a poll of
// an unknown event or two events with one join code fail the whole Load with
// an error naming the key, and the registry keeps its previous contents.
// Without a catalog Load does nothing.
func (r *Registry) Load(ctx context.Context) error {
	if r.catalog == nil {
		return nil
	}

	err := r.lockWrites(ctx)
	if err != nil {
		return err
	}
	defer r.unlockWrites()

	loaded, err := r.readCatalog(ctx)
	if err != nil {
		return err
	}

	r.mu.Lock()
	r.events, r.codes, r.polls, r.eventPolls = loaded.events, loaded.codes, loaded.polls, loaded.eventPolls
	r.revisions = make(map[string]uint64)
	r.mu.Unlock()

	r.logger.Info("registry loaded", "events", len(loaded.events), "polls", len(loaded.polls))

	return nil
}

// registryState is the in-memory state that Load builds before swapping it in.
type registryState struct {
	events     map[string]storedEvent
	codes      map[string]string
	polls      map[string]Poll
	eventPolls map[string][]string
}

// readCatalog decodes every event and poll in the catalog and checks that they
// fit together.
func (r *Registry) readCatalog(ctx context.Context) (registryState, error) {
	state := registryState{
		events:     make(map[string]storedEvent),
		codes:      make(map[string]string),
		polls:      make(map[string]Poll),
		eventPolls: make(map[string][]string),
	}

	events, err := r.list(ctx, eventKeyPrefix)
	if err != nil {
		return registryState{}, err
	}

	for key, value := range events {
		stored, err := decodeEvent(key, value)
		if err != nil {
			return registryState{}, err
		}
		if other, taken := state.codes[stored.Code]; taken {
			return registryState{}, fmt.Errorf("%w: %s has join code %s, which event %s already uses", ErrCatalog, key, stored.Code, other)
		}

		state.events[stored.ID] = stored
		state.codes[stored.Code] = stored.ID
	}

	polls, err := r.list(ctx, pollKeyPrefix)
	if err != nil {
		return registryState{}, err
	}

	for key, value := range polls {
		poll, err := decodePoll(key, value)
		if err != nil {
			return registryState{}, err
		}
		if _, ok := state.events[poll.Event]; !ok {
			return registryState{}, fmt.Errorf("%w: %s belongs to event %s, which is not in the catalog", ErrCatalog, key, poll.Event)
		}

		state.polls[poll.ID] = poll
		state.eventPolls[poll.Event] = append(state.eventPolls[poll.Event], poll.ID)
	}

	for eventID, ids := range state.eventPolls {
		slices.SortFunc(ids, func(a, b string) int {
			return comparePolls(state.polls[a], state.polls[b])
		})
		state.eventPolls[eventID] = ids
	}

	return state, nil
}

// list returns the catalog entries under prefix.
func (r *Registry) list(ctx context.Context, prefix string) (map[string][]byte, error) {
	entries, err := r.catalog.ListCatalog(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("%w: list %s: %w", ErrCatalog, prefix, err)
	}

	return entries, nil
}

// catalogChangeKind is the effect of applying a watched catalog value.
type catalogChangeKind int

const (
	// changeNone means the registry kept its state: the value was not a
	// registry record, not newer than the one in memory (an echo of a local
	// write included), or the same as the one in memory.
	changeNone catalogChangeKind = iota
	// changeEvent means an event was added or replaced.
	changeEvent
	// changePollCreated means a poll was added.
	changePollCreated
	// changePollChanged means a known poll was replaced.
	changePollChanged
)

// catalogChange describes what applyCatalogChange changed.
type catalogChange struct {
	kind catalogChangeKind
	// poll is the poll after a changePollCreated or changePollChanged.
	poll Poll
	// previous is the poll before a changePollChanged.
	previous Poll
}

// applyCatalogChange puts a catalog value that another writer stored, such
// as another hub, into memory when revision is newer than the revision of
// the value in memory. An older or equal revision, a key outside "event."
// and "poll.", and a value equal to the one in memory change nothing. So
// the watched copy of a local write, which arrives with the revision that
// the write recorded, changes nothing.
//
// Some values change nothing but the revision in memory, and return an
// error wrapping ErrCatalog that names the key: a value that does not
// decode, a poll of an unknown event, an event whose join code another
// event has, a poll that moves to another event, and a poll whose state
// goes back (closed to open, open to draft). A poll's state goes back only
// when a writer changed a stale copy of it, and the next local change of
// the poll replaces that value in the catalog.
//
// It waits for a local change in progress to finish, without a time limit,
// because the change's catalog write has its own.
func (r *Registry) applyCatalogChange(key string, value []byte, revision uint64) (catalogChange, error) {
	isEvent := strings.HasPrefix(key, eventKeyPrefix)
	isPoll := strings.HasPrefix(key, pollKeyPrefix)
	if !isEvent && !isPoll {
		return catalogChange{}, nil
	}
	if revision == 0 {
		return catalogChange{}, fmt.Errorf("%w: %s has revision 0; catalog revisions start at 1", ErrCatalog, key)
	}

	// Holding writes orders this change after any local write in progress,
	// so that write's revision is in r.revisions before the check below.
	r.writes <- struct{}{}
	defer r.unlockWrites()

	r.mu.RLock()
	heldRevision := r.revisions[key]
	r.mu.RUnlock()

	if revision <= heldRevision {
		return catalogChange{}, nil
	}

	var (
		change catalogChange
		err    error
	)
	if isEvent {
		change, err = r.applyEvent(key, value, revision)
	} else {
		change, err = r.applyPoll(key, value, revision)
	}
	if err != nil {
		// The rejected value is the key's latest in the catalog, so the next
		// local change is written over its revision. A conditional write over
		// the older revision would be rejected every time, and the catalog
		// would keep the rejected value.
		r.mu.Lock()
		r.revisions[key] = revision
		r.mu.Unlock()
	}

	return change, err
}

// applyEvent puts the watched event value into memory. The caller holds
// writes.
func (r *Registry) applyEvent(key string, value []byte, revision uint64) (catalogChange, error) {
	stored, err := decodeEvent(key, value)
	if err != nil {
		return catalogChange{}, err
	}

	r.mu.Lock()
	defer r.mu.Unlock()

	current, known := r.events[stored.ID]
	if known && sameJSON(current, stored) {
		r.revisions[key] = revision
		return catalogChange{}, nil
	}
	if other, taken := r.codes[stored.Code]; taken && other != stored.ID {
		return catalogChange{}, fmt.Errorf("%w: %s has join code %s, which event %s already uses", ErrCatalog, key, stored.Code, other)
	}

	if known {
		delete(r.codes, current.Code)
	}
	r.events[stored.ID] = stored
	r.codes[stored.Code] = stored.ID
	r.revisions[key] = revision

	return catalogChange{kind: changeEvent}, nil
}

// applyPoll puts the watched poll value into memory. The caller holds
// writes.
func (r *Registry) applyPoll(key string, value []byte, revision uint64) (catalogChange, error) {
	poll, err := decodePoll(key, value)
	if err != nil {
		return catalogChange{}, err
	}

	r.mu.Lock()
	defer r.mu.Unlock()

	if _, ok := r.events[poll.Event]; !ok {
		return catalogChange{}, fmt.Errorf("%w: %s belongs to event %s, which this registry does not have", ErrCatalog, key, poll.Event)
	}

	current, known := r.polls[poll.ID]
	if !known {
		r.polls[poll.ID] = poll
		r.insertPollLocked(poll)
		r.revisions[key] = revision

		return catalogChange{kind: changePollCreated, poll: clonePoll(poll)}, nil
	}

	if poll.Event != current.Event {
		return catalogChange{}, fmt.Errorf("%w: %s moves poll %s from event %s to event %s; a poll's event never changes",
			ErrCatalog, key, poll.ID, current.Event, poll.Event)
	}
	if stateRank(poll.State) < stateRank(current.State) {
		return catalogChange{}, fmt.Errorf("%w: %s moves poll %s back from %s to %s at revision %d; it was written from a stale copy",
			ErrCatalog, key, poll.ID, current.State, poll.State, revision)
	}
	if sameJSON(current, poll) {
		r.revisions[key] = revision
		return catalogChange{}, nil
	}

	r.polls[poll.ID] = poll
	r.revisions[key] = revision

	return catalogChange{kind: changePollChanged, poll: clonePoll(poll), previous: clonePoll(current)}, nil
}

// insertPollLocked adds the id of poll to its event's list, which stays in
// the order of comparePolls. The caller holds mu for writing.
func (r *Registry) insertPollLocked(poll Poll) {
	ids := r.eventPolls[poll.Event]
	at, _ := slices.BinarySearchFunc(ids, poll, func(id string, target Poll) int {
		return comparePolls(r.polls[id], target)
	})
	r.eventPolls[poll.Event] = slices.Insert(ids, at, poll.ID)
}

// stateRank orders poll states by the order a poll passes through them.
func stateRank(state PollState) int {
	switch state {
	case PollOpen:
		return 1
	case PollClosed:
		return 2
	default:
		return 0
	}
}

// sameJSON reports whether a and b encode to the same JSON. Unlike ==, it
// ignores what JSON does not store, such as a time's monotonic clock reading.
func sameJSON(a, b any) bool {
	encodedA, errA := json.Marshal(a)
	encodedB, errB := json.Marshal(b)

	return errA == nil && errB == nil && bytes.Equal(encodedA, encodedB)
}

// decodeEvent decodes and checks the event stored under key.
func decodeEvent(key string, value []byte) (storedEvent, error) {
	var stored storedEvent
	err := json.Unmarshal(value, &stored)
	if err != nil {
		return storedEvent{}, fmt.Errorf("%w: decode %s: %w", ErrCatalog, key, err)
	}

	if key != eventKeyPrefix+stored.ID {
		return storedEvent{}, fmt.Errorf("%w: %s contains event id %q, want the id in the key", ErrCatalog, key, stored.ID)
	}
	if code, err := NormalizeJoinCode(stored.Code); err != nil || code != stored.Code {
		return storedEvent{}, fmt.Errorf("%w: %s has invalid join code %q", ErrCatalog, key, stored.Code)
	}
	if len(stored.TokenHash) != 64 {
		return storedEvent{}, fmt.Errorf("%w: %s has no presenter token hash", ErrCatalog, key)
	}

	return stored, nil
}

// decodePoll decodes and checks the poll stored under key. A record written
// before polls had results_visible gets true, the default of new polls.
func decodePoll(key string, value []byte) (Poll, error) {
	var poll Poll
	err := json.Unmarshal(value, &poll)
	if err != nil {
		return Poll{}, fmt.Errorf("%w: decode %s: %w", ErrCatalog, key, err)
	}

	var visibility struct {
		ResultsVisible *bool `json:"results_visible"`
	}
	err = json.Unmarshal(value, &visibility)
	if err != nil {
		return Poll{}, fmt.Errorf("%w: decode %s: %w", ErrCatalog, key, err)
	}
	poll.ResultsVisible = visibility.ResultsVisible == nil || *visibility.ResultsVisible

	if key != pollKeyPrefix+poll.ID {
		return Poll{}, fmt.Errorf("%w: %s contains poll id %q, want the id in the key", ErrCatalog, key, poll.ID)
	}
	if poll.State != PollDraft && poll.State != PollOpen && poll.State != PollClosed {
		return Poll{}, fmt.Errorf("%w: %s has unknown state %q", ErrCatalog, key, poll.State)
	}
	if poll.Kind != PollSingle && poll.Kind != PollMultiple {
		return Poll{}, fmt.Errorf("%w: %s has unknown kind %q", ErrCatalog, key, poll.Kind)
	}
	if len(poll.Options) < MinPollOptions || len(poll.Options) > MaxPollOptions {
		return Poll{}, fmt.Errorf("%w: %s has %d options", ErrCatalog, key, len(poll.Options))
	}
	for i, option := range poll.Options {
		if option.ID != optionID(i) {
			return Poll{}, fmt.Errorf("%w: %s has option id %q at position %d, want %q", ErrCatalog, key, option.ID, i+1, optionID(i))
		}
	}

	return poll, nil
}
