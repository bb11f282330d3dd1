package actors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/livevote/livevote/persistence"
)

// aggregatorConfig is the configuration of the aggregator actor. It outlives
// any one incarnation of the actor.
type aggregatorConfig struct {
	store        *persistence.Store
	logger       *slog.Logger
	shardCount   int
	gather       func(timeout time.Duration) *roundResult // the totals of every shard
	polls        func() []PollInfo                        // cluster mode: the polls to publish, read each round
	interval     time.Duration
	roundTimeout time.Duration // how long a round waits for shard totals
	ioTimeout    time.Duration // bounds one GetResults or PutResults
	publish      func(Results)
	cache        *resultsCache
	rounds       *atomic.Uint64
	slowSkips    *atomic.Uint64
	baseCtx      context.Context
	// kick starts a round at once, without waiting for the interval. It has room
	// for one request; more while one waits are dropped.
	kick chan struct{}
	// superseded, in cluster mode, drops a cached shard activation whose
	// totals carry a lower fence than totals seen before.
	superseded func(shard int, from *actor.PID)
}

// finalizeAttempts is how many final documents onFinalize builds when
// another writer keeps storing newer documents of the poll.
const finalizeAttempts = 3

// aggPoll is the aggregator's record of one poll.
type aggPoll struct {
	info       PollInfo
	registered bool
	loaded     bool     // the stored document was read, or none exists
	doc        *Results // latest stored document, nil before the first
}

func (p *aggPoll) final() bool {
	return p.doc != nil && p.doc.Final
}

// aggregator is the actor that merges shard totals into results documents.
// Its ticker goroutine gathers the totals and posts each round to it.
type aggregator struct {
	cfg    *aggregatorConfig
	log    *slog.Logger
	polls  map[string]*aggPoll
	latest []map[string]pollTotals // per shard, nil until its first ready reply
	fences []uint64                // per shard, the fence of the reply in latest

	tickerStop chan struct{}
	tickerDone chan struct{}
}

func newAggregator(cfg *aggregatorConfig) *aggregator {
	return &aggregator{
		cfg:    cfg,
		log:    cfg.logger.With("actor", aggregatorName),
		polls:  make(map[string]*aggPoll),
		latest: make([]map[string]pollTotals, cfg.shardCount),
		fences: make([]uint64, cfg.shardCount),
	}
}

// Receive handles one message.
func (a *aggregator) Receive(ctx actor.Context) {
	a.handle(ctx, ctx.Message())
}

func (a *aggregator) handle(ctx actor.Context, message any) {
	switch msg := message.(type) {
	case *actor.Started:
		a.startTicker(ctx)
	case *actor.Stopping, *actor.Restarting:
		a.stopTicker()
	case *anypb.Any:
		decoded, err := fromWire(msg)
		if err != nil {
			a.log.Warn("dropping an undecodable message", "sender", ctx.Sender(), "error", err)
			return
		}
		a.handle(ctx, decoded)
	case *registerPoll:
		a.onRegister(msg)
	case *roundResult:
		a.syncPolls()
		a.onRound(msg)
	case *finalizeRequest:
		reply := a.onFinalize(msg)
		sender := ctx.Sender()
		if sender != nil && sender.Address != ctx.Self().Address {
			ctx.Respond(toWire(reply))
			return
		}
		ctx.Respond(reply)
	}
}

// syncPolls registers the polls in this cluster member's list. In cluster
// mode hubs do not send registerPoll to the aggregator grain.
func (a *aggregator) syncPolls() {
	if a.cfg.polls == nil {
		return
	}
	for _, info := range a.cfg.polls() {
		p := a.polls[info.ID]
		if p != nil && p.registered && p.info.Event == info.Event && p.info.Closed == info.Closed &&
			slices.Equal(p.info.Options, info.Options) {
			continue
		}
		a.onRegister(&registerPoll{info: info})
	}
}

// startTicker starts the goroutine that gathers totals every interval. The
// aggregator owns it: stopTicker ends it and waits for it.
func (a *aggregator) startTicker(ctx actor.Context) {
	stop, done := make(chan struct{}), make(chan struct{})
	a.tickerStop, a.tickerDone = stop, done
	root, self, cfg := ctx.ActorSystem().Root, ctx.Self(), a.cfg

	go func() {
		defer close(done)
		runTicker(root, self, cfg, stop)
	}()
}

func (a *aggregator) stopTicker() {
	if a.tickerStop == nil {
		return
	}

	close(a.tickerStop)
	<-a.tickerDone
	a.tickerStop, a.tickerDone = nil, nil
}

