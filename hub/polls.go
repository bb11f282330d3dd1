package hub

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
)

// CreatePoll adds a draft poll to the event. Invalid fields get an *Error with
// CodeInvalidMessage naming the value and the limit (see MaxQuestionLength and
// the other limits), an unknown event gets CodeUnknownEvent, and an event that
// already has MaxPollsPerEvent polls gets CodeInvalidMessage.
func (r *Registry) CreatePoll(ctx context.Context, eventID string, p NewPoll) (Poll, error) {
	p, err := validateNewPoll(p)
	if err != nil {
		return Poll{}, err
	}

	err = r.lockWrites(ctx)
	if err != nil {
		return Poll{}, err
	}
	defer r.unlockWrites()

	r.mu.RLock()
	_, known := r.events[eventID]
	siblings := r.eventPolls[eventID]
	var previous time.Time
	if len(siblings) > 0 {
		previous = r.polls[siblings[len(siblings)-1]].CreatedAt
	}
	r.mu.RUnlock()

	if !known {
		return Poll{}, Errorf(CodeUnknownEvent, "no event has id %s", quote(eventID))
	}
	if len(siblings) >= MaxPollsPerEvent {
		return Poll{}, Errorf(CodeInvalidMessage, "event %s already has %d polls, the maximum; create a new event", eventID, len(siblings))
	}

	poll := newPoll(eventID, p, r.now())

	// Creation times order an event's polls after a restart, so they must grow
	// strictly even if the clock repeats a value or steps back.
	if !poll.CreatedAt.After(previous) {
		poll.CreatedAt = previous.Add(time.Nanosecond)
	}

	key := pollKeyPrefix + poll.ID
	revision, err := r.put(ctx, key, poll)
	if err != nil {
		return Poll{}, err
	}

	r.mu.Lock()
	r.polls[poll.ID] = poll
	r.eventPolls[eventID] = append(r.eventPolls[eventID], poll.ID)
	r.revisions[key] = revision
	r.mu.Unlock()

	r.logger.Debug("poll created", "event", eventID, "poll", poll.ID, "options", len(poll.Options))

	return clonePoll(poll), nil
}

// newPoll returns a draft poll of the validated request p.
func newPoll(eventID string, p NewPoll, now time.Time) Poll {
	options := make([]Option, len(p.Options))
	for i, label := range p.Options {
		options[i] = Option{ID: optionID(i), Label: label}
	}

	return Poll{
		ID:          uuid.NewString(),
		Event:       eventID,
		Question:    p.Question,
		Options:     options,
		Kind:        p.Kind,
		AllowChange: p.AllowChange,
		// validateNewPoll always sets ResultsVisible.
		ResultsVisible: p.ResultsVisible == nil || *p.ResultsVisible,
		State:          PollDraft,
		CreatedAt:      now,
	}
}

// Poll returns the poll with the id. An unknown id gets an *Error with
// CodeUnknownPoll.
func (r *Registry) Poll(id string) (Poll, error) {
	r.mu.RLock()
	poll, ok := r.polls[id]
	r.mu.RUnlock()

	if !ok {
		return Poll{}, unknownPoll(id)
	}

	return clonePoll(poll), nil
}

func unknownPoll(id string) *Error {
	return Errorf(CodeUnknownPoll, "no poll has id %s", quote(id))
}

// Polls returns every poll of every event, ordered by creation time.
func (r *Registry) Polls() []Poll {
	r.mu.RLock()
	polls := make([]Poll, 0, len(r.polls))
	for _, poll := range r.polls {
		polls = append(polls, clonePoll(poll))
	}
	r.mu.RUnlock()

	slices.SortFunc(polls, comparePolls)

	return polls
}

func comparePolls(a, b Poll) int {
	return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
}

// OpenPoll moves a draft poll to open and returns it. Opening an open poll
// changes nothing and returns it. A closed poll gets an *Error with
// CodePollClosed, an unknown one CodeUnknownPoll.
func (r *Registry) OpenPoll(ctx context.Context, id string) (Poll, error) {
	return r.changePoll(ctx, id, func(poll *Poll, now time.Time) (bool, error) {
		switch poll.State {
		case PollOpen:
			return false, nil
		case PollClosed:
			return false, Errorf(CodePollClosed, "poll %s is closed and cannot be opened again; create a new poll", id)
		}

		poll.State = PollOpen
		poll.OpenedAt = &now

		return true, nil
	})
}

// ClosePoll moves an open or draft poll to closed and returns it. Closing a
// closed poll changes nothing and returns it. An unknown poll gets an *Error
// with CodeUnknownPoll.
func (r *Registry) ClosePoll(ctx context.Context, id string) (Poll, error) {
	return r.changePoll(ctx, id, func(poll *Poll, now time.Time) (bool, error) {
		if poll.State == PollClosed {
			return false, nil
		}

		poll.State = PollClosed
		poll.ClosedAt = &now

		return true, nil
	})
}

