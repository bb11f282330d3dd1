package actors

import (
	"context"
	"fmt"
	"log/slog"
	"math/bits"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/livevote/livevote/persistence"
)

const (
	// maxWaiters is the maximum number of requests that wait on a pending
	// vote id besides the first. Further ones get OutcomeOverloaded.
	maxWaiters = 64

	// recoveryTimeout bounds one recovery attempt: snapshot load and replay.
	recoveryTimeout = 5 * time.Minute

	// snapshotTimeout bounds one SaveSnapshot that runs in the background,
	// and one LoadSnapshot inside a recovery attempt, whose own budget is
	// longer: a reply lost while the connection reconnected would otherwise
	// hold the shard for the whole recovery budget.
	snapshotTimeout = time.Minute

	// retryMin and retryMax bound the backoff between recovery or catch-up
	// attempts, which doubles from retryMin.
	retryMin = 100 * time.Millisecond
	retryMax = 5 * time.Second
)

// shardConfig is the configuration of a shard actor. It outlives any one incarnation of
// the actor, so an actor restarted by its supervisor keeps its counters, its
// goroutine owner and its batch ids unique.
type shardConfig struct {
	index         int
	store         *persistence.Store
	logger        *slog.Logger
	maxBatch      int
	maxQueue      int
	appendTimeout time.Duration
	snapshotEvery int
	bootID        string        // makes batch ids unique across starts
	batchCount    atomic.Uint64 // batches started, the last part of a batch id
	tasks         *taskGroup
	baseCtx       context.Context
	stats         *shardStats
	metrics       shardMetrics
	onReady       func(shard int)

	// grain is set for a shard that runs as a cluster grain: it recovers
	// on activation, claims its subject and appends fenced batches.
	grain *grainConfig

	// handedOver is set once an incarnation of the shard took the state of
	// the system's recovery pass. A later incarnation, started by the
	// supervisor after a panic, recovers on its own.
	handedOver atomic.Bool
}

// voteKey is the dedupe key of a vote.
type voteKey struct{ poll, voter, voteID string }

// voterKey names one voter in one poll.
type voterKey struct{ poll, voter string }

// pendingVote is a vote that is queued or in flight, with every request
// waiting for its reply. The sender gets the outcome. The waiters sent the
// same vote id again and get OutcomeDuplicate once it is accepted.
type pendingVote struct {
	record  persistence.VoteRecord
	sender  *actor.PID
	waiters []*actor.PID
	size    int // encoded bytes in a batch
}

// closeWaiter is a close barrier waiting for the poll's pending votes.
type closeWaiter struct {
	poll   string
	sender *actor.PID
}

// shard is the actor that owns one shard's voters. All of its fields are
// touched only by its Receive, so none of them needs a lock.
type shard struct {
	cfg   *shardConfig
	log   *slog.Logger
	state *shardState
	ready bool

	queue         []*pendingVote // waiting for the next append, in arrival order
	inFlight      []*pendingVote // the append under way, nil when none
	inFlightID    string
	pending       map[voteKey]*pendingVote
	pendingVoters map[voterKey]int
	pendingPolls  map[string]int
	closeWaiters  []closeWaiter
	deferred      []deferredRequest // requests that arrived before recovery finished
	deferredVotes int               // vote requests in deferred

	// unsure is set by a failed append, which may still land in the stream.
	// It blocks snapshots until a replay has covered the stream past it.
	unsure bool
	// catchUpDue blocks appends until a replay after a failed append succeeds.
	catchUpDue   bool
	retryTimer   *time.Timer
	retryAttempt int

	sinceSnapshot  int // votes applied since the last snapshot was encoded
	snapshotSaving bool
	savedSeq       uint64 // sequence of the latest stored snapshot
	closedChanged  bool   // a poll was closed since the latest snapshot

	stopping     bool
	stopSender   *actor.PID
	stopDeadline time.Time

	// Grain mode only. fence is the stream sequence of the last message on
	// the shard's subject that this activation has seen, which its next
	// append expects; claimSeq is the sequence of its own claim.
	fence    uint64
	claimSeq uint64
	lost     bool // another activation claimed the shard
}

