package actors

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/livevote/livevote/persistence"
)

// Defaults that Start uses for zero Config fields.
const (
	DefaultShards            = 64
	DefaultBroadcastInterval = 5 * time.Second
	DefaultMaxBatch          = 1024
	DefaultMaxQueue          = 8192
	DefaultAppendTimeout     = 5 * time.Second
	DefaultSnapshotEvery     = 100_000
)

// Sentinel errors of the package. Every returned error wraps one of them with
// the failing value, so callers test with errors.Is.
var (
	// ErrInvalidConfig reports a Config that Start rejects.
	ErrInvalidConfig = errors.New("actors: invalid config")

	// ErrInvalidVote reports a Vote that no batch could store.
	ErrInvalidVote = errors.New("actors: invalid vote")

	// ErrInvalidArgument reports a shard number out of range or an empty
	// poll id.
	ErrInvalidArgument = errors.New("actors: invalid argument")

	// ErrStopped reports a call on a System that is stopping or stopped.
	ErrStopped = errors.New("actors: system stopped")

	// ErrTimeout reports a shard or the aggregator that did not reply
	// before the context's deadline.
	ErrTimeout = errors.New("actors: timed out")
)

// Config configures Start. Zero fields take the documented defaults.
type Config struct {
	// Shards is the number of shard actors, named "shard-000" upwards. It
	// must stay the same for the life of a vote stream. Zero means 64, and
	// the maximum is persistence.MaxShards.
	Shards int

	// Store is the vote stream, snapshot and results store. Required.
	Store *persistence.Store

	// Logger receives the package's logs and Proto.Actor's. Nil discards.
	Logger *slog.Logger

	// BroadcastInterval is how often the aggregator merges shard totals.
	// Zero means 5s.
	BroadcastInterval time.Duration

	// MaxBatch is the maximum number of votes in one append. Zero means 1024. A batch is
	// also cut before its encoding would exceed persistence.MaxBatchBytes.
	MaxBatch int

	// MaxQueue is the maximum number of votes a shard holds, queued and in
	// flight. A new vote beyond it gets OutcomeOverloaded. Zero means 8192. It also bounds
	// the votes waiting while a shard recovers, and Vote calls in progress
	// per shard are capped at MaxQueue+MaxBatch, which bounds the mailbox.
	MaxQueue int

	// AppendTimeout bounds one append and one catch-up replay. Zero means 5s.
	// Without a context deadline, Vote and ClosePoll wait at most three times
	// this.
	AppendTimeout time.Duration

	// SnapshotEvery is how many applied votes a shard lets pass between
	// snapshots. Zero means 100,000. A shard also snapshots when it stops.
	SnapshotEvery int

	// Publish receives every new or changed results document, from the
	// aggregator and never concurrently. It must return quickly and must not
	// modify the document. Nil publishes nothing.
	Publish func(Results)

	// Registerer receives the package's Prometheus collectors. Nil records
	// no metrics.
	Registerer prometheus.Registerer

	// Cluster, when set, makes the System one member of a cluster whose
	// members share the shards. Nil runs every shard in this process.
	Cluster *ClusterConfig

	// shardMiddleware wraps every shard's Receive. Tests use it to inject faults.
	shardMiddleware []actor.ReceiverMiddleware
}

func (cfg Config) withDefaults() (Config, error) {
	if cfg.Store == nil {
		return cfg, fmt.Errorf("%w: Store is nil; open one with persistence.Open", ErrInvalidConfig)
	}

	for _, field := range []struct {
		name  string
		value int64
	}{
		{"Shards", int64(cfg.Shards)}, {"MaxBatch", int64(cfg.MaxBatch)}, {"MaxQueue", int64(cfg.MaxQueue)},
		{"SnapshotEvery", int64(cfg.SnapshotEvery)}, {"BroadcastInterval", int64(cfg.BroadcastInterval)},
		{"AppendTimeout", int64(cfg.AppendTimeout)},
	} {
		if field.value < 0 {
			return cfg, fmt.Errorf("%w: %s is %d; use zero for the default or a positive value", ErrInvalidConfig, field.name, field.value)
		}
	}
	if cfg.Shards > persistence.MaxShards {
		return cfg, fmt.Errorf("%w: Shards is %d; the maximum is %d", ErrInvalidConfig, cfg.Shards, persistence.MaxShards)
	}

	cfg.Shards = cmp.Or(cfg.Shards, DefaultShards)
	cfg.MaxBatch = cmp.Or(cfg.MaxBatch, DefaultMaxBatch)
	cfg.MaxQueue = cmp.Or(cfg.MaxQueue, DefaultMaxQueue)
	cfg.SnapshotEvery = cmp.Or(cfg.SnapshotEvery, DefaultSnapshotEvery)
	cfg.BroadcastInterval = cmp.Or(cfg.BroadcastInterval, DefaultBroadcastInterval)
	cfg.AppendTimeout = cmp.Or(cfg.AppendTimeout, DefaultAppendTimeout)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}

	return cfg, nil
}