// SetResultsVisible shows (visible true) or hides the poll's results from the
// audience and returns the poll. It works in every state, closed included,
// and setting the current value changes nothing. An unknown poll gets an
// *Error with CodeUnknownPoll.
func (r *Registry) SetResultsVisible(ctx context.Context, id string, visible bool) (Poll, error) {
	return r.changePoll(ctx, id, func(poll *Poll, _ time.Time) (bool, error) {
		if poll.ResultsVisible == visible {
			return false, nil
		}

		poll.ResultsVisible = visible

		return true, nil
	})
}

// ResultsVisible reports whether the poll's results may go to the audience.
// An unknown poll reports false.
func (r *Registry) ResultsVisible(id string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()

	return r.polls[id].ResultsVisible
}

// changePoll applies change to a copy of the poll and, when change reports a
// change, stores the copy in the catalog and then in memory. The catalog
// write is conditional on the revision of the copy (see update), so when
// another hub changed the poll first, the change is refused until the watch
// has brought that hub's version here, and is then made on it.
//
// NOTE: after Load the registry does not know the revisions of its values
// until the catalog watch delivers them, and a change in that moment writes
// unconditionally, as every write did before.
func (r *Registry) changePoll(ctx context.Context, id string, change func(*Poll, time.Time) (bool, error)) (Poll, error) {
	err := r.lockWrites(ctx)
	if err != nil {
		return Poll{}, err
	}
	defer r.unlockWrites()

	r.mu.RLock()
	current, ok := r.polls[id]
	r.mu.RUnlock()

	if !ok {
		return Poll{}, unknownPoll(id)
	}

	next := clonePoll(current)
	changed, err := change(&next, r.now())
	if err != nil || !changed {
		return next, err
	}

	key := pollKeyPrefix + id
	r.mu.RLock()
	held := r.revisions[key]
	r.mu.RUnlock()

	revision, err := r.update(ctx, key, next, held)
	if err != nil {
		return Poll{}, err
	}

	r.mu.Lock()
	r.polls[id] = next
	r.revisions[key] = revision
	r.mu.Unlock()

	r.logger.Debug("poll changed", "event", next.Event, "poll", id, "from", current.State, "to", next.State, "results_visible", next.ResultsVisible)

	return clonePoll(next), nil
}

// CheckVote returns the poll when a vote for options is acceptable now, or an
// *Error otherwise. An unknown poll gets CodeUnknownPoll, a draft
// CodePollNotOpen and a closed poll CodePollClosed. An option id the poll does
// not have gets CodeUnknownOption. No options, an option given twice, more
// options than the poll has, or other than one option in a single-choice poll
// get CodeInvalidMessage. CheckVote does not look at the voter's earlier votes.
func (r *Registry) CheckVote(pollID string, options []string) (Poll, error) {
	r.mu.RLock()
	poll, ok := r.polls[pollID]
	r.mu.RUnlock()

	if !ok {
		return Poll{}, unknownPoll(pollID)
	}

	switch poll.State {
	case PollDraft:
		return Poll{}, Errorf(CodePollNotOpen, "poll %s is not open yet; wait for the presenter to open it", pollID)
	case PollClosed:
		return Poll{}, Errorf(CodePollClosed, "poll %s is closed", pollID)
	}

	err := checkOptions(poll, options)
	if err != nil {
		return Poll{}, err
	}

	return clonePoll(poll), nil
}

// checkOptions returns an *Error naming the first problem with the chosen
// option ids, or nil.
func checkOptions(poll Poll, options []string) error {
	if len(options) == 0 {
		return Errorf(CodeInvalidMessage, "options is empty; choose an option id of poll %s such as %q", poll.ID, poll.Options[0].ID)
	}
	if len(options) > len(poll.Options) {
		return Errorf(CodeInvalidMessage, "vote has %d options but poll %s has only %d", len(options), poll.ID, len(poll.Options))
	}
	if poll.Kind == PollSingle && len(options) != 1 {
		return Errorf(CodeInvalidMessage, "poll %s is single choice, but the vote has %d options; choose exactly 1", poll.ID, len(options))
	}

	for i, chosen := range options {
		known := slices.ContainsFunc(poll.Options, func(o Option) bool { return o.ID == chosen })
		if !known {
			return Errorf(CodeUnknownOption, "option %s is not an option of poll %s; use an id from o1 to o%d", quote(chosen), poll.ID, len(poll.Options))
		}
		if slices.Contains(options[:i], chosen) {
			return Errorf(CodeInvalidMessage, "option %s appears twice in the vote; choose each option once", quote(chosen))
		}
	}

	return nil
}
