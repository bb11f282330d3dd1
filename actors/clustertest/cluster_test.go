// Package clustertest measures what a cluster hop costs: two actors.System
// members in one process, one embedded NATS server, and votes sent through
// one member to a shard it holds and to a shard the other member holds.
//
// It holds benchmarks only. Proto.Actor's remote sets gRPC's process-wide
// logger when a member starts, which the race detector reports when a
// second member starts in the same process, so the cluster's tests run the
// real binary as separate processes (cluster_test.go at the module root).
package clustertest

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/livevote/livevote/actors"
	"github.com/livevote/livevote/persistence"
)

const shards = 8

func startMember(b *testing.B, store *persistence.Store) *actors.System {
	b.Helper()
	sys, err := actors.Start(b.Context(), actors.Config{
		Shards:            shards,
		Store:             store,
		Logger:            slog.New(slog.DiscardHandler),
		BroadcastInterval: time.Second,
		Cluster:           &actors.ClusterConfig{Name: "bench", Addr: "127.0.0.1:0", Heartbeat: 100 * time.Millisecond, MemberTTL: time.Second},
	})
	if err != nil {
		b.Fatalf("start member: %v", err)
	}
	ctx, cancel := context.WithTimeout(b.Context(), 30*time.Second)
	defer cancel()
	if err := sys.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = sys.Stop(ctx)
	})
	return sys
}

// BenchmarkClusterHop votes one at a time through member A, to a shard
// that A holds ("local") and to one that B holds ("remote"). The
// difference per vote is the cost of the extra hop: the request and the
// reply over Proto.Actor's gRPC remote on loopback, plus their encoding.
func BenchmarkClusterHop(b *testing.B) {
	store, err := persistence.Open(b.Context(), persistence.Config{DataDir: b.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = store.Close() })

	a, other := startMember(b, store), startMember(b, store)
	deadline := time.Now().Add(30 * time.Second)
	for a.ClusterMembers() != 2 || other.ClusterMembers() != 2 {
		if time.Now().After(deadline) {
			b.Fatal("the members did not see each other within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}

	local, remote := -1, -1
	for i := range shards {
		switch a.ShardAddress(i) {
		case a.Address():
			local = max(local, i)
		case other.Address():
			remote = max(remote, i)
		}
	}
	if local < 0 || remote < 0 {
		b.Fatalf("need a shard on each member; local %d, remote %d", local, remote)
	}
	a.RegisterPoll(actors.PollInfo{ID: "p", Event: "e", Options: []string{"x"}})
	other.RegisterPoll(actors.PollInfo{ID: "p", Event: "e", Options: []string{"x"}})

	for _, tc := range []struct {
		name  string
		shard int
	}{{"local", local}, {"remote", remote}} {
		n := 0 // across the runs of -count, so vote ids never repeat
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				n++
				v := actors.Vote{VoteID: fmt.Sprintf("%s-%d", tc.name, n), Poll: "p", Voter: fmt.Sprintf("%s-voter-%d", tc.name, n), Options: []string{"x"}}
				ack, err := a.Vote(b.Context(), tc.shard, v)
				if err != nil || ack.Outcome != actors.OutcomeAccepted {
					b.Fatalf("vote %d: %v, %v", n, ack.Outcome, err)
				}
			}
		})
	}
}