// System is the running shard actors and the aggregator. Its methods are
// safe for concurrent use.
type System struct {
	cfg        Config
	log        *slog.Logger
	actors     *actor.ActorSystem
	root       *actor.RootContext
	shards     []*actor.PID
	aggregator *actor.PID

	stats       []*shardStats
	admitted    []atomic.Int64 // Vote calls in progress, per shard
	maxAdmitted int64
	waitDefault time.Duration // wait bound when a context has no deadline

	readyCount atomic.Int64
	readyFlags []atomic.Bool
	readyDone  chan struct{}
	kick       chan struct{} // asks the aggregator for a round now

	results   *resultsCache
	rounds    atomic.Uint64
	slowSkips atomic.Uint64

	tasks      *taskGroup
	baseCtx    context.Context // cancelled when Stop gives up waiting
	cancelBase context.CancelFunc

	recoveryCancel context.CancelFunc // stops the recovery pass
	recoveryDone   chan struct{}      // closed when the recovery pass has ended

	metrics *metrics
	clu     *clusterState // nil in single-node mode

	stopping atomic.Bool
	stopMu   sync.Mutex
	stopped  bool
	stopErr  error
}

// ShardName returns the actor name of shard i, "shard-007" for 7.
func ShardName(i int) string {
	return fmt.Sprintf("shard-%03d", i)
}

// aggregatorName is the actor name of the aggregator.
const aggregatorName = "aggregator"

// Start spawns the shard actors and the aggregator and returns at once. A
// background pass recovers every shard's state from its snapshot and one
// replay of the vote stream, and votes sent meanwhile wait for it. Use
// WaitReady to wait for every shard.
func Start(ctx context.Context, cfg Config) (*System, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("actors: start: %w", ctx.Err())
	}

	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}

	s := newSystem(cfg)
	logger := cfg.Logger
	s.actors = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(demotingHandler{logger.Handler()}).With("component", "protoactor")
	}))
	s.root = s.actors.Root

	if cfg.Cluster != nil {
		err = s.startCluster(ctx, m)
	} else {
		err = s.spawn(m)
	}
	if err != nil {
		s.cancelBase()
		s.actors.Shutdown()
		return nil, err
	}
	if cfg.Cluster == nil {
		s.startRecovery()
	}

	s.log.Info("actors started", append([]any{"shards", cfg.Shards, "max_batch", cfg.MaxBatch, "max_queue", cfg.MaxQueue,
		"broadcast_interval", cfg.BroadcastInterval, "append_timeout", cfg.AppendTimeout}, s.logCluster()...)...)

	return s, nil
}

func newSystem(cfg Config) *System {
	s := &System{
		cfg:         cfg,
		log:         cfg.Logger,
		stats:       make([]*shardStats, cfg.Shards),
		admitted:    make([]atomic.Int64, cfg.Shards),
		maxAdmitted: int64(cfg.MaxQueue + cfg.MaxBatch),
		waitDefault: 3 * cfg.AppendTimeout,
		readyFlags:  make([]atomic.Bool, cfg.Shards),
		readyDone:   make(chan struct{}),
		kick:        make(chan struct{}, 1),
		results:     newResultsCache(),
		tasks:       &taskGroup{},
	}
	for i := range s.stats {
		s.stats[i] = &shardStats{}
	}
	s.baseCtx, s.cancelBase = context.WithCancel(context.Background())

	return s
}

