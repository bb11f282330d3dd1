package actors

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/livevote/livevote/persistence"
)

// sentVote names a vote sent by castRound.
type sentVote struct{ voteID, poll, voter string }

// castRound sends one round of votes from 60 voters over 4 shards: each
// voter votes in p1, which allows changes, and in p2, which does not, so a
// later round changes p1 and is rejected in p2. It returns the acks by vote.
func castRound(t *testing.T, s *System, round int) map[sentVote]Ack {
	t.Helper()

	options := []string{"a", "b", "c"}
	var votes []Vote
	for i := range 60 {
		voter := fmt.Sprintf("voter-%d", i)
		votes = append(votes,
			Vote{VoteID: fmt.Sprintf("r%d-p1-%d", round, i), Poll: "p1", Voter: voter,
				Options: []string{options[(i+round)%3]}, AllowChange: true},
			Vote{VoteID: fmt.Sprintf("r%d-p2-%d", round, i), Poll: "p2", Voter: voter,
				Options: []string{options[i%3], options[(i+1)%3]}},
		)
	}

	var mu sync.Mutex
	acks := make(map[string]Ack, len(votes))
	var wg sync.WaitGroup
	for i, v := range votes {
		wg.Go(func() {
			ack := vote(t, s, (i/2)%4, v)
			mu.Lock()
			acks[v.VoteID] = ack
			mu.Unlock()
		})
	}
	wg.Wait()

	out := make(map[sentVote]Ack, len(votes))
	for i, v := range votes {
		want := OutcomeAccepted
		if round > 0 && v.Poll == "p2" {
			want = OutcomeAlreadyVoted
		}
		if acks[v.VoteID].Outcome != want {
			t.Fatalf("round %d vote %d (%s): outcome = %v, want %v", round, i, v.VoteID, acks[v.VoteID].Outcome, want)
		}
		out[sentVote{voteID: v.VoteID, poll: v.Poll, voter: v.Voter}] = acks[v.VoteID]
	}

	return out
}

// equalTotals compares the counts of every poll at every shard.
func equalTotals(t *testing.T, got, want []map[string]pollTotals, compareClosed bool) {
	t.Helper()

	for shard := range want {
		for poll, w := range want[shard] {
			g := got[shard][poll]
			if !maps.Equal(g.Counts, w.Counts) || g.Voters != w.Voters || g.TotalVotes != w.TotalVotes {
				t.Errorf("shard %d poll %s: totals = %+v, want %+v", shard, poll, g, w)
			}
			if compareClosed && g.Closed != w.Closed {
				t.Errorf("shard %d poll %s: closed = %v, want %v", shard, poll, g.Closed, w.Closed)
			}
		}
		if len(got[shard]) != len(want[shard]) {
			t.Errorf("shard %d: %d polls, want %d", shard, len(got[shard]), len(want[shard]))
		}
	}
}

// checkReceiptsKept resends every accepted vote of acks and expects the
// original receipt back as a duplicate.
func checkReceiptsKept(t *testing.T, s *System, acks map[sentVote]Ack) {
	t.Helper()

	i := 0
	for v, ack := range acks {
		if ack.Outcome != OutcomeAccepted || i >= 20 {
			continue
		}
		i++

		again := vote(t, s, ack.Receipt.Shard, Vote{VoteID: v.voteID, Poll: v.poll, Voter: v.voter,
			Options: []string{"a"}, AllowChange: true})
		if again.Outcome != OutcomeDuplicate || again.Receipt != ack.Receipt {
			t.Errorf("resent %s after restart = %+v, want duplicate with %+v", v.voteID, again, ack.Receipt)
		}
	}
}

func TestRestartRestoresTotals(t *testing.T) {
	t.Parallel()

	cases := []struct {
		name     string
		snapshot bool // stop gracefully, so every shard saves a snapshot
	}{
		{"stop snapshot", true},
		{"full replay after crash", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			store := openStore(t, dir)
			s := startSystem(t, store, Config{})

			first := castRound(t, s, 0)
			castRound(t, s, 1)
			_, err := s.ClosePoll(t.Context(), "p2")
			if err != nil {
				t.Fatalf("ClosePoll: %v", err)
			}
			want := allTotalsOf(t, s)

			if tc.snapshot {
				stopSystem(t, s)
			} else {
				crash(t, s)
			}
			if err := store.Close(); err != nil {
				t.Fatalf("close store: %v", err)
			}

			store = openStore(t, dir)
			assertSnapshots(t, store, 4, tc.snapshot)
			s = startSystem(t, store, Config{})

			equalTotals(t, allTotalsOf(t, s), want, tc.snapshot)
			checkReceiptsKept(t, s, first)
		})
	}
}

// assertSnapshots checks whether every shard of store has a snapshot.
func assertSnapshots(t *testing.T, store *persistence.Store, shards int, want bool) {
	t.Helper()

	for shard := range shards {
		_, _, err := store.LoadSnapshot(t.Context(), shard)
		has := err == nil
		if err != nil && !errors.Is(err, persistence.ErrNoSnapshot) {
			t.Fatalf("LoadSnapshot(%d): %v", shard, err)
		}
		if has != want {
			t.Errorf("shard %d has a snapshot: %v, want %v", shard, has, want)
		}
	}
}

