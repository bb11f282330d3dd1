package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/livevote/livevote/actors"
)

// Default limits of a Hub; a zero Config field takes these.
const (
	// DefaultVoteRate is the steady vote rate allowed per session, in votes per second.
	DefaultVoteRate = 5
	// DefaultVoteBurst is how many votes a session may send at once before DefaultVoteRate applies.
	DefaultVoteBurst = 20
	// DefaultMaxSessionsTracked bounds the per-session rate limiter's memory, in sessions.
	DefaultMaxSessionsTracked = 1_000_000
	// DefaultVoteTimeout bounds the wait for a shard's reply. A vote that exceeds it gets
	// overloaded, and a retry with the same vote id is safe.
	DefaultVoteTimeout = 10 * time.Second
)

// ErrDraining is returned by Hub methods that start new work once Drain has been called.
var ErrDraining = errors.New("hub: draining")

// Shards is the part of the actor system a Hub needs: it routes votes, closes polls
// and reads results. *actors.System implements it.
type Shards interface {
	Vote(ctx context.Context, shard int, v actors.Vote) (actors.Ack, error)
	RegisterPoll(p actors.PollInfo)
	ClosePoll(ctx context.Context, poll string) (actors.Results, error)
	Results(poll string) (actors.Results, bool)
}

// Config holds what a Hub is built from. Registry, Sessions, Ring and Shards are required.
type Config struct {
	Registry *Registry
	Sessions *Sessions
	Ring     *Ring
	Shards   Shards
	Metrics  *Metrics // nil records nothing
	Logger   *slog.Logger

	VoteRate           float64       // votes per second per session; zero = DefaultVoteRate
	VoteBurst          int           // zero = DefaultVoteBurst
	MaxSessionsTracked int           // zero = DefaultMaxSessionsTracked
	VoteTimeout        time.Duration // zero = DefaultVoteTimeout
}

// VoteRequest is one vote as a client sends it, over HTTP or WebSocket.
type VoteRequest struct {
	VoteID  string
	Poll    string
	Options []string
}

// VoteResult is the reply to an accepted or replayed vote. Rejections are *Error values.
type VoteResult struct {
	VoteID  string          `json:"vote_id"`
	Status  string          `json:"status"` // "accepted" or "duplicate"
	Receipt *actors.Receipt `json:"receipt,omitempty"`
}

// Hub ties sessions, events and polls, rate limits and the ring to the shard actors, and
// fans results and poll changes out to subscribed clients.
type Hub struct {
	registry *Registry
	sessions *Sessions
	ring     *Ring
	shards   Shards
	limiter  *RateLimiter
	metrics  *Metrics
	logger   *slog.Logger
	timeout  time.Duration
	draining atomic.Bool

	// overloadLog keeps a surge of overloaded votes to one log line a second.
	overloadLog logThrottle

	voteRate  float64
	voteBurst int

	// mu guards subscribers. Broadcasts hold it for reading only.
	mu          sync.RWMutex
	subscribers map[string]*eventSubscribers // by event id
}

// Subscriber receives pre-encoded frames for one event. Enqueue must not block: a
// subscriber whose queue is full drops itself (closing its socket) and returns false.
type Subscriber interface {
	Enqueue(frame []byte) bool
}

// Role is the kind of subscriber, which decides the results it receives. Audience
// subscribers get only the results of polls whose results are visible, and presenters
// get every poll's results.
type Role int

// Subscriber roles.
const (
	// RoleAudience is a voter's socket.
	RoleAudience Role = iota
	// RolePresenter is a socket that proved it holds the event's presenter token.
	RolePresenter
)

// String returns "audience" or "presenter".
func (r Role) String() string {
	if r == RolePresenter {
		return "presenter"
	}
	return "audience"
}

// eventSubscribers holds the sockets of one event by role.
type eventSubscribers struct {
	audience   map[Subscriber]struct{}
	presenters map[Subscriber]struct{}
}

func (e *eventSubscribers) set(role Role) map[Subscriber]struct{} {
	if role == RolePresenter {
		return e.presenters
	}
	return e.audience
}

// Presence is the number of subscribed sockets of one event, by role.
type Presence struct {
	EventID    string `json:"event"`
	Audience   int    `json:"audience"`
	Presenters int    `json:"presenters"`
}