// spawn starts every shard and the aggregator under their names, then looks
// their PIDs up by name, as a cluster would.
func (s *System) spawn(m *metrics) error {
	bootID := newBootID()
	s.metrics = m

	for i := range s.cfg.Shards {
		cfg := s.shardConfig(i)
		cfg.bootID = bootID
		props := actor.PropsFromProducer(func() actor.Actor { return newShard(cfg) },
			actor.WithReceiverMiddleware(s.cfg.shardMiddleware...))

		_, err := s.root.SpawnNamed(props, ShardName(i))
		if err != nil {
			return fmt.Errorf("actors: spawn %s: %w", ShardName(i), err)
		}
		s.shards = append(s.shards, s.actors.NewLocalPID(ShardName(i)))
	}

	acfg := s.aggregatorConfig()
	props := actor.PropsFromProducer(func() actor.Actor { return newAggregator(acfg) })

	_, err := s.root.SpawnNamed(props, aggregatorName)
	if err != nil {
		return fmt.Errorf("actors: spawn %s: %w", aggregatorName, err)
	}
	s.aggregator = s.actors.NewLocalPID(aggregatorName)

	return nil
}

// shardConfig returns the configuration of shard i.
func (s *System) shardConfig(i int) *shardConfig {
	return &shardConfig{
		index:         i,
		store:         s.cfg.Store,
		logger:        s.log,
		maxBatch:      s.cfg.MaxBatch,
		maxQueue:      s.cfg.MaxQueue,
		appendTimeout: s.cfg.AppendTimeout,
		snapshotEvery: s.cfg.SnapshotEvery,
		tasks:         s.tasks,
		baseCtx:       s.baseCtx,
		stats:         s.stats[i],
		metrics:       s.metrics.forShard(i),
		onReady:       s.markReady,
	}
}

// newBootID returns a random id that makes batch ids unique across starts.
func newBootID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // crypto/rand.Read never returns an error

	return hex.EncodeToString(b)
}

func (s *System) markReady(shard int) {
	if !s.readyFlags[shard].CompareAndSwap(false, true) {
		return
	}

	if s.readyCount.Add(1) == int64(len(s.readyFlags)) {
		close(s.readyDone)
		s.log.Info("every shard recovered", "shards", len(s.readyFlags))
		// Publish the recovered totals now rather than one interval later, so that
		// nobody reads the document stored before a crash once /readyz says ready.
		s.kickAggregator()
	}
}

func (s *System) kickAggregator() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// flushResults runs one last results round before the aggregator stops, so that
// the stored documents include the votes of the final interval. The round reaches
// the aggregator before the poison that stops it.
func (s *System) flushResults() {
	if !s.Ready() || s.clu != nil {
		return
	}
	round := s.gatherTotals(min(s.cfg.BroadcastInterval/2, 2*time.Second))
	s.root.Send(s.aggregator, round)
}

// Ready reports whether every shard has recovered its state.
func (s *System) Ready() bool {
	select {
	case <-s.readyDone:
		return true
	default:
		return false
	}
}

// WaitReady blocks until every shard has recovered or ctx ends, and returns
// ctx's error in that case.
func (s *System) WaitReady(ctx context.Context) error {
	select {
	case <-s.readyDone:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("actors: wait for %d of %d shards to recover: %w",
			int64(len(s.readyFlags))-s.readyCount.Load(), len(s.readyFlags), ctx.Err())
	}
}

// Vote sends v to its shard and waits for the reply, at most until ctx's
// deadline (three times AppendTimeout when ctx has none). A timeout, a
// cancelled ctx, a full shard or a stopping system returns OutcomeOverloaded
// with a nil error: the vote may still be stored, and a retry with the same
// vote id then gets OutcomeDuplicate. The error is non-nil only for a shard
// out of range (ErrInvalidArgument) or a vote that no batch could store
// (ErrInvalidVote).
func (s *System) Vote(ctx context.Context, shard int, v Vote) (Ack, error) {
	overloaded := Ack{Outcome: OutcomeOverloaded}

	if shard < 0 || shard >= s.cfg.Shards {
		return Ack{}, fmt.Errorf("%w: shard %d is outside [0, %d)", ErrInvalidArgument, shard, s.cfg.Shards)
	}
	err := validateVote(v)
	if err != nil {
		return Ack{}, err
	}
	if s.stopping.Load() {
		return overloaded, nil
	}

	v.Options = slices.Clone(v.Options)
	admitted := &s.admitted[shard]
	defer admitted.Add(-1)
	if admitted.Add(1) > s.maxAdmitted {
		return overloaded, nil
	}

	pid := s.shardPID(shard)
	if pid == nil {
		return overloaded, nil
	}
	reply, err := s.request(ctx, pid, &voteRequest{vote: v, at: time.Now().UnixMilli()})
	ack, ok := reply.(Ack)
	if err != nil || !ok {
		s.forgetPID(shard, pid)
		return overloaded, nil
	}

	return ack, nil
}

