package actors

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestStartRejectsInvalidConfig(t *testing.T) {
	t.Parallel()
	store := openStore(t, t.TempDir())

	cases := []struct {
		name string
		cfg  Config
	}{
		{"nil store", Config{}},
		{"negative shards", Config{Store: store, Shards: -1}},
		{"too many shards", Config{Store: store, Shards: 5000}},
		{"negative max batch", Config{Store: store, MaxBatch: -1}},
		{"negative max queue", Config{Store: store, MaxQueue: -5}},
		{"negative interval", Config{Store: store, BroadcastInterval: -time.Second}},
		{"negative append timeout", Config{Store: store, AppendTimeout: -time.Second}},
		{"negative snapshot interval", Config{Store: store, SnapshotEvery: -1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Start(t.Context(), tc.cfg)
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("Start error = %v, want ErrInvalidConfig", err)
			}
			if s != nil {
				t.Errorf("Start returned a System for an invalid config")
			}
		})
	}
}

func TestStartSpawnsNamedShards(t *testing.T) {
	t.Parallel()
	s := startSystem(t, openStore(t, t.TempDir()), Config{Shards: 12})

	for i := range 12 {
		pid := s.actors.NewLocalPID(ShardName(i))
		reply, err := s.root.RequestFuture(pid, &totalsRequest{}, 5*time.Second).Result()
		totals, ok := reply.(*totalsReply)
		if err != nil || !ok || totals.shard != i {
			t.Errorf("shard named %s: reply %+v, %v, want the totals of shard %d", ShardName(i), reply, err, i)
		}
	}
	if ShardName(7) != "shard-007" || ShardName(63) != "shard-063" {
		t.Errorf("ShardName(7), ShardName(63) = %q, %q, want shard-007 and shard-063", ShardName(7), ShardName(63))
	}
	if !s.Ready() {
		t.Errorf("Ready() = false after WaitReady")
	}
}

func TestMetricsAndStats(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	s := startSystem(t, openStore(t, t.TempDir()), Config{Shards: 2, Registerer: reg})

	for i := range 6 {
		ack := vote(t, s, i%2, Vote{VoteID: fmt.Sprintf("v-%d", i), Poll: "p1", Voter: fmt.Sprintf("u-%d", i), Options: []string{"a"}})
		if ack.Outcome != OutcomeAccepted {
			t.Fatalf("vote %d: outcome = %v, want accepted", i, ack.Outcome)
		}
	}

	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range families {
		byName[f.GetName()] = f
	}

	applied := byName["livevote_shard_votes_applied_total"]
	if applied == nil || len(applied.GetMetric()) != 2 {
		t.Fatalf("livevote_shard_votes_applied_total = %v, want one series per shard", applied)
	}
	for _, m := range applied.GetMetric() {
		if m.GetCounter().GetValue() != 3 {
			t.Errorf("votes applied %v = %v, want 3", m.GetLabel(), m.GetCounter().GetValue())
		}
	}
	if h := byName["livevote_append_seconds"]; h == nil || h.GetMetric()[0].GetHistogram().GetSampleCount() != 6 {
		t.Errorf("livevote_append_seconds = %v, want 6 samples", h)
	}
	if h := byName["livevote_shard_batch_size"]; h == nil || len(h.GetMetric()) != 2 {
		t.Errorf("livevote_shard_batch_size = %v, want one series per shard", h)
	}
	if g := byName["livevote_shard_queue_depth"]; g == nil || len(g.GetMetric()) != 2 {
		t.Errorf("livevote_shard_queue_depth = %v, want one series per shard", g)
	}

	st := s.Stats()
	if st.VotesApplied != 6 || st.Batches != 6 || st.AvgBatch != 1 || st.QueueDepth != 0 || st.InFlight != 0 {
		t.Errorf("stats = %+v, want 6 votes in 6 one-vote appends and nothing queued", st)
	}
	if st.Shards[1].VotesApplied != 3 || st.Shards[1].LastBatchSize != 1 {
		t.Errorf("shard 1 stats = %+v, want 3 votes, last batch 1", st.Shards[1])
	}

	_, err = Start(t.Context(), Config{Store: s.cfg.Store, Registerer: reg})
	if !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("second Start on the same registry: error = %v, want ErrInvalidConfig", err)
	}
}

func TestStopIsGracefulAndIdempotent(t *testing.T) {
	t.Parallel()
	s := startSystem(t, openStore(t, t.TempDir()), Config{Shards: 2})

	ack := vote(t, s, 0, Vote{VoteID: "v-1", Poll: "p1", Voter: "alice", Options: []string{"a"}})
	if ack.Outcome != OutcomeAccepted {
		t.Fatalf("outcome = %v, want accepted", ack.Outcome)
	}

	stopSystem(t, s)

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}

	after := vote(t, s, 0, Vote{VoteID: "v-2", Poll: "p1", Voter: "bob", Options: []string{"a"}})
	if after.Outcome != OutcomeOverloaded {
		t.Errorf("outcome after Stop = %v, want overloaded", after.Outcome)
	}
	if _, err := s.ClosePoll(ctx, "p1"); !errors.Is(err, ErrStopped) {
		t.Errorf("ClosePoll after Stop: error = %v, want ErrStopped", err)
	}
}
