package main

import (
	"testing"
)

func finalDoc(poll string, counts map[string]int64) resultsDoc {
	var voters int64
	for _, n := range counts {
		voters += n
	}
	return resultsDoc{Poll: poll, Counts: counts, Voters: voters, TotalVotes: voters, Final: true}
}

func TestVerifyWithoutChanges(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		counts     map[string]int64
		wantLost   int64
		wantDouble int64
	}{
		{"exact", map[string]int64{"o1": 2, "o2": 1, "o3": 0}, 0, 0},
		{"one lost", map[string]int64{"o1": 1, "o2": 1, "o3": 0}, 1, 0},
		{"one double", map[string]int64{"o1": 2, "o2": 2, "o3": 0}, 0, 1},
		{"moved to another option", map[string]int64{"o1": 2, "o2": 0, "o3": 1}, 1, 1},
		{"unknown option counted", map[string]int64{"o1": 2, "o2": 1, "o3": 0, "o9": 4}, 0, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := expectation{}
			e.add("p", 3, 0, noChoice)
			e.add("p", 3, 0, noChoice)
			e.add("p", 3, 1, noChoice)
			e.add("p", 3, noChoice, noChoice) // a voter whose votes were all rejected

			v := verify(e, map[string]resultsDoc{"p": finalDoc("p", tc.counts)})
			if v.Lost != tc.wantLost {
				t.Errorf("lost = %d, want %d", v.Lost, tc.wantLost)
			}
			if v.DoubleCounted != tc.wantDouble {
				t.Errorf("double_counted = %d, want %d", v.DoubleCounted, tc.wantDouble)
			}
		})
	}
}

// changedVoters plays two voters through the voter state machine: the first votes o1
// then changes to o2, the second votes o3. Only the last accepted choice counts.
func changedVoters(t *testing.T) expectation {
	t.Helper()
	polls := []planPoll{{ID: "p", Options: 3, AllowChange: true}}
	e := expectation{}

	a := newVoter(0, polls, 1)
	a.polls[0].pending, a.polls[0].pendingID, a.polls[0].pendingKind = 0, "v1", kindNew
	a.inFlight = 1
	if got := a.answer(0, "v1", "accepted", ""); got != outcomeOK {
		t.Fatalf("first vote outcome = %d, want ok", got)
	}
	a.polls[0].pending, a.polls[0].pendingID, a.polls[0].pendingKind = 1, "v2", kindChange
	a.inFlight = 1
	if got := a.answer(0, "v2", "accepted", ""); got != outcomeOK {
		t.Fatalf("change outcome = %d, want ok", got)
	}
	a.addTo(e, polls)

	b := newVoter(1, polls, 1)
	b.polls[0].pending, b.polls[0].pendingID, b.polls[0].pendingKind = 2, "v3", kindNew
	b.inFlight = 1
	b.answer(0, "v3", "accepted", "")
	b.addTo(e, polls)
	return e
}

func TestVerifyWithChanges(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		counts     map[string]int64
		wantLost   int64
		wantDouble int64
	}{
		{"last choice counts", map[string]int64{"o1": 0, "o2": 1, "o3": 1}, 0, 0},
		{"old choice kept", map[string]int64{"o1": 1, "o2": 0, "o3": 1}, 1, 1},
		{"both choices counted", map[string]int64{"o1": 1, "o2": 1, "o3": 1}, 0, 1},
		{"change lost", map[string]int64{"o1": 0, "o2": 0, "o3": 1}, 1, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := verify(changedVoters(t), map[string]resultsDoc{"p": finalDoc("p", tc.counts)})
			if v.Lost != tc.wantLost {
				t.Errorf("lost = %d, want %d", v.Lost, tc.wantLost)
			}
			if v.DoubleCounted != tc.wantDouble {
				t.Errorf("double_counted = %d, want %d", v.DoubleCounted, tc.wantDouble)
			}
		})
	}
}