// request sends message to pid and waits for the reply until ctx ends or its
// deadline (waitDefault without one) passes.
func (s *System) request(ctx context.Context, pid *actor.PID, message any) (any, error) {
	timeout := s.waitDefault
	deadline, ok := ctx.Deadline()
	if ok {
		timeout = time.Until(deadline)
	}
	if timeout <= 0 || ctx.Err() != nil {
		return nil, fmt.Errorf("%w: %s", ErrTimeout, pid.Id)
	}

	return s.ask(pid, message).wait(ctx, pid, timeout)
}

// validateVote applies the field rules of persistence.EncodeBatch, so that
// one bad vote can never make a whole batch fail.
func validateVote(v Vote) error {
	for _, field := range [...]struct{ name, value string }{
		{"vote_id", v.VoteID}, {"poll", v.Poll}, {"voter", v.Voter},
	} {
		err := validateField(field.name, field.value)
		if err != nil {
			return fmt.Errorf("%w: vote %q: %v", ErrInvalidVote, v.VoteID, err)
		}
	}

	if len(v.Options) == 0 || len(v.Options) > persistence.MaxOptionsPerVote {
		return fmt.Errorf("%w: vote %q: %d options; send 1 to %d", ErrInvalidVote, v.VoteID, len(v.Options), persistence.MaxOptionsPerVote)
	}
	for _, option := range v.Options {
		err := validateField("option", option)
		if err != nil {
			return fmt.Errorf("%w: vote %q: %v", ErrInvalidVote, v.VoteID, err)
		}
	}

	return nil
}

func validateField(name, value string) error {
	switch {
	case value == "":
		return fmt.Errorf("%s is empty", name)
	case len(value) > persistence.MaxFieldBytes:
		return fmt.Errorf("%s has %d bytes; the maximum is %d", name, len(value), persistence.MaxFieldBytes)
	case !utf8.ValidString(value):
		return fmt.Errorf("%s %q is not valid UTF-8", name, value)
	}

	return nil
}

// RegisterPoll sends a poll's event and option ids to the aggregator, so that
// its documents carry a zero count for every option. It loads the poll's
// stored document, so Results returns it and versions continue after a
// restart. For a closed poll it also marks the poll closed at every shard,
// without waiting. ClosePoll stores and returns its final document.
func (s *System) RegisterPoll(p PollInfo) {
	if p.ID == "" {
		s.log.Warn("ignoring the registration of a poll with an empty id", "event", p.Event)
		return
	}
	if s.stopping.Load() {
		return
	}

	p.Options = append([]string(nil), p.Options...)
	if s.clu != nil {
		s.clusterRegister(p)
		return
	}
	s.root.Send(s.aggregator, &registerPoll{info: p})

	if p.Closed {
		for _, pid := range s.shards {
			s.root.Send(pid, &closeRequest{poll: p.ID})
		}
	}
}

