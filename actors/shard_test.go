package actors

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestVoteAcceptedHasReceiptAndCounts(t *testing.T) {
	t.Parallel()
	s := startSystem(t, openStore(t, t.TempDir()), Config{})

	ack := vote(t, s, 2, Vote{VoteID: "v-1", Poll: "p1", Voter: "alice", Options: []string{"a"}})

	if ack.Outcome != OutcomeAccepted {
		t.Fatalf("outcome = %v, want accepted", ack.Outcome)
	}
	if ack.Receipt.VoteID != "v-1" || ack.Receipt.Shard != 2 || ack.Receipt.Seq == 0 {
		t.Errorf("receipt = %+v, want vote v-1 on shard 2 with a stream sequence", ack.Receipt)
	}

	got := pollTotalsOf(t, s, "p1")
	if got.Counts["a"] != 1 || got.Voters != 1 || got.TotalVotes != 1 {
		t.Errorf("totals = %+v, want a=1, 1 voter, 1 vote", got)
	}
	if st := s.Stats(); st.VotesApplied != 1 || st.Shards[2].VotesApplied != 1 {
		t.Errorf("stats votes applied = %d (shard 2: %d), want 1", st.VotesApplied, st.Shards[2].VotesApplied)
	}
}

func TestVoteRejectsInvalidInput(t *testing.T) {
	t.Parallel()
	s := startSystem(t, openStore(t, t.TempDir()), Config{})

	long := strings.Repeat("x", 257)
	cases := []struct {
		name  string
		shard int
		vote  Vote
		want  error
	}{
		{"negative shard", -1, Vote{VoteID: "v", Poll: "p", Voter: "u", Options: []string{"a"}}, ErrInvalidArgument},
		{"shard past end", 4, Vote{VoteID: "v", Poll: "p", Voter: "u", Options: []string{"a"}}, ErrInvalidArgument},
		{"empty vote id", 0, Vote{Poll: "p", Voter: "u", Options: []string{"a"}}, ErrInvalidVote},
		{"empty voter", 0, Vote{VoteID: "v", Poll: "p", Options: []string{"a"}}, ErrInvalidVote},
		{"no options", 0, Vote{VoteID: "v", Poll: "p", Voter: "u"}, ErrInvalidVote},
		{"empty option", 0, Vote{VoteID: "v", Poll: "p", Voter: "u", Options: []string{""}}, ErrInvalidVote},
		{"long poll id", 0, Vote{VoteID: "v", Poll: long, Voter: "u", Options: []string{"a"}}, ErrInvalidVote},
		{"invalid UTF-8", 0, Vote{VoteID: "v", Poll: "p", Voter: "u\xff", Options: []string{"a"}}, ErrInvalidVote},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ack, err := s.Vote(t.Context(), tc.shard, tc.vote)
			if !errors.Is(err, tc.want) {
				t.Errorf("error = %v, want %v", err, tc.want)
			}
			if ack.Outcome == OutcomeAccepted {
				t.Errorf("outcome = accepted for an invalid vote")
			}
		})
	}
}

func TestGroupCommitBatchesConcurrentVotes(t *testing.T) {
	t.Parallel()
	s := startSystem(t, openStore(t, t.TempDir()), Config{Shards: 1})

	const votes = 500
	acks := make([]Ack, votes)
	var wg sync.WaitGroup
	for i := range votes {
		wg.Go(func() {
			acks[i] = vote(t, s, 0, Vote{
				VoteID: fmt.Sprintf("v-%d", i), Poll: "p1", Voter: fmt.Sprintf("voter-%d", i),
				Options: []string{[]string{"a", "b"}[i%2]},
			})
		})
	}
	wg.Wait()

	seqs := map[uint64]bool{}
	for i, ack := range acks {
		if ack.Outcome != OutcomeAccepted {
			t.Fatalf("vote %d: outcome = %v, want accepted (all: %v)", i, ack.Outcome, outcomeCounts(acks))
		}
		seqs[ack.Receipt.Seq] = true
	}

	st := s.Stats().Shards[0]
	if st.Batches >= votes {
		t.Errorf("appends = %d for %d concurrent votes, want fewer", st.Batches, votes)
	}
	if len(seqs) != int(st.Batches) {
		t.Errorf("distinct receipt sequences = %d, appends = %d; want one sequence per append", len(seqs), st.Batches)
	}
	t.Logf("%d votes in %d appends, %.1f votes per append", votes, st.Batches, st.AvgBatch)

	got := pollTotalsOf(t, s, "p1")
	if got.Counts["a"] != votes/2 || got.Counts["b"] != votes/2 || got.Voters != votes {
		t.Errorf("totals = %+v, want a=%d b=%d voters=%d", got, votes/2, votes/2, votes)
	}
}