// New builds a Hub and registers every stored poll with the shard actors.
func New(cfg Config) (*Hub, error) {
	if cfg.Registry == nil || cfg.Sessions == nil || cfg.Ring == nil || cfg.Shards == nil {
		return nil, errors.New("hub: Registry, Sessions, Ring and Shards are required")
	}
	rate, burst, maxKeys := cfg.VoteRate, cfg.VoteBurst, cfg.MaxSessionsTracked
	if rate == 0 {
		rate = DefaultVoteRate
	}
	if burst == 0 {
		burst = DefaultVoteBurst
	}
	if maxKeys == 0 {
		maxKeys = DefaultMaxSessionsTracked
	}
	timeout := cfg.VoteTimeout
	if timeout == 0 {
		timeout = DefaultVoteTimeout
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}

	h := &Hub{
		registry:    cfg.Registry,
		sessions:    cfg.Sessions,
		ring:        cfg.Ring,
		shards:      cfg.Shards,
		limiter:     NewRateLimiter(rate, burst, maxKeys),
		metrics:     cfg.Metrics,
		logger:      logger,
		timeout:     timeout,
		voteRate:    rate,
		voteBurst:   burst,
		subscribers: make(map[string]*eventSubscribers),
		overloadLog: logThrottle{interval: time.Second},
	}
	for _, p := range h.registry.Polls() {
		h.shards.RegisterPoll(pollInfo(p))
	}
	return h, nil
}

// Registry returns the events and polls the hub serves.
func (h *Hub) Registry() *Registry { return h.registry }

// Sessions returns the voter session signer.
func (h *Hub) Sessions() *Sessions { return h.sessions }

// Drain makes every later Vote return overloaded, so that shutdown can finish the votes
// already in flight without taking new ones.
func (h *Hub) Drain() { h.draining.Store(true) }

// Vote checks a vote, sends it to the shard that owns the voter and waits until the vote
// is durable or refused. Refusals are *Error values with a wire code.
func (h *Hub) Vote(ctx context.Context, sessionID string, req VoteRequest) (VoteResult, error) {
	start := time.Now()
	result, err := h.vote(ctx, sessionID, req)
	h.metrics.observeVote(result, err, time.Since(start))
	if e := AsError(err); e != nil && e.Code == CodeOverloaded {
		if ok, suppressed := h.overloadLog.allow(time.Now()); ok {
			h.logger.Warn("vote not acknowledged", "poll", req.Poll, "vote_id", req.VoteID, "error", e.Message, "similar_since_last", suppressed)
		}
	}
	return result, err
}

func (h *Hub) vote(ctx context.Context, sessionID string, req VoteRequest) (VoteResult, error) {
	if h.draining.Load() {
		return VoteResult{}, overloaded("the server is shutting down")
	}
	if _, err := uuid.Parse(req.VoteID); err != nil || len(req.VoteID) != 36 {
		return VoteResult{}, Errorf(CodeInvalidMessage, "vote_id %q is not a UUID: send a UUID such as crypto.randomUUID() and reuse it when you retry", truncate(req.VoteID, 64))
	}
	if ok, retry := h.limiter.Allow(sessionID, time.Now()); !ok {
		e := Errorf(CodeRateLimited, "too many votes from this session: at most %d at once and %g per second; retry in %s", h.voteBurst, h.voteRate, retry.Round(time.Millisecond))
		e.RetryAfter = retry
		return VoteResult{}, e
	}
	poll, err := h.registry.CheckVote(req.Poll, req.Options)
	if errors.Is(err, ErrPollClosed) {
		// A retry of a vote counted before the close must still learn that it counted,
		// so closed polls go to the shard, which answers duplicate or poll_closed and
		// never queues the vote.
		poll, err = h.registry.Poll(req.Poll)
	}
	if err != nil {
		return VoteResult{}, err
	}

	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	shard := h.ring.Shard(sessionID)
	ack, err := h.shards.Vote(ctx, shard, actors.Vote{
		VoteID:      req.VoteID,
		Poll:        poll.ID,
		Voter:       sessionID,
		Options:     req.Options,
		AllowChange: poll.AllowChange,
	})
	if err != nil {
		if ok, suppressed := h.overloadLog.allow(time.Now()); ok {
			h.logger.Error("shard vote failed", "shard", shard, "poll", poll.ID, "vote_id", req.VoteID, "error", err, "similar_since_last", suppressed)
		}
		return VoteResult{}, overloaded("shard %d did not answer", shard)
	}
	return ackResult(req, poll, ack)
}

