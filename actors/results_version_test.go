package actors

import (
	"encoding/json"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/livevote/livevote/persistence"
)

func TestResultsCacheNeverGoesBack(t *testing.T) {
	t.Parallel()
	c := newResultsCache()

	steps := []struct {
		doc  Results
		want bool
	}{
		{Results{Poll: "p1", Version: 3}, true},
		{Results{Poll: "p1", Version: 2}, false},
		{Results{Poll: "p1", Version: 3}, false},
		{Results{Poll: "p1", Version: 4, Final: true}, true},
		{Results{Poll: "p1", Version: 5}, false},
		{Results{Poll: "p1", Version: 6, Final: true}, true},
	}
	for _, step := range steps {
		if got := c.put(step.doc); got != step.want {
			t.Errorf("put version %d final %t = %v, want %v", step.doc.Version, step.doc.Final, got, step.want)
		}
	}

	c.setEvent("p1", "e2")
	doc, ok := c.get("p1")
	if !ok || doc.Version != 6 || !doc.Final || doc.Event != "e2" {
		t.Errorf("cached = %+v, %v; want final version 6 of event e2", doc, ok)
	}
}

// putStored writes doc to the results bucket as another aggregator would.
func putStored(t *testing.T, store *persistence.Store, doc Results) {
	t.Helper()

	data, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	err = store.PutResults(t.Context(), doc.Poll, data)
	if err != nil {
		t.Fatalf("PutResults version %d: %v", doc.Version, err)
	}
}

func storedResults(t *testing.T, store *persistence.Store, poll string) Results {
	t.Helper()

	data, err := store.GetResults(t.Context(), poll)
	if err != nil {
		t.Fatalf("GetResults(%q): %v", poll, err)
	}
	var doc Results
	err = json.Unmarshal(data, &doc)
	if err != nil {
		t.Fatalf("stored results of %q: %v", poll, err)
	}

	return doc
}

// checkIncreasing fails the test when the versions of docs do not grow.
func checkIncreasing(t *testing.T, docs []Results) {
	t.Helper()

	for i := 1; i < len(docs); i++ {
		if docs[i].Version <= docs[i-1].Version {
			t.Errorf("published version %d after %d", docs[i].Version, docs[i-1].Version)
		}
	}
}

// TestAggregatorContinuesFromNewerStored stores a newer document of a poll
// behind the aggregator's back and checks that the aggregator adopts it and
// continues from its version instead of storing an older one.
func TestAggregatorContinuesFromNewerStored(t *testing.T) {
	t.Parallel()
	store := openStore(t, t.TempDir())
	published := &publishLog{}
	s := startSystem(t, store, Config{BroadcastInterval: 20 * time.Millisecond, Publish: published.publish})
	s.RegisterPoll(PollInfo{ID: "p1", Event: "e1", Options: []string{"a", "b"}})
	waitFor(t, "the first document", func() bool { _, ok := published.lastDoc("p1"); return ok })

	other := Results{Poll: "p1", Counts: map[string]int64{"a": 0, "b": 7}, TotalVotes: 7, Voters: 7, Version: 10}
	putStored(t, store, other)
	vote(t, s, 0, Vote{VoteID: "v-1", Poll: "p1", Voter: "alice", Options: []string{"a"}})

	want := map[string]int64{"a": 1, "b": 0}
	waitFor(t, "a document with the vote", func() bool {
		doc, _ := published.lastDoc("p1")
		return maps.Equal(doc.Counts, want)
	})

	docs := published.forPoll("p1")
	checkIncreasing(t, docs)
	last := docs[len(docs)-1]
	if last.Version != other.Version+1 {
		t.Errorf("document with the vote has version %d, want %d after the stored %d", last.Version, other.Version+1, other.Version)
	}
	if stored := storedResults(t, store, "p1"); stored.Version != last.Version || !maps.Equal(stored.Counts, want) {
		t.Errorf("stored = %+v, want version %d with counts %v", stored, last.Version, want)
	}
	if cached, _ := s.Results("p1"); cached.Version != last.Version {
		t.Errorf("Results(p1) version = %d, want %d", cached.Version, last.Version)
	}
}