// runTicker requests the totals of every shard each interval and posts the round
// to the aggregator, until stop is closed. It touches no aggregator state.
func runTicker(root *actor.RootContext, self *actor.PID, cfg *aggregatorConfig, stop <-chan struct{}) {
	ticker := time.NewTicker(cfg.interval)
	defer ticker.Stop()

	for {
		select {
		case <-stop:
			return
		case <-ticker.C:
		case <-cfg.kick:
		}

		round := cfg.gather(cfg.roundTimeout)

		select {
		case <-stop:
			return
		default:
			root.Send(self, round)
		}
	}
}

// gatherTotals requests the totals of every shard at once and waits at most
// timeout in all.
// A shard that does not reply in time is listed in skipped.
func (s *System) gatherTotals(timeout time.Duration) *roundResult {
	deadline := time.Now().Add(timeout)
	pids := make([]*actor.PID, s.cfg.Shards)
	replies := make([]*pendingReply, s.cfg.Shards)
	for i := range pids {
		pids[i] = s.shardPID(i)
		if pids[i] != nil {
			replies[i] = s.ask(pids[i], &totalsRequest{})
		}
	}

	round := &roundResult{}
	for i, pending := range replies {
		if pending == nil {
			round.skipped = append(round.skipped, i)
			continue
		}
		reply, err := pending.wait(context.Background(), pids[i], time.Until(deadline))
		totals, ok := reply.(*totalsReply)
		if err != nil || !ok {
			s.forgetPID(i, pids[i])
			round.skipped = append(round.skipped, i)
			continue
		}
		answer := *totals
		answer.from = pids[i]
		round.replies = append(round.replies, answer)
	}

	return round
}

func (a *aggregator) poll(id string) *aggPoll {
	p := a.polls[id]
	if p == nil {
		p = &aggPoll{info: PollInfo{ID: id}}
		a.polls[id] = p
	}

	return p
}

func (a *aggregator) onRegister(msg *registerPoll) {
	p := a.poll(msg.info.ID)
	closed := p.info.Closed || msg.info.Closed
	p.info = msg.info
	p.info.Closed = closed
	p.registered = true

	if p.doc != nil && p.doc.Event != p.info.Event {
		doc := *p.doc
		doc.Event = p.info.Event
		p.doc = &doc
		a.cfg.cache.setEvent(doc.Poll, doc.Event)
	}

	err := a.ensureLoaded(p)
	if err != nil {
		a.log.Warn("loading stored results failed; the poll's documents wait for it", "poll", p.info.ID, "error", err)
		return
	}

	// A round that ran before this registration skipped the poll, as when
	// the round after a restart's recovery comes first. Votes it counted
	// need not wait for the next round, which may be an interval away.
	if a.allReported() && !p.final() {
		t := mergeTotals(a.latest)[p.info.ID]
		if t.TotalVotes > 0 {
			a.publishPoll(p, t)
		}
	}
}

// allReported reports whether every shard has sent totals at least once.
func (a *aggregator) allReported() bool {
	for _, polls := range a.latest {
		if polls == nil {
			return false
		}
	}

	return true
}

// publishPoll stores and publishes the document of p for totals t when they
// changed, and logs a failure; the next round tries again.
func (a *aggregator) publishPoll(p *aggPoll, t pollTotals) {
	err := a.publishIfChanged(p, t)
	if errors.Is(err, persistence.ErrStaleResults) {
		a.log.Info("results of another writer are newer; the next document continues from them",
			"poll", p.info.ID, "error", err)
		return
	}
	if err != nil {
		a.log.Warn("results not published; retrying next round", "poll", p.info.ID, "error", err)
	}
}

// ensureLoaded reads the poll's stored document once, so that versions
// continue after a restart. An unreadable document is logged and skipped,
// and versions then start again at 1.
func (a *aggregator) ensureLoaded(p *aggPoll) error {
	if p.loaded {
		return nil
	}

	ctx, cancel := context.WithTimeout(a.cfg.baseCtx, a.cfg.ioTimeout)
	defer cancel()

	data, err := a.cfg.store.GetResults(ctx, p.info.ID)
	if errors.Is(err, persistence.ErrNotFound) {
		p.loaded = true
		return nil
	}
	if err != nil {
		return fmt.Errorf("actors: load results of poll %q: %w", p.info.ID, err)
	}

	var doc Results
	err = json.Unmarshal(data, &doc)
	if err != nil {
		a.log.Error("stored results unreadable; versions start again at 1", "poll", p.info.ID, "error", err)
		p.loaded = true
		return nil
	}

	doc.Poll = p.info.ID
	doc.Event = p.info.Event
	p.doc = &doc
	p.loaded = true
	a.cfg.cache.put(doc)

	return nil
}