func TestRestartFromPeriodicSnapshotAndReplay(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	store := openStore(t, dir)

	// Round 0 applies 30 votes per shard, so each shard saves one snapshot.
	// Round 1 applies 15 more, too few for another, so the restart must
	// replay them after the snapshot.
	cfg := Config{SnapshotEvery: 25}
	s := startSystem(t, store, cfg)

	castRound(t, s, 0)
	waitFor(t, "a periodic snapshot of every shard", func() bool {
		for shard := range 4 {
			seq, _, err := store.LoadSnapshot(t.Context(), shard)
			if err != nil || seq == 0 {
				return false
			}
		}
		return true
	})
	acks := castRound(t, s, 1)
	want := allTotalsOf(t, s)

	for shard := range 4 {
		snapshotSeq, _, err := store.LoadSnapshot(t.Context(), shard)
		if err != nil {
			t.Fatalf("LoadSnapshot(%d): %v", shard, err)
		}
		replayed := 0
		for _, ack := range acks {
			if ack.Receipt.Shard == shard && ack.Receipt.Seq > snapshotSeq {
				replayed++
			}
		}
		if replayed == 0 {
			t.Fatalf("shard %d: snapshot at seq %d covers every vote, so nothing would be replayed", shard, snapshotSeq)
		}
	}

	crash(t, s)
	if err := store.Close(); err != nil {
		t.Fatalf("close store: %v", err)
	}

	store = openStore(t, dir)
	s = startSystem(t, store, cfg)

	equalTotals(t, allTotalsOf(t, s), want, false)
}

func TestClosedPollStaysClosedAfterRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	store := openStore(t, dir)
	s := startSystem(t, store, Config{})
	s.RegisterPoll(PollInfo{ID: "p1", Event: "e1", Options: []string{"a"}})

	vote(t, s, 0, Vote{VoteID: "v-1", Poll: "p1", Voter: "alice", Options: []string{"a"}})
	final, err := s.ClosePoll(t.Context(), "p1")
	if err != nil {
		t.Fatalf("ClosePoll: %v", err)
	}

	// A crash right after the close loses the shards' closed marks, which
	// are kept only in snapshots.
	crash(t, s)
	if err := store.Close(); err != nil {
		t.Fatalf("close store: %v", err)
	}

	store = openStore(t, dir)
	s = startSystem(t, store, Config{})
	s.RegisterPoll(PollInfo{ID: "p1", Event: "e1", Options: []string{"a"}, Closed: true})

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	again, err := s.ClosePoll(ctx, "p1")
	if err != nil {
		t.Fatalf("ClosePoll after restart: %v", err)
	}
	if again.Version != final.Version || !again.Final || again.Voters != 1 {
		t.Errorf("final after restart = %+v, want the stored version %d", again, final.Version)
	}

	late := vote(t, s, 1, Vote{VoteID: "v-2", Poll: "p1", Voter: "bob", Options: []string{"a"}})
	if late.Outcome != OutcomePollClosed {
		t.Errorf("vote after restart: outcome = %v, want poll_closed", late.Outcome)
	}
}

// TestOnePassRecoveryEqualsPerShard stores snapshots of the shards at
// different stream sequences, restarts, and checks that the one-pass
// recovery gives each shard the state that its own snapshot and replay give.
func TestOnePassRecoveryEqualsPerShard(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	store := openStore(t, dir)
	s := startSystem(t, store, Config{})

	first := castRound(t, s, 0)
	castRound(t, s, 1)
	castRound(t, s, 2)
	want := allTotalsOf(t, s)
	crash(t, s)

	var seqs []uint64
	_, _, err := store.ReplayAll(t.Context(), 0, func(seq uint64, _ persistence.Batch) error {
		if len(seqs) == 0 || seqs[len(seqs)-1] != seq {
			seqs = append(seqs, seq)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Shard 0 keeps no snapshot; shards 1 to 3 get one at a third, two
	// thirds and the end of the stream.
	for shard := 1; shard < 4; shard++ {
		cut := seqs[len(seqs)*shard/3-1]
		saveSnapshotAt(t, store, shard, cut)
	}
	if err := store.Close(); err != nil {
		t.Fatalf("close store: %v", err)
	}

	store = openStore(t, dir)
	perShard := make([]map[string]pollTotals, 4)
	for shard := range 4 {
		r, err := newShard(&shardConfig{index: shard, store: store, logger: testLogger()}).load(t.Context())
		if err != nil {
			t.Fatalf("per-shard recovery of shard %d: %v", shard, err)
		}
		perShard[shard] = r.state.allTotals()
	}

	s = startSystem(t, store, Config{})
	onePass := allTotalsOf(t, s)

	equalTotals(t, onePass, perShard, false)
	equalTotals(t, onePass, want, false)
	checkReceiptsKept(t, s, first)
}

// saveSnapshotAt stores a snapshot of shard that covers the stream up to
// seq, built by replaying the shard's batches.
func saveSnapshotAt(t *testing.T, store *persistence.Store, shard int, seq uint64) {
	t.Helper()

	st := newShardState()
	_, _, err := store.Replay(t.Context(), shard, 0, func(batchSeq uint64, b persistence.Batch) error {
		if batchSeq <= seq {
			st.applyBatch(batchSeq, b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	st.advance(seq)

	err = store.SaveSnapshot(t.Context(), shard, seq, st.encode(shard))
	if err != nil {
		t.Fatal(err)
	}
}
