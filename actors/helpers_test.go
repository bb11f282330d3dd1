package actors

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/livevote/livevote/persistence"
)

// TestMain fails the run when goroutines started by the tests are still
// running after every System is stopped and every Store is closed. Fuzzing
// starts goroutines of its own, so the check is off while fuzzing.
func TestMain(m *testing.M) {
	flag.Parse()
	fuzzing := flag.Lookup("test.fuzz").Value.String() != "" || flag.Lookup("test.fuzzworker").Value.String() == "true"

	before := runtime.NumGoroutine()
	code := m.Run()

	if code == 0 && !fuzzing {
		code = checkGoroutines(before)
	}
	os.Exit(code)
}

// checkGoroutines waits up to 10 s for the goroutine count to fall back to
// before and prints the remaining stacks when it does not. It leaves out
// the timer of Proto.Actor's gossip throttle: a cluster member starts it
// with a 60 s period, and it ends on its own once the period is over.
func checkGoroutines(before int) int {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if running, _ := goroutinesBesidesThrottle(); running <= before {
			return 0
		}
		time.Sleep(50 * time.Millisecond)
	}

	running, stacks := goroutinesBesidesThrottle()
	fmt.Fprintf(os.Stderr, "goroutine leak: %d running, %d before the tests\n%s\n", running, before, stacks)

	return 1
}

// goroutinesBesidesThrottle returns the number of goroutines that are not
// the timer of a Proto.Actor throttle, and the stacks of all of them.
func goroutinesBesidesThrottle() (int, []byte) {
	buf := make([]byte, 1<<20)
	stacks := buf[:runtime.Stack(buf, true)]

	running := 0
	for g := range bytes.SplitSeq(stacks, []byte("\n\n")) {
		throttle := bytes.Contains(g, []byte("github.com/asynkron/protoactor-go")) && bytes.Contains(g, []byte("/actor/throttler.go:"))
		if !throttle {
			running++
		}
	}

	return running, stacks
}

// testLogger writes warnings and errors to stderr when the tests run with -v
// and discards everything otherwise. It does not write to t.Log, because
// Proto.Actor may log from its own goroutines after a test has returned.
func testLogger() *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}

	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// openStore opens an embedded store in dir and closes it when the test ends
// unless the test closed it first.
func openStore(t testing.TB, dir string) *persistence.Store {
	t.Helper()

	store, err := persistence.Open(t.Context(), persistence.Config{DataDir: dir, Logger: testLogger()})
	if err != nil {
		t.Fatalf("persistence.Open(%q): %v", dir, err)
	}
	t.Cleanup(func() { _ = store.Close() })

	return store
}

// startSystem starts a System on store with cfg, waits until every shard
// has recovered and stops it when the test ends unless the test stopped it.
func startSystem(t testing.TB, store *persistence.Store, cfg Config) *System {
	t.Helper()

	cfg.Store = store
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	if cfg.Shards == 0 {
		cfg.Shards = 4
	}

	s, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = s.Stop(ctx)
	})

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err = s.WaitReady(ctx)
	if err != nil {
		t.Fatalf("WaitReady: %v", err)
	}

	return s
}

func stopSystem(t testing.TB, s *System) {
	t.Helper()

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err := s.Stop(ctx)
	if err != nil {
		t.Fatalf("Stop: %v", err)
	}
}

// crash stops every actor without the graceful stop, so no shard saves a
// snapshot, as after a process crash.
func crash(t testing.TB, s *System) {
	t.Helper()

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	s.stopMu.Lock()
	defer s.stopMu.Unlock()

	s.stopping.Store(true)
	s.stopRecovery()
	for _, pid := range append([]*actor.PID{s.aggregator}, s.shards...) {
		err := s.poison(ctx, pid)
		if err != nil {
			t.Fatalf("poison %s: %v", pid.Id, err)
		}
	}

	err := s.tasks.closeAndWait(ctx, s.cancelBase)
	if err != nil {
		t.Fatalf("wait for tasks: %v", err)
	}
	s.cancelBase()
	s.actors.Shutdown()
	s.stopped = true
}

// vote sends v to shard and fails the test on an error.
func vote(t testing.TB, s *System, shard int, v Vote) Ack {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	ack, err := s.Vote(ctx, shard, v)
	if err != nil {
		t.Errorf("Vote(%d, %+v): %v", shard, v, err)
	}

	return ack
}

// pollTotalsOf requests the totals of every shard and sums those of poll.
func pollTotalsOf(t testing.TB, s *System, poll string) pollTotals {
	t.Helper()

	round := s.gatherTotals(10 * time.Second)
	if len(round.skipped) > 0 {
		t.Fatalf("shards %v did not return totals", round.skipped)
	}

	var sum pollTotals
	for _, reply := range round.replies {
		if !reply.ready {
			t.Fatalf("shard %d is not ready", reply.shard)
		}
		sum = addTotals(sum, reply.polls[poll])
	}
	if sum.Counts == nil {
		sum.Counts = map[string]int64{}
	}

	return sum
}

// allTotalsOf returns the totals of every poll at every shard, by shard.
func allTotalsOf(t testing.TB, s *System) []map[string]pollTotals {
	t.Helper()

	round := s.gatherTotals(10 * time.Second)
	if len(round.skipped) > 0 {
		t.Fatalf("shards %v did not return totals", round.skipped)
	}

	out := make([]map[string]pollTotals, len(s.shards))
	for _, reply := range round.replies {
		out[reply.shard] = reply.polls
	}

	return out
}

// publishLog records every published document.
type publishLog struct {
	mu   sync.Mutex
	docs []Results
}

func (l *publishLog) publish(doc Results) {
	l.mu.Lock()
	l.docs = append(l.docs, doc)
	l.mu.Unlock()
}

// forPoll returns the published documents of poll in publish order.
func (l *publishLog) forPoll(poll string) []Results {
	l.mu.Lock()
	defer l.mu.Unlock()

	var out []Results
	for _, doc := range l.docs {
		if doc.Poll == poll {
			out = append(out, doc)
		}
	}

	return out
}

// waitFor polls cond every 10 ms until it holds or 10 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()

	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// outcomeCounts tallies acks by outcome for readable failure messages.
func outcomeCounts(acks []Ack) map[string]int {
	out := map[string]int{}
	for _, ack := range acks {
		out[ack.Outcome.String()]++
	}

	return out
}

func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)

	return keys
}