// onRound keeps each ready shard's totals, merges the latest totals of every
// shard and stores a document for each registered poll whose totals changed.
// A shard that missed the round contributes its previous totals, so counts
// never step back. Nothing is published until every shard has reported once.
func (a *aggregator) onRound(round *roundResult) {
	a.cfg.rounds.Add(1)
	if len(round.skipped) > 0 {
		a.cfg.slowSkips.Add(uint64(len(round.skipped)))
		a.log.Warn("shards missed the results round; their previous totals are used", "shards", round.skipped,
			"timeout", a.cfg.roundTimeout)
	}

	for _, reply := range round.replies {
		if reply.ready && reply.fence >= a.fences[reply.shard] {
			a.latest[reply.shard] = reply.polls
			a.fences[reply.shard] = reply.fence
			continue
		}
		if reply.ready && a.cfg.superseded != nil {
			// A lower fence comes from an activation that a newer one
			// replaced. It has not found out yet, and would reply to every
			// round with totals that are ignored, so the next round looks
			// the shard up again.
			a.cfg.superseded(reply.shard, reply.from)
		}
	}
	if !a.allReported() {
		return
	}

	merged := mergeTotals(a.latest)
	for id, p := range a.polls {
		if !p.registered || p.final() {
			continue
		}
		a.publishPoll(p, merged[id])
	}
}

// mergeTotals sums the totals of every shard per poll.
func mergeTotals(perShard []map[string]pollTotals) map[string]pollTotals {
	merged := make(map[string]pollTotals)
	for _, polls := range perShard {
		for id, t := range polls {
			merged[id] = addTotals(merged[id], t)
		}
	}

	return merged
}

func addTotals(sum, t pollTotals) pollTotals {
	if sum.Counts == nil {
		sum.Counts = make(map[string]int64, len(t.Counts))
	}
	for option, n := range t.Counts {
		sum.Counts[option] += n
	}
	sum.TotalVotes += t.TotalVotes
	sum.Voters += t.Voters
	sum.Closed = sum.Closed || t.Closed

	return sum
}

func (a *aggregator) publishIfChanged(p *aggPoll, t pollTotals) error {
	err := a.ensureLoaded(p)
	if err != nil {
		return err
	}

	doc := a.build(p, t, false)
	if p.doc != nil && sameTotals(*p.doc, doc) {
		return nil
	}

	return a.store(p, doc)
}

// build makes the next document of p from merged totals, with a zero count
// for every registered option and the version after the latest one.
func (a *aggregator) build(p *aggPoll, t pollTotals, final bool) Results {
	counts := make(map[string]int64, len(p.info.Options)+len(t.Counts))
	for _, option := range p.info.Options {
		counts[option] = 0
	}
	for option, n := range t.Counts {
		counts[option] += n
	}

	version := uint64(1)
	if p.doc != nil {
		version = p.doc.Version + 1
	}

	return Results{
		Poll:       p.info.ID,
		Event:      p.info.Event,
		Counts:     counts,
		TotalVotes: t.TotalVotes,
		Voters:     t.Voters,
		Version:    version,
		Final:      final,
		UpdatedAt:  time.Now().UTC(),
	}
}

func sameTotals(a, b Results) bool {
	return a.TotalVotes == b.TotalVotes && a.Voters == b.Voters && maps.Equal(a.Counts, b.Counts)
}

// store writes doc with PutResults and, only once it is stored, makes it the
// poll's latest document and publishes it. A failed write publishes nothing,
// so a version that clients saw is always stored. When the store holds a
// newer document, written by another aggregator, store adopts that one and
// returns an error wrapping persistence.ErrStaleResults, so the next
// document continues from the stored version.
func (a *aggregator) store(p *aggPoll, doc Results) error {
	data, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("actors: encode results of poll %q: %w", doc.Poll, err)
	}

	ctx, cancel := context.WithTimeout(a.cfg.baseCtx, a.cfg.ioTimeout)
	defer cancel()

	err = a.cfg.store.PutResults(ctx, doc.Poll, data)
	if errors.Is(err, persistence.ErrStaleResults) {
		adoptErr := a.adoptStored(ctx, p)
		return errors.Join(fmt.Errorf("actors: store results of poll %q version %d: %w", doc.Poll, doc.Version, err), adoptErr)
	}
	if err != nil {
		return fmt.Errorf("actors: store results of poll %q version %d: %w", doc.Poll, doc.Version, err)
	}

	a.accept(p, doc)

	return nil
}

