package actors

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
)

// TestSupersededGrainReportsNoStaleTotals starts a second activation of a
// shard grain beside the first, as a member that took the shard over after
// the first one's hub froze would. The second accepts votes that the first
// never saw, and then the first gets a close barrier, as it does when its
// hub resumes and closes the poll before it learns that it was dropped. The
// first must not answer with its own, stale totals.
func TestSupersededGrainReportsNoStaleTotals(t *testing.T) {
	store := openStore(t, t.TempDir())
	s := startSystem(t, store, Config{
		Shards:            1,
		BroadcastInterval: time.Hour,
		Cluster:           &ClusterConfig{Name: "supersede", Addr: "127.0.0.1:0", Heartbeat: 100 * time.Millisecond, MemberTTL: time.Second},
	})
	s.RegisterPoll(PollInfo{ID: "p", Event: "e", Options: []string{"x"}})

	const before, after = 5, 3
	for i := range before {
		ack := vote(t, s, 0, Vote{VoteID: fmt.Sprintf("v%d", i), Poll: "p", Voter: fmt.Sprintf("voter-%d", i), Options: []string{"x"}})
		if ack.Outcome != OutcomeAccepted {
			t.Fatalf("vote %d through the first activation: outcome %v, want accepted", i, ack.Outcome)
		}
	}
	first := s.localShards()[0]
	if first == nil {
		t.Fatal("no local activation of shard 0")
	}

	props := actor.PropsFromProducer(func() actor.Actor {
		return newShard(&shardConfig{index: -1, logger: s.log, grain: &grainConfig{system: s}})
	})
	second := s.actors.Root.Spawn(props)
	s.actors.Root.Send(second, &cluster.ClusterInit{Identity: cluster.NewClusterIdentity(ShardName(0), shardKind)})

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for i := before; i < before+after; i++ {
		reply, err := s.request(ctx, second, &voteRequest{
			vote: Vote{VoteID: fmt.Sprintf("v%d", i), Poll: "p", Voter: fmt.Sprintf("voter-%d", i), Options: []string{"x"}},
			at:   time.Now().UnixMilli(),
		})
		if err != nil {
			t.Fatalf("vote %d through the second activation: %v", i, err)
		}
		ack, ok := reply.(Ack)
		if !ok || ack.Outcome != OutcomeAccepted {
			t.Fatalf("vote %d through the second activation: reply %#v, want an accepted Ack", i, reply)
		}
	}

	reply, err := s.request(ctx, first, &closeRequest{poll: "p"})
	if err != nil {
		t.Fatalf("close barrier at the first activation: %v", err)
	}
	cr, ok := reply.(*closeReply)
	if !ok {
		t.Fatalf("close barrier at the first activation: reply %#v, want a *closeReply", reply)
	}
	if cr.err == nil {
		t.Fatalf("the superseded activation answered the barrier with totals %+v; want an error, because the second activation holds %d voters", cr.totals, before+after)
	}
	if !errors.Is(cr.err, ErrStopped) {
		t.Errorf("barrier error %v, want ErrStopped", cr.err)
	}

	reply, err = s.request(ctx, second, &closeRequest{poll: "p"})
	if err != nil {
		t.Fatalf("close barrier at the second activation: %v", err)
	}
	cr, ok = reply.(*closeReply)
	if !ok || cr.err != nil {
		t.Fatalf("close barrier at the second activation: reply %#v, want totals", reply)
	}
	if cr.totals.Voters != before+after {
		t.Errorf("second activation reports %d voters, want %d", cr.totals.Voters, before+after)
	}
}