// ClosePoll closes poll at every shard and returns its final document. Each
// shard rejects the poll's later votes with OutcomePollClosed and replies once
// each queued and in-flight vote of the poll has its outcome, so every
// accepted vote is in the document. The aggregator stores the document (Final true),
// publishes it and returns it. Closing a closed poll returns the stored final
// document, or a new final version if the totals differ. The document's Event
// is empty unless the poll was registered. ClosePoll waits until
// ctx's deadline (three times AppendTimeout without one) and returns an error
// wrapping ErrTimeout when a shard does not reply in time. A retry is safe.
func (s *System) ClosePoll(ctx context.Context, poll string) (Results, error) {
	if poll == "" {
		return Results{}, fmt.Errorf("%w: empty poll id", ErrInvalidArgument)
	}
	if s.stopping.Load() {
		return Results{}, fmt.Errorf("%w: close poll %q", ErrStopped, poll)
	}

	totals, err := s.closeAtShards(ctx, poll)
	if err != nil {
		return Results{}, err
	}

	aggregator := s.aggregatorPID()
	if aggregator == nil {
		return Results{}, fmt.Errorf("%w: close poll %q: no cluster member could activate the aggregator; retry the close", ErrTimeout, poll)
	}
	reply, err := s.request(ctx, aggregator, &finalizeRequest{poll: poll, totals: totals})
	if s.clu != nil && err != nil {
		s.clu.aggPID.CompareAndSwap(aggregator, nil)
	}
	if err != nil {
		return Results{}, fmt.Errorf("actors: close poll %q: %w", poll, err)
	}

	final, ok := reply.(*finalizeReply)
	if !ok {
		return Results{}, fmt.Errorf("%w: close poll %q: unexpected reply %T", ErrTimeout, poll, reply)
	}
	if final.err != nil {
		return Results{}, final.err
	}

	doc := final.results
	doc.Counts = maps.Clone(doc.Counts)
	if s.clu != nil {
		// The closing member publishes the final document before it returns,
		// as in single-node mode; the others get it from the results watch.
		doc.Event = cmp.Or(doc.Event, s.pollEvent(poll))
		s.publishStored(doc)
	}

	return doc, nil
}

// closeAtShards sends the close barrier to every shard at once and collects
// each shard's totals of the poll.
func (s *System) closeAtShards(ctx context.Context, poll string) ([]pollTotals, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(s.waitDefault)
	}

	pids := make([]*actor.PID, s.cfg.Shards)
	replies := make([]*pendingReply, s.cfg.Shards)
	var firstErr error
	for i := range pids {
		pids[i] = s.shardPID(i)
		if pids[i] == nil {
			firstErr = cmp.Or(firstErr, fmt.Errorf("%w: close poll %q: no cluster member could activate %s; retry the close", ErrTimeout, poll, ShardName(i)))
			continue
		}
		replies[i] = s.ask(pids[i], &closeRequest{poll: poll})
	}

	totals := make([]pollTotals, 0, s.cfg.Shards)
	for i, pending := range replies {
		if pending == nil {
			continue
		}
		reply, err := pending.wait(ctx, pids[i], time.Until(deadline))
		closed, ok := reply.(*closeReply)
		switch {
		case err != nil:
			s.forgetPID(i, pids[i])
			firstErr = cmp.Or(firstErr, fmt.Errorf("actors: close poll %q: %w", poll, err))
		case !ok:
			firstErr = cmp.Or(firstErr, fmt.Errorf("%w: close poll %q: %s: unexpected reply %T", ErrTimeout, poll, ShardName(i), reply))
		case closed.err != nil:
			firstErr = cmp.Or(firstErr, fmt.Errorf("actors: close poll %q at %s: %w", poll, ShardName(i), closed.err))
		default:
			totals = append(totals, closed.totals)
		}
	}

	return totals, firstErr
}

// Results returns the latest document of poll held in memory: the last one
// published, or the stored one loaded by RegisterPoll.
func (s *System) Results(poll string) (Results, bool) {
	return s.results.get(poll)
}

// Stats returns the counters of every shard and their sums.
func (s *System) Stats() Stats {
	out := Stats{
		Shards:         make([]ShardStats, 0, len(s.stats)),
		TotalShards:    s.cfg.Shards,
		Rounds:         s.rounds.Load(),
		SlowShardSkips: s.slowSkips.Load(),
	}
	var local map[int]*actor.PID
	if s.clu != nil {
		out.ClusterMembers = s.ClusterMembers()
		local = s.localShards()
	}

	var batchedVotes uint64
	for i, st := range s.stats {
		if _, ok := local[i]; local != nil && !ok {
			continue
		}
		ss := st.snapshot(i)
		out.Shards = append(out.Shards, ss)
		out.VotesApplied += ss.VotesApplied
		out.QueueDepth += ss.QueueDepth
		out.InFlight += ss.InFlight
		out.Batches += ss.Batches
		out.AppendFailures += ss.AppendFailures
		batchedVotes += st.batchedVotes.Load()
	}
	if out.Batches > 0 {
		out.AvgBatch = float64(batchedVotes) / float64(out.Batches)
	}

	return out
}

