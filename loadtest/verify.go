package main

import (
	"fmt"
	"sort"
)

// pollExpectation bounds the final results of one poll from the answers the voters
// saw. Min and Max are per option index: a vote whose answer never arrived may or may
// not have been stored, so it widens the range instead of being guessed.
type pollExpectation struct {
	Min       []int64 `json:"min"`
	Max       []int64 `json:"max"`
	VotersMin int64   `json:"voters_min"`
	VotersMax int64   `json:"voters_max"`
	// Unconfirmed counts the votes without a final answer.
	Unconfirmed int64 `json:"unconfirmed"`
}

// expectation maps a poll id to its expected final results.
type expectation map[string]*pollExpectation

func (e expectation) poll(id string, options int) *pollExpectation {
	p := e[id]
	if p == nil {
		p = &pollExpectation{Min: make([]int64, options), Max: make([]int64, options)}
		e[id] = p
	}
	return p
}

// add records one voter's state in one poll: choice is the option of its last
// accepted vote and pending the option of a vote that was sent but never answered
// (noChoice for none). The final count is either choice or, if the pending vote was
// stored after all, pending.
func (e expectation) add(poll string, options, choice, pending int) {
	p := e.poll(poll, options)
	if pending == choice {
		pending = noChoice
	}
	if pending == noChoice {
		if choice != noChoice {
			p.Min[choice]++
			p.Max[choice]++
			p.VotersMin++
			p.VotersMax++
		}
		return
	}

	p.Unconfirmed++
	p.Max[pending]++
	p.VotersMax++
	if choice != noChoice {
		p.Max[choice]++
		p.VotersMin++
	}
}

// merge adds other into e.
func (e expectation) merge(other expectation) {
	for id, o := range other {
		p := e.poll(id, len(o.Min))
		for i := range o.Min {
			p.Min[i] += o.Min[i]
			p.Max[i] += o.Max[i]
		}
		p.VotersMin += o.VotersMin
		p.VotersMax += o.VotersMax
		p.Unconfirmed += o.Unconfirmed
	}
}

// pollVerdict compares one poll's final results with its expectation.
type pollVerdict struct {
	Poll          string           `json:"poll"`
	Counts        map[string]int64 `json:"counts"`
	ExpectedMin   map[string]int64 `json:"expected_min"`
	ExpectedMax   map[string]int64 `json:"expected_max"`
	Voters        int64            `json:"voters"`
	VotersMin     int64            `json:"voters_min"`
	VotersMax     int64            `json:"voters_max"`
	Final         bool             `json:"final"`
	Lost          int64            `json:"lost"`
	DoubleCounted int64            `json:"double_counted"`
	Unconfirmed   int64            `json:"unconfirmed"`
}

// verdict is the zero-loss check of a run.
type verdict struct {
	Lost          int64         `json:"lost"`
	DoubleCounted int64         `json:"double_counted"`
	Unconfirmed   int64         `json:"unconfirmed"`
	Polls         []pollVerdict `json:"polls"`
}

// optionID returns the wire id of option index i: o1 … o10.
func optionID(i int) string { return fmt.Sprintf("o%d", i+1) }

// verify compares the final results document of every poll with what the voters saw
// acknowledged. A vote is lost when an option, or the poll's total, has fewer votes
// than the acks account for, and double counted when it has more. The polls must be
// single-choice, as the load tester creates them. A final document that is missing or not
// final is reported as all of its expected votes lost.
func verify(expect expectation, final map[string]resultsDoc) verdict {
	ids := make([]string, 0, len(expect))
	for id := range expect {
		ids = append(ids, id)
	}
	sort.Strings(ids)

	var v verdict
	for _, id := range ids {
		pv := verifyPoll(id, expect[id], final[id])
		v.Lost += pv.Lost
		v.DoubleCounted += pv.DoubleCounted
		v.Unconfirmed += pv.Unconfirmed
		v.Polls = append(v.Polls, pv)
	}
	return v
}

func verifyPoll(id string, e *pollExpectation, doc resultsDoc) pollVerdict {
	pv := pollVerdict{
		Poll:        id,
		Counts:      doc.Counts,
		ExpectedMin: map[string]int64{},
		ExpectedMax: map[string]int64{},
		Voters:      doc.Voters,
		VotersMin:   e.VotersMin,
		VotersMax:   e.VotersMax,
		Final:       doc.Final,
		Unconfirmed: e.Unconfirmed,
	}
	for i := range e.Min {
		o := optionID(i)
		pv.ExpectedMin[o], pv.ExpectedMax[o] = e.Min[i], e.Max[i]

		got := doc.Counts[o]
		if !doc.Final {
			got = 0
		}
		if got < e.Min[i] {
			pv.Lost += e.Min[i] - got
		}
		if got > e.Max[i] {
			pv.DoubleCounted += got - e.Max[i]
		}
	}
	var total int64
	for o, n := range doc.Counts {
		if !doc.Final {
			continue
		}
		total += n
		if !isOptionIndex(o, len(e.Min)) && n > 0 {
			pv.DoubleCounted += n
		}
	}

	// A vote without an answer widens the range of two options at once, so the
	// per-option bounds alone miss a voter whose vote vanished from both. The polls
	// are single-choice: the total is the number of voters, which has its own bounds.
	pv.Lost = max(pv.Lost, e.VotersMin-total)
	pv.DoubleCounted = max(pv.DoubleCounted, total-e.VotersMax)
	return pv
}

func isOptionIndex(o string, options int) bool {
	for i := range options {
		if optionID(i) == o {
			return true
		}
	}
	return false
}
