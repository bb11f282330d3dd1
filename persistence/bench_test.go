package persistence

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
)

// BenchmarkAppendBatch measures durable appends with fsync before each
// acknowledgement. The sequential cases wait for each acknowledgement before
// the next append, as one shard actor does, so each message holds one batch.
// The parallel cases run 64 appenders on separate shards, as concurrent
// shard actors do, so the group commit puts their batches in shared
// messages. The batches/msg metric is the mean number of batches per stream
// message.
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

	for _, votes := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("votes=%d/parallel=64", votes), func(b *testing.B) {
			benchmarkParallelAppends(b, votes)
		})
	}
}

func benchmarkParallelAppends(b *testing.B, votes int) {
	s := openTestStore(b, Config{Sync: SyncAlways})
	var next atomic.Int64
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	b.ResetTimer()

	b.RunParallel(func(pb *testing.PB) {
		shard := int(next.Add(1)) % MaxShards
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
	b.StopTimer()

	info, err := s.votes.Info(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N*votes)/b.Elapsed().Seconds(), "votes/s")
	b.ReportMetric(float64(info.State.Msgs)/b.Elapsed().Seconds(), "msgs/s")
	if info.State.Msgs > 0 {
		b.ReportMetric(float64(b.N)/float64(info.State.Msgs), "batches/msg")
	}
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

// BenchmarkReplayAll measures ReplayAll of a stream that holds 1,000,000
// votes of 64 shards in 1,000 messages of 64 batches of about 16 votes.
func BenchmarkReplayAll(b *testing.B) {
	const messages, shards, votesPerBatch = 1_000, 64, 16
	s := openTestStore(b, Config{Sync: SyncInterval})

	for i := range messages {
		batches := make([]Batch, shards)
		for shard := range batches {
			batches[shard] = testBatch(fmt.Sprintf("all-%d-%d", i, shard), shard, votesPerBatch)
		}
		data, err := EncodeMessage(batches)
		if err != nil {
			b.Fatal(err)
		}
		_, err = s.js.Publish(b.Context(), VoteSubject, data)
		if err != nil {
			b.Fatal(err)
		}
	}

	for b.Loop() {
		votes := 0
		n, _, err := s.ReplayAll(b.Context(), 0, func(_ uint64, batch Batch) error {
			votes += len(batch.Votes)
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		if n != messages || votes != messages*shards*votesPerBatch {
			b.Fatalf("replayed %d messages with %d votes, want %d with %d", n, votes, messages, messages*shards*votesPerBatch)
		}
	}
	b.ReportMetric(float64(b.N*messages*shards*votesPerBatch)/b.Elapsed().Seconds(), "votes/s")
}