// Stop stops the system gracefully: new votes get OutcomeOverloaded, the
// aggregator stops, and each shard replies OutcomeOverloaded to its queued
// votes, lets its append in flight finish, replies to its votes and saves a
// snapshot. Then every
// background task has ended and the actor system stops. When ctx ends first,
// Stop cancels the appends and snapshots still running, waits for them to
// return and reports ctx's error. Calling Stop again returns the first
// result.
func (s *System) Stop(ctx context.Context) error {
	s.stopMu.Lock()
	defer s.stopMu.Unlock()

	if s.stopped {
		return s.stopErr
	}
	s.stopping.Store(true)
	start := time.Now()
	s.log.Info("actors stopping")
	s.stopRecovery()

	var errs []error
	if s.clu != nil {
		errs = s.stopCluster(ctx)
	} else {
		s.flushResults()
		errs = append(errs, s.poison(ctx, s.aggregator))
		errs = append(errs, s.stopShards(ctx)...)

		errs = append(errs, s.tasks.closeAndWait(ctx, s.cancelBase))
		for _, pid := range s.shards {
			errs = append(errs, s.poison(ctx, pid))
		}
		s.actors.Shutdown()
	}
	s.cancelBase()

	s.stopped = true
	s.stopErr = errors.Join(errs...)
	if s.stopErr != nil {
		s.log.Warn("actors stopped with errors", "duration", time.Since(start), "error", s.stopErr)
	} else {
		s.log.Info("actors stopped", "duration", time.Since(start))
	}

	return s.stopErr
}

// stopShards sends the stop request to every shard at once and waits for
// each to reply to its votes and save its snapshot.
func (s *System) stopShards(ctx context.Context) []error {
	timeout := s.waitDefault + snapshotTimeout
	deadline, ok := ctx.Deadline()
	if ok {
		timeout = time.Until(deadline)
	} else {
		deadline = time.Now().Add(timeout)
	}

	replies := make([]*pendingReply, len(s.shards))
	for i, pid := range s.shards {
		replies[i] = ask(s.root, pid, &stopRequest{deadline: deadline})
	}

	var errs []error
	for i, pending := range replies {
		reply, err := pending.wait(ctx, s.shards[i], time.Until(deadline))
		stopped, ok := reply.(*stopReply)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("actors: stop: %w", err))
		case !ok:
			errs = append(errs, fmt.Errorf("%w: stop %s: unexpected reply %T", ErrTimeout, s.shards[i].Id, reply))
		case stopped.err != nil:
			errs = append(errs, fmt.Errorf("actors: stop: %w", stopped.err))
		}
	}

	return errs
}

// poison stops the actor at pid after the messages already in its mailbox
// and waits for it to stop.
func (s *System) poison(ctx context.Context, pid *actor.PID) error {
	_, err := watchAndPoison(s.root, pid).wait(ctx, pid, poisonTimeout)
	if err != nil {
		return fmt.Errorf("actors: stop actor: %w", err)
	}

	return nil
}

// taskGroup owns the goroutines that shards start for appends and snapshots.
// Once closed it starts no more, so Stop can wait for the last one.
type taskGroup struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// Go runs f in a new goroutine unless the group is closed, and reports
// whether it did.
func (g *taskGroup) Go(f func()) bool {
	g.mu.Lock()
	defer g.mu.Unlock()

	if g.closed {
		return false
	}
	g.wg.Go(f)

	return true
}

// closeAndWait closes the group and waits for its goroutines. When ctx ends
// first it calls cancel, which makes the goroutines return, waits for them
// all the same and reports ctx's error.
func (g *taskGroup) closeAndWait(ctx context.Context, cancel context.CancelFunc) error {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()

	done := make(chan struct{})
	go func() {
		g.wg.Wait()
		close(done)
	}()

	select {
	case <-done:
		return nil
	case <-ctx.Done():
		cancel()
		<-done
		return fmt.Errorf("actors: stop: cancelled appends and snapshots still running: %w", ctx.Err())
	}
}