// adoptStored reads the stored document of p and makes it the poll's latest
// document when it replaces the one the aggregator holds.
func (a *aggregator) adoptStored(ctx context.Context, p *aggPoll) error {
	data, err := a.cfg.store.GetResults(ctx, p.info.ID)
	if err != nil {
		return fmt.Errorf("actors: read newer results of poll %q: %w", p.info.ID, err)
	}

	var doc Results
	err = json.Unmarshal(data, &doc)
	if err != nil {
		return fmt.Errorf("actors: decode newer results of poll %q: %w", p.info.ID, err)
	}
	doc.Poll = p.info.ID
	doc.Event = p.info.Event

	if p.doc == nil || resultsVersion(doc).Replaces(resultsVersion(*p.doc)) {
		a.log.Info("results stored by another writer adopted", "poll", doc.Poll, "version", doc.Version,
			"final", doc.Final)
		a.accept(p, doc)
	}

	return nil
}

// accept makes doc, which is stored, the poll's latest document and
// publishes it.
func (a *aggregator) accept(p *aggPoll, doc Results) {
	p.doc = &doc
	a.cfg.cache.put(doc)
	if a.cfg.publish != nil {
		a.cfg.publish(doc)
	}
}

func resultsVersion(doc Results) persistence.ResultsVersion {
	return persistence.ResultsVersion{Version: doc.Version, Final: doc.Final}
}

// onFinalize stores and publishes the final document of a poll from the
// barrier totals of every shard. A poll that already has a final document
// with the same totals keeps it. When another writer stored a newer document
// meanwhile, onFinalize builds on it, at most finalizeAttempts times.
func (a *aggregator) onFinalize(req *finalizeRequest) *finalizeReply {
	p := a.poll(req.poll)
	p.info.Closed = true

	err := a.ensureLoaded(p)
	if err != nil {
		return &finalizeReply{err: err}
	}

	var sum pollTotals
	for _, t := range req.totals {
		sum = addTotals(sum, t)
	}

	for range finalizeAttempts {
		doc := a.build(p, sum, true)
		if p.final() && sameTotals(*p.doc, doc) {
			return &finalizeReply{results: *p.doc}
		}

		err = a.store(p, doc)
		if errors.Is(err, persistence.ErrStaleResults) {
			continue
		}
		if err != nil {
			return &finalizeReply{err: err}
		}

		a.log.Info("poll closed; final results stored", "poll", doc.Poll, "version", doc.Version,
			"voters", doc.Voters, "total_votes", doc.TotalVotes)
		return &finalizeReply{results: doc}
	}

	return &finalizeReply{err: err}
}

// resultsCache holds the latest document of every poll for Results. The
// aggregator replaces documents and never modifies one it has stored.
type resultsCache struct {
	mu   sync.RWMutex
	docs map[string]Results
}

func newResultsCache() *resultsCache {
	return &resultsCache{docs: make(map[string]Results)}
}

// put keeps doc when the poll has no document yet or when doc replaces the
// cached one by persistence.ResultsVersion.Replaces, and reports whether it
// did. So the cache never goes back to an older or non-final document, even
// when a restarted aggregator has not yet read the stored one.
func (c *resultsCache) put(doc Results) bool {
	c.mu.Lock()
	defer c.mu.Unlock()

	current, ok := c.docs[doc.Poll]
	if ok && !resultsVersion(doc).Replaces(resultsVersion(current)) {
		return false
	}
	c.docs[doc.Poll] = doc

	return true
}

// setEvent changes the event of the poll's cached document, which keeps its
// version.
func (c *resultsCache) setEvent(poll, event string) {
	c.mu.Lock()
	defer c.mu.Unlock()

	doc, ok := c.docs[poll]
	if ok {
		doc.Event = event
		c.docs[poll] = doc
	}
}

// get returns a copy of the document, so callers may modify its counts.
func (c *resultsCache) get(poll string) (Results, bool) {
	c.mu.RLock()
	doc, ok := c.docs[poll]
	c.mu.RUnlock()

	doc.Counts = maps.Clone(doc.Counts)

	return doc, ok
}
