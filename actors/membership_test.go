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

	// A peer that has not published a list yet says nothing.
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