func ackResult(req VoteRequest, poll Poll, ack actors.Ack) (VoteResult, error) {
	receipt := ack.Receipt
	switch ack.Outcome {
	case actors.OutcomeAccepted:
		return VoteResult{VoteID: req.VoteID, Status: "accepted", Receipt: &receipt}, nil
	case actors.OutcomeDuplicate:
		return VoteResult{VoteID: req.VoteID, Status: "duplicate", Receipt: &receipt}, nil
	case actors.OutcomeAlreadyVoted:
		return VoteResult{}, Errorf(CodeAlreadyVoted, "this session has already voted in poll %s and the poll does not allow changing a vote", poll.ID)
	case actors.OutcomePollClosed:
		return VoteResult{}, Errorf(CodePollClosed, "poll %s is closed", poll.ID)
	default:
		return VoteResult{}, overloaded("the vote could not be stored yet")
	}
}

// overloadedRetry is the Retry-After hint sent with overloaded answers.
const overloadedRetry = time.Second

func overloaded(format string, args ...any) *Error {
	e := Errorf(CodeOverloaded, format+"; retry with the same vote_id", args...)
	e.RetryAfter = overloadedRetry
	return e
}

// CreatePoll creates a draft poll in an event and notifies subscribers.
func (h *Hub) CreatePoll(ctx context.Context, eventID string, p NewPoll) (Poll, error) {
	poll, err := h.registry.CreatePoll(ctx, eventID, p)
	if err != nil {
		return Poll{}, err
	}
	h.shards.RegisterPoll(pollInfo(poll))
	h.broadcastPoll(poll)
	h.logger.Info("poll created", "event", eventID, "poll", poll.ID, "options", len(poll.Options))
	return poll, nil
}

// OpenPoll opens a poll for votes and notifies subscribers.
func (h *Hub) OpenPoll(ctx context.Context, pollID string) (Poll, error) {
	poll, err := h.registry.OpenPoll(ctx, pollID)
	if err != nil {
		return Poll{}, err
	}
	h.broadcastPoll(poll)
	h.logger.Info("poll opened", "event", poll.Event, "poll", poll.ID)
	return poll, nil
}

// ClosePoll closes a poll: the registry refuses new votes at once, every shard finishes
// the votes it holds for the poll, and the final results document goes out before this
// returns.
func (h *Hub) ClosePoll(ctx context.Context, pollID string) (Poll, error) {
	poll, err := h.registry.ClosePoll(ctx, pollID)
	if err != nil {
		return Poll{}, err
	}
	h.shards.RegisterPoll(pollInfo(poll))
	h.broadcastPoll(poll)
	if _, err := h.shards.ClosePoll(ctx, poll.ID); err != nil {
		h.logger.Error("close barrier failed", "poll", poll.ID, "error", err)
		e := Errorf(CodeOverloaded, "poll %s is closed but its final results are not ready; send the close again", poll.ID)
		e.RetryAfter = overloadedRetry
		return Poll{}, e
	}
	h.logger.Info("poll closed", "event", poll.Event, "poll", poll.ID)
	return poll, nil
}

