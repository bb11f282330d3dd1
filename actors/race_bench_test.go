package actors

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/livevote/livevote/persistence"
)

// pollTally counts the outcomes of the votes sent to one poll.
type pollTally struct {
	accepted atomic.Int64 // accepted or duplicate
	closed   atomic.Int64 // poll_closed, never retried
	unknown  atomic.Int64 // overloaded until the poll closed: stored or not
}

// BenchmarkClosePollWhileVoting opens 100 polls, 10 at a time, on one System with 4
// shards. Each poll gets 40 voters that start at random moments within 100 ms and
// retry an overloaded vote with the same id, and the poll is closed 20 to 80 ms after
// it opened, while votes are in flight. Each iteration fails unless the final
// document of every poll counts at least the votes accepted for it and at most those
// plus the votes whose outcome stayed unknown.
//
//	go test -run '^$' -bench BenchmarkClosePollWhileVoting -benchtime 1x ./actors
func BenchmarkClosePollWhileVoting(b *testing.B) {
	const polls, parallel, voters = 100, 10, 40

	for range b.N {
		store := openStore(b, b.TempDir())
		s := startSystem(b, store, Config{Shards: 4, BroadcastInterval: 50 * time.Millisecond})
		var accepted, closed, unknown, mismatched int64
		for group := range polls / parallel {
			var wg sync.WaitGroup
			for p := range parallel {
				id := fmt.Sprintf("close-%03d", group*parallel+p)
				wg.Go(func() {
					tally, final, err := voteAndClose(s, id, voters, uint64(group*parallel+p))
					if err != nil {
						b.Error(err)
						return
					}
					got, acked, open := final.Counts["a"], tally.accepted.Load(), tally.unknown.Load()
					if got < acked || got > acked+open || final.Voters != got || !final.Final {
						b.Errorf("poll %s: final document counts a=%d voters=%d final=%t; accepted %d, unknown %d",
							id, got, final.Voters, final.Final, acked, open)
						atomic.AddInt64(&mismatched, 1)
					}
					atomic.AddInt64(&accepted, acked)
					atomic.AddInt64(&closed, tally.closed.Load())
					atomic.AddInt64(&unknown, open)
				})
			}
			wg.Wait()
		}

		b.ReportMetric(polls, "polls")
		b.ReportMetric(float64(accepted), "accepted")
		b.ReportMetric(float64(closed), "poll-closed")
		b.ReportMetric(float64(unknown), "unknown")
		b.Logf("polls %d, votes %d, accepted %d, poll_closed %d, unknown %d, mismatched polls %d",
			polls, polls*voters, accepted, closed, unknown, mismatched)
		if b.Failed() {
			b.FailNow()
		}
	}
}

// voteAndClose registers poll, starts voters and closes the poll while they vote. It
// returns the outcomes and the final document.
func voteAndClose(s *System, poll string, voters int, seed uint64) (*pollTally, Results, error) {
	s.RegisterPoll(PollInfo{ID: poll, Event: "e1", Options: []string{"a", "b"}})
	rng := rand.New(rand.NewPCG(seed, 7))
	tally := &pollTally{}

	var wg sync.WaitGroup
	for i := range voters {
		delay := time.Duration(rng.Int64N(int64(100 * time.Millisecond)))
		v := Vote{VoteID: fmt.Sprintf("%s-vote-%d", poll, i), Poll: poll, Voter: fmt.Sprintf("voter-%d", i), Options: []string{"a"}}
		wg.Go(func() {
			time.Sleep(delay)
			tally.record(voteUntilFinal(s, i%4, v))
		})
	}

	time.Sleep(20*time.Millisecond + time.Duration(rng.Int64N(int64(60*time.Millisecond))))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	final, err := s.ClosePoll(ctx, poll)
	wg.Wait()
	if err != nil {
		return tally, Results{}, fmt.Errorf("ClosePoll(%s): %w", poll, err)
	}

	return tally, final, nil
}

// voteUntilFinal sends v until it gets another outcome than overloaded, at most 50
// times, and returns the last outcome.
func voteUntilFinal(s *System, shard int, v Vote) Outcome {
	outcome := OutcomeOverloaded
	for range 50 {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		ack, err := s.Vote(ctx, shard, v)
		cancel()
		if err == nil && ack.Outcome != OutcomeOverloaded {
			return ack.Outcome
		}
		time.Sleep(10 * time.Millisecond)
	}

	return outcome
}

