// Command recoverbench measures how long a LiveVote node takes from start to ready
// after a large vote stream: it fills an embedded JetStream store in a temporary
// directory with -votes votes spread over -shards shards, then starts the shard
// actors on it twice, once with no snapshots (the whole stream is replayed) and once
// after a clean stop has saved every shard's snapshot.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livevote/livevote/actors"
	"github.com/livevote/livevote/persistence"
)

func main() {
	votes := flag.Int("votes", 10_000_000, "votes to store before measuring, 1,000 to 50,000,000")
	shards := flag.Int("shards", 64, "shards, as the server's -shards")
	batch := flag.Int("batch", 1024, "votes per shard batch while filling")
	keep := flag.Bool("keep", false, "keep the temporary data directory")
	flag.Parse()
	if *votes < 1000 || *votes > 50_000_000 || *shards < 1 || *shards > persistence.MaxShards || *batch < 1 || *batch > 4096 {
		fmt.Fprintln(os.Stderr, "recoverbench: -votes must be 1,000 to 50,000,000, -shards 1 to 4096 and -batch 1 to 4096")
		os.Exit(2)
	}
	if err := run(*votes, *shards, *batch, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "recoverbench:", err)
		os.Exit(1)
	}
}

func run(votes, shards, batch int, keep bool) error {
	dir, err := os.MkdirTemp("", "livevote-recoverbench-")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(dir)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx := context.Background()

	fillStart := time.Now()
	if err := fill(ctx, dir, votes, shards, batch, logger); err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	fmt.Printf("filled %d votes over %d shards in %s (data in %s)\n", votes, shards, time.Since(fillStart).Round(time.Millisecond), dir)

	for _, pass := range []string{"without snapshots", "from snapshots"} {
		took, counted, err := startToReady(ctx, dir, shards, logger)
		if err != nil {
			return fmt.Errorf("start %s: %w", pass, err)
		}
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		fmt.Printf("start to ready %s: %s, %d votes counted, heap in use %d MiB\n", pass, took.Round(time.Millisecond), counted, m.HeapInuse>>20)
		if counted != uint64(votes) {
			return fmt.Errorf("%s: %d votes counted, want %d", pass, counted, votes)
		}
	}
	return nil
}

// fill appends votes with one writer per shard, so the store packs the batches of
// several shards into each JetStream message as it does under load. It fsyncs on
// JetStream's timer: only the recovery is measured.
func fill(ctx context.Context, dir string, votes, shards, batch int, logger *slog.Logger) error {
	store, err := persistence.Open(ctx, persistence.Config{DataDir: dir, Sync: persistence.SyncInterval, Logger: logger})
	if err != nil {
		return err
	}
	defer store.Close()

	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		failed  error
	)
	perShard := (votes + shards - 1) / shards
	for shard := range shards {
		wg.Go(func() {
			for done := 0; done < perShard; {
				n := min(batch, perShard-done)
				b := persistence.Batch{ID: fmt.Sprintf("fill-%d-%d", shard, done), Shard: shard, Votes: make([]persistence.VoteRecord, 0, n)}
				for range n {
					i := next.Add(1)
					if i > int64(votes) {
						break
					}
					b.Votes = append(b.Votes, persistence.VoteRecord{
						VoteID:  fmt.Sprintf("00000000-0000-4000-8000-%012d", i),
						Poll:    "poll-1",
						Voter:   fmt.Sprintf("voter-%d", i),
						Options: []string{fmt.Sprintf("o%d", i%4+1)},
						At:      time.Now().UnixMilli(),
					})
				}
				if len(b.Votes) == 0 {
					return
				}
				if _, err := store.AppendBatch(ctx, b); err != nil {
					errOnce.Do(func() { failed = err })
					return
				}
				done += n
			}
		})
	}
	wg.Wait()
	return failed
}

// startToReady opens the store, starts the actors and waits until every shard has
// recovered, then stops them cleanly (which saves snapshots) and returns the time to
// ready and the votes counted.
func startToReady(ctx context.Context, dir string, shards int, logger *slog.Logger) (time.Duration, uint64, error) {
	start := time.Now()
	store, err := persistence.Open(ctx, persistence.Config{DataDir: dir, Logger: logger})
	if err != nil {
		return 0, 0, err
	}
	defer store.Close()

	system, err := actors.Start(ctx, actors.Config{Shards: shards, Store: store, Logger: logger, BroadcastInterval: time.Hour})
	if err != nil {
		return 0, 0, err
	}
	readyCtx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if err := system.WaitReady(readyCtx); err != nil {
		return 0, 0, err
	}
	took := time.Since(start)
	counted := system.Stats().VotesApplied

	stopCtx, stopCancel := context.WithTimeout(ctx, 5*time.Minute)
	defer stopCancel()
	return took, counted, system.Stop(stopCtx)
}