// ApplyCatalogChange applies a catalog value that another hub stored, as
// persistence.Store.WatchCatalog delivers it, and then does what the hub does
// for the same change made here. For a new poll it registers the poll with
// the shard actors and sends the poll frame to the event's sockets. For a
// changed poll it sends the poll frame, registers a newly closed poll so that
// the shards reject its later votes, and sends the latest results document to
// the audience when the results became visible. An event needs no frame,
// because no socket can subscribe to an event before this hub has it.
//
// A revision that is not newer than the one the registry holds for key, such
// as the watched copy of this hub's own write, changes nothing and sends
// nothing. A value that the registry cannot use, such as undecodable JSON or
// a poll of an unknown event, is logged with the key and skipped. Keys
// outside "event." and "poll." are ignored. Calls must come one at a time in
// revision order, as WatchCatalog makes them.
//
// NOTE: a poll closed through the catalog gets no close barrier here, so
// this hub does not store a final results document. The hub that closed the
// poll runs the barrier at its own shards.
func (h *Hub) ApplyCatalogChange(key string, value []byte, revision uint64) {
	change, err := h.registry.applyCatalogChange(key, value, revision)
	if err != nil {
		h.logger.Error("catalog change skipped", "key", key, "revision", revision, "error", err)
		return
	}

	poll := change.poll
	switch change.kind {
	case changeNone:
		return
	case changeEvent:
		h.logger.Debug("event applied from catalog", "key", key, "revision", revision)
		return
	case changePollCreated:
		h.shards.RegisterPoll(pollInfo(poll))
		h.broadcastPoll(poll)
	case changePollChanged:
		previous := change.previous
		if poll.State == PollClosed && previous.State != PollClosed {
			h.shards.RegisterPoll(pollInfo(poll))
		}
		h.broadcastPoll(poll)
		if poll.ResultsVisible && !previous.ResultsVisible {
			h.revealLatest(poll)
		}
	}

	h.logger.Debug("poll applied from catalog", "event", poll.Event, "poll", poll.ID, "state", poll.State,
		"results_visible", poll.ResultsVisible, "revision", revision)
}

// Results returns the latest results document of a poll. A poll with no votes yet gets
// a document with zero counts and version 0.
func (h *Hub) Results(pollID string) (actors.Results, error) {
	poll, err := h.registry.Poll(pollID)
	if err != nil {
		return actors.Results{}, err
	}
	if doc, ok := h.shards.Results(pollID); ok {
		return doc, nil
	}
	return emptyResults(poll), nil
}

// EventResults returns the latest document of every poll in an event that role may
// see, in poll order: presenters get every poll, the audience only polls whose
// results are visible.
func (h *Hub) EventResults(ev Event, role Role) []actors.Results {
	docs := make([]actors.Results, 0, len(ev.Polls))
	for _, p := range ev.Polls {
		if role != RolePresenter && !p.ResultsVisible {
			continue
		}
		if doc, ok := h.shards.Results(p.ID); ok {
			docs = append(docs, doc)
		} else {
			docs = append(docs, emptyResults(p))
		}
	}
	return docs
}

func emptyResults(p Poll) actors.Results {
	counts := make(map[string]int64, len(p.Options))
	for _, o := range p.Options {
		counts[o.ID] = 0
	}
	return actors.Results{Poll: p.ID, Event: p.Event, Counts: counts, Final: p.State == PollClosed, UpdatedAt: p.CreatedAt}
}

// Subscribe adds s to the fan-out of an event in role and returns the function
// that removes it.
func (h *Hub) Subscribe(eventID string, s Subscriber, role Role) (unsubscribe func()) {
	h.mu.Lock()
	subs := h.subscribers[eventID]
	if subs == nil {
		subs = &eventSubscribers{audience: make(map[Subscriber]struct{}), presenters: make(map[Subscriber]struct{})}
		h.subscribers[eventID] = subs
	}
	subs.set(role)[s] = struct{}{}
	h.mu.Unlock()

	return func() {
		h.mu.Lock()
		delete(subs.set(role), s)
		if len(subs.audience) == 0 && len(subs.presenters) == 0 && h.subscribers[eventID] == subs {
			delete(h.subscribers, eventID)
		}
		h.mu.Unlock()
	}
}

// Presence returns the subscribed sockets of one event by role.
func (h *Hub) Presence(eventID string) Presence {
	h.mu.RLock()
	defer h.mu.RUnlock()

	p := Presence{EventID: eventID}
	if subs := h.subscribers[eventID]; subs != nil {
		p.Audience, p.Presenters = len(subs.audience), len(subs.presenters)
	}
	return p
}

// AllPresence returns the presence of every event that has a subscribed socket, in
// no particular order.
func (h *Hub) AllPresence() []Presence {
	h.mu.RLock()
	defer h.mu.RUnlock()

	out := make([]Presence, 0, len(h.subscribers))
	for id, subs := range h.subscribers {
		out = append(out, Presence{EventID: id, Audience: len(subs.audience), Presenters: len(subs.presenters)})
	}
	return out
}