func (t *pollTally) record(o Outcome) {
	switch o {
	case OutcomeAccepted, OutcomeDuplicate:
		t.accepted.Add(1)
	case OutcomePollClosed:
		t.closed.Add(1)
	default:
		t.unknown.Add(1)
	}
}

// BenchmarkTwoAggregatorsRace runs two Systems on one store, as two processes would,
// for 50 rounds. Each round registers a new poll on both, sends 20 votes split between
// them, closes the poll on one and lets the other run 5 more aggregator rounds. Each
// iteration fails unless the stored versions of every poll only grow and the final
// document counts the 10 votes that the closing System accepted.
//
// NOTE: each System counts only the votes that its own shards applied; a shard reads
// the other System's batches from the stream only after a failed append. So the final
// document holds 10 of the 20 votes, and this benchmark checks that figure.
//
//	go test -run '^$' -bench BenchmarkTwoAggregatorsRace -benchtime 1x ./actors
func BenchmarkTwoAggregatorsRace(b *testing.B) {
	const rounds, votes = 50, 20

	for range b.N {
		store := openStore(b, b.TempDir())
		kv, err := store.JetStream().KeyValue(context.Background(), persistence.ResultsBucket)
		if err != nil {
			b.Fatal(err)
		}
		var systems [2]*System
		for i := range systems {
			systems[i] = startSystem(b, store, Config{Shards: 4, BroadcastInterval: 10 * time.Millisecond})
		}

		var stored, backwards int
		for r := range rounds {
			versions := raceOneRound(b, kv, systems, fmt.Sprintf("race-%03d", r), votes, r%2)
			stored += len(versions)
			for i := 1; i < len(versions); i++ {
				if versions[i] <= versions[i-1] {
					backwards++
					b.Errorf("round %d: stored version went from %d to %d", r, versions[i-1], versions[i])
				}
			}
		}

		b.ReportMetric(rounds, "rounds")
		b.ReportMetric(float64(stored), "stored-docs")
		b.ReportMetric(float64(backwards), "backwards")
		b.Logf("rounds %d, stored documents %d, versions that did not grow %d", rounds, stored, backwards)
		if b.Failed() {
			b.FailNow()
		}
	}
}

// raceOneRound votes on poll through both systems, closes it on systems[closer] and
// returns the versions stored for it in the order the bucket stored them.
func raceOneRound(b *testing.B, kv jetstream.KeyValue, systems [2]*System, poll string, votes, closer int) []uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	watcher, err := kv.Watch(ctx, poll, jetstream.UpdatesOnly())
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = watcher.Stop() }()

	for _, s := range systems {
		s.RegisterPoll(PollInfo{ID: poll, Event: "e1", Options: []string{"a", "b"}})
	}
	for i := range votes {
		vote(b, systems[i%2], i%4, Vote{VoteID: fmt.Sprintf("%s-v-%d", poll, i), Poll: poll, Voter: fmt.Sprintf("voter-%d", i), Options: []string{"a"}})
		time.Sleep(2 * time.Millisecond)
	}
	final, err := systems[closer].ClosePoll(ctx, poll)
	if err != nil {
		b.Fatalf("ClosePoll(%s): %v", poll, err)
	}
	if !final.Final || final.Counts["a"] != int64(votes/2) {
		b.Errorf("%s: final document (final=%t) counts a=%d, want the %d votes sent through the closing System",
			poll, final.Final, final.Counts["a"], votes/2)
	}
	other := systems[1-closer]
	start := other.Stats().Rounds
	waitFor(b, "aggregator rounds", func() bool { return other.Stats().Rounds >= start+5 })

	return watchedVersions(b, watcher, final.Version)
}

// watchedVersions reads the updates of watcher until the document of version last
// and returns their versions.
func watchedVersions(b *testing.B, watcher jetstream.KeyWatcher, last uint64) []uint64 {
	var versions []uint64
	timeout := time.After(10 * time.Second)
	for len(versions) == 0 || versions[len(versions)-1] < last {
		select {
		case entry := <-watcher.Updates():
			var doc Results
			if err := json.Unmarshal(entry.Value(), &doc); err != nil {
				b.Fatalf("update at revision %d: %v", entry.Revision(), err)
			}
			versions = append(versions, doc.Version)
		case <-timeout:
			b.Fatalf("watcher did not deliver version %d within 10s; saw %v", last, versions)
		}
	}

	return versions
}
