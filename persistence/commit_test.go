package persistence

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"
)

// pauseCommitter replaces the running committer of s with one whose
// goroutine has not started, so that requests pile up in its queue until
// the test calls resume. Close still stops it.
func pauseCommitter(t *testing.T, s *Store) (resume func()) {
	t.Helper()

	s.stopCommitter()
	s.commit = newCommitter(s.js.PublishMsg)

	var once sync.Once
	resume = func() { once.Do(func() { go s.runCommitter() }) }
	t.Cleanup(resume)

	return resume
}

// appendResult is what one concurrent AppendBatch returned.
type appendResult struct {
	seq uint64
	err error
}

// appendConcurrently starts one AppendBatch per batch and waits until all
// of them are in the committer's queue, which must be paused. wait returns their results in the
// order of batches.
func appendConcurrently(t *testing.T, s *Store, batches []Batch) (wait func() []appendResult) {
	t.Helper()

	before := len(s.commit.requests)
	results := make([]appendResult, len(batches))
	var wg sync.WaitGroup
	for i, b := range batches {
		wg.Go(func() {
			seq, err := s.AppendBatch(t.Context(), b)
			results[i] = appendResult{seq, err}
		})
	}

	deadline := time.Now().Add(DefaultTimeout)
	for len(s.commit.requests) < before+len(batches) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d appends reached the queue within %v", len(s.commit.requests)-before, len(batches), DefaultTimeout)
		}
		time.Sleep(time.Millisecond)
	}

	return func() []appendResult {
		wg.Wait()
		return results
	}
}

func streamMessages(t *testing.T, s *Store) uint64 {
	t.Helper()

	info, err := s.votes.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}

	return info.State.Msgs
}

func TestGroupCommitSharesMessage(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})
	resume := pauseCommitter(t, s)

	var batches []Batch
	for i := range 12 {
		batches = append(batches, testBatch(fmt.Sprintf("group-%d", i), i%4, i%3+1))
	}
	wait := appendConcurrently(t, s, batches)
	resume()
	results := wait()

	for i, r := range results {
		if r.err != nil {
			t.Fatalf("AppendBatch %d: %v", i, r.err)
		}
		if r.seq != results[0].seq {
			t.Errorf("batch %d got sequence %d, want the shared %d", i, r.seq, results[0].seq)
		}
	}
	if n := streamMessages(t, s); n != 1 {
		t.Errorf("stream holds %d messages for %d queued batches, want 1", n, len(batches))
	}

	for shard := range 4 {
		got, _ := replayAll(t, s, shard, 0)

		var ids []string
		for _, r := range got {
			ids = append(ids, r.batch.ID)
			if r.batch.Shard != shard {
				t.Errorf("shard %d replay delivered batch %q of shard %d", shard, r.batch.ID, r.batch.Shard)
			}
		}
		var want []string
		for _, b := range batches {
			if b.Shard == shard {
				want = append(want, b.ID)
			}
		}
		// The goroutines enter the queue in any order, so compare as sets.
		if !sameElements(ids, want) {
			t.Errorf("shard %d replayed %v, want %v", shard, ids, want)
		}
	}
}

func sameElements(a, b []string) bool {
	count := map[string]int{}
	for _, x := range a {
		count[x]++
	}
	for _, x := range b {
		count[x]--
	}
	for _, n := range count {
		if n != 0 {
			return false
		}
	}

	return len(a) == len(b)
}

func TestGroupCommitConcurrentShards(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})

	const shards, perShard = 16, 20
	var wg sync.WaitGroup
	errs := make(chan error, shards)
	for shard := range shards {
		wg.Go(func() {
			for i := range perShard {
				_, err := s.AppendBatch(t.Context(), testBatch(fmt.Sprintf("conc-%d-%d", shard, i), shard, 2))
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("AppendBatch: %v", err)
	}

	messages := streamMessages(t, s)
	t.Logf("%d batches in %d messages", shards*perShard, messages)
	if messages > shards*perShard {
		t.Errorf("stream holds %d messages for %d batches", messages, shards*perShard)
	}

	for shard := range shards {
		got, _ := replayAll(t, s, shard, 0)
		if len(got) != perShard {
			t.Errorf("shard %d replayed %d batches, want %d", shard, len(got), perShard)
		}
		for i, r := range got {
			want := fmt.Sprintf("conc-%d-%d", shard, i)
			if r.batch.ID != want {
				t.Errorf("shard %d batch %d = %q, want %q in append order", shard, i, r.batch.ID, want)
			}
		}
	}
}

func TestGroupCommitSplitsAtMessageLimit(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})
	resume := pauseCommitter(t, s)

	large := largestBatch(t)
	first, second := large, large
	first.ID, second.ID = "large-1", "large-2"
	small := testBatch("small", 3, 1)

	// Queue them one at a time so that their order is known.
	var waits []func() []appendResult
	for i, b := range []Batch{first, small, second} {
		waits = append(waits, appendConcurrently(t, s, []Batch{b}))
		if len(s.commit.requests) != i+1 {
			t.Fatalf("queue holds %d requests, want %d", len(s.commit.requests), i+1)
		}
	}
	resume()

	var seqs []uint64
	for i, wait := range waits {
		r := wait()[0]
		if r.err != nil {
			t.Fatalf("AppendBatch %d: %v", i, r.err)
		}
		seqs = append(seqs, r.seq)
	}

	if seqs[0] != seqs[1] {
		t.Errorf("the first large batch and the small one got sequences %d and %d, want one message", seqs[0], seqs[1])
	}
	if seqs[2] <= seqs[1] {
		t.Errorf("the second large batch got sequence %d, want a later message than %d", seqs[2], seqs[1])
	}
	if n := streamMessages(t, s); n != 2 {
		t.Errorf("stream holds %d messages, want 2", n)
	}
}