// Publish fans a results document out to the subscribers of its event. The
// aggregator calls it; the frame is encoded once for all sockets. While the poll's
// results are hidden, only presenters get it.
func (h *Hub) Publish(doc actors.Results) {
	frame, err := EncodeResultsFrame(doc)
	if err != nil {
		h.logger.Error("encode results failed", "poll", doc.Poll, "error", err)
		return
	}
	h.broadcast(doc.Event, frame, h.registry.ResultsVisible(doc.Poll))
}

// ShowResults shows (visible true) or hides a poll's results from the audience and
// sends every subscriber of the event the poll's new state. Once results are shown,
// the latest document goes to the audience at once. While they are hidden, audience
// sockets get no results document of the poll.
func (h *Hub) ShowResults(ctx context.Context, pollID string, visible bool) (Poll, error) {
	poll, err := h.registry.SetResultsVisible(ctx, pollID, visible)
	if err != nil {
		return Poll{}, err
	}
	h.broadcastPoll(poll)
	if visible {
		h.revealLatest(poll)
	}
	h.logger.Info("poll results visibility changed", "event", poll.Event, "poll", poll.ID, "results_visible", visible)
	return poll, nil
}

// revealLatest sends the poll's latest document to the audience, who did not get it
// while the results were hidden. Clients drop it if they already hold its version.
func (h *Hub) revealLatest(poll Poll) {
	doc, ok := h.shards.Results(poll.ID)
	if !ok {
		doc = emptyResults(poll)
	}
	frame, err := EncodeResultsFrame(doc)
	if err != nil {
		h.logger.Error("encode results failed", "poll", poll.ID, "error", err)
		return
	}
	h.broadcastTo(poll.Event, frame, RoleAudience)
}

func (h *Hub) broadcastPoll(p Poll) {
	frame, err := json.Marshal(struct {
		Type string `json:"type"`
		Poll Poll   `json:"poll"`
	}{"poll", p})
	if err != nil {
		h.logger.Error("encode poll failed", "poll", p.ID, "error", err)
		return
	}
	h.broadcast(p.Event, frame, true)
}

// broadcast hands frame to every presenter of the event and, when toAudience is
// true, to every audience socket, without blocking on any of them.
func (h *Hub) broadcast(eventID string, frame []byte, toAudience bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()

	subs := h.subscribers[eventID]
	if subs == nil {
		return
	}
	sent, dropped := enqueueAll(subs.presenters, frame)
	if toAudience {
		n, d := enqueueAll(subs.audience, frame)
		sent, dropped = sent+n, dropped+d
	}
	h.metrics.observeBroadcast(sent, dropped)
}

// broadcastTo hands frame to the subscribers of the event in one role.
func (h *Hub) broadcastTo(eventID string, frame []byte, role Role) {
	h.mu.RLock()
	defer h.mu.RUnlock()

	subs := h.subscribers[eventID]
	if subs == nil {
		return
	}
	sent, dropped := enqueueAll(subs.set(role), frame)
	h.metrics.observeBroadcast(sent, dropped)
}

func enqueueAll(set map[Subscriber]struct{}, frame []byte) (sent, dropped int) {
	for s := range set {
		if !s.Enqueue(frame) {
			dropped++
		}
	}
	return len(set), dropped
}

// ShardStats returns the counters of every shard when the shard actors report
// them (as *actors.System does), and false otherwise.
func (h *Hub) ShardStats() (actors.Stats, bool) {
	reporter, ok := h.shards.(interface{ Stats() actors.Stats })
	if !ok {
		return actors.Stats{}, false
	}
	return reporter.Stats(), true
}

// Ring returns the consistent-hash ring that maps voters to shards.
func (h *Hub) Ring() *Ring { return h.ring }

// EncodeResultsFrame encodes a results document as the WebSocket "results" message.
func EncodeResultsFrame(doc actors.Results) ([]byte, error) {
	body, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("hub: encode results of poll %s: %w", doc.Poll, err)
	}
	frame := make([]byte, 0, len(body)+17)
	frame = append(frame, `{"type":"results",`...)
	frame = append(frame, body[1:]...)
	return frame, nil
}

func pollInfo(p Poll) actors.PollInfo {
	ids := make([]string, len(p.Options))
	for i, o := range p.Options {
		ids[i] = o.ID
	}
	return actors.PollInfo{ID: p.ID, Event: p.Event, Options: ids, Closed: p.State == PollClosed}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
