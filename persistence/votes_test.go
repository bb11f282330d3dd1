package persistence

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// testBatch returns a batch of n votes on shard, with ids derived from id.
func testBatch(id string, shard, n int) Batch {
	b := Batch{ID: id, Shard: shard}
	for i := range n {
		b.Votes = append(b.Votes, VoteRecord{
			VoteID:  fmt.Sprintf("%s-vote-%d", id, i),
			Poll:    "poll-1",
			Voter:   fmt.Sprintf("voter-%d", i),
			Options: []string{"opt-a"},
			At:      1767225600000 + int64(i),
		})
	}

	return b
}

type replayed struct {
	seq   uint64
	batch Batch
}

// replayAll replays shard after afterSeq and returns what fn received.
func replayAll(t *testing.T, s *Store, shard int, afterSeq uint64) ([]replayed, uint64) {
	t.Helper()

	var got []replayed
	n, last, err := s.Replay(t.Context(), shard, afterSeq, func(seq uint64, b Batch) error {
		got = append(got, replayed{seq, b})
		return nil
	})
	if err != nil {
		t.Fatalf("Replay(shard %d, after %d): %v", shard, afterSeq, err)
	}
	if n != len(got) {
		t.Errorf("Replay returned n = %d, but fn ran %d times", n, len(got))
	}

	return got, last
}

func TestAppendReplayOrder(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})

	var batches []Batch
	var seqs []uint64
	for i := range 5 {
		b := testBatch(fmt.Sprintf("order-%d", i), 0, i+1)
		seq, err := s.AppendBatch(t.Context(), b)
		if err != nil {
			t.Fatalf("AppendBatch %d: %v", i, err)
		}
		batches = append(batches, b)
		seqs = append(seqs, seq)
	}

	tests := []struct {
		afterSeq  uint64
		wantFirst int // index of the first batch expected
	}{
		{afterSeq: 0, wantFirst: 0},
		{afterSeq: seqs[1], wantFirst: 2},
		{afterSeq: seqs[3], wantFirst: 4},
		{afterSeq: seqs[4], wantFirst: 5},
		{afterSeq: seqs[4] + 100, wantFirst: 5},
	}
	for _, tt := range tests {
		got, last := replayAll(t, s, 0, tt.afterSeq)

		want := batches[tt.wantFirst:]
		if len(got) != len(want) {
			t.Errorf("after %d: replayed %d batches, want %d", tt.afterSeq, len(got), len(want))
			continue
		}
		for i, r := range got {
			if r.seq != seqs[tt.wantFirst+i] {
				t.Errorf("after %d: batch %d has sequence %d, want %d", tt.afterSeq, i, r.seq, seqs[tt.wantFirst+i])
			}
			if !reflect.DeepEqual(r.batch, want[i]) {
				t.Errorf("after %d: batch %d = %+v, want %+v", tt.afterSeq, i, r.batch, want[i])
			}
		}

		wantLast := tt.afterSeq
		if len(want) > 0 {
			wantLast = seqs[4]
		}
		if last != wantLast {
			t.Errorf("after %d: last = %d, want %d", tt.afterSeq, last, wantLast)
		}
	}
}

func TestReplayEmptyShardReturnsAtOnce(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})

	_, err := s.AppendBatch(t.Context(), testBatch("other-shard", 1, 1))
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	got, last := replayAll(t, s, 7, 0)
	elapsed := time.Since(start)

	if len(got) != 0 || last != 0 {
		t.Errorf("Replay of an empty shard = %d batches, last %d; want 0, 0", len(got), last)
	}
	// The per-message wait is DefaultTimeout, so an empty replay that waited
	// for a message would take at least that long.
	if elapsed >= DefaultTimeout {
		t.Errorf("Replay of an empty shard took %v, want less than %v", elapsed, DefaultTimeout)
	}
}

func TestReplayShardIsolation(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})

	want := map[int][]string{}
	for i := range 12 {
		shard := i % 3
		id := fmt.Sprintf("iso-%d", i)
		_, err := s.AppendBatch(t.Context(), testBatch(id, shard, 2))
		if err != nil {
			t.Fatal(err)
		}
		want[shard] = append(want[shard], id)
	}

	for shard := range 3 {
		got, _ := replayAll(t, s, shard, 0)

		var ids []string
		for _, r := range got {
			ids = append(ids, r.batch.ID)
			if r.batch.Shard != shard {
				t.Errorf("shard %d replay delivered batch %q of shard %d", shard, r.batch.ID, r.batch.Shard)
			}
		}
		if !reflect.DeepEqual(ids, want[shard]) {
			t.Errorf("shard %d replayed %v, want %v", shard, ids, want[shard])
		}
	}
}

func TestAppendDuplicateID(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})

	first := testBatch("dup", 2, 3)
	seq1, err := s.AppendBatch(t.Context(), first)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.AppendBatch(t.Context(), testBatch("between", 2, 1))
	if err != nil {
		t.Fatal(err)
	}

	// A retry carries the same id; its content is ignored.
	retry := testBatch("dup", 2, 5)
	seq2, err := s.AppendBatch(t.Context(), retry)
	if err != nil {
		t.Fatalf("AppendBatch of a duplicate id: %v", err)
	}
	if seq2 != seq1 {
		t.Errorf("duplicate append returned sequence %d, want the original %d", seq2, seq1)
	}

	got, _ := replayAll(t, s, 2, 0)
	if len(got) != 2 {
		t.Fatalf("replayed %d batches, want 2", len(got))
	}
	if !reflect.DeepEqual(got[0].batch, first) {
		t.Errorf("stored batch = %+v, want the first append %+v", got[0].batch, first)
	}
}