func newShard(cfg *shardConfig) *shard {
	return &shard{
		cfg:           cfg,
		log:           cfg.logger.With("shard", cfg.index),
		state:         newShardState(),
		pending:       make(map[voteKey]*pendingVote),
		pendingVoters: make(map[voterKey]int),
		pendingPolls:  make(map[string]int),
	}
}

// Receive handles one message. Votes that arrive during recovery wait in
// the deferred list, so no vote is checked against a partial state.
func (sh *shard) Receive(ctx actor.Context) {
	sh.handle(ctx, ctx.Message())
}

func (sh *shard) handle(ctx actor.Context, message any) {
	switch msg := message.(type) {
	case *actor.Started:
		if sh.cfg.handedOver.Load() {
			sh.recover(ctx)
		}
	case *cluster.ClusterInit:
		sh.activate(ctx, msg)
	case *anypb.Any:
		decoded, err := fromWire(msg)
		if err != nil {
			sh.log.Warn("dropping an undecodable message", "sender", ctx.Sender(), "error", err)
			return
		}
		sh.handle(ctx, decoded)
	case *recoveredState:
		sh.onRecovered(ctx, msg)
	case *voteRequest:
		sh.onVote(ctx, msg, ctx.Sender())
	case *appendResult:
		sh.onAppendResult(ctx, msg)
	case *closeRequest:
		sh.onClose(ctx, msg, ctx.Sender())
	case *totalsRequest:
		sh.onTotals(ctx)
	case *snapshotResult:
		sh.onSnapshotResult(ctx, msg)
	case *retryTick:
		sh.onRetry(ctx, msg)
	case *stopRequest:
		sh.onStop(ctx, msg)
	case *actor.Stopping, *actor.Restarting:
		sh.stopRetry()
	case *actor.Stopped:
		if sh.cfg.grain != nil && sh.cfg.index >= 0 {
			sh.cfg.grain.system.removeLocal(sh.cfg.index, ctx.Self())
		}
	}
}

// reply sends message to to, in its wire form when to is on another
// member.
func (sh *shard) reply(ctx actor.Context, to *actor.PID, message any) {
	if to == nil {
		return
	}
	if sh.cfg.grain != nil && to.Address != ctx.Self().Address {
		ctx.Send(to, toWire(message))
		return
	}
	ctx.Send(to, message)
}

// onRecovered takes the state that the system's recovery pass rebuilt. A
// shard that is stopping or already recovered ignores it.
func (sh *shard) onRecovered(ctx actor.Context, msg *recoveredState) {
	if sh.stopping || sh.ready {
		return
	}

	sh.cfg.handedOver.Store(true)
	sh.becomeReady(ctx, msg)
}

// recover loads the latest snapshot and replays the shard's batches after
// it. Only an incarnation that the supervisor started after a panic runs
// it, because the first one takes its state from the system's recovery
// pass. On failure it schedules another attempt and the shard stays not
// ready.
func (sh *shard) recover(ctx actor.Context) {
	start := time.Now()
	rctx, cancel := context.WithTimeout(sh.cfg.baseCtx, recoveryTimeout)
	defer cancel()

	recovered, err := sh.load(rctx)
	if err != nil {
		delay := sh.backoff()
		sh.log.Warn("shard recovery failed; retrying", "attempt", sh.retryAttempt, "retry_in", delay, "error", err)
		sh.scheduleRetry(ctx, retryRecovery, delay)
		return
	}

	recovered.duration = time.Since(start)
	sh.becomeReady(ctx, recovered)
}

