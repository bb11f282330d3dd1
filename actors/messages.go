package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// Outcome is a shard's reply to one vote. The zero value is no outcome, so a
// zero Ack never reads as accepted.
type Outcome int

// Outcomes of a vote. Their String forms are the status and error codes of
// the wire contract.
const (
	// OutcomeAccepted means the vote is durable in the vote stream and counted.
	OutcomeAccepted Outcome = iota + 1

	// OutcomeDuplicate means this vote id was accepted before. The Ack
	// carries the first receipt, and nothing is counted again.
	OutcomeDuplicate

	// OutcomeAlreadyVoted means the voter has a vote in the poll and the
	// poll does not allow a change.
	OutcomeAlreadyVoted

	// OutcomePollClosed means the poll was closed at the voter's shard.
	OutcomePollClosed

	// OutcomeOverloaded means the vote was not stored: the shard queue was
	// full, an append failed, the wait timed out or the system is stopping.
	// The client retries with the same vote id.
	OutcomeOverloaded
)

// String returns the wire code of o, or "unknown" for a value outside the
// Outcome constants.
func (o Outcome) String() string {
	switch o {
	case OutcomeAccepted:
		return "accepted"
	case OutcomeDuplicate:
		return "duplicate"
	case OutcomeAlreadyVoted:
		return "already_voted"
	case OutcomePollClosed:
		return "poll_closed"
	case OutcomeOverloaded:
		return "overloaded"
	default:
		return "unknown"
	}
}

// Receipt identifies where an accepted vote is stored: its shard and the
// vote stream sequence of the batch that carried it first.
type Receipt struct {
	VoteID string `json:"vote_id"`
	Shard  int    `json:"shard"`
	Seq    uint64 `json:"seq"`
}

// Vote is one ballot as the hub sends it to a shard. Options are option ids;
// a repeated option id counts once.
type Vote struct {
	VoteID      string
	Poll        string
	Voter       string
	Options     []string
	AllowChange bool // the poll lets a voter replace their vote
}

// Ack is a shard's reply to a Vote. Receipt is set for OutcomeAccepted and
// OutcomeDuplicate only.
type Ack struct {
	Outcome Outcome
	Receipt Receipt
}

// Results is the merged results document of one poll. Counts has an entry for
// every registered option id, zero included. TotalVotes is the sum of Counts,
// so it equals Voters for a single-choice poll. Version grows by one with every
// stored document of the poll, across restarts.
type Results struct {
	Poll       string           `json:"poll"`
	Event      string           `json:"-"`
	Counts     map[string]int64 `json:"counts"`
	TotalVotes int64            `json:"total_votes"`
	Voters     int64            `json:"voters"`
	Version    uint64           `json:"version"`
	Final      bool             `json:"final"`
	UpdatedAt  time.Time        `json:"updated_at"`
}

// PollInfo is the description of a poll that the aggregator uses: its event,
// its option ids and whether it is closed.
type PollInfo struct {
	ID      string
	Event   string
	Options []string
	Closed  bool
}

// voteRequest requests that a shard store and count one vote. at is the arrival
// time in unix milliseconds.
type voteRequest struct {
	vote Vote
	at   int64
}

// appendResult is the outcome of one AppendBatch, posted to the shard by the
// goroutine that ran it.
type appendResult struct {
	batchID string
	seq     uint64
	err     error
	elapsed time.Duration
}

// snapshotResult is the outcome of one SaveSnapshot run in the background.
type snapshotResult struct {
	seq     uint64
	err     error
	elapsed time.Duration
}

// retryKind names what a retry timer restarts at a shard.
type retryKind int

const (
	retryRecovery retryKind = iota + 1
	retryCatchUp
)

// retryTick is posted by a shard's retry timer.
type retryTick struct {
	kind retryKind
}

// closeRequest marks a poll closed at a shard. With a sender, the shard
// replies with a closeReply once no vote of the poll is queued or in flight.
type closeRequest struct {
	poll string
}

// closeReply carries a shard's final totals of a closed poll, or err when the
// shard stopped before its barrier completed.
type closeReply struct {
	shard  int
	totals pollTotals
	err    error
}

// pollTotals is one shard's count of one poll.
type pollTotals struct {
	Counts     map[string]int64
	TotalVotes int64
	Voters     int64
	Closed     bool
}

// totalsRequest requests the totals of every poll that a shard has seen.
type totalsRequest struct{}

// totalsReply is the reply to a totalsRequest. A shard that has not recovered yet
// replies with ready false and no polls.
type totalsReply struct {
	shard int
	ready bool
	polls map[string]pollTotals
	// fence is a grain's last known sequence on its shard's subject. A
	// superseded activation has a lower one than its successor, so the
	// aggregator ignores its replies once it heard from the successor.
	fence uint64
	// from is the activation that replied. gatherTotals sets it; it does not
	// cross the wire.
	from *actor.PID
}

// stopRequest starts a shard's graceful stop. deadline bounds its snapshot.
type stopRequest struct {
	deadline time.Time
}

// stopReply reports that a shard replied to every vote it held and saved its
// snapshot, or why the snapshot failed.
type stopReply struct {
	shard int
	err   error
}

// registerPoll sends a poll's description to the aggregator.
type registerPoll struct {
	info PollInfo
}

// roundResult is one round of totals gathered by the aggregator's ticker.
// skipped lists the shards that did not reply in time.
type roundResult struct {
	replies []totalsReply
	skipped []int
}

// finalizeRequest carries the barrier totals of every shard for a closed
// poll, from which the aggregator builds the final document.
type finalizeRequest struct {
	poll   string
	totals []pollTotals
}

// finalizeReply is the final document, or why it could not be stored.
type finalizeReply struct {
	results Results
	err     error
}

// deferredRequest is a request that arrived at a shard before its recovery
// finished, kept with its sender until the shard is ready.
type deferredRequest struct {
	message any
	sender  *actor.PID
}