func TestAppendRejectsBadBatch(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})

	// One vote more than the largest batch that fits MaxBatchBytes.
	over := largestBatch(t)
	over.Votes = append(over.Votes, over.Votes[0])

	tests := []struct {
		name    string
		batch   Batch
		wantErr error
	}{
		{name: "empty id", batch: testBatch("", 0, 1), wantErr: ErrInvalidBatch},
		{name: "no votes", batch: Batch{ID: "none", Shard: 0}, wantErr: ErrInvalidBatch},
		{name: "negative shard", batch: testBatch("neg", -1, 1), wantErr: ErrInvalidBatch},
		{name: "one vote above the limit", batch: over, wantErr: ErrBatchTooLarge},
	}
	for _, tt := range tests {
		_, err := s.AppendBatch(t.Context(), tt.batch)
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("%s: AppendBatch error = %v, want %v", tt.name, err, tt.wantErr)
		}
	}

	info, err := s.votes.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Errorf("stream has %d messages after rejected appends, want 0", info.State.Msgs)
	}
}

func TestAppendLargestBatch(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})

	b := largestBatch(t)

	_, err := s.AppendBatch(t.Context(), b)
	if err != nil {
		t.Fatalf("AppendBatch of %d votes just under MaxBatchBytes: %v", len(b.Votes), err)
	}

	got, _ := replayAll(t, s, 0, 0)
	if len(got) != 1 || len(got[0].batch.Votes) != len(b.Votes) {
		t.Errorf("replayed %d batches, want 1 with %d votes", len(got), len(b.Votes))
	}
}

func TestReplayStopsAtCallbackError(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})

	var seqs []uint64
	for i := range 4 {
		seq, err := s.AppendBatch(t.Context(), testBatch(fmt.Sprintf("stop-%d", i), 0, 1))
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}

	errStop := errors.New("stop here")
	calls := 0
	n, last, err := s.Replay(t.Context(), 0, 0, func(seq uint64, b Batch) error {
		calls++
		if calls == 2 {
			return errStop
		}
		return nil
	})

	if !errors.Is(err, errStop) {
		t.Errorf("Replay error = %v, want the callback's error", err)
	}
	if n != 1 || last != seqs[0] {
		t.Errorf("Replay = %d batches, last %d; want 1, %d", n, last, seqs[0])
	}
	if calls != 2 {
		t.Errorf("callback ran %d times, want 2", calls)
	}
}

func TestReplayCorruptMessage(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})

	_, err := s.AppendBatch(t.Context(), testBatch("good", 4, 1))
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.JetStream().Publish(t.Context(), VoteSubject, []byte(`{"id":"json"}`))
	if err != nil {
		t.Fatal(err)
	}

	n, _, err := s.Replay(t.Context(), 4, 0, func(uint64, Batch) error { return nil })
	if !errors.Is(err, ErrCorruptBatch) {
		t.Errorf("Replay error = %v, want ErrCorruptBatch", err)
	}
	if n != 1 {
		t.Errorf("Replay delivered %d batches before the corrupt one, want 1", n)
	}
}

func TestReplayRejectsBadShard(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})

	for _, shard := range []int{-1, MaxShards} {
		_, _, err := s.Replay(t.Context(), shard, 0, func(uint64, Batch) error { return nil })
		if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), fmt.Sprint(shard)) {
			t.Errorf("Replay(shard %d) error = %v, want ErrInvalidArgument naming the shard", shard, err)
		}
	}
}

func TestAppendCanceledContext(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})

	ctx, cancel := context.WithCancel(t.Context())
	cancel()

	_, err := s.AppendBatch(ctx, testBatch("canceled", 0, 1))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("AppendBatch with a canceled context: error = %v, want context.Canceled", err)
	}
}

// largestBatch returns the batch with the most copies of one vote that
// still encodes to at most MaxBatchBytes.
func largestBatch(t *testing.T) Batch {
	t.Helper()

	encodedLen := func(b Batch) int {
		data, err := EncodeBatch(b)
		if err != nil {
			t.Fatal(err)
		}
		return len(data)
	}
	withVotes := func(n int) Batch {
		b := testBatch("largest", 0, 1)
		for len(b.Votes) < n {
			b.Votes = append(b.Votes, b.Votes[0])
		}
		return b
	}

	base := encodedLen(withVotes(1))
	perVote := encodedLen(withVotes(2)) - base
	n := 1 + (MaxBatchBytes-base)/perVote
	for encodedLen(withVotes(n)) > MaxBatchBytes {
		n--
	}
	if encodedLen(withVotes(n+1)) <= MaxBatchBytes {
		t.Fatalf("a batch of %d votes still fits MaxBatchBytes", n+1)
	}

	return withVotes(n)
}
