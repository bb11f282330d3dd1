package persistence

import (
	"fmt"
	"sync/atomic"
	"testing"
)

// BenchmarkAppendBatch measures durable appends with fsync before each
// acknowledgement. The sequential cases wait for each acknowledgement before
// the next append, as one shard actor does. The parallel case runs
// GOMAXPROCS*4 appenders on separate shards, as concurrent shard actors do.
func BenchmarkAppendBatch(b *testing.B) {
	for _, votes := range []int{1, 256} {
		b.Run(fmt.Sprintf("votes=%d", votes), func(b *testing.B) {
			s := openTestStore(b, Config{Sync: SyncAlways})
			batch := testBatch("bench", 0, votes)
			n := 0

			for b.Loop() {
				n++
				batch.ID = fmt.Sprintf("bench-%d", n)
				_, err := s.AppendBatch(b.Context(), batch)
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*votes)/b.Elapsed().Seconds(), "votes/s")
		})
	}

	b.Run("votes=256/parallel", func(b *testing.B) {
		const votes = 256
		s := openTestStore(b, Config{Sync: SyncAlways})
		var next atomic.Int64
		b.SetParallelism(4)
		b.ResetTimer()

		b.RunParallel(func(pb *testing.PB) {
			shard := int(next.Add(1))
			batch := testBatch("parallel", shard, votes)
			for pb.Next() {
				batch.ID = fmt.Sprintf("parallel-%d", next.Add(1))
				_, err := s.AppendBatch(b.Context(), batch)
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N*votes)/b.Elapsed().Seconds(), "votes/s")
	})
}

// BenchmarkReplay measures Replay of one shard that holds 1,000,000 votes in
// 10,000 batches of 100 votes.
func BenchmarkReplay(b *testing.B) {
	const batches, votesPerBatch = 10_000, 100
	s := openTestStore(b, Config{Sync: SyncInterval})

	for i := range batches {
		_, err := s.AppendBatch(b.Context(), testBatch(fmt.Sprintf("replay-%d", i), 0, votesPerBatch))
		if err != nil {
			b.Fatal(err)
		}
	}

	for b.Loop() {
		votes := 0
		n, _, err := s.Replay(b.Context(), 0, 0, func(_ uint64, batch Batch) error {
			votes += len(batch.Votes)
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		if n != batches || votes != batches*votesPerBatch {
			b.Fatalf("replayed %d batches with %d votes, want %d with %d", n, votes, batches, batches*votesPerBatch)
		}
	}
	b.ReportMetric(float64(b.N*batches*votesPerBatch)/b.Elapsed().Seconds(), "votes/s")
}