// TestAggregatorKeepsFinalStoredElsewhere stores a final document of an open
// poll as another aggregator that closed it would, and checks that the
// aggregator neither replaces it nor serves an older one.
func TestAggregatorKeepsFinalStoredElsewhere(t *testing.T) {
	t.Parallel()
	store := openStore(t, t.TempDir())
	published := &publishLog{}
	s := startSystem(t, store, Config{BroadcastInterval: 20 * time.Millisecond, Publish: published.publish})
	s.RegisterPoll(PollInfo{ID: "p1", Event: "e1", Options: []string{"a"}})
	waitFor(t, "the first document", func() bool { _, ok := published.lastDoc("p1"); return ok })

	final := Results{Poll: "p1", Counts: map[string]int64{"a": 3}, TotalVotes: 3, Voters: 3, Version: 5, Final: true}
	putStored(t, store, final)
	vote(t, s, 0, Vote{VoteID: "v-1", Poll: "p1", Voter: "alice", Options: []string{"a"}})
	waitFor(t, "the final document in memory", func() bool { doc, _ := s.Results("p1"); return doc.Final })

	vote(t, s, 1, Vote{VoteID: "v-2", Poll: "p1", Voter: "bob", Options: []string{"a"}})
	waitRounds(t, s, 5)

	checkIncreasing(t, published.forPoll("p1"))
	if stored := storedResults(t, store, "p1"); !stored.Final || stored.Version != final.Version {
		t.Errorf("stored = %+v, want the final version %d", stored, final.Version)
	}
	if cached, _ := s.Results("p1"); !cached.Final || cached.Version != final.Version || cached.Counts["a"] != 3 {
		t.Errorf("Results(p1) = %+v, want the final version %d with a=3", cached, final.Version)
	}
}

// TestTwoAggregatorsRaceOnOnePoll runs two Systems on one store, as two
// processes would, lets both count votes of one poll and close it on one,
// and checks that the stored versions only grow and the final document
// stays.
func TestTwoAggregatorsRaceOnOnePoll(t *testing.T) {
	t.Parallel()
	store := openStore(t, t.TempDir())
	kv, err := store.JetStream().KeyValue(t.Context(), persistence.ResultsBucket)
	if err != nil {
		t.Fatal(err)
	}
	watcher, err := kv.Watch(t.Context(), "p1", jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = watcher.Stop() }()

	info := PollInfo{ID: "p1", Event: "e1", Options: []string{"a", "b"}}
	var systems []*System
	for range 2 {
		s := startSystem(t, store, Config{BroadcastInterval: 10 * time.Millisecond})
		s.RegisterPoll(info)
		systems = append(systems, s)
	}

	for i := range 40 {
		s := systems[i%2]
		vote(t, s, i%4, Vote{VoteID: fmt.Sprintf("v-%d", i), Poll: "p1", Voter: fmt.Sprintf("voter-%d", i), Options: []string{"a"}})
		time.Sleep(5 * time.Millisecond)
	}
	final, err := systems[0].ClosePoll(t.Context(), "p1")
	if err != nil {
		t.Fatalf("ClosePoll: %v", err)
	}
	waitRounds(t, systems[1], 5)

	stored := storedResults(t, store, "p1")
	if !stored.Final || stored.Version < final.Version {
		t.Errorf("stored = %+v, want final with version at least %d", stored, final.Version)
	}
	checkWatchedIncreasing(t, watcher, stored.Version)
}

// checkWatchedIncreasing reads the updates that watcher delivered up to the
// document of version last and fails the test when a version does not grow.
func checkWatchedIncreasing(t *testing.T, watcher jetstream.KeyWatcher, last uint64) {
	t.Helper()

	var versions []uint64
	timeout := time.After(10 * time.Second)
	for len(versions) == 0 || versions[len(versions)-1] != last {
		select {
		case entry := <-watcher.Updates():
			var doc Results
			err := json.Unmarshal(entry.Value(), &doc)
			if err != nil {
				t.Fatalf("update at revision %d: %v", entry.Revision(), err)
			}
			versions = append(versions, doc.Version)
		case <-timeout:
			t.Fatalf("watcher did not deliver version %d within 10s; saw %v", last, versions)
		}
	}

	t.Logf("stored versions: %v", versions)
	for i := 1; i < len(versions); i++ {
		if versions[i] <= versions[i-1] {
			t.Errorf("stored version went from %d to %d", versions[i-1], versions[i])
		}
	}
}