func TestVerifyUnansweredVoteEitherWay(t *testing.T) {
	t.Parallel()
	e := expectation{}
	e.add("p", 2, 0, 1)        // voter A: accepted o1, then a change to o2 never answered
	e.add("p", 2, noChoice, 0) // voter B: a first vote for o1 never answered
	for _, counts := range []map[string]int64{
		{"o1": 1, "o2": 0}, // A's change and B's vote not stored
		{"o1": 0, "o2": 1}, // A's change stored, B's vote not
		{"o1": 2, "o2": 0}, // A's change not stored, B's vote stored
		{"o1": 1, "o2": 1}, // both stored
	} {
		v := verify(e, map[string]resultsDoc{"p": finalDoc("p", counts)})
		if v.Lost != 0 || v.DoubleCounted != 0 {
			t.Errorf("counts %v: lost %d, double_counted %d, want 0 and 0", counts, v.Lost, v.DoubleCounted)
		}
		if v.Unconfirmed != 2 {
			t.Errorf("counts %v: unconfirmed = %d, want 2", counts, v.Unconfirmed)
		}
	}

	v := verify(e, map[string]resultsDoc{"p": finalDoc("p", map[string]int64{"o1": 0, "o2": 0})})
	if v.Lost != 1 {
		t.Errorf("accepted vote missing: lost = %d, want 1", v.Lost)
	}
	v = verify(e, map[string]resultsDoc{"p": finalDoc("p", map[string]int64{"o1": 2, "o2": 1})})
	if v.DoubleCounted != 1 {
		t.Errorf("three votes from two voters: double_counted = %d, want 1", v.DoubleCounted)
	}
}

func TestVerifyNonFinalDocumentLosesAll(t *testing.T) {
	t.Parallel()
	e := expectation{}
	e.add("p", 2, 0, noChoice)
	e.add("p", 2, 1, noChoice)
	doc := finalDoc("p", map[string]int64{"o1": 1, "o2": 1})
	doc.Final = false

	v := verify(e, map[string]resultsDoc{"p": doc})
	if v.Lost != 2 {
		t.Errorf("lost = %d, want 2", v.Lost)
	}
	v = verify(e, map[string]resultsDoc{})
	if v.Lost != 2 {
		t.Errorf("missing document: lost = %d, want 2", v.Lost)
	}
}

func TestVoterRetryMustBeDuplicate(t *testing.T) {
	t.Parallel()
	polls := []planPoll{{ID: "p", Options: 2, AllowChange: true}}
	v := newVoter(0, polls, 1)

	a, ok := v.next(0, 0)
	if !ok || a.kind != kindNew {
		t.Fatalf("first action = %+v, %v; want a new vote", a, ok)
	}
	if got := v.answer(0, a.voteID, "accepted", ""); got != outcomeOK {
		t.Fatalf("first answer outcome = %d, want ok", got)
	}

	r, ok := v.next(1, 0)
	if !ok || r.kind != kindRetry || r.voteID != a.voteID || r.option != a.option {
		t.Fatalf("retry = %+v, %v; want vote %s option %d again", r, ok, a.voteID, a.option)
	}
	if got := v.answer(0, r.voteID, "duplicate", ""); got != outcomeOK {
		t.Errorf("retry answered duplicate: outcome = %d, want ok", got)
	}

	r, _ = v.next(1, 0)
	if got := v.answer(0, r.voteID, "accepted", ""); got != outcomeUnexpected {
		t.Errorf("retry answered accepted: outcome = %d, want unexpected", got)
	}
}

func TestVoterWithoutChangesStops(t *testing.T) {
	t.Parallel()
	polls := []planPoll{{ID: "p", Options: 2}}
	v := newVoter(0, polls, 1)

	a, _ := v.next(0, 0)
	v.answer(0, a.voteID, "accepted", "")
	if r, ok := v.next(1, 1); ok {
		t.Errorf("next = %+v after the only poll was voted without changes, want none", r)
	}
	if v.ready(1) {
		t.Error("ready = true with nothing left to send")
	}
}

func TestVoterOverloadedResendsSameID(t *testing.T) {
	t.Parallel()
	polls := []planPoll{{ID: "p", Options: 2}}
	v := newVoter(0, polls, 1)
	a, _ := v.next(0, 0)

	if got := v.answer(0, a.voteID, "rejected", "overloaded"); got != outcomeResend {
		t.Fatalf("overloaded outcome = %d, want resend", got)
	}
	r, ok := v.resend(0)
	if !ok || r.voteID != a.voteID || r.option != a.option {
		t.Fatalf("resend = %+v, %v; want vote %s option %d", r, ok, a.voteID, a.option)
	}
	if got := v.answer(0, r.voteID, "duplicate", ""); got != outcomeOK {
		t.Fatalf("duplicate after resend outcome = %d, want ok", got)
	}

	e := expectation{}
	v.addTo(e, polls)
	if e["p"].Min[a.option] != 1 || e["p"].Unconfirmed != 0 {
		t.Errorf("expectation = %+v, want one confirmed vote for option %d", *e["p"], a.option)
	}
}
