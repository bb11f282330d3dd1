package persistence

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// publishCall is one publish that the committer made, as the JetStream
// server saw it.
type publishCall struct {
	data  []byte
	msgID string
	ack   *jetstream.PubAck
	err   error
}

// recordPublishes replaces the publish function of the paused committer of s
// with one that calls the real PublishMsg, records each call and then lets
// lose decide what the committer gets back from the call with index attempt.
func recordPublishes(s *Store, lose func(ctx context.Context, attempt int, ack *jetstream.PubAck, err error) (*jetstream.PubAck, error)) (calls func() []publishCall) {
	var mu sync.Mutex
	var recorded []publishCall

	s.commit.publish = func(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
		ack, err := s.js.PublishMsg(ctx, msg, opts...)

		mu.Lock()
		attempt := len(recorded)
		recorded = append(recorded, publishCall{
			data:  slices.Clone(msg.Data),
			msgID: msg.Header.Get(jetstream.MsgIDHeader),
			ack:   ack,
			err:   err,
		})
		mu.Unlock()

		return lose(ctx, attempt, ack, err)
	}

	return func() []publishCall {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(recorded)
	}
}

// TestPublishRetryStoresLostAckOnce loses the ack of the first publish of a
// stream message after the server stored it, and checks that the retry
// sends the same bytes and Msg-Id, that the stream holds the message once and
// that every caller gets its sequence.
func TestPublishRetryStoresLostAckOnce(t *testing.T) {
	t.Parallel()

	// dropAck returns a timeout instead of the ack of the first publish.
	dropAck := func(_ context.Context, attempt int, ack *jetstream.PubAck, err error) (*jetstream.PubAck, error) {
		if attempt == 0 && err == nil {
			return nil, nats.ErrTimeout
		}
		return ack, err
	}
	// holdAck keeps the ack of the first publish until the attempt's share of
	// the deadline has passed, as a slow or lost reply does.
	holdAck := func(ctx context.Context, attempt int, ack *jetstream.PubAck, err error) (*jetstream.PubAck, error) {
		if attempt == 0 && err == nil {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return ack, err
	}

	cases := []struct {
		name    string
		batches int
		lose    func(context.Context, int, *jetstream.PubAck, error) (*jetstream.PubAck, error)
	}{
		{"one batch, ack error", 1, dropAck},
		{"five batches, ack error", 5, dropAck},
		{"one batch, ack timeout", 1, holdAck},
		{"five batches, ack timeout", 5, holdAck},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := openTestStore(t, Config{})
			resume := pauseCommitter(t, s)
			calls := recordPublishes(s, tc.lose)

			var batches []Batch
			for i := range tc.batches {
				batches = append(batches, testBatch(fmt.Sprintf("lost-ack-%d", i), i, 2))
			}
			wait := appendConcurrently(t, s, batches)
			resume()
			results := wait()

			checkRetriedOnce(t, calls())
			stored := calls()[0].ack
			for i, r := range results {
				if r.err != nil {
					t.Errorf("AppendBatch %d after a lost ack: %v", i, r.err)
					continue
				}
				if r.seq != stored.Sequence {
					t.Errorf("AppendBatch %d returned sequence %d, want the stored sequence %d", i, r.seq, stored.Sequence)
				}
			}
			if n := streamMessages(t, s); n != 1 {
				t.Errorf("stream holds %d messages after a retried publish, want 1", n)
			}
			checkReplayedOnce(t, s, batches, stored.Sequence)
		})
	}
}

