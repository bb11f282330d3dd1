// Package actors counts votes with one Proto.Actor actor per shard and merges
// the shards' totals into results documents with an aggregator actor.
//
// Each shard actor owns the voters that the hub routes to it, so the vote
// state has no lock: only the actor reads or changes it. A shard checks each
// vote in this order:
//
//   - a vote id it applied before gets OutcomeDuplicate with the first receipt,
//   - a vote id still queued or in flight waits for that vote and then gets
//     OutcomeDuplicate, or the same failure,
//   - a vote in a closed poll gets OutcomePollClosed,
//   - a second vote of a voter in a poll that allows no change gets
//     OutcomeAlreadyVoted,
//   - a vote that finds the queue full gets OutcomeOverloaded,
//
// and any other vote is queued.
//
// Votes reach the vote stream by group commit. While one append is in flight,
// arriving votes queue and go together in the next append, so light load gets
// one-vote appends and a surge gets batches of up to Config.MaxBatch votes
// (and at most persistence.MaxBatchBytes encoded). The store in turn puts
// the batches of all shards that wait for one publish into the next stream
// message. A vote is applied to the
// counts and gets OutcomeAccepted only after AppendBatch returned nil, that is
// once it is durable. Each vote of a failed append gets OutcomeOverloaded, and
// none of them is applied. Because a failed append may still
// have been stored, the shard then replays the stream before its next append,
// and applying a vote is idempotent per (poll, voter, vote id), so a retried
// vote id never counts twice.
//
// On start a recovery pass loads every shard's latest snapshot and reads
// the vote stream once from the lowest snapshot sequence. It applies each
// batch to its shard when the batch is newer than that shard's snapshot,
// with the same apply function as the live path. Each shard then gets its state as a
// message, and votes that arrive before it wait. A failed pass is retried
// with a backoff. A shard actor that its supervisor restarts after a panic
// recovers alone from its snapshot and a filtered replay. A shard snapshots
// every Config.SnapshotEvery applied votes and when it stops.
//
// Closing a poll is a barrier. Every shard rejects the poll's later votes,
// waits until each queued and in-flight vote of the poll has its outcome and
// replies with its totals. The aggregator then stores and publishes the final
// document at once.
//
// The aggregator requests the totals of every shard each Config.BroadcastInterval
// and stores and publishes a new document, with the next version, for every
// registered poll whose totals changed.
//
// Limits. A vote beyond one of them gets OutcomeOverloaded unless stated
// otherwise:
//
//   - Config.MaxQueue votes held per shard, queued and in flight,
//   - Config.MaxQueue votes waiting per shard while it recovers,
//   - Config.MaxQueue plus Config.MaxBatch Vote calls in progress per shard,
//   - 64 further requests waiting on one pending vote id,
//   - the field limits of persistence.EncodeBatch for each vote, which Vote
//     rejects with ErrInvalidVote.
//
// Shards are spawned and looked up by name ("shard-000", "shard-001", ...),
// so that they can become cluster grains without a change of callers.
package actors
