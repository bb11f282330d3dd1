package main

import (
	"math/rand/v2"

	"github.com/google/uuid"
)

// maxResends bounds how often one vote is sent again with the same vote_id after an
// overloaded answer or a lost connection.
const maxResends = 5

// noChoice marks a poll where the voter has no accepted or pending option.
const noChoice = -1

// voteKind distinguishes a fresh vote, a change of an accepted vote, and a resend of an
// already accepted vote_id (which must be answered duplicate).
type voteKind uint8

const (
	kindNew voteKind = iota
	kindChange
	kindRetry
)

// pollState is one voter's view of one poll.
type pollState struct {
	choice     int    // accepted option index, or noChoice
	acceptedID string // vote_id of the accepted choice

	// The vote in flight or waiting to be resent; pending == noChoice when the poll
	// is free.
	pending     int
	pendingID   string
	pendingKind voteKind
	resends     int
	uncertain   bool // the vote may have been stored but no ack confirms it yet
}

// voter is one simulated audience member: its polls and what it sent. It is owned by
// one goroutine.
type voter struct {
	index    int
	polls    []pollState
	options  []int
	change   []bool
	rng      *rand.Rand
	inFlight int
}

// action is one vote to send.
type action struct {
	poll   int
	voteID string
	option int
	kind   voteKind
}

func newVoter(index int, polls []planPoll, seed uint64) *voter {
	v := &voter{
		index:   index,
		polls:   make([]pollState, len(polls)),
		options: make([]int, len(polls)),
		change:  make([]bool, len(polls)),
		rng:     rand.New(rand.NewPCG(seed, uint64(index))),
	}
	for i, p := range polls {
		v.polls[i] = pollState{choice: noChoice, pending: noChoice}
		v.options[i] = p.Options
		v.change[i] = p.AllowChange
	}
	return v
}

// next picks the next vote, or returns false when every poll is busy or the voter has
// nothing left to send (every poll voted and none allows changes). A retry resends the
// vote_id of an accepted vote with retryShare probability; a change replaces an
// accepted vote with changeShare probability.
func (v *voter) next(retryShare, changeShare float64) (action, bool) {
	fresh, changeable, retryable := v.freePolls()
	if len(fresh) == 0 && len(changeable) == 0 {
		return action{}, false
	}

	var a action
	switch {
	case len(retryable) > 0 && v.rng.Float64() < retryShare:
		a.poll = retryable[v.rng.IntN(len(retryable))]
		a.kind = kindRetry
		a.voteID = v.polls[a.poll].acceptedID
		a.option = v.polls[a.poll].choice
	case len(changeable) > 0 && (len(fresh) == 0 || v.rng.Float64() < changeShare):
		a.poll = changeable[v.rng.IntN(len(changeable))]
		a.kind = kindChange
		a.voteID = uuid.NewString()
		a.option = v.otherOption(a.poll)
	default:
		a.poll = fresh[v.rng.IntN(len(fresh))]
		a.kind = kindNew
		a.voteID = uuid.NewString()
		a.option = v.rng.IntN(v.options[a.poll])
	}

	p := &v.polls[a.poll]
	p.pending, p.pendingID, p.pendingKind, p.resends, p.uncertain = a.option, a.voteID, a.kind, 0, false
	v.inFlight++
	return a, true
}

// freePolls lists the polls without a vote in flight: never voted, changeable, and
// holding an accepted vote_id that can be resent.
func (v *voter) freePolls() (fresh, changeable, retryable []int) {
	for i := range v.polls {
		p := &v.polls[i]
		if p.pending != noChoice {
			continue
		}
		if p.choice == noChoice {
			fresh = append(fresh, i)
			continue
		}
		retryable = append(retryable, i)
		if v.change[i] && v.options[i] > 1 {
			changeable = append(changeable, i)
		}
	}
	return fresh, changeable, retryable
}

// ready reports whether next can pick a vote: fewer than limit votes are in flight and
// a poll is free that was never voted or allows a change.
func (v *voter) ready(limit int) bool {
	if v.inFlight >= limit {
		return false
	}
	for i := range v.polls {
		p := &v.polls[i]
		if p.pending == noChoice && (p.choice == noChoice || (v.change[i] && v.options[i] > 1)) {
			return true
		}
	}
	return false
}

func (v *voter) otherOption(poll int) int {
	o := v.rng.IntN(v.options[poll] - 1)
	if o >= v.polls[poll].choice {
		o++
	}
	return o
}

// outcome is what an answer means for the vote it answers.
type outcome uint8

const (
	outcomeOK         outcome = iota // as expected
	outcomeUnexpected                // accepted a retry, or duplicate for a fresh vote_id
	outcomeResend                    // send again with the same vote_id
	outcomeUnknown                   // no answer matches a vote in flight
)

// answer applies the server's answer to the vote in flight on poll with voteID.
// status is accepted, duplicate or rejected; code is the error code of a rejection.
func (v *voter) answer(poll int, voteID, status, code string) outcome {
	p := &v.polls[poll]
	if p.pending == noChoice || p.pendingID != voteID {
		return outcomeUnknown
	}
	if status == "rejected" && code == "overloaded" && p.pendingKind != kindRetry {
		p.uncertain = true
		return outcomeResend
	}

	result := outcomeOK
	switch status {
	case "accepted", "duplicate":
		if p.pendingKind == kindRetry && status == "accepted" {
			result = outcomeUnexpected
		}
		if p.pendingKind != kindRetry && status == "duplicate" && p.resends == 0 {
			result = outcomeUnexpected
		}
		p.choice, p.acceptedID = p.pending, p.pendingID
	}
	v.free(p)
	return result
}

// lost marks the vote in flight on poll as sent without an answer: it may have been
// stored. It returns whether the vote may be sent again.
func (v *voter) lost(poll int) bool {
	p := &v.polls[poll]
	if p.pending == noChoice {
		return false
	}
	if p.pendingKind == kindRetry {
		v.free(p)
		return false
	}
	p.uncertain = true
	return p.resends < maxResends
}

// resend returns the vote waiting on poll for sending again with its vote_id.
func (v *voter) resend(poll int) (action, bool) {
	p := &v.polls[poll]
	if p.pending == noChoice || p.resends >= maxResends {
		return action{}, false
	}
	p.resends++
	return action{poll: poll, voteID: p.pendingID, option: p.pending, kind: p.pendingKind}, true
}

func (v *voter) free(p *pollState) {
	p.pending, p.pendingID, p.uncertain, p.resends = noChoice, "", false, 0
	v.inFlight--
}

// addTo adds the voter's final state to expect: per poll, the accepted choice counts
// once, and a vote still without an answer may or may not have replaced it.
func (v *voter) addTo(expect expectation, polls []planPoll) {
	for i := range v.polls {
		p := &v.polls[i]
		pending := noChoice
		if p.pending != noChoice && p.pendingKind != kindRetry {
			pending = p.pending
		}
		expect.add(polls[i].ID, polls[i].Options, p.choice, pending)
	}
}