func TestDuplicateVoteIDReturnsFirstReceipt(t *testing.T) {
	t.Parallel()
	s := startSystem(t, openStore(t, t.TempDir()), Config{})
	v := Vote{VoteID: "v-1", Poll: "p1", Voter: "alice", Options: []string{"a"}}

	first := vote(t, s, 1, v)
	second := vote(t, s, 1, v)

	if first.Outcome != OutcomeAccepted {
		t.Fatalf("first outcome = %v, want accepted", first.Outcome)
	}
	if second.Outcome != OutcomeDuplicate {
		t.Errorf("second outcome = %v, want duplicate", second.Outcome)
	}
	if second.Receipt != first.Receipt {
		t.Errorf("second receipt = %+v, want the first %+v", second.Receipt, first.Receipt)
	}

	got := pollTotalsOf(t, s, "p1")
	if got.Counts["a"] != 1 || got.Voters != 1 {
		t.Errorf("totals = %+v, want a=1 from 1 voter", got)
	}
}

func TestConcurrentDuplicatesCountOnce(t *testing.T) {
	t.Parallel()
	s := startSystem(t, openStore(t, t.TempDir()), Config{})
	v := Vote{VoteID: "v-1", Poll: "p1", Voter: "alice", Options: []string{"b"}, AllowChange: true}

	const sends = 20
	acks := make([]Ack, sends)
	var wg sync.WaitGroup
	for i := range sends {
		wg.Go(func() { acks[i] = vote(t, s, 3, v) })
	}
	wg.Wait()

	counts := outcomeCounts(acks)
	if counts["accepted"] != 1 || counts["duplicate"] != sends-1 {
		t.Fatalf("outcomes = %v, want 1 accepted and %d duplicate", counts, sends-1)
	}
	for i, ack := range acks {
		if ack.Receipt != acks[0].Receipt || ack.Receipt.Seq == 0 {
			t.Errorf("send %d receipt = %+v, want %+v", i, ack.Receipt, acks[0].Receipt)
		}
	}

	got := pollTotalsOf(t, s, "p1")
	if got.Counts["b"] != 1 || got.Voters != 1 || got.TotalVotes != 1 {
		t.Errorf("totals = %+v, want b=1 from 1 voter", got)
	}
}

func TestAlreadyVotedWithoutChange(t *testing.T) {
	t.Parallel()
	s := startSystem(t, openStore(t, t.TempDir()), Config{})

	first := vote(t, s, 0, Vote{VoteID: "v-1", Poll: "p1", Voter: "alice", Options: []string{"a"}})
	second := vote(t, s, 0, Vote{VoteID: "v-2", Poll: "p1", Voter: "alice", Options: []string{"b"}})
	otherPoll := vote(t, s, 0, Vote{VoteID: "v-3", Poll: "p2", Voter: "alice", Options: []string{"b"}})

	if first.Outcome != OutcomeAccepted {
		t.Fatalf("first outcome = %v, want accepted", first.Outcome)
	}
	if second.Outcome != OutcomeAlreadyVoted {
		t.Errorf("second outcome = %v, want already_voted", second.Outcome)
	}
	if second.Receipt != (Receipt{}) {
		t.Errorf("already_voted receipt = %+v, want none", second.Receipt)
	}
	if otherPoll.Outcome != OutcomeAccepted {
		t.Errorf("vote in another poll: outcome = %v, want accepted", otherPoll.Outcome)
	}

	got := pollTotalsOf(t, s, "p1")
	if got.Counts["a"] != 1 || got.Counts["b"] != 0 || got.Voters != 1 {
		t.Errorf("totals = %+v, want a=1 b=0 from 1 voter", got)
	}
}