// becomeReady installs a recovered state, marks the shard ready and handles
// the requests that arrived meanwhile.
func (sh *shard) becomeReady(ctx actor.Context, r *recoveredState) {
	st := r.state
	sh.state = st
	sh.ready = true
	sh.retryAttempt = 0
	sh.savedSeq = r.snapshotSeq
	sh.sinceSnapshot = r.votes
	sh.cfg.stats.applied.Store(st.applied)
	sh.cfg.stats.ready.Store(true)
	sh.cfg.metrics.addApplied(r.votes)
	sh.log.Info("shard recovered", "snapshot_seq", r.snapshotSeq, "replayed_messages", r.messages,
		"replayed_votes", r.votes, "last_seq", st.lastSeq, "duration", r.duration)
	sh.cfg.onReady(sh.cfg.index)

	deferred := sh.deferred
	sh.deferred = nil
	sh.deferredVotes = 0
	for _, d := range deferred {
		switch m := d.message.(type) {
		case *voteRequest:
			sh.admit(ctx, m, d.sender)
		case *closeRequest:
			sh.onClose(ctx, m, d.sender)
		}
	}
	sh.maybeSnapshot(ctx)
	sh.updateQueueStats()
}

// load reads the snapshot and replays the shard's batches after its
// sequence.
func (sh *shard) load(ctx context.Context) (*recoveredState, error) {
	if sh.cfg.grain != nil {
		return sh.loadAndClaim(ctx)
	}

	st, snapshotSeq, err := loadShardSnapshot(ctx, sh.cfg.store, sh.cfg.index, sh.log)
	if err != nil {
		return nil, err
	}

	r := &recoveredState{state: st, snapshotSeq: snapshotSeq}
	r.messages, _, err = sh.cfg.store.Replay(ctx, sh.cfg.index, snapshotSeq, func(seq uint64, b persistence.Batch) error {
		r.votes += st.applyBatch(seq, b)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("replay after seq %d: %w", snapshotSeq, err)
	}

	return r, nil
}

func (sh *shard) onVote(ctx actor.Context, req *voteRequest, sender *actor.PID) {
	switch {
	case sh.stopping:
		sh.reply(ctx, sender, Ack{Outcome: OutcomeOverloaded})
	case !sh.ready:
		if sh.deferredVotes >= sh.cfg.maxQueue {
			sh.reply(ctx, sender, Ack{Outcome: OutcomeOverloaded})
			return
		}
		sh.deferred = append(sh.deferred, deferredRequest{message: req, sender: sender})
		sh.deferredVotes++
		sh.updateQueueStats()
	default:
		sh.admit(ctx, req, sender)
	}
}

// admit applies the vote checks in order: applied duplicate, pending
// duplicate, closed poll, one vote per voter, queue limit. A vote that passes
// is queued for the next append.
func (sh *shard) admit(ctx actor.Context, req *voteRequest, sender *actor.PID) {
	v := req.vote

	seq, ok := sh.state.receiptSeq(v.Poll, v.Voter, v.VoteID)
	if ok {
		sh.reply(ctx, sender, Ack{Outcome: OutcomeDuplicate, Receipt: sh.receipt(v.VoteID, seq)})
		return
	}

	key := voteKey{poll: v.Poll, voter: v.Voter, voteID: v.VoteID}
	pv := sh.pending[key]
	if pv != nil {
		if len(pv.waiters) >= maxWaiters {
			sh.reply(ctx, sender, Ack{Outcome: OutcomeOverloaded})
			return
		}
		pv.waiters = append(pv.waiters, sender)
		return
	}

	// NOTE: the stream does not record AllowChange. A vote whose append
	// failed but was stored after all is therefore replaced, on catch-up and
	// on replay alike, by a later vote id of the same voter that this check
	// let through.
	voter := voterKey{poll: v.Poll, voter: v.Voter}
	switch {
	case sh.state.isClosed(v.Poll):
		sh.reply(ctx, sender, Ack{Outcome: OutcomePollClosed})
	case !v.AllowChange && (sh.state.hasVoter(v.Poll, v.Voter) || sh.pendingVoters[voter] > 0):
		sh.reply(ctx, sender, Ack{Outcome: OutcomeAlreadyVoted})
	case len(sh.queue)+len(sh.inFlight) >= sh.cfg.maxQueue:
		sh.reply(ctx, sender, Ack{Outcome: OutcomeOverloaded})
	default:
		pv = &pendingVote{
			record: persistence.VoteRecord{VoteID: v.VoteID, Poll: v.Poll, Voter: v.Voter, Options: v.Options, At: req.at},
			sender: sender,
		}
		pv.size = recordSize(pv.record)
		sh.queue = append(sh.queue, pv)
		sh.pending[key] = pv
		sh.pendingVoters[voter]++
		sh.pendingPolls[v.Poll]++
		sh.startAppend(ctx)
		sh.updateQueueStats()
	}
}

func (sh *shard) receipt(voteID string, seq uint64) Receipt {
	return Receipt{VoteID: voteID, Shard: sh.cfg.index, Seq: seq}
}

// release removes a pending vote once every request for it has its reply.
func (sh *shard) release(pv *pendingVote) {
	r := pv.record
	delete(sh.pending, voteKey{poll: r.Poll, voter: r.Voter, voteID: r.VoteID})

	voter := voterKey{poll: r.Poll, voter: r.Voter}
	sh.pendingVoters[voter]--
	if sh.pendingVoters[voter] <= 0 {
		delete(sh.pendingVoters, voter)
	}

	sh.pendingPolls[r.Poll]--
	if sh.pendingPolls[r.Poll] <= 0 {
		delete(sh.pendingPolls, r.Poll)
	}
}

// answerOverloaded replies OutcomeOverloaded to every request of the votes
// and removes them from the pending maps. None of them was applied.
func (sh *shard) answerOverloaded(ctx actor.Context, votes []*pendingVote) {
	overloaded := Ack{Outcome: OutcomeOverloaded}
	for _, pv := range votes {
		sh.reply(ctx, pv.sender, overloaded)
		for _, w := range pv.waiters {
			sh.reply(ctx, w, overloaded)
		}
		sh.release(pv)
	}
}

func (sh *shard) updateQueueStats() {
	depth := len(sh.queue) + sh.deferredVotes
	sh.cfg.stats.queueDepth.Store(int64(depth))
	sh.cfg.stats.inFlight.Store(int64(len(sh.inFlight)))
	sh.cfg.metrics.setQueueDepth(depth)
}

// batchOverhead is the encoded size of a batch without its votes, with room
// for a batch id of 128 bytes. The ids that startAppend makes are shorter.
const batchOverhead = 4 + 3*10 + 128

// recordSize returns an upper bound of the encoded size of one vote in a
// batch: each string is a uvarint length and the bytes, plus a varint time.
func recordSize(r persistence.VoteRecord) int {
	n := stringSize(r.VoteID) + stringSize(r.Poll) + stringSize(r.Voter) + uvarintSize(len(r.Options)) + 10
	for _, option := range r.Options {
		n += stringSize(option)
	}

	return n
}

func stringSize(s string) int {
	return uvarintSize(len(s)) + len(s)
}

func uvarintSize(n int) int {
	return (bits.Len64(uint64(n)|1) + 6) / 7
}

// startAppend sends the next batch when no append is in flight: the votes at
// the head of the queue, at most maxBatch of them and under
// persistence.MaxBatchBytes encoded. The append runs in a goroutine owned by
// the task group, which posts its result back as an appendResult.
func (sh *shard) startAppend(ctx actor.Context) {
	if sh.inFlight != nil || sh.catchUpDue || sh.stopping || sh.lost || len(sh.queue) == 0 {
		return
	}

	n, size := 0, batchOverhead
	for n < len(sh.queue) && n < sh.cfg.maxBatch && size+sh.queue[n].size <= persistence.MaxBatchBytes {
		size += sh.queue[n].size
		n++
	}

	// One vote of the largest size that Vote accepts encodes to about 67 KB,
	// so n is 0 only if that check changes. The append then fails with
	// persistence.ErrBatchTooLarge and the vote gets OutcomeOverloaded.
	n = max(n, 1)

	batch := make([]*pendingVote, n)
	copy(batch, sh.queue)
	rest := copy(sh.queue, sh.queue[n:])
	clear(sh.queue[rest:])
	sh.queue = sh.queue[:rest]

	records := make([]persistence.VoteRecord, n)
	for i, pv := range batch {
		records[i] = pv.record
	}

	// A batch id must never repeat: the stream drops a batch whose id it
	// stored before and still reports success.
	id := fmt.Sprintf("%s-%d-%d", sh.cfg.bootID, sh.cfg.index, sh.cfg.batchCount.Add(1))
	sh.inFlight = batch
	sh.inFlightID = id
	sh.recordBatchStats(n)

	if !sh.runAppend(ctx, persistence.Batch{ID: id, Shard: sh.cfg.index, Votes: records}) {
		sh.inFlight = nil
		sh.inFlightID = ""
		sh.answerOverloaded(ctx, batch)
	}
}

func (sh *shard) recordBatchStats(votes int) {
	sh.cfg.stats.batches.Add(1)
	sh.cfg.stats.batchedVotes.Add(uint64(votes))
	sh.cfg.stats.lastBatch.Store(int64(votes))
	sh.cfg.metrics.observeBatch(votes)
}

// runAppend starts the append goroutine and reports false when the task
// group is closed because the system is stopping.
func (sh *shard) runAppend(ctx actor.Context, b persistence.Batch) bool {
	root, self := ctx.ActorSystem().Root, ctx.Self()
	store, timeout, base := sh.cfg.store, sh.cfg.appendTimeout, sh.cfg.baseCtx
	fenced, expect := sh.cfg.grain != nil, sh.fence

	return sh.cfg.tasks.Go(func() {
		actx, cancel := context.WithTimeout(base, timeout)
		start := time.Now()
		var (
			seq uint64
			err error
		)
		if fenced {
			seq, err = store.AppendFenced(actx, b, expect)
		} else {
			seq, err = store.AppendBatch(actx, b)
		}
		elapsed := time.Since(start)
		cancel()

		root.Send(self, &appendResult{batchID: b.ID, seq: seq, err: err, elapsed: elapsed})
	})
}

// onAppendResult applies a durable batch and replies to its requests. For a
// failed append it replies OutcomeOverloaded and catches up from the stream,
// because the failed append may have been stored after all.
func (sh *shard) onAppendResult(ctx actor.Context, res *appendResult) {
	if res.batchID != sh.inFlightID {
		// The append was started by an incarnation of this actor that its
		// supervisor replaced, and no request waits for its votes any more. If it
		// was stored, a replay applies it, so the state still equals the stream.
		sh.log.Warn("append result of a replaced shard actor; replaying the stream", "batch", res.batchID, "error", res.err)
		if res.err != nil || !sh.ready {
			sh.unsure = true
			return
		}

		_, _, err := sh.replay()
		if err != nil {
			sh.unsure = true
			sh.log.Warn("replay after a replaced actor's append failed", "batch", res.batchID, "error", err)
		}
		return
	}

	batch := sh.inFlight
	sh.inFlight = nil
	sh.inFlightID = ""
	sh.cfg.metrics.observeAppend(res.elapsed, res.err)

	if res.err == nil && sh.cfg.grain != nil {
		sh.fence = res.seq
	}
	if res.err != nil {
		sh.cfg.stats.appendFailures.Add(1)
		sh.log.Warn("append failed; its votes got overloaded", "batch", res.batchID, "votes", len(batch),
			"duration", res.elapsed, "error", res.err)
		sh.answerOverloaded(ctx, batch)
		sh.unsure = true
		if !sh.stopping {
			sh.catchUpDue = true
			sh.catchUp(ctx)
		}
	} else {
		sh.commit(ctx, batch, res.seq)
	}

	sh.afterBatch(ctx)
}

// commit applies a durable batch in order and replies to each request. After a
// failed append it first replays the stream, so a failed batch that was
// stored before this one is applied before it, as it will be on replay.
func (sh *shard) commit(ctx actor.Context, batch []*pendingVote, seq uint64) {
	if sh.unsure {
		_, _, err := sh.replay()
		if err != nil {
			sh.log.Warn("replay after a failed append failed; applying the batch directly", "seq", seq, "error", err)
		} else {
			sh.unsure = false
		}
	}

	fresh := 0
	for _, pv := range batch {
		r := pv.record
		first, ok := sh.state.apply(r.Poll, r.Voter, r.VoteID, r.Options, seq)
		if ok {
			fresh++
		}

		// A vote id first stored by a failed append counts at that
		// append's sequence, so this request gets that receipt.
		receipt := sh.receipt(r.VoteID, first)
		outcome := OutcomeAccepted
		if first != seq {
			outcome = OutcomeDuplicate
		}
		sh.reply(ctx, pv.sender, Ack{Outcome: outcome, Receipt: receipt})
		for _, w := range pv.waiters {
			sh.reply(ctx, w, Ack{Outcome: OutcomeDuplicate, Receipt: receipt})
		}
		sh.release(pv)
	}

	sh.state.advance(seq)
	sh.noteApplied(fresh)
}

func (sh *shard) noteApplied(votes int) {
	sh.sinceSnapshot += votes
	sh.cfg.stats.applied.Store(sh.state.applied)
	sh.cfg.metrics.addApplied(votes)
}

// replay applies the stream after the last applied sequence. Apply is
// idempotent, so a batch seen before changes nothing.
func (sh *shard) replay() (messages, votes int, err error) {
	ctx, cancel := context.WithTimeout(sh.cfg.baseCtx, sh.cfg.appendTimeout)
	defer cancel()

	start := time.Now()
	after := sh.state.lastSeq
	if sh.cfg.grain != nil {
		messages, votes, err = sh.replayFenced(ctx)
	} else {
		messages, _, err = sh.cfg.store.Replay(ctx, sh.cfg.index, after, func(seq uint64, b persistence.Batch) error {
			votes += sh.state.applyBatch(seq, b)
			return nil
		})
	}
	sh.noteApplied(votes)

	if messages > 0 {
		sh.log.Info("shard caught up from the vote stream", "after_seq", after, "messages", messages,
			"votes", votes, "duration", time.Since(start))
	}

	return messages, votes, err
}

// catchUp replays the stream after a failed append. Until it succeeds no
// append starts, and a failure schedules another attempt.
func (sh *shard) catchUp(ctx actor.Context) {
	_, _, err := sh.replay()
	if err != nil {
		delay := sh.backoff()
		sh.log.Warn("catch-up replay failed; appends wait", "attempt", sh.retryAttempt, "retry_in", delay, "error", err)
		sh.scheduleRetry(ctx, retryCatchUp, delay)
		return
	}

	sh.catchUpDue = false
	sh.retryAttempt = 0
	if sh.lost {
		sh.giveUp(ctx)
	}
}

// afterBatch runs once no append is in flight. It replies to the close
// barriers that are done, then finishes a stop, or snapshots and starts the
// next append.
func (sh *shard) afterBatch(ctx actor.Context) {
	sh.answerCloseWaiters(ctx)

	if sh.stopping {
		sh.finishStop(ctx)
		return
	}

	sh.maybeSnapshot(ctx)
	sh.startAppend(ctx)
	sh.updateQueueStats()
}

func (sh *shard) onRetry(ctx actor.Context, msg *retryTick) {
	if sh.stopping {
		return
	}

	switch msg.kind {
	case retryRecovery:
		if !sh.ready {
			sh.recover(ctx)
		}
	case retryCatchUp:
		if sh.catchUpDue {
			sh.catchUp(ctx)
			sh.afterBatch(ctx)
		}
	}
}

func (sh *shard) backoff() time.Duration {
	sh.retryAttempt++

	return min(retryMin<<min(sh.retryAttempt-1, 10), retryMax)
}

// scheduleRetry posts a retryTick to the shard after delay. The timer is
// stopped when the actor stops.
func (sh *shard) scheduleRetry(ctx actor.Context, kind retryKind, delay time.Duration) {
	root, self := ctx.ActorSystem().Root, ctx.Self()

	sh.stopRetry()
	sh.retryTimer = time.AfterFunc(delay, func() {
		root.Send(self, &retryTick{kind: kind})
	})
}

func (sh *shard) stopRetry() {
	if sh.retryTimer != nil {
		sh.retryTimer.Stop()
		sh.retryTimer = nil
	}
}

// onClose marks a poll closed. With a sender it is a barrier: the shard
// replies with its totals of the poll once none of the poll's votes is
// queued or in flight. Closing a closed poll again only replies.
func (sh *shard) onClose(ctx actor.Context, req *closeRequest, sender *actor.PID) {
	if !sh.ready {
		if sh.stopping {
			sh.reply(ctx, sender, &closeReply{shard: sh.cfg.index, err: ErrStopped})
			return
		}
		sh.deferred = append(sh.deferred, deferredRequest{message: req, sender: sender})
		return
	}

	if sh.state.markClosed(req.poll) {
		sh.closedChanged = true
		sh.log.Debug("poll closed at shard", "poll", req.poll, "pending_votes", sh.pendingPolls[req.poll])
	}

	if sender != nil {
		sh.closeWaiters = append(sh.closeWaiters, closeWaiter{poll: req.poll, sender: sender})
		sh.answerCloseWaiters(ctx)
	}
}

func (sh *shard) answerCloseWaiters(ctx actor.Context) {
	if len(sh.closeWaiters) == 0 {
		return
	}
	// A grain replies to a barrier only after it checked that it still owns
	// the shard, so that no superseded activation reports stale totals.
	var ownerErr error
	if sh.cfg.grain != nil && !sh.stopping {
		if sh.inFlight != nil {
			return
		}
		ownerErr = sh.verifyOwner(ctx)
		if sh.lost {
			return
		}
	}

	waiting := sh.closeWaiters[:0]
	for _, w := range sh.closeWaiters {
		if sh.pendingPolls[w.poll] > 0 {
			waiting = append(waiting, w)
			continue
		}
		if ownerErr != nil {
			sh.reply(ctx, w.sender, &closeReply{shard: sh.cfg.index, err: ownerErr})
			continue
		}
		sh.reply(ctx, w.sender, &closeReply{shard: sh.cfg.index, totals: sh.state.poll(w.poll).totals()})
	}

	clear(sh.closeWaiters[len(waiting):])
	sh.closeWaiters = waiting
}

func (sh *shard) onTotals(ctx actor.Context) {
	if !sh.ready {
		sh.reply(ctx, ctx.Sender(), &totalsReply{shard: sh.cfg.index})
		return
	}

	sh.reply(ctx, ctx.Sender(), &totalsReply{shard: sh.cfg.index, ready: true, polls: sh.state.allTotals(), fence: sh.fence})
}

// maybeSnapshot encodes the state once snapshotEvery votes were applied since
// the last snapshot and saves the copy in a background task. It waits while
// a failed append may still land in the stream, because a snapshot must
// contain every stream message up to its sequence.
func (sh *shard) maybeSnapshot(ctx actor.Context) {
	if !sh.ready || sh.sinceSnapshot < sh.cfg.snapshotEvery || sh.snapshotSaving || sh.unsure || sh.stopping {
		return
	}

	seq := sh.state.lastSeq
	data := sh.state.encode(sh.cfg.index)
	root, self := ctx.ActorSystem().Root, ctx.Self()
	store, shard, base := sh.cfg.store, sh.cfg.index, sh.cfg.baseCtx

	started := sh.cfg.tasks.Go(func() {
		sctx, cancel := context.WithTimeout(base, snapshotTimeout)
		start := time.Now()
		err := store.SaveSnapshot(sctx, shard, seq, data)
		elapsed := time.Since(start)
		cancel()

		root.Send(self, &snapshotResult{seq: seq, err: err, elapsed: elapsed})
	})
	if started {
		sh.snapshotSaving = true
		sh.sinceSnapshot = 0
		sh.closedChanged = false
	}
}

func (sh *shard) onSnapshotResult(ctx actor.Context, res *snapshotResult) {
	sh.snapshotSaving = false

	if res.err != nil {
		sh.closedChanged = true
		sh.log.Warn("shard snapshot failed; the next start replays more of the stream", "seq", res.seq,
			"duration", res.elapsed, "error", res.err)
	} else {
		sh.savedSeq = max(sh.savedSeq, res.seq)
		sh.log.Debug("shard snapshot saved", "seq", res.seq, "duration", res.elapsed)
	}

	if sh.stopping {
		sh.finishStop(ctx)
	}
}

// onStop starts a graceful stop. Queued and deferred votes and every later
// vote get OutcomeOverloaded, and the append in flight finishes first.
func (sh *shard) onStop(ctx actor.Context, req *stopRequest) {
	sh.stopping = true
	sh.stopSender = ctx.Sender()
	sh.stopDeadline = req.deadline
	sh.stopRetry()
	sh.releaseWaiting(ctx)
	sh.updateQueueStats()

	if sh.ready {
		sh.answerCloseWaiters(ctx)
	}
	sh.finishStop(ctx)
}

// releaseWaiting replies to the deferred requests and the queued votes of a
// stopping shard: OutcomeOverloaded to votes and ErrStopped to closes.
func (sh *shard) releaseWaiting(ctx actor.Context) {
	for _, d := range sh.deferred {
		switch d.message.(type) {
		case *voteRequest:
			sh.reply(ctx, d.sender, Ack{Outcome: OutcomeOverloaded})
		case *closeRequest:
			sh.reply(ctx, d.sender, &closeReply{shard: sh.cfg.index, err: ErrStopped})
		}
	}
	sh.deferred = nil
	sh.deferredVotes = 0

	queued := sh.queue
	sh.queue = nil
	sh.answerOverloaded(ctx, queued)
}

// finishStop saves the final snapshot and replies to the stop request once no
// append or snapshot is in flight.
func (sh *shard) finishStop(ctx actor.Context) {
	if sh.stopSender == nil || sh.inFlight != nil || sh.snapshotSaving {
		return
	}

	err := sh.saveFinalSnapshot()
	sh.reply(ctx, sh.stopSender, &stopReply{shard: sh.cfg.index, err: err})
	sh.stopSender = nil
}

// saveFinalSnapshot stores the state synchronously unless it is unchanged
// since the latest snapshot, the shard never recovered, or a failed append
// may still land in the stream. In those cases the next start replays from
// the previous snapshot, which gives the same state.
func (sh *shard) saveFinalSnapshot() error {
	switch {
	case !sh.ready:
		return nil
	case sh.unsure:
		sh.log.Warn("skipping the stop snapshot because a failed append may still be in the stream")
		return nil
	case sh.state.lastSeq == sh.savedSeq && !sh.closedChanged:
		return nil
	}

	deadline := sh.stopDeadline
	if deadline.IsZero() {
		deadline = time.Now().Add(snapshotTimeout)
	}
	ctx, cancel := context.WithDeadline(sh.cfg.baseCtx, deadline)
	defer cancel()

	start := time.Now()
	seq := sh.state.lastSeq
	data := sh.state.encode(sh.cfg.index)
	err := sh.cfg.store.SaveSnapshot(ctx, sh.cfg.index, seq, data)
	if err != nil {
		sh.log.Error("stop snapshot failed; the next start replays more of the stream", "seq", seq, "error", err)
		return fmt.Errorf("shard %d: save snapshot at seq %d: %w", sh.cfg.index, seq, err)
	}

	sh.savedSeq = seq
	sh.closedChanged = false
	sh.log.Debug("shard snapshot saved", "seq", seq, "bytes", len(data), "duration", time.Since(start))

	return nil
}