// checkRetriedOnce checks that the committer published twice with the same
// bytes and Msg-Id and that the server stored the first and recognised the
// second as its duplicate.
func checkRetriedOnce(t *testing.T, calls []publishCall) {
	t.Helper()

	if len(calls) != 2 {
		t.Fatalf("committer published %d times, want 2 (the lost one and one retry)", len(calls))
	}
	first, retry := calls[0], calls[1]
	if first.err != nil || retry.err != nil {
		t.Fatalf("server rejected a publish: first %v, retry %v", first.err, retry.err)
	}
	if first.msgID == "" {
		t.Error("first publish has no Msg-Id")
	}
	if retry.msgID != first.msgID {
		t.Errorf("retry Msg-Id = %q, want the first publish's %q", retry.msgID, first.msgID)
	}
	if !slices.Equal(retry.data, first.data) {
		t.Errorf("retry sent %d bytes that differ from the first publish's %d bytes", len(retry.data), len(first.data))
	}
	if first.ack.Duplicate {
		t.Error("first publish was acknowledged as a duplicate")
	}
	if !retry.ack.Duplicate {
		t.Errorf("retry stored a new message at sequence %d instead of matching the first", retry.ack.Sequence)
	}
	if retry.ack.Sequence != first.ack.Sequence {
		t.Errorf("retry ack sequence = %d, want the stored sequence %d", retry.ack.Sequence, first.ack.Sequence)
	}
}

// checkReplayedOnce checks that the stream holds each of batches once, at seq.
func checkReplayedOnce(t *testing.T, s *Store, batches []Batch, seq uint64) {
	t.Helper()

	found := map[string][]uint64{}
	_, _, err := s.ReplayAll(t.Context(), 0, func(got uint64, b Batch) error {
		found[b.ID] = append(found[b.ID], got)
		return nil
	})
	if err != nil {
		t.Fatalf("ReplayAll: %v", err)
	}

	for _, b := range batches {
		if !slices.Equal(found[b.ID], []uint64{seq}) {
			t.Errorf("batch %q is stored at sequences %v, want only %d", b.ID, found[b.ID], seq)
		}
	}
}

// TestPublishRejectionNotRetried checks that a publish that JetStream rejects
// is sent once and its error reaches the caller.
func TestPublishRejectionNotRetried(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})
	resume := pauseCommitter(t, s)

	var published atomic.Int32
	s.commit.publish = func(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
		published.Add(1)
		// A later option wins, so the server sees a stream name that is not
		// the one bound to the subject and rejects the message.
		opts = append(opts, jetstream.WithExpectStream("LIVEVOTE_OTHER"))
		return s.js.PublishMsg(ctx, msg, opts...)
	}

	wait := appendConcurrently(t, s, []Batch{testBatch("wrong-stream", 0, 1)})
	resume()
	r := wait()[0]

	var apiErr *jetstream.APIError
	if !errors.As(r.err, &apiErr) {
		t.Errorf("AppendBatch with a wrong expected stream = (%d, %v), want a JetStream API error", r.seq, r.err)
	}
	if n := published.Load(); n != 1 {
		t.Errorf("committer published a rejected message %d times, want 1", n)
	}
	if n := streamMessages(t, s); n != 0 {
		t.Errorf("stream holds %d messages after a rejected publish, want 0", n)
	}
}

func TestRetryablePublishError(t *testing.T) {
	t.Parallel()

	cases := []struct {
		err  error
		want bool
	}{
		{context.DeadlineExceeded, true},
		{fmt.Errorf("wrapped: %w", nats.ErrTimeout), true},
		{nats.ErrDisconnected, true},
		{nats.ErrConnectionReconnecting, true},
		{context.Canceled, false},
		{nats.ErrConnectionClosed, false},
		{nats.ErrMaxPayload, false},
		{jetstream.ErrNoStreamResponse, false},
		{&jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence}, false},
	}
	for _, tc := range cases {
		if got := retryablePublishError(tc.err); got != tc.want {
			t.Errorf("retryablePublishError(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// startStoppableServer starts a JetStream nats-server on a random loopback
// port with its store in dir and returns it. The caller shuts it down.
func startStoppableServer(t *testing.T, dir string) *server.Server {
	t.Helper()

	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true, JetStream: true, StoreDir: dir,
	})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		t.Fatal("nats-server not ready after 10s")
	}

	return ns
}