func TestAlreadyVotedWhileFirstIsPending(t *testing.T) {
	t.Parallel()
	s := startSystem(t, openStore(t, t.TempDir()), Config{})

	const sends = 10
	acks := make([]Ack, sends)
	var wg sync.WaitGroup
	for i := range sends {
		wg.Go(func() {
			acks[i] = vote(t, s, 0, Vote{VoteID: fmt.Sprintf("v-%d", i), Poll: "p1", Voter: "alice", Options: []string{"a"}})
		})
	}
	wg.Wait()

	counts := outcomeCounts(acks)
	if counts["accepted"] != 1 || counts["already_voted"] != sends-1 {
		t.Errorf("outcomes = %v, want 1 accepted and %d already_voted", counts, sends-1)
	}
	if got := pollTotalsOf(t, s, "p1"); got.Counts["a"] != 1 || got.Voters != 1 {
		t.Errorf("totals = %+v, want a=1 from 1 voter", got)
	}
}

func TestRevoteMovesCount(t *testing.T) {
	t.Parallel()
	s := startSystem(t, openStore(t, t.TempDir()), Config{})
	first := Vote{VoteID: "v-1", Poll: "p1", Voter: "alice", Options: []string{"a"}, AllowChange: true}

	acks := []Ack{
		vote(t, s, 0, first),
		vote(t, s, 0, Vote{VoteID: "v-2", Poll: "p1", Voter: "alice", Options: []string{"b", "c"}, AllowChange: true}),
		vote(t, s, 0, Vote{VoteID: "v-3", Poll: "p1", Voter: "bob", Options: []string{"a"}, AllowChange: true}),
	}
	for i, ack := range acks {
		if ack.Outcome != OutcomeAccepted {
			t.Fatalf("vote %d: outcome = %v, want accepted", i, ack.Outcome)
		}
	}

	want := map[string]int64{"a": 1, "b": 1, "c": 1}
	got := pollTotalsOf(t, s, "p1")
	if !maps.Equal(got.Counts, want) || got.Voters != 2 || got.TotalVotes != 3 {
		t.Errorf("totals = %+v, want counts %v, 2 voters, 3 votes", got, want)
	}

	retry := vote(t, s, 0, first)
	if retry.Outcome != OutcomeDuplicate || retry.Receipt != acks[0].Receipt {
		t.Errorf("retry of the first vote = %+v, want duplicate with %+v", retry, acks[0].Receipt)
	}
	if got := pollTotalsOf(t, s, "p1"); !maps.Equal(got.Counts, want) {
		t.Errorf("after retrying the first vote counts = %v, want unchanged %v", got.Counts, want)
	}
}

func TestClosePollBarrier(t *testing.T) {
	t.Parallel()
	published := &publishLog{}
	s := startSystem(t, openStore(t, t.TempDir()), Config{Publish: published.publish})
	s.RegisterPoll(PollInfo{ID: "p1", Event: "e1", Options: []string{"a", "b"}})

	const voters = 400
	acks := make([]Ack, voters)
	var wg sync.WaitGroup
	for i := range voters {
		wg.Go(func() {
			if i == voters/2 {
				time.Sleep(time.Millisecond)
			}
			acks[i] = vote(t, s, i%4, Vote{
				VoteID: fmt.Sprintf("v-%d", i), Poll: "p1", Voter: fmt.Sprintf("voter-%d", i),
				Options: []string{[]string{"a", "b"}[i%2]},
			})
		})
	}

	time.Sleep(2 * time.Millisecond)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	final, err := s.ClosePoll(ctx, "p1")
	wg.Wait()
	if err != nil {
		t.Fatalf("ClosePoll: %v", err)
	}

	counts := outcomeCounts(acks)
	if counts["accepted"]+counts["poll_closed"] != voters {
		t.Fatalf("outcomes = %v, want only accepted and poll_closed", counts)
	}
	t.Logf("outcomes around the close: %v", counts)

	if !final.Final || final.Voters != int64(counts["accepted"]) || final.TotalVotes != int64(counts["accepted"]) {
		t.Errorf("final document = %+v, want final with %d voters", final, counts["accepted"])
	}
	if final.Counts["a"]+final.Counts["b"] != int64(counts["accepted"]) || final.Event != "e1" {
		t.Errorf("final counts = %v event %q, want a+b = %d in event e1", final.Counts, final.Event, counts["accepted"])
	}

	late := vote(t, s, 0, Vote{VoteID: "late", Poll: "p1", Voter: "late-voter", Options: []string{"a"}})
	if late.Outcome != OutcomePollClosed {
		t.Errorf("vote after close: outcome = %v, want poll_closed", late.Outcome)
	}

	docs := published.forPoll("p1")
	if len(docs) == 0 || !docs[len(docs)-1].Final || docs[len(docs)-1].Version != final.Version {
		t.Errorf("published documents = %+v, want the final version %d last", docs, final.Version)
	}
	if cached, ok := s.Results("p1"); !ok || !cached.Final || cached.Version != final.Version {
		t.Errorf("Results(p1) = %+v, %v, want the final document", cached, ok)
	}

	again, err := s.ClosePoll(ctx, "p1")
	if err != nil || again.Version != final.Version || !maps.Equal(again.Counts, final.Counts) {
		t.Errorf("second ClosePoll = %+v, %v, want the same final version %d", again, err, final.Version)
	}
}