func TestCloseAnswersPendingAppends(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(t.Context(), Config{DataDir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	resume := pauseCommitter(t, s)

	var batches []Batch
	for i := range 8 {
		batches = append(batches, testBatch(fmt.Sprintf("pending-%d", i), i, 1))
	}
	wait := appendConcurrently(t, s, batches)

	s.commit.cancel()
	resume()
	err = s.Close()
	if err != nil {
		t.Fatalf("Close: %v", err)
	}

	for i, r := range wait() {
		if !errors.Is(r.err, ErrClosed) {
			t.Errorf("pending AppendBatch %d after Close = (%d, %v), want ErrClosed", i, r.seq, r.err)
		}
	}

	_, err = s.AppendBatch(t.Context(), testBatch("after-close", 0, 1))
	if !errors.Is(err, ErrClosed) {
		t.Errorf("AppendBatch after Close: error = %v, want ErrClosed", err)
	}

	reopened := openTestStore(t, Config{DataDir: dir})
	if n := streamMessages(t, reopened); n != 0 {
		t.Errorf("stream holds %d messages of appends that failed, want 0", n)
	}
}

// TestCloseDuringAppendsNoFalseSuccess closes the Store while appends run
// and checks that every append that returned a sequence is in the stream.
func TestCloseDuringAppendsNoFalseSuccess(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(t.Context(), Config{DataDir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}

	const writers, perWriter = 8, 200
	var mu sync.Mutex
	stored := map[string]uint64{}
	failed := 0
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				id := fmt.Sprintf("close-%d-%d", w, i)
				seq, err := s.AppendBatch(t.Context(), testBatch(id, w, 1))
				mu.Lock()
				if err == nil {
					stored[id] = seq
				} else {
					failed++
				}
				mu.Unlock()
			}
		})
	}

	time.Sleep(20 * time.Millisecond)
	err = s.Close()
	if err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()
	t.Logf("%d appends succeeded and %d failed around Close", len(stored), failed)

	reopened := openTestStore(t, Config{DataDir: dir})
	found := map[string]uint64{}
	_, _, err = reopened.ReplayAll(t.Context(), 0, func(seq uint64, b Batch) error {
		found[b.ID] = seq
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for id, seq := range stored {
		got, ok := found[id]
		if !ok {
			t.Errorf("batch %q was acknowledged at sequence %d but is not in the stream", id, seq)
			continue
		}
		if got != seq {
			t.Errorf("batch %q was acknowledged at sequence %d but is stored at %d", id, seq, got)
		}
	}
}

func TestGroupCommitFailedPublishFailsEveryBatch(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})
	resume := pauseCommitter(t, s)

	var batches []Batch
	for i := range 5 {
		batches = append(batches, testBatch(fmt.Sprintf("doomed-%d", i), i, 1))
	}
	wait := appendConcurrently(t, s, batches)

	// Without the stream, JetStream rejects the publish.
	err := s.js.DeleteStream(t.Context(), VotesStream)
	if err != nil {
		t.Fatal(err)
	}
	resume()

	for i, r := range wait() {
		if r.err == nil {
			t.Errorf("AppendBatch %d into a deleted stream returned sequence %d and no error", i, r.seq)
		}
	}
}

func TestAppendSkipsCancelledRequest(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})
	resume := pauseCommitter(t, s)

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := s.AppendBatch(ctx, testBatch("given-up", 0, 1))
		done <- err
	}()
	wait := appendConcurrently(t, s, []Batch{testBatch("kept", 1, 1)})
	for len(s.commit.requests) < 2 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled AppendBatch error = %v, want context.Canceled", err)
	}
	resume()

	r := wait()[0]
	if r.err != nil {
		t.Fatal(r.err)
	}
	var ids []string
	_, _, err = s.ReplayAll(t.Context(), 0, func(_ uint64, b Batch) error {
		ids = append(ids, b.ID)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ids, []string{"kept"}) {
		t.Errorf("stream holds batches %v, want only [kept]", ids)
	}
}

func TestReplayAllReadsLegacyShardSubjects(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})

	legacy := testBatch("legacy", 3, 2)
	data, err := EncodeBatch(legacy)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.JetStream().Publish(t.Context(), "livevote.votes.3", data)
	if err != nil {
		t.Fatal(err)
	}
	current := testBatch("current", 3, 1)
	_, err = s.AppendBatch(t.Context(), current)
	if err != nil {
		t.Fatal(err)
	}

	var got []Batch
	messages, last, err := s.ReplayAll(t.Context(), 0, func(_ uint64, b Batch) error {
		got = append(got, b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if messages != 2 || last != 2 {
		t.Errorf("ReplayAll = %d messages, last %d; want 2, 2", messages, last)
	}
	if !reflect.DeepEqual(got, []Batch{legacy, current}) {
		t.Errorf("ReplayAll delivered %+v, want the legacy batch and the current one", got)
	}

	shard, _ := replayAll(t, s, 3, 0)
	if len(shard) != 2 {
		t.Errorf("Replay of shard 3 delivered %d batches, want 2", len(shard))
	}
}