// burstResult is what the appends of TestAppendsReturnWhenServerStops saw.
type burstResult struct {
	mu         sync.Mutex
	stored     map[string]uint64
	failed     int
	maxElapsed time.Duration
}

func (r *burstResult) add(id string, seq uint64, err error, elapsed time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()

	r.maxElapsed = max(r.maxElapsed, elapsed)
	if err != nil {
		r.failed++
		return
	}
	r.stored[id] = seq
}

// TestAppendsReturnWhenServerStops stops the NATS server during a burst of
// appends and checks that every append returns within its deadline, that
// the committer ends up holding no request and that every acknowledged
// batch is stored once at its sequence.
func TestAppendsReturnWhenServerStops(t *testing.T) {
	t.Parallel()
	const writers, appendTimeout = 8, 1500 * time.Millisecond
	// slack covers scheduling delays on a loaded test machine.
	const slack = time.Second

	dir := t.TempDir()
	ns := startStoppableServer(t, dir)
	s, err := Open(t.Context(), Config{NatsURL: ns.ClientURL(), Logger: testLogger(t)})
	if err != nil {
		ns.Shutdown()
		t.Fatal(err)
	}

	result := &burstResult{stored: map[string]uint64{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("burst-%d-%d", w, i)
				ctx, cancel := context.WithTimeout(t.Context(), appendTimeout)
				start := time.Now()
				seq, err := s.AppendBatch(ctx, testBatch(id, w, 3))
				result.add(id, seq, err, time.Since(start))
				cancel()
			}
		})
	}

	time.Sleep(100 * time.Millisecond)
	ns.Shutdown()
	ns.WaitForShutdown()
	time.Sleep(2 * appendTimeout)
	close(stop)
	wg.Wait()

	t.Logf("%d appends stored and %d failed; slowest took %v", len(result.stored), result.failed, result.maxElapsed)
	if result.failed == 0 {
		t.Error("no append failed after the server stopped")
	}
	if result.maxElapsed > appendTimeout+slack {
		t.Errorf("slowest AppendBatch took %v, want at most its %v deadline plus %v", result.maxElapsed, appendTimeout, slack)
	}
	checkCommitterIdle(t, s, appendTimeout+slack)

	err = s.Close()
	if err != nil {
		t.Logf("Close after the server stopped: %v", err)
	}

	checkStoredOnce(t, dir, result.stored)
}

// checkCommitterIdle waits up to timeout until the committer of s holds no
// request and none waits in its queue.
func checkCommitterIdle(t *testing.T, s *Store, timeout time.Duration) {
	t.Helper()

	deadline := time.Now().Add(timeout)
	for len(s.commit.requests) > 0 || s.commit.held.Load() > 0 {
		if time.Now().After(deadline) {
			t.Errorf("committer still has %d queued and %d held requests %v after the appends returned",
				len(s.commit.requests), s.commit.held.Load(), timeout)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkStoredOnce restarts a server on dir and checks that each batch of
// stored is in the stream once, at the sequence its append returned.
func checkStoredOnce(t *testing.T, dir string, stored map[string]uint64) {
	t.Helper()

	ns := startStoppableServer(t, dir)
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	s := openTestStore(t, Config{NatsURL: ns.ClientURL()})

	found := map[string][]uint64{}
	_, _, err := s.ReplayAll(t.Context(), 0, func(seq uint64, b Batch) error {
		found[b.ID] = append(found[b.ID], seq)
		return nil
	})
	if err != nil {
		t.Fatalf("ReplayAll after restart: %v", err)
	}

	for id, seqs := range found {
		if len(seqs) > 1 {
			t.Errorf("batch %q is stored %d times, at sequences %v", id, len(seqs), seqs)
		}
	}
	for id, seq := range stored {
		if !slices.Equal(found[id], []uint64{seq}) {
			t.Errorf("batch %q was acknowledged at sequence %d but is stored at %v", id, seq, found[id])
		}
	}
}
