package actors

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/google/uuid"

	"github.com/livevote/livevote/persistence"
)

// claimAttempts bounds the claims that one recovery attempt makes when other
// writers keep appending to the shard's subject.
const claimAttempts = 5

// grainConfig is the link from a shard grain to its System, which builds
// the grain's configuration once the grain has its identity.
type grainConfig struct {
	system *System
}

// parseShardName returns the index of a shard named by ShardName.
func parseShardName(name string) (int, error) {
	digits, ok := strings.CutPrefix(name, "shard-")
	if !ok {
		return 0, fmt.Errorf("%w: grain identity %q is not a shard name such as shard-007", ErrInvalidArgument, name)
	}
	i, err := strconv.Atoi(digits)
	if err != nil || i < 0 {
		return 0, fmt.Errorf("%w: grain identity %q is not a shard name such as shard-007", ErrInvalidArgument, name)
	}

	return i, nil
}

// activate runs when the cluster starts this grain: it learns its shard from
// its identity, registers as the local activation and recovers. Recovery
// includes the claim, so the shard replies to no vote before it is the
// only writer of its subject.
func (sh *shard) activate(ctx actor.Context, msg *cluster.ClusterInit) {
	s := sh.cfg.grain.system
	index, err := parseShardName(msg.Identity.GetIdentity())
	if err == nil && index >= s.cfg.Shards {
		err = fmt.Errorf("%w: shard %d is outside [0, %d)", ErrInvalidArgument, index, s.cfg.Shards)
	}
	if err != nil {
		sh.log.Error("stopping a shard grain with a bad identity", "error", err)
		ctx.Stop(ctx.Self())
		return
	}
	// Another member asked for this activation from a member list that
	// differs from this one's, as while a member joins or while this one is
	// left out. An activation here would claim the shard from its owner
	// and stay unused once the lists agree, so it stops at once. The
	// requester replies overloaded and looks the shard up again.
	owner := s.clu.rdv.GetByClusterIdentity(msg.Identity)
	if owner != ctx.Self().Address {
		sh.log.Info("refusing to activate a shard that this member does not own", "shard", index, "owner", owner)
		ctx.Stop(ctx.Self())
		return
	}

	sh.cfg = s.shardConfig(index)
	sh.cfg.grain = &grainConfig{system: s}
	sh.cfg.onReady = func(int) {}
	sh.cfg.bootID = "g" + strings.ReplaceAll(uuid.NewString(), "-", "")
	sh.log = s.log.With("shard", index, "activation", sh.cfg.bootID)
	s.addLocal(index, ctx.Self())

	sh.recover(ctx)
}

// loadAndClaim rebuilds the shard from its snapshot and the stream, then
// claims the shard's subject. A claim that another message beat means a
// writer appended meanwhile, so it reads that message and claims again.
func (sh *shard) loadAndClaim(ctx context.Context) (*recoveredState, error) {
	store, index := sh.cfg.store, sh.cfg.index
	st, snapshotSeq, err := loadShardSnapshot(ctx, store, index, sh.log)
	if err != nil {
		return nil, err
	}

	r := &recoveredState{state: st, snapshotSeq: snapshotSeq}
	after := snapshotSeq
	for attempt := 1; ; attempt++ {
		// The subject's last sequence is read before the replay, which then
		// covers it; a message that lands later makes the claim fail.
		expect, err := store.LastShardSeq(ctx, index)
		if err != nil {
			return nil, err
		}
		rep, err := store.ReplayShard(ctx, index, after, func(seq uint64, b persistence.Batch) error {
			r.votes += st.applyBatch(seq, b)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("replay after seq %d: %w", after, err)
		}
		r.messages += rep.Messages
		after = rep.Last
		expect = max(expect, rep.SubjectLast)

		claim, err := store.ClaimShard(ctx, index, sh.cfg.bootID, expect)
		if err == nil {
			sh.fence, sh.claimSeq, sh.lost = claim, claim, false
			sh.log.Info("shard claimed", "claim_seq", claim, "attempts", attempt)
			return r, nil
		}
		if !errors.Is(err, persistence.ErrFenced) || attempt == claimAttempts {
			return nil, err
		}
		sh.log.Info("another writer appended during the claim; reading its messages", "attempt", attempt, "error", err)
	}
}

// replayFenced catches up from the stream like replay, and also finds out
// whether another activation claimed the shard after this one.
func (sh *shard) replayFenced(ctx context.Context) (messages, votes int, err error) {
	rep, err := sh.cfg.store.ReplayShard(ctx, sh.cfg.index, sh.state.lastSeq, func(seq uint64, b persistence.Batch) error {
		votes += sh.state.applyBatch(seq, b)
		return nil
	})
	for _, c := range rep.Claims {
		if c.Owner != sh.cfg.bootID && c.Seq > sh.claimSeq {
			sh.lost = true
			sh.log.Warn("another activation claimed the shard", "owner", c.Owner, "claim_seq", c.Seq)
		}
	}
	if rep.SubjectLast > sh.fence {
		sh.fence = rep.SubjectLast
	}

	return rep.Messages, votes, err
}

// giveUp stops an activation that lost its shard to another one. Its votes
// get OutcomeOverloaded, so clients retry and reach the new owner.
func (sh *shard) giveUp(ctx actor.Context) {
	if sh.stopping {
		return
	}
	sh.log.Warn("shard handed to another member; this activation stops")
	sh.stopping = true
	sh.stopRetry()
	sh.releaseWaiting(ctx)
	for _, w := range sh.closeWaiters {
		sh.reply(ctx, w.sender, &closeReply{shard: sh.cfg.index, err: ErrStopped})
	}
	sh.closeWaiters = nil
	sh.updateQueueStats()

	ctx.Poison(ctx.Self())
}

// verifyOwner checks that no other message reached the shard's subject
// since this activation's last one, reading any that did. It gives up the
// shard when another activation claimed it, and returns an error when the
// check itself failed, in which case the caller replies with that error.
func (sh *shard) verifyOwner(ctx actor.Context) error {
	vctx, cancel := context.WithTimeout(sh.cfg.baseCtx, sh.cfg.appendTimeout)
	defer cancel()

	last, err := sh.cfg.store.LastShardSeq(vctx, sh.cfg.index)
	if err != nil {
		return fmt.Errorf("shard %d: check ownership: %w", sh.cfg.index, err)
	}
	if last == sh.fence {
		return nil
	}

	_, _, err = sh.replay()
	if err != nil {
		sh.unsure = true
		return fmt.Errorf("shard %d: read messages after sequence %d: %w", sh.cfg.index, sh.fence, err)
	}
	if sh.lost {
		sh.giveUp(ctx)
	}

	return nil
}
