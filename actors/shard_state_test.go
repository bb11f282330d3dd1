package actors

import (
	"errors"
	"fmt"
	"maps"
	"testing"

	"github.com/livevote/livevote/persistence"
)

func TestApplyIsIdempotentPerVoteID(t *testing.T) {
	st := newShardState()

	steps := []struct {
		voter, voteID string
		options       []string
		seq           uint64
		wantSeq       uint64
		wantFresh     bool
	}{
		{"alice", "v1", []string{"a"}, 10, 10, true},
		{"alice", "v1", []string{"a"}, 11, 10, false},     // the same vote stored twice
		{"alice", "v2", []string{"b", "b"}, 12, 12, true}, // a change, with a repeated option
		{"alice", "v1", []string{"a"}, 13, 10, false},     // an old vote id does not change back
		{"bob", "v1", []string{"a", "c"}, 14, 14, true},   // vote ids are per voter
		{"bob", "v3", []string{"c"}, 15, 15, true},        // a change from two options to one
		{"carol", "v4", []string{"c", "a", "c"}, 16, 16, true},
	}
	for i, step := range steps {
		seq, fresh := st.apply("p1", step.voter, step.voteID, step.options, step.seq)
		if seq != step.wantSeq || fresh != step.wantFresh {
			t.Errorf("step %d: apply = (%d, %v), want (%d, %v)", i, seq, fresh, step.wantSeq, step.wantFresh)
		}
	}

	got := st.polls["p1"].totals()
	want := map[string]int64{"a": 1, "b": 1, "c": 2}
	if !maps.Equal(got.Counts, want) || got.Voters != 3 || got.TotalVotes != 4 {
		t.Errorf("totals = %+v, want counts %v, 3 voters, 4 votes", got, want)
	}
	if st.applied != 5 {
		t.Errorf("applied = %d, want 5", st.applied)
	}
}

func TestApplyBatchAdvancesSequence(t *testing.T) {
	st := newShardState()
	b := persistence.Batch{ID: "b1", Votes: []persistence.VoteRecord{
		{VoteID: "v1", Poll: "p1", Voter: "alice", Options: []string{"a"}},
		{VoteID: "v1", Poll: "p1", Voter: "alice", Options: []string{"a"}},
		{VoteID: "v2", Poll: "p2", Voter: "alice", Options: []string{"a"}},
	}}

	if fresh := st.applyBatch(7, b); fresh != 2 {
		t.Errorf("first applyBatch = %d fresh votes, want 2", fresh)
	}
	if fresh := st.applyBatch(9, b); fresh != 0 {
		t.Errorf("second applyBatch = %d fresh votes, want 0", fresh)
	}
	if st.lastSeq != 9 {
		t.Errorf("lastSeq = %d, want 9", st.lastSeq)
	}

	st.advance(3)
	if st.lastSeq != 9 {
		t.Errorf("lastSeq after advance(3) = %d, want still 9", st.lastSeq)
	}
}

// sampleState builds a state with changes, several polls and a closed poll.
func sampleState() *shardState {
	st := newShardState()
	for i := range 50 {
		voter := fmt.Sprintf("voter-%d", i)
		st.apply("p1", voter, "v1-"+voter, []string{"a"}, uint64(i+1))
		if i%3 == 0 {
			st.apply("p1", voter, "v2-"+voter, []string{"b", "c"}, uint64(i+100))
		}
		st.apply("p2", voter, "v3-"+voter, []string{"x"}, uint64(i+200))
	}
	st.markClosed("p2")
	st.markClosed("p3")
	st.advance(250)

	return st
}

func TestSnapshotRoundTrip(t *testing.T) {
	st := sampleState()

	got, err := decodeShardState(5, st.encode(5))
	if err != nil {
		t.Fatalf("decode: %v", err)
	}

	if got.lastSeq != st.lastSeq || got.applied != st.applied {
		t.Errorf("decoded lastSeq %d applied %d, want %d and %d", got.lastSeq, got.applied, st.lastSeq, st.applied)
	}
	for id, p := range st.polls {
		want := p.totals()
		have := got.polls[id].totals()
		if !maps.Equal(have.Counts, want.Counts) || have.Voters != want.Voters ||
			have.TotalVotes != want.TotalVotes || have.Closed != want.Closed {
			t.Errorf("poll %s: decoded totals %+v, want %+v", id, have, want)
		}
	}

	seq, ok := got.receiptSeq("p1", "voter-3", "v1-voter-3")
	if !ok || seq != 4 {
		t.Errorf("decoded receipt of the first vote = (%d, %v), want (4, true)", seq, ok)
	}
	if _, fresh := got.apply("p1", "voter-3", "v2-voter-3", []string{"b"}, 999); fresh {
		t.Errorf("decoded state applied a vote id it had seen")
	}
}

func TestSnapshotDecodeRejectsCorruptInput(t *testing.T) {
	data := sampleState().encode(1)

	if _, err := decodeShardState(2, data); !errors.Is(err, errCorruptSnapshot) {
		t.Errorf("decode as another shard: error = %v, want errCorruptSnapshot", err)
	}
	if _, err := decodeShardState(1, append(data[:len(data):len(data)], 0)); !errors.Is(err, errCorruptSnapshot) {
		t.Errorf("decode with a trailing byte: error = %v, want errCorruptSnapshot", err)
	}
	for n := range len(data) {
		_, err := decodeShardState(1, data[:n])
		if !errors.Is(err, errCorruptSnapshot) {
			t.Fatalf("decode of the first %d of %d bytes: error = %v, want errCorruptSnapshot", n, len(data), err)
		}
	}
}

func FuzzDecodeShardState(f *testing.F) {
	f.Add(sampleState().encode(0))
	f.Add(newShardState().encode(0))
	f.Add([]byte("LVS\x01\x00\x00\x00\x01\x01p\x00\xff\xff\xff\xff\x0f"))

	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := decodeShardState(0, data)
		if err != nil {
			return
		}

		again, err := decodeShardState(0, st.encode(0))
		if err != nil {
			t.Fatalf("re-encoded state does not decode: %v", err)
		}
		for id, p := range st.polls {
			if !maps.Equal(again.polls[id].totals().Counts, p.totals().Counts) {
				t.Fatalf("poll %q counts changed in a round trip", id)
			}
		}
	})
}
