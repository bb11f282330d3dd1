package persistence

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkAppendWithLostAcks appends b.N batches from 16 goroutines while the
// publish hook turns 10% of the server's acks into a timeout and holds another
// 5% back for 2 to 20 ms. The server stores every publish it receives, so each
// dropped ack makes the committer republish the same bytes and Msg-Id. At the
// end ReplayAll must find every acknowledged batch exactly once, at the
// sequence its AppendBatch returned, and every failed batch at most once.
//
//	go test -run '^$' -bench BenchmarkAppendWithLostAcks -benchtime 10000x ./persistence
func BenchmarkAppendWithLostAcks(b *testing.B) {
	s := openTestStore(b, Config{Logger: slog.New(slog.DiscardHandler)})
	var publishes, dropped, delayed atomic.Int64
	s.stopCommitter()
	s.commit = newCommitter(lossyPublish(s, &publishes, &dropped, &delayed))
	go s.runCommitter()

	const writers = 16
	acked := make([]map[string]uint64, writers)
	failed := make([]map[string]bool, writers)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for w := range writers {
		acked[w], failed[w] = map[string]uint64{}, map[string]bool{}
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(b.N); i = next.Add(1) - 1 {
				batch := testBatch(fmt.Sprintf("lossy-%d", i), w, 2)
				seq, err := s.AppendBatch(context.Background(), batch)
				if err != nil {
					failed[w][batch.ID] = true
					continue
				}
				acked[w][batch.ID] = seq
			}
		})
	}
	wg.Wait()
	b.StopTimer()

	checkLossyAppends(b, s, acked, failed, publishes.Load(), dropped.Load(), delayed.Load())
}

// lossyPublish returns a publish function that calls the real PublishMsg of s and
// then drops 10% of the acks (the caller sees nats.ErrTimeout) and delays 5%.
func lossyPublish(s *Store, publishes, dropped, delayed *atomic.Int64) publishFunc {
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(1, 2))

	return func(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
		ack, err := s.js.PublishMsg(ctx, msg, opts...)
		publishes.Add(1)
		if err != nil {
			return ack, err
		}

		mu.Lock()
		roll := rng.IntN(100)
		wait := time.Duration(2+rng.IntN(19)) * time.Millisecond
		mu.Unlock()
		switch {
		case roll < 10:
			dropped.Add(1)
			return nil, nats.ErrTimeout
		case roll < 15:
			delayed.Add(1)
			time.Sleep(wait)
		}
		return ack, nil
	}
}

// checkLossyAppends replays the stream and fails b unless every acknowledged batch
// is stored exactly once at its returned sequence and no failed batch is stored twice.
func checkLossyAppends(b *testing.B, s *Store, acked []map[string]uint64, failed []map[string]bool, publishes, dropped, delayed int64) {
	found := map[string][]uint64{}
	messages, _, err := s.ReplayAll(context.Background(), 0, func(seq uint64, batch Batch) error {
		found[batch.ID] = append(found[batch.ID], seq)
		return nil
	})
	if err != nil {
		b.Fatalf("ReplayAll: %v", err)
	}

	var ackedCount, failedCount, storedOnce, lost, doubled, wrongSeq, failedStored int
	for w := range acked {
		for id, seq := range acked[w] {
			ackedCount++
			switch seqs := found[id]; {
			case len(seqs) == 0:
				lost++
			case len(seqs) > 1:
				doubled++
			case seqs[0] != seq:
				wrongSeq++
			default:
				storedOnce++
			}
		}
		for id := range failed[w] {
			failedCount++
			if n := len(found[id]); n > 1 {
				doubled++
			} else if n == 1 {
				failedStored++
			}
		}
	}

	b.ReportMetric(float64(publishes-int64(messages))/float64(b.N), "retries/op")
	b.ReportMetric(float64(storedOnce)/float64(max(ackedCount, 1)), "stored-once")
	b.ReportMetric(float64(dropped), "dropped-acks")
	b.ReportMetric(float64(delayed), "delayed-acks")
	b.ReportMetric(float64(messages), "messages")
	b.ReportMetric(float64(failedCount), "failed")
	b.Logf("batches %d, acked %d, failed %d (%d of them stored), stream messages %d, publishes %d, dropped acks %d, delayed acks %d",
		b.N, ackedCount, failedCount, failedStored, messages, publishes, dropped, delayed)
	if lost > 0 || doubled > 0 || wrongSeq > 0 || ackedCount+failedCount != b.N {
		b.Fatalf("of %d batches: %d acked, %d failed; %d acked batches lost, %d batches stored twice, %d at another sequence than acked",
			b.N, ackedCount, failedCount, lost, doubled, wrongSeq)
	}
}
