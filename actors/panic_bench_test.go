package actors

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/livevote/livevote/persistence"
)

// panicEvery makes every k-th voteRequest or appendResult that any shard receives
// panic, and counts the panics in fired.
func panicEvery(k int64, seen, fired *atomic.Int64) actor.ReceiverMiddleware {
	return func(next actor.ReceiverFunc) actor.ReceiverFunc {
		return func(c actor.ReceiverContext, env *actor.MessageEnvelope) {
			switch env.Message.(type) {
			case *voteRequest, *appendResult:
				if seen.Add(1)%k == 0 {
					fired.Add(1)
					panic("injected fault")
				}
			}
			next(c, env)
		}
	}
}

// BenchmarkShardPanicsWithRetries sends 4,000 votes from 64 concurrent clients to 4
// shards while every 200th voteRequest or appendResult makes a shard panic. A client
// retries an overloaded vote with the same vote id until it is accepted or a
// duplicate, for at most 60 s. Each iteration fails unless every vote settled, the
// live totals count each voter once, and they equal a recount of the vote stream.
//
//	go test -run '^$' -bench BenchmarkShardPanicsWithRetries -benchtime 1x ./actors
func BenchmarkShardPanicsWithRetries(b *testing.B) {
	const voters, clients, shards, every = 4000, 64, 4, 200

	for range b.N {
		var seen, fired atomic.Int64
		store := openStore(b, b.TempDir())
		s := startSystem(b, store, Config{Shards: shards, shardMiddleware: []actor.ReceiverMiddleware{panicEvery(every, &seen, &fired)}})

		attempts, unsettled := voteWithRetries(s, voters, clients, shards, 60*time.Second)
		waitReadyTB(b, s)
		live, stream := pollTotalsOf(b, s, "p1"), recountTB(b, store, "p1")

		b.ReportMetric(float64(fired.Load()), "panics")
		b.ReportMetric(float64(voters), "votes")
		b.ReportMetric(float64(attempts-voters), "retries")
		b.Logf("votes %d, panics %d, attempts %d, unsettled %d, live voters %d (o1=%d), stream voters %d (o1=%d)",
			voters, fired.Load(), attempts, unsettled, live.Voters, live.Counts["o1"], stream.Voters, stream.Counts["o1"])
		switch {
		case fired.Load() == 0:
			b.Fatal("the injected panic never fired")
		case unsettled > 0:
			b.Fatalf("%d of %d votes were never accepted within 60 s", unsettled, voters)
		case live.Voters != voters || live.Counts["o1"] != voters:
			b.Fatalf("live totals: voters=%d o1=%d, want %d each", live.Voters, live.Counts["o1"], voters)
		case stream.Voters != live.Voters || stream.Counts["o1"] != live.Counts["o1"]:
			b.Fatalf("live totals voters=%d o1=%d differ from the stream's voters=%d o1=%d",
				live.Voters, live.Counts["o1"], stream.Voters, stream.Counts["o1"])
		}
	}
}

// voteWithRetries sends one vote per voter from clients goroutines, retrying each
// overloaded vote with the same id, and returns the attempts and the votes that never
// settled before limit.
func voteWithRetries(s *System, voters, clients, shards int, limit time.Duration) (attempts, unsettled int) {
	deadline := time.Now().Add(limit)
	var sent, open atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < voters; i = int(next.Add(1) - 1) {
				v := Vote{VoteID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), Poll: "p1", Voter: fmt.Sprintf("voter-%d", i), Options: []string{"o1"}}
				if !voteUntilSettled(s, i%shards, v, deadline, &sent) {
					open.Add(1)
				}
			}
		})
	}
	wg.Wait()

	return int(sent.Load()), int(open.Load())
}

// voteUntilSettled sends v until it is accepted or a duplicate, or deadline passes.
func voteUntilSettled(s *System, shard int, v Vote, deadline time.Time, sent *atomic.Int64) bool {
	for time.Now().Before(deadline) {
		sent.Add(1)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		ack, err := s.Vote(ctx, shard, v)
		cancel()
		if err == nil && (ack.Outcome == OutcomeAccepted || ack.Outcome == OutcomeDuplicate) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}

	return false
}

func waitReadyTB(tb testing.TB, s *System) {
	tb.Helper()

	deadline := time.Now().Add(20 * time.Second)
	for !s.Ready() {
		if time.Now().After(deadline) {
			tb.Fatal("shards not ready again within 20s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// recountTB rebuilds the totals of poll from the whole vote stream.
func recountTB(tb testing.TB, store *persistence.Store, poll string) pollTotals {
	tb.Helper()

	st := newShardState()
	_, _, err := store.ReplayAll(context.Background(), 0, func(seq uint64, b persistence.Batch) error {
		st.applyBatch(seq, b)
		return nil
	})
	if err != nil {
		tb.Fatalf("ReplayAll: %v", err)
	}

	return st.allTotals()[poll]
}
