package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/livevote/livevote/persistence"
)

// snapshotLoaders is the number of shard snapshots that the recovery pass
// loads at once.
const snapshotLoaders = 8

// recoveredState is the state of one shard rebuilt from its snapshot and the
// vote stream, sent to the shard by the recovery pass.
type recoveredState struct {
	state       *shardState
	snapshotSeq uint64
	messages    int // batches of the shard replayed after the snapshot
	votes       int // replayed votes that changed the state
	duration    time.Duration
}

// startRecovery starts the recovery pass in a goroutine that stopRecovery
// stops and waits for.
func (s *System) startRecovery() {
	ctx, cancel := context.WithCancel(s.baseCtx)
	s.recoveryCancel = cancel
	s.recoveryDone = make(chan struct{})

	go func() {
		defer close(s.recoveryDone)
		s.runRecovery(ctx)
	}()
}

// stopRecovery cancels the recovery pass and waits for it to end. Shards
// that did not get their state stay not ready.
func (s *System) stopRecovery() {
	if s.recoveryCancel == nil {
		return
	}

	s.recoveryCancel()
	<-s.recoveryDone
}

// runRecovery runs the recovery pass until it succeeds or ctx ends, with a
// backoff between attempts that doubles from retryMin up to retryMax, and
// sends each shard its state.
func (s *System) runRecovery(ctx context.Context) {
	for attempt := 1; ; attempt++ {
		states, err := s.recoverShards(ctx)
		if err == nil {
			for i, st := range states {
				s.root.Send(s.shards[i], st)
			}
			return
		}
		if ctx.Err() != nil {
			s.log.Info("recovery stopped", "error", err)
			return
		}

		delay := min(retryMin<<min(attempt-1, 10), retryMax)
		s.log.Warn("recovery failed; retrying", "attempt", attempt, "retry_in", delay, "error", err)

		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			s.log.Info("recovery stopped", "error", ctx.Err())
			return
		}
	}
}

// recoverShards loads every shard's snapshot and replays the vote stream
// once, from the lowest snapshot sequence. A batch is applied to its shard
// only when its sequence is above that shard's snapshot, with the same
// idempotent apply as the live path, so each state equals the stream.
func (s *System) recoverShards(ctx context.Context) ([]*recoveredState, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, recoveryTimeout)
	defer cancel()

	states, err := s.loadSnapshots(ctx)
	if err != nil {
		return nil, err
	}

	// NOTE: the pass starts at the oldest snapshot, so one shard whose last
	// applied batch is old makes every restart read the stream from there.
	// A shard snapshots at its last applied sequence, which stays old while
	// it gets no votes.
	from := states[0].snapshotSeq
	for _, st := range states {
		from = min(from, st.snapshotSeq)
	}

	var batches, votes, foreign int
	messages, last, err := s.cfg.Store.ReplayAll(ctx, from, func(seq uint64, b persistence.Batch) error {
		if b.Shard >= len(states) {
			foreign++
			return nil
		}

		st := states[b.Shard]
		if seq <= st.snapshotSeq {
			return nil
		}
		applied := st.state.applyBatch(seq, b)
		st.messages++
		st.votes += applied
		batches++
		votes += applied

		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("replay the vote stream after seq %d: %w", from, err)
	}

	s.finishRecovery(states, last, time.Since(start))
	s.log.Info("vote stream replayed", "from_seq", from, "last_seq", last, "messages", messages,
		"batches", batches, "votes", votes, "duration", time.Since(start))
	if foreign > 0 {
		s.log.Warn("vote stream contains batches of shards beyond the shard count; skipped them",
			"batches", foreign, "shards", len(states))
	}

	return states, nil
}

// finishRecovery records that every shard's state covers the stream up to
// last, because the pass read every message up to it, so a later snapshot
// of a shard without votes still starts the next pass at last.
func (s *System) finishRecovery(states []*recoveredState, last uint64, elapsed time.Duration) {
	for _, st := range states {
		st.state.advance(last)
		st.duration = elapsed
	}
}

// loadSnapshots loads the snapshot of every shard, snapshotLoaders at a
// time.
func (s *System) loadSnapshots(ctx context.Context) ([]*recoveredState, error) {
	states := make([]*recoveredState, len(s.shards))
	errs := make([]error, len(s.shards))
	next := make(chan int)

	var wg sync.WaitGroup
	for range min(snapshotLoaders, len(s.shards)) {
		wg.Go(func() {
			for i := range next {
				st, seq, err := loadShardSnapshot(ctx, s.cfg.Store, i, s.log.With("shard", i))
				if err != nil {
					errs[i] = fmt.Errorf("shard %d: %w", i, err)
					continue
				}
				states[i] = &recoveredState{state: st, snapshotSeq: seq}
			}
		})
	}
	for i := range s.shards {
		next <- i
	}
	close(next)
	wg.Wait()

	err := errors.Join(errs...)
	if err != nil {
		return nil, err
	}

	return states, nil
}

// loadShardSnapshot returns the state and sequence of shard's latest
// snapshot, or an empty state at sequence 0 when it has none. An unreadable
// snapshot is logged and also gives an empty state at 0, so the state is
// rebuilt from the whole stream.
func loadShardSnapshot(ctx context.Context, store *persistence.Store, shard int, log *slog.Logger) (*shardState, uint64, error) {
	lctx, cancel := context.WithTimeout(ctx, snapshotTimeout)
	seq, data, err := store.LoadSnapshot(lctx, shard)
	cancel()
	switch {
	case errors.Is(err, persistence.ErrNoSnapshot):
		return newShardState(), 0, nil
	case err != nil:
		return nil, 0, fmt.Errorf("load snapshot: %w", err)
	}

	decoded, err := decodeShardState(shard, data)
	if err == nil && decoded.lastSeq != seq {
		err = fmt.Errorf("%w: state at seq %d stored as seq %d", errCorruptSnapshot, decoded.lastSeq, seq)
	}
	if err != nil {
		log.Error("shard snapshot unreadable; rebuilding from the whole vote stream", "snapshot_seq", seq, "error", err)
		return newShardState(), 0, nil
	}

	return decoded, seq, nil
}
