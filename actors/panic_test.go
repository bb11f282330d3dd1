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

// panicOnce makes the first message of type T that a shard receives panic, after
// the shard has accepted and persisted votes but before it has applied them.
func panicOnce[T any](fired *atomic.Bool) actor.ReceiverMiddleware {
	return func(next actor.ReceiverFunc) actor.ReceiverFunc {
		return func(c actor.ReceiverContext, env *actor.MessageEnvelope) {
			if _, ok := env.Message.(T); ok && fired.CompareAndSwap(false, true) {
				panic("injected fault")
			}
			next(c, env)
		}
	}
}

// TestShardPanicLosesNothing crashes a shard between the durable append of a batch
// and its acks. The supervisor restarts the shard, which rebuilds its state from the
// stream; no vote was acknowledged and lost, and client retries with the same vote
// ids count each vote exactly once.
func TestShardPanicLosesNothing(t *testing.T) {
	for _, tc := range []struct {
		name       string
		middleware func(*atomic.Bool) actor.ReceiverMiddleware
	}{
		{"after append, before apply", panicOnce[*appendResult]},
		{"while votes are queued", panicOnce[*voteRequest]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var fired atomic.Bool
			store := openStore(t, t.TempDir())
			s := startSystem(t, store, Config{Shards: 1, shardMiddleware: []actor.ReceiverMiddleware{tc.middleware(&fired)}})

			const voters = 40
			votes := make([]Vote, voters)
			for i := range votes {
				votes[i] = Vote{VoteID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), Poll: "p1", Voter: fmt.Sprintf("voter-%d", i), Options: []string{"o1"}}
			}

			// First round: every vote is accepted or overloaded, never anything else.
			firstAccepted := sendAll(t, s, votes, 3*time.Second)
			if !fired.Load() {
				t.Fatal("the injected panic never fired")
			}

			// Without any retry, the restarted shard's state equals the stream: every
			// vote that reached the stream before the panic is counted.
			waitReady(t, s)
			if live, stream := pollTotalsOf(t, s, "p1"), recount(t, store, "p1"); live.Voters != stream.Voters || live.Counts["o1"] != stream.Counts["o1"] {
				t.Fatalf("after the panic the shard counts %d voters, the stream holds %d", live.Voters, stream.Voters)
			}

			// Clients retry every vote that was not accepted with the same id.
			deadline := time.Now().Add(30 * time.Second)
			for {
				retried := sendAll(t, s, votes, 5*time.Second)
				if retried == voters || time.Now().After(deadline) {
					break
				}
			}

			totals := pollTotalsOf(t, s, "p1")
			if totals.Counts["o1"] != voters || totals.Voters != voters {
				t.Fatalf("after the panic: o1=%d voters=%d, want %d each (%d accepted before the retries)",
					totals.Counts["o1"], totals.Voters, voters, firstAccepted)
			}
		})
	}
}

// sendAll sends every vote at once and returns how many ended accepted or duplicate.
// Any other outcome than those and overloaded fails the test.
func sendAll(t *testing.T, s *System, votes []Vote, timeout time.Duration) int {
	t.Helper()

	var (
		wg      sync.WaitGroup
		settled atomic.Int32
	)
	for _, v := range votes {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			ack, err := s.Vote(ctx, 0, v)
			switch {
			case err != nil:
				t.Errorf("vote %s: %v", v.VoteID, err)
			case ack.Outcome == OutcomeAccepted || ack.Outcome == OutcomeDuplicate:
				settled.Add(1)
			case ack.Outcome != OutcomeOverloaded:
				t.Errorf("vote %s answered %s, want accepted, duplicate or overloaded", v.VoteID, ack.Outcome)
			}
		})
	}
	wg.Wait()

	return int(settled.Load())
}

func waitReady(t *testing.T, s *System) {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for !s.Ready() {
		if ctx.Err() != nil {
			t.Fatal("shard not ready again within 20s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// recount rebuilds the totals of poll from the whole vote stream.
func recount(t *testing.T, store *persistence.Store, poll string) pollTotals {
	t.Helper()

	st := newShardState()
	_, _, err := store.ReplayAll(t.Context(), 0, func(seq uint64, b persistence.Batch) error {
		st.applyBatch(seq, b)
		return nil
	})
	if err != nil {
		t.Fatalf("ReplayAll: %v", err)
	}

	return st.allTotals()[poll]
}
