package actors

import (
	"testing"
	"time"
)

// TestCheckDroppedNeedsEveryPeerForTTL checks when a member concludes that
// the others dropped it: only when every peer that publishes its list
// leaves it out, and only after that lasted longer than the TTL.
func TestCheckDroppedNeedsEveryPeerForTTL(t *testing.T) {
	calls := 0
	p := &natsMembership{ttl: time.Second, log: testLogger(), onDropped: func() { calls++ }}
	p.self = memberRecord{ID: "me"}

	peer := func(id string, sees ...string) seenMember {
		return seenMember{record: memberRecord{ID: id, Sees: sees}}
	}
	start := time.Now()

	// A peer that has not published a list yet does not count.
	members := map[string]seenMember{"me": peer("me"), "a": peer("a")}
	p.checkDropped(members, start)
	p.checkDropped(members, start.Add(3*time.Second))
	if calls != 0 {
		t.Fatalf("dropped without any list: %d calls", calls)
	}

	// One of two peers leaving this member out is a view in transition.
	members = map[string]seenMember{"me": peer("me"), "a": peer("a", "a"), "b": peer("b", "a", "b", "me")}
	p.checkDropped(members, start)
	p.checkDropped(members, start.Add(3*time.Second))
	if calls != 0 {
		t.Fatalf("dropped while one peer still lists this member: %d calls", calls)
	}

	// Every peer leaving it out, but not yet for the TTL.
	members = map[string]seenMember{"me": peer("me"), "a": peer("a", "a", "b"), "b": peer("b", "a", "b")}
	p.checkDropped(members, start)
	p.checkDropped(members, start.Add(900*time.Millisecond))
	if calls != 0 {
		t.Fatalf("dropped before the TTL passed: %d calls", calls)
	}

	// Listed again: the clock starts over.
	p.checkDropped(map[string]seenMember{"me": peer("me"), "a": peer("a", "a", "me")}, start.Add(950*time.Millisecond))
	p.checkDropped(members, start.Add(1000*time.Millisecond))
	p.checkDropped(members, start.Add(1900*time.Millisecond))
	if calls != 0 {
		t.Fatalf("dropped although the clock should have started over: %d calls", calls)
	}

	p.checkDropped(members, start.Add(2100*time.Millisecond))
	p.checkDropped(members, start.Add(5*time.Second))
	if calls != 1 {
		t.Fatalf("onDropped called %d times after every peer left this member out past the TTL, want 1", calls)
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
