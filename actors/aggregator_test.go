package actors

import (
	"maps"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// lastDoc returns the latest published document of poll.
func (l *publishLog) lastDoc(poll string) (Results, bool) {
	docs := l.forPoll(poll)
	if len(docs) == 0 {
		return Results{}, false
	}

	return docs[len(docs)-1], true
}

// waitRounds waits until the aggregator has completed n more rounds.
func waitRounds(t *testing.T, s *System, n uint64) {
	t.Helper()

	start := s.Stats().Rounds
	waitFor(t, "aggregator rounds", func() bool { return s.Stats().Rounds >= start+n })
}

func TestAggregatorPublishesVersionedDocuments(t *testing.T) {
	t.Parallel()
	published := &publishLog{}
	s := startSystem(t, openStore(t, t.TempDir()), Config{BroadcastInterval: 20 * time.Millisecond, Publish: published.publish})
	s.RegisterPoll(PollInfo{ID: "p1", Event: "e1", Options: []string{"a", "b", "c"}})

	waitFor(t, "the first document", func() bool { _, ok := published.lastDoc("p1"); return ok })
	first, _ := published.lastDoc("p1")
	if first.Version != 1 || first.Event != "e1" || first.Final || first.UpdatedAt.IsZero() {
		t.Errorf("first document = %+v, want version 1 of event e1, not final, with a time", first)
	}
	if want := map[string]int64{"a": 0, "b": 0, "c": 0}; !maps.Equal(first.Counts, want) {
		t.Errorf("first counts = %v, want %v", first.Counts, want)
	}

	vote(t, s, 0, Vote{VoteID: "v-1", Poll: "p1", Voter: "alice", Options: []string{"a"}})
	vote(t, s, 3, Vote{VoteID: "v-2", Poll: "p1", Voter: "bob", Options: []string{"a", "c"}})
	want := map[string]int64{"a": 2, "b": 0, "c": 1}
	waitFor(t, "a document with both votes", func() bool {
		doc, _ := published.lastDoc("p1")
		return maps.Equal(doc.Counts, want)
	})

	docs := published.forPoll("p1")
	for i := 1; i < len(docs); i++ {
		if docs[i].Version != docs[i-1].Version+1 {
			t.Errorf("document %d version = %d after %d, want consecutive versions", i, docs[i].Version, docs[i-1].Version)
		}
	}
	last := docs[len(docs)-1]
	if last.Voters != 2 || last.TotalVotes != 3 {
		t.Errorf("latest document = %+v, want 2 voters and 3 votes", last)
	}

	waitRounds(t, s, 5)
	if n := len(published.forPoll("p1")); n != len(docs) {
		t.Errorf("documents after 5 unchanged rounds = %d, want still %d", n, len(docs))
	}
	if cached, ok := s.Results("p1"); !ok || cached.Version != last.Version {
		t.Errorf("Results(p1) = %+v, %v, want version %d", cached, ok, last.Version)
	}
}

func TestAggregatorSkipsUnregisteredPolls(t *testing.T) {
	t.Parallel()
	published := &publishLog{}
	s := startSystem(t, openStore(t, t.TempDir()), Config{BroadcastInterval: 20 * time.Millisecond, Publish: published.publish})

	vote(t, s, 0, Vote{VoteID: "v-1", Poll: "unregistered", Voter: "alice", Options: []string{"a"}})
	waitRounds(t, s, 3)

	if docs := published.forPoll("unregistered"); len(docs) != 0 {
		t.Errorf("documents of an unregistered poll = %+v, want none", docs)
	}

	s.RegisterPoll(PollInfo{ID: "unregistered", Event: "e1", Options: []string{"a"}})
	waitFor(t, "a document once registered", func() bool {
		doc, ok := published.lastDoc("unregistered")
		return ok && doc.Counts["a"] == 1
	})
}

func TestAggregatorVersionContinuesAfterRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	store := openStore(t, dir)
	published := &publishLog{}
	cfg := Config{BroadcastInterval: 20 * time.Millisecond, Publish: published.publish}
	s := startSystem(t, store, cfg)
	info := PollInfo{ID: "p1", Event: "e1", Options: []string{"a", "b"}}
	s.RegisterPoll(info)

	vote(t, s, 1, Vote{VoteID: "v-1", Poll: "p1", Voter: "alice", Options: []string{"a"}})
	waitFor(t, "a document with the vote", func() bool {
		doc, _ := published.lastDoc("p1")
		return doc.Counts["a"] == 1
	})
	before, _ := published.lastDoc("p1")

	stopSystem(t, s)
	if err := store.Close(); err != nil {
		t.Fatalf("close store: %v", err)
	}

	store = openStore(t, dir)
	published = &publishLog{}
	cfg.Publish = published.publish
	s = startSystem(t, store, cfg)
	s.RegisterPoll(info)

	waitFor(t, "the stored document in memory", func() bool { _, ok := s.Results("p1"); return ok })
	loaded, _ := s.Results("p1")
	if loaded.Version != before.Version || loaded.Event != "e1" || !maps.Equal(loaded.Counts, before.Counts) {
		t.Errorf("document after restart = %+v, want version %d with counts %v", loaded, before.Version, before.Counts)
	}

	waitRounds(t, s, 3)
	if docs := published.forPoll("p1"); len(docs) != 0 {
		t.Errorf("documents published after restart without a change = %+v, want none", docs)
	}

	vote(t, s, 2, Vote{VoteID: "v-2", Poll: "p1", Voter: "bob", Options: []string{"b"}})
	waitFor(t, "a document with the new vote", func() bool { _, ok := published.lastDoc("p1"); return ok })
	after, _ := published.lastDoc("p1")
	if after.Version != before.Version+1 || after.Counts["a"] != 1 || after.Counts["b"] != 1 {
		t.Errorf("document after restart and a vote = %+v, want version %d with a=1 b=1", after, before.Version+1)
	}
}

