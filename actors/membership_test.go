package actors

import (
	"context"
	"encoding/json"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/cluster"
)

// TestCheckDroppedByOnePeerAfterTTL checks when a member concludes that it
// was dropped: once any fresh peer that publishes its list has left it out
// for longer than the TTL.
func TestCheckDroppedByOnePeerAfterTTL(t *testing.T) {
	calls := 0
	p := &natsMembership{heartbeat: 100 * time.Millisecond, ttl: time.Second, log: testLogger(), onDropped: func() { calls++ }}
	p.self = memberRecord{ID: "me"}
	start := time.Now()

	// peer returns a record seen at the given offset from start.
	peer := func(id string, seenAt time.Duration, sees ...string) seenMember {
		return seenMember{record: memberRecord{ID: id, Sees: sees}, seen: start.Add(seenAt)}
	}

	// A peer that has not published a list yet does not count.
	members := map[string]seenMember{"me": peer("me", 0), "a": peer("a", 0)}
	p.checkDropped(members, start)
	p.checkDropped(members, start.Add(200*time.Millisecond))
	if calls != 0 {
		t.Fatalf("dropped without any list: %d calls", calls)
	}

	// One fresh peer leaves this member out, not yet for the TTL.
	leaving := func(at time.Duration) map[string]seenMember {
		return map[string]seenMember{"me": peer("me", at), "a": peer("a", at, "a", "b"), "b": peer("b", at, "a", "b", "me")}
	}
	p.checkDropped(leaving(0), start)
	p.checkDropped(leaving(900*time.Millisecond), start.Add(900*time.Millisecond))
	if calls != 0 {
		t.Fatalf("dropped before the TTL passed: %d calls", calls)
	}

	// Listed again: the clock starts over.
	p.checkDropped(map[string]seenMember{"me": peer("me", 950*time.Millisecond), "a": peer("a", 950*time.Millisecond, "a", "me")}, start.Add(950*time.Millisecond))
	p.checkDropped(leaving(time.Second), start.Add(time.Second))
	p.checkDropped(leaving(1900*time.Millisecond), start.Add(1900*time.Millisecond))
	if calls != 0 {
		t.Fatalf("dropped although the clock should have started over: %d calls", calls)
	}

	// A stale record that leaves this member out is the last word of a peer
	// that may be gone: it does not count, however long it stays.
	stale := map[string]seenMember{"me": peer("me", 1950*time.Millisecond), "a": peer("a", 1400*time.Millisecond, "a")}
	p.checkDropped(stale, start.Add(1950*time.Millisecond))
	p.checkDropped(stale, start.Add(4*time.Second))
	if calls != 0 {
		t.Fatalf("dropped by a stale record: %d calls", calls)
	}

	// One fresh peer leaving it out past the TTL is enough, although the
	// other still lists it.
	p.checkDropped(leaving(4100*time.Millisecond), start.Add(4100*time.Millisecond))
	p.checkDropped(leaving(5*time.Second), start.Add(5*time.Second))
	if calls != 0 {
		t.Fatalf("dropped before the TTL passed since the peer left it out: %d calls", calls)
	}
	p.checkDropped(leaving(5200*time.Millisecond), start.Add(5200*time.Millisecond))
	p.checkDropped(leaving(6*time.Second), start.Add(6*time.Second))
	if calls != 1 {
		t.Fatalf("onDropped called %d times after a peer left this member out past the TTL, want 1", calls)
	}
}

// TestListsLeavesSelfOutOfPlacement checks that a member that a fresh peer
// leaves out places no shard on itself, yet still counts itself as a member.
func TestListsLeavesSelfOutOfPlacement(t *testing.T) {
	p := &natsMembership{heartbeat: 100 * time.Millisecond, ttl: time.Second, log: testLogger()}
	p.self = memberRecord{ID: "me"}
	now := time.Now()
	record := func(id string, seen time.Time, sees ...string) seenMember {
		return seenMember{record: memberRecord{ID: id, Sees: sees}, seen: seen}
	}
	ids := func(members []*cluster.Member) []string {
		var out []string
		for _, m := range members {
			out = append(out, m.Id)
		}
		slices.Sort(out)
		return out
	}

	for _, tc := range []struct {
		name          string
		members       map[string]seenMember
		wantPlacement []string
		wantLeftOut   bool
	}{
		{"every peer lists it", map[string]seenMember{"me": record("me", now), "a": record("a", now, "a", "me")}, []string{"a", "me"}, false},
		{"a peer without a list yet", map[string]seenMember{"me": record("me", now), "a": record("a", now)}, []string{"a", "me"}, false},
		{"a fresh peer leaves it out", map[string]seenMember{"me": record("me", now), "a": record("a", now, "a", "me"), "b": record("b", now, "a", "b")}, []string{"a", "b"}, true},
		{"a stale peer leaves it out", map[string]seenMember{"me": record("me", now), "a": record("a", now.Add(-time.Second), "a")}, []string{"a", "me"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			list, placement, all, leftOut := p.lists(tc.members, now)
			if leftOut != tc.wantLeftOut {
				t.Errorf("left out = %t, want %t", leftOut, tc.wantLeftOut)
			}
			if got := ids(placement); !slices.Equal(got, tc.wantPlacement) {
				t.Errorf("placement %v, want %v", got, tc.wantPlacement)
			}
			if got := ids(list); !slices.Equal(got, all) || !slices.Contains(all, "me") {
				t.Errorf("member list %v, ids %v; want both with this member", got, all)
			}
		})
	}
}