func TestClosePollWithoutVotes(t *testing.T) {
	t.Parallel()
	s := startSystem(t, openStore(t, t.TempDir()), Config{})
	// Readiness starts a results round at once. Registering the poll only after
	// it ended leaves the next round 5 s away, so the final document is the
	// poll's first.
	waitFor(t, "the round started by readiness", func() bool { return s.Stats().Rounds >= 1 })
	s.RegisterPoll(PollInfo{ID: "p1", Event: "e1", Options: []string{"a", "b"}})

	final, err := s.ClosePoll(t.Context(), "p1")
	if err != nil {
		t.Fatalf("ClosePoll: %v", err)
	}

	want := map[string]int64{"a": 0, "b": 0}
	if !final.Final || final.Version != 1 || !maps.Equal(final.Counts, want) || final.Voters != 0 {
		t.Errorf("final document = %+v, want version 1, final, counts %v", final, want)
	}
	if _, err := s.ClosePoll(t.Context(), ""); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("ClosePoll(\"\") error = %v, want ErrInvalidArgument", err)
	}
}

func TestAppendFailureAnswersOverloaded(t *testing.T) {
	t.Parallel()
	store := openStore(t, t.TempDir())
	s := startSystem(t, store, Config{Shards: 1, AppendTimeout: time.Second})

	ok := vote(t, s, 0, Vote{VoteID: "v-1", Poll: "p1", Voter: "alice", Options: []string{"a"}})
	if ok.Outcome != OutcomeAccepted {
		t.Fatalf("first outcome = %v, want accepted", ok.Outcome)
	}

	err := store.Close()
	if err != nil {
		t.Fatalf("close store: %v", err)
	}

	failed := vote(t, s, 0, Vote{VoteID: "v-2", Poll: "p1", Voter: "bob", Options: []string{"a"}})
	if failed.Outcome != OutcomeOverloaded {
		t.Errorf("outcome with the store closed = %v, want overloaded", failed.Outcome)
	}

	got := pollTotalsOf(t, s, "p1")
	if got.Counts["a"] != 1 || got.Voters != 1 {
		t.Errorf("totals = %+v, want only the first vote", got)
	}
	if st := s.Stats(); st.AppendFailures == 0 {
		t.Errorf("stats append failures = 0, want at least 1")
	}

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_ = s.Stop(ctx) // the store is gone, so only the return matters

	after := vote(t, s, 0, Vote{VoteID: "v-3", Poll: "p1", Voter: "carol", Options: []string{"a"}})
	if after.Outcome != OutcomeOverloaded {
		t.Errorf("outcome after Stop = %v, want overloaded", after.Outcome)
	}
}

func TestVoteTimeoutIsOverloaded(t *testing.T) {
	t.Parallel()
	s := startSystem(t, openStore(t, t.TempDir()), Config{})

	ctx, cancel := context.WithCancel(t.Context())
	cancel()

	ack, err := s.Vote(ctx, 0, Vote{VoteID: "v-1", Poll: "p1", Voter: "alice", Options: []string{"a"}})
	if err != nil || ack.Outcome != OutcomeOverloaded {
		t.Errorf("Vote with a cancelled context = %+v, %v, want overloaded and no error", ack, err)
	}
}