func TestAggregatorKeepsFinalDocument(t *testing.T) {
	t.Parallel()
	published := &publishLog{}
	s := startSystem(t, openStore(t, t.TempDir()), Config{BroadcastInterval: 20 * time.Millisecond, Publish: published.publish})
	s.RegisterPoll(PollInfo{ID: "p1", Event: "e1", Options: []string{"a"}})

	vote(t, s, 0, Vote{VoteID: "v-1", Poll: "p1", Voter: "alice", Options: []string{"a"}})
	final, err := s.ClosePoll(t.Context(), "p1")
	if err != nil {
		t.Fatalf("ClosePoll: %v", err)
	}
	count := len(published.forPoll("p1"))

	s.RegisterPoll(PollInfo{ID: "p1", Event: "e1", Options: []string{"a", "b"}})
	waitRounds(t, s, 5)

	docs := published.forPoll("p1")
	if len(docs) != count {
		t.Errorf("documents after the final one = %+v, want none", docs[count:])
	}
	if cached, _ := s.Results("p1"); !cached.Final || cached.Version != final.Version {
		t.Errorf("Results(p1) = %+v, want the final version %d", cached, final.Version)
	}
}

// TestAggregatorDropsSupersededActivation feeds the aggregator totals of
// one shard from a newer activation and then from an older one, as when a
// cached lookup still points at an activation that another member
// replaced. The older totals are ignored, and the aggregator requests that
// the older activation be looked up again, so that later rounds reach the
// newer one.
func TestAggregatorDropsSupersededActivation(t *testing.T) {
	var dropped []*actor.PID
	a := newAggregator(&aggregatorConfig{
		logger:     testLogger(),
		shardCount: 1,
		rounds:     &atomic.Uint64{},
		slowSkips:  &atomic.Uint64{},
		superseded: func(shard int, from *actor.PID) {
			if shard != 0 {
				t.Errorf("superseded shard %d, want 0", shard)
			}
			dropped = append(dropped, from)
		},
	})
	newer := actor.NewPID("hub-b", "shard-000$2")
	older := actor.NewPID("hub-a", "shard-000$1")
	totals := func(voters int64) map[string]pollTotals {
		return map[string]pollTotals{"p": {Voters: voters, TotalVotes: voters, Counts: map[string]int64{"x": voters}}}
	}

	a.onRound(&roundResult{replies: []totalsReply{{shard: 0, ready: true, fence: 20, polls: totals(7), from: newer}}})
	a.onRound(&roundResult{replies: []totalsReply{{shard: 0, ready: true, fence: 12, polls: totals(5), from: older}}})

	if got := a.latest[0]["p"].Voters; got != 7 {
		t.Errorf("latest voters %d, want 7 from the newer activation", got)
	}
	if len(dropped) != 1 || !dropped[0].Equal(older) {
		t.Errorf("superseded calls %v, want one for %v", dropped, older)
	}
}
