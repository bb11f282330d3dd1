package actors

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkShardApply measures the in-memory apply path without I/O: a new
// voter per vote, and the same votes applied again as on a replay.
func BenchmarkShardApply(b *testing.B) {
	options := [][]string{{"a"}, {"b"}, {"c"}, {"d", "a"}}

	b.Run("new voter", func(b *testing.B) {
		voters, voteIDs := benchIDs(b.N)
		st := newShardState()
		b.ReportAllocs()
		b.ResetTimer()

		for i := range b.N {
			st.apply("poll-1", voters[i], voteIDs[i], options[i%len(options)], uint64(i+1))
		}
	})

	b.Run("duplicate", func(b *testing.B) {
		const n = 1 << 16
		voters, voteIDs := benchIDs(n)
		st := newShardState()
		for i := range n {
			st.apply("poll-1", voters[i], voteIDs[i], options[i%len(options)], uint64(i+1))
		}
		b.ReportAllocs()
		b.ResetTimer()

		for i := range b.N {
			st.apply("poll-1", voters[i%n], voteIDs[i%n], options[i%len(options)], uint64(i+1))
		}
	})
}

func benchIDs(n int) (voters, voteIDs []string) {
	voters = make([]string, n)
	voteIDs = make([]string, n)
	for i := range n {
		voters[i] = "session-" + strconv.Itoa(i)
		voteIDs[i] = "3f2c7a9e-0000-4000-8000-" + strconv.Itoa(100000000000+i)
	}

	return voters, voteIDs
}

// BenchmarkShardVote sends votes through real shards that append to an
// embedded JetStream store with fsync before each acknowledgement, from
// 64 goroutines per CPU, and reports votes per second and votes per append.
func BenchmarkShardVote(b *testing.B) {
	for _, shards := range []int{1, 8, 64} {
		b.Run("shards="+strconv.Itoa(shards), func(b *testing.B) {
			s := startSystem(b, openStore(b, b.TempDir()), Config{Shards: shards})
			var next atomic.Int64
			var failed atomic.Int64
			b.SetParallelism(64)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()

			b.RunParallel(func(pb *testing.PB) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()

				for pb.Next() {
					i := int(next.Add(1))
					id := strconv.Itoa(i)
					ack, err := s.Vote(ctx, i%shards, Vote{VoteID: "vote-" + id, Poll: "poll-1", Voter: "voter-" + id, Options: []string{"a"}})
					if err != nil || ack.Outcome != OutcomeAccepted {
						failed.Add(1)
					}
				}
			})

			elapsed := time.Since(start)
			b.StopTimer()
			if n := failed.Load(); n > 0 {
				b.Fatalf("%d of %d votes not accepted", n, b.N)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "votes/s")
			b.ReportMetric(s.Stats().AvgBatch, "votes/append")
		})
	}
}