// TestPruneGivesPeersATTLAfterAnOutage covers an outage of the members
// bucket: while this member's own heartbeats do not come back it drops no
// peer, and once they do, the others get a full TTL to show up again
// before they count as gone.
func TestPruneGivesPeersATTLAfterAnOutage(t *testing.T) {
	p := &natsMembership{heartbeat: 100 * time.Millisecond, ttl: time.Second, log: testLogger(),
		removed: make(map[string]bool), onDropped: func() {}}
	p.self = memberRecord{ID: "me"}
	start := time.Now()
	members := map[string]seenMember{
		"me": {record: memberRecord{ID: "me"}, seen: start},
		"a":  {record: memberRecord{ID: "a"}, seen: start},
	}

	// Ten seconds without any heartbeat, its own included: no peer is dropped.
	if cutOff := p.prune(members, start.Add(10*time.Second)); !cutOff {
		t.Fatal("not cut off after 10 s without its own heartbeat")
	}
	if _, ok := members["a"]; !ok {
		t.Fatal("a peer was dropped while this member was cut off")
	}

	// Its own heartbeats come back every 100 ms; the peer's stay away.
	back := start.Add(10 * time.Second)
	tick := func(at time.Time) {
		members["me"] = seenMember{record: memberRecord{ID: "me"}, seen: at}
		p.prune(members, at)
	}
	for step := time.Duration(0); step <= 900*time.Millisecond; step += 100 * time.Millisecond {
		tick(back.Add(step))
	}
	if _, ok := members["a"]; !ok {
		t.Fatal("the peer was dropped within a TTL of the outage's end")
	}

	// The peer stays silent for a full TTL after the outage: now it is gone.
	tick(back.Add(1000 * time.Millisecond))
	tick(back.Add(1100 * time.Millisecond))
	if _, ok := members["a"]; ok || !p.removed["a"] {
		t.Fatal("the peer silent for a TTL after the outage was kept")
	}
}

// TestBeatPutsRecordWithoutWatch runs the heartbeat alone, with no watch of
// the bucket, as while a watch is being restarted: the record keeps being
// put, with the ids of the last published list.
func TestBeatPutsRecordWithoutWatch(t *testing.T) {
	store := openStore(t, t.TempDir())
	kv, err := store.Members(t.Context())
	if err != nil {
		t.Fatalf("members bucket: %v", err)
	}
	p := &natsMembership{kv: kv, heartbeat: 50 * time.Millisecond, ttl: time.Second, log: testLogger()}
	p.self = memberRecord{Cluster: "c", ID: "me", Host: "127.0.0.1", Port: 1}

	var sees atomic.Pointer[[]string]
	ids := []string{"a", "me"}
	sees.Store(&ids)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.beat(ctx, &sees)
	}()
	defer func() {
		cancel()
		<-done
	}()

	var revisions []uint64
	deadline := time.Now().Add(10 * time.Second)
	for len(revisions) < 3 && time.Now().Before(deadline) {
		entry, err := kv.Get(t.Context(), "member.me")
		if err == nil && (len(revisions) == 0 || entry.Revision() > revisions[len(revisions)-1]) {
			revisions = append(revisions, entry.Revision())
			var rec memberRecord
			if err := json.Unmarshal(entry.Value(), &rec); err != nil {
				t.Fatalf("decode record: %v", err)
			}
			if !slices.Equal(rec.Sees, ids) {
				t.Errorf("record sees %v, want %v", rec.Sees, ids)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(revisions) < 3 {
		t.Fatalf("the record was put %d times in 10 s, want a put every 50 ms", len(revisions))
	}
}

// TestClusterConfigAddresses checks which listen and advertised addresses
// a member accepts: an empty host listens on every interface, which only
// an advertised address makes reachable.
func TestClusterConfigAddresses(t *testing.T) {
	for _, tc := range []struct {
		addr, advertise string
		ok              bool
	}{
		{"127.0.0.1:8091", "", true},
		{":8091", "", false},
		{":8091", "10.0.0.5:18091", true},
		{"127.0.0.1:0", "10.0.0.5:18091", true},
		{"127.0.0.1:8091", "10.0.0.5", false},
		{"127.0.0.1:8091", "10.0.0.5:0", false},
	} {
		_, _, _, err := ClusterConfig{Name: "c", Addr: tc.addr, Advertise: tc.advertise}.withDefaults()
		if (err == nil) != tc.ok {
			t.Errorf("Addr %q, Advertise %q: error %v, want ok=%t", tc.addr, tc.advertise, err, tc.ok)
		}
	}
}