// receiptsPerSeq counts the accepted votes of each append.
func receiptsPerSeq(acks []Ack) map[uint64]int {
	out := map[uint64]int{}
	for _, ack := range acks {
		if ack.Outcome == OutcomeAccepted {
			out[ack.Receipt.Seq]++
		}
	}

	return out
}

func TestMaxQueueAnswersOverloaded(t *testing.T) {
	t.Parallel()
	s := startSystem(t, openStore(t, t.TempDir()), Config{Shards: 1, MaxQueue: 1})

	const votes = 50
	acks := make([]Ack, votes)
	var wg sync.WaitGroup
	for i := range votes {
		wg.Go(func() {
			acks[i] = vote(t, s, 0, Vote{VoteID: fmt.Sprintf("v-%d", i), Poll: "p1", Voter: fmt.Sprintf("u-%d", i), Options: []string{"a"}})
		})
	}
	wg.Wait()

	counts := outcomeCounts(acks)
	if counts["accepted"] == 0 || counts["overloaded"] == 0 || counts["accepted"]+counts["overloaded"] != votes {
		t.Fatalf("outcomes = %v, want both accepted and overloaded, nothing else", counts)
	}
	for seq, n := range receiptsPerSeq(acks) {
		if n > 1 {
			t.Errorf("append at seq %d carried %d votes, want at most 1 with MaxQueue 1", seq, n)
		}
	}
	if got := pollTotalsOf(t, s, "p1"); got.Voters != int64(counts["accepted"]) {
		t.Errorf("voters = %d, want the %d accepted", got.Voters, counts["accepted"])
	}
}

func TestMaxBatchLimitsAppendSize(t *testing.T) {
	t.Parallel()
	s := startSystem(t, openStore(t, t.TempDir()), Config{Shards: 1, MaxBatch: 5})

	const votes = 100
	acks := make([]Ack, votes)
	var wg sync.WaitGroup
	for i := range votes {
		wg.Go(func() {
			acks[i] = vote(t, s, 0, Vote{VoteID: fmt.Sprintf("v-%d", i), Poll: "p1", Voter: fmt.Sprintf("u-%d", i), Options: []string{"a"}})
		})
	}
	wg.Wait()

	if counts := outcomeCounts(acks); counts["accepted"] != votes {
		t.Fatalf("outcomes = %v, want %d accepted", counts, votes)
	}
	perSeq := receiptsPerSeq(acks)
	largest := 0
	for _, n := range perSeq {
		largest = max(largest, n)
	}
	if largest > 5 {
		t.Errorf("largest append = %d votes, want at most MaxBatch 5", largest)
	}
	t.Logf("%d votes in %d appends, largest %d", votes, len(perSeq), largest)
}

func TestBatchStaysUnderMaxBatchBytes(t *testing.T) {
	t.Parallel()
	s := startSystem(t, openStore(t, t.TempDir()), Config{Shards: 1})

	// Each vote selects 256 options of 250 bytes, 64,5xx bytes encoded, so
	// 8 fit in one append of persistence.MaxBatchBytes (512 KiB) and 9 do not.
	options := make([]string, 256)
	for i := range options {
		options[i] = fmt.Sprintf("%03d-%s", i, strings.Repeat("o", 246))
	}

	const votes = 30
	acks := make([]Ack, votes)
	var wg sync.WaitGroup
	for i := range votes {
		wg.Go(func() {
			acks[i] = vote(t, s, 0, Vote{VoteID: fmt.Sprintf("v-%d", i), Poll: "p1", Voter: fmt.Sprintf("u-%d", i), Options: options})
		})
	}
	wg.Wait()

	if counts := outcomeCounts(acks); counts["accepted"] != votes {
		t.Fatalf("outcomes = %v, want %d accepted", counts, votes)
	}
	for seq, n := range receiptsPerSeq(acks) {
		if n > 8 {
			t.Errorf("append at seq %d carried %d large votes, want at most 8", seq, n)
		}
	}
	if got := pollTotalsOf(t, s, "p1"); got.Counts[options[0]] != votes || got.TotalVotes != votes*256 {
		t.Errorf("totals: first option %d, total %d, want %d and %d", got.Counts[options[0]], got.TotalVotes, votes, votes*256)
	}
}
