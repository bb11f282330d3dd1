package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/livevote/livevote/actors"
	"github.com/livevote/livevote/persistence"
)

// clusterWait bounds every wait for a change to reach another hub.
const clusterWait = 10 * time.Second

// markerKey is a catalog key outside "event." and "poll.", which the
// registry ignores. Tests put it to learn when a hub's watch has passed a
// point in the catalog.
const markerKey = "test.marker"

// openClusterStore opens a Store on an embedded NATS server in a temporary
// directory and closes it when the test ends, after the hubs built on it.
func openClusterStore(t *testing.T) *persistence.Store {
	t.Helper()

	store, err := persistence.Open(t.Context(), persistence.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatalf("persistence.Open: %v", err)
	}
	t.Cleanup(func() {
		err := store.Close()
		if err != nil {
			t.Errorf("close store: %v", err)
		}
	})

	return store
}

// logBuffer is an io.Writer for a slog handler that tests read back.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()

	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()

	return b.buf.String()
}

// clusterNode is one hub of a test cluster: its registry loaded from the
// shared store, its own shard actors and a catalog watch that feeds
// ApplyCatalogChange.
type clusterNode struct {
	name  string
	store *persistence.Store
	hub   *Hub
	logs  *logBuffer

	// applied is the highest revision the watch passed to the hub.
	applied atomic.Uint64
	// appliedChanged receives a token after each watched entry, without
	// blocking.
	appliedChanged chan struct{}
}

// startClusterNode builds a hub on store with two shards and stops its
// actors when the test ends. Its watch starts with startWatch.
func startClusterNode(t *testing.T, name string, store *persistence.Store) *clusterNode {
	t.Helper()

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	n := &clusterNode{name: name, store: store, logs: &logBuffer{}, appliedChanged: make(chan struct{}, 1)}
	logger := slog.New(slog.NewTextHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelWarn}))

	ring, err := store.LoadOrCreateRing(ctx, 2)
	if err != nil {
		t.Fatalf("%s: ring: %v", name, err)
	}
	hashRing, err := NewRing(ring.Salt, ring.Shards)
	if err != nil {
		t.Fatalf("%s: hash ring: %v", name, err)
	}
	sessions, err := NewSessions(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatalf("%s: sessions: %v", name, err)
	}

	registry := NewRegistry(store, logger)
	err = registry.Load(ctx)
	if err != nil {
		t.Fatalf("%s: load registry: %v", name, err)
	}

	// Proto.Actor logs from its own goroutines after a test returns, so the
	// actors get no logger of the test.
	var publishTo atomic.Pointer[Hub]
	shards, err := actors.Start(ctx, actors.Config{
		Shards:            ring.Shards,
		Store:             store,
		BroadcastInterval: 50 * time.Millisecond,
		Publish: func(doc actors.Results) {
			if h := publishTo.Load(); h != nil {
				h.Publish(doc)
			}
		},
	})
	if err != nil {
		t.Fatalf("%s: start actors: %v", name, err)
	}
	t.Cleanup(func() {
		stopCtx, stopCancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer stopCancel()

		err := shards.Stop(stopCtx)
		if err != nil {
			t.Errorf("%s: stop actors: %v", name, err)
		}
	})
	err = shards.WaitReady(ctx)
	if err != nil {
		t.Fatalf("%s: shards not ready: %v", name, err)
	}

	n.hub, err = New(Config{Registry: registry, Sessions: sessions, Ring: hashRing, Shards: shards, Logger: logger})
	if err != nil {
		t.Fatalf("%s: hub: %v", name, err)
	}
	publishTo.Store(n.hub)

	return n
}

// openPoll creates an event titled title on the node's hub, with one poll
// of colorPoll, and opens the poll.
func (n *clusterNode) openPoll(t *testing.T, title string) (Event, Poll) {
	t.Helper()

	event, _, err := n.hub.Registry().CreateEvent(t.Context(), title)
	if err != nil {
		t.Fatalf("CreateEvent on %s: %v", n.name, err)
	}
	poll, err := n.hub.CreatePoll(t.Context(), event.ID, colorPoll())
	if err != nil {
		t.Fatalf("CreatePoll on %s: %v", n.name, err)
	}
	poll, err = n.hub.OpenPoll(t.Context(), poll.ID)
	if err != nil {
		t.Fatalf("OpenPoll on %s: %v", n.name, err)
	}

	return event, poll
}

// startWatch runs the store's catalog watch into the node's hub until the
// test ends.
func (n *clusterNode) startWatch(t *testing.T) {
	t.Helper()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- n.store.WatchCatalog(ctx, func(key string, value []byte, revision uint64) {
			n.hub.ApplyCatalogChange(key, value, revision)
			n.applied.Store(revision)

			select {
			case n.appliedChanged <- struct{}{}:
			default:
			}
		})
	}()

	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: WatchCatalog: %v", n.name, err)
			}
		case <-time.After(clusterWait):
			t.Errorf("%s: WatchCatalog did not return %s after its context ended", n.name, clusterWait)
		}
	})
}

// waitApplied waits until the node's watch has applied revision.
func (n *clusterNode) waitApplied(t *testing.T, revision uint64) {
	t.Helper()

	deadline := time.NewTimer(clusterWait)
	defer deadline.Stop()

	for n.applied.Load() < revision {
		select {
		case <-n.appliedChanged:
		case <-deadline.C:
			t.Fatalf("%s: watch at revision %d after %s, want %d", n.name, n.applied.Load(), clusterWait, revision)
		}
	}
}

// syncWatches puts markerKey and waits until every node's watch has passed
// it. Because a watch applies entries in revision order, every earlier put
// has been applied by then.
func syncWatches(t *testing.T, store *persistence.Store, nodes ...*clusterNode) {
	t.Helper()

	revision, err := store.PutCatalog(t.Context(), markerKey, []byte(`{}`))
	if err != nil {
		t.Fatalf("put marker: %v", err)
	}
	for _, n := range nodes {
		n.waitApplied(t, revision)
	}
}

// clusterFrame is a frame that a hub sent to a subscriber, decoded.
type clusterFrame struct {
	Type   string           `json:"type"`
	Poll   json.RawMessage  `json:"poll"`
	Counts map[string]int64 `json:"counts"`
}

// poll decodes the poll of a "poll" frame.
func (f clusterFrame) poll() Poll {
	var p Poll
	_ = json.Unmarshal(f.Poll, &p)

	return p
}

// resultsPoll returns the poll id of a "results" frame.
func (f clusterFrame) resultsPoll() string {
	var id string
	_ = json.Unmarshal(f.Poll, &id)

	return id
}

// frameRecorder is a Subscriber that keeps every frame it gets.
type frameRecorder struct {
	mu      sync.Mutex
	frames  []clusterFrame
	changed chan struct{} // receives a token after each frame, without blocking
}

func subscribeRecorder(t *testing.T, h *Hub, eventID string, role Role) *frameRecorder {
	t.Helper()

	r := &frameRecorder{changed: make(chan struct{}, 1)}
	t.Cleanup(h.Subscribe(eventID, r, role))

	return r
}

func (r *frameRecorder) Enqueue(frame []byte) bool {
	var decoded clusterFrame
	err := json.Unmarshal(frame, &decoded)
	if err != nil {
		decoded.Type = "undecodable: " + string(frame)
	}

	r.mu.Lock()
	r.frames = append(r.frames, decoded)
	r.mu.Unlock()

	select {
	case r.changed <- struct{}{}:
	default:
	}

	return true
}

func (r *frameRecorder) snapshot() []clusterFrame {
	r.mu.Lock()
	defer r.mu.Unlock()

	return slices.Clone(r.frames)
}

// pollStates describes each "poll" frame as "state visible|hidden".
func (r *frameRecorder) pollStates() []string {
	var states []string
	for _, f := range r.snapshot() {
		if f.Type == "poll" {
			states = append(states, describePoll(f.poll()))
		}
	}

	return states
}

func describePoll(p Poll) string {
	visibility := "visible"
	if !p.ResultsVisible {
		visibility = "hidden"
	}

	return fmt.Sprintf("%s %s", p.State, visibility)
}

// waitFor waits until a frame at index from or later matches and returns its
// index. It fails the test after clusterWait.
func (r *frameRecorder) waitFor(t *testing.T, from int, what string, match func(clusterFrame) bool) int {
	t.Helper()

	deadline := time.NewTimer(clusterWait)
	defer deadline.Stop()

	for {
		frames := r.snapshot()
		for i := from; i < len(frames); i++ {
			if match(frames[i]) {
				return i
			}
		}

		select {
		case <-r.changed:
		case <-deadline.C:
			t.Fatalf("no %s after %s; poll frames: %v", what, clusterWait, r.pollStates())
		}
	}
}

// waitForPoll waits for a "poll" frame of poll id in the state that
// describePoll writes as want, and returns its index.
func (r *frameRecorder) waitForPoll(t *testing.T, id, want string) int {
	t.Helper()

	return r.waitFor(t, 0, "poll frame "+want, func(f clusterFrame) bool {
		return f.Type == "poll" && f.poll().ID == id && describePoll(f.poll()) == want
	})
}

// waitUntil polls cond every 10 ms and fails the test when it is still false
// after clusterWait.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()

	deadline := time.Now().Add(clusterWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still false after %s", what, clusterWait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func vote(t *testing.T, h *Hub, session, pollID string) (VoteResult, error) {
	t.Helper()

	return h.Vote(t.Context(), session, VoteRequest{VoteID: uuid.NewString(), Poll: pollID, Options: []string{"o1"}})
}

func TestClusterPollLifecycle(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	store := openClusterStore(t)
	a := startClusterNode(t, "hub A", store)
	b := startClusterNode(t, "hub B", store)
	a.startWatch(t)
	b.startWatch(t)

	event, _, err := a.hub.Registry().CreateEvent(ctx, "Cluster lifecycle")
	if err != nil {
		t.Fatalf("CreateEvent on A: %v", err)
	}
	waitUntil(t, "B finds the event by its join code", func() bool {
		_, err := b.hub.Registry().EventByCode(event.Code)
		return err == nil
	})
	aFrames := subscribeRecorder(t, a.hub, event.ID, RoleAudience)
	bFrames := subscribeRecorder(t, b.hub, event.ID, RoleAudience)

	poll, err := a.hub.CreatePoll(ctx, event.ID, colorPoll())
	if err != nil {
		t.Fatalf("CreatePoll on A: %v", err)
	}
	bFrames.waitForPoll(t, poll.ID, "draft visible")
	_, err = vote(t, b.hub, "voter-1", poll.ID)
	wantCode(t, err, CodePollNotOpen)

	_, err = a.hub.OpenPoll(ctx, poll.ID)
	if err != nil {
		t.Fatalf("OpenPoll on A: %v", err)
	}
	bFrames.waitForPoll(t, poll.ID, "open visible")

	result, err := vote(t, b.hub, "voter-1", poll.ID)
	if err != nil || result.Status != "accepted" {
		t.Fatalf("vote on B for the open poll = %+v, %v; want accepted", result, err)
	}
	// B's aggregator sends the document to the event's sockets only when the
	// watch registered the poll with B's actors, which gives it the event.
	bFrames.waitFor(t, 0, "results frame with the vote", func(f clusterFrame) bool {
		return f.Type == "results" && f.resultsPoll() == poll.ID &&
			f.Counts["o1"] == 1 && f.Counts["o2"] == 0 && f.Counts["o3"] == 0
	})

	_, err = a.hub.ShowResults(ctx, poll.ID, false)
	if err != nil {
		t.Fatalf("hide results on A: %v", err)
	}
	hiddenAt := bFrames.waitForPoll(t, poll.ID, "open hidden")

	_, err = a.hub.ShowResults(ctx, poll.ID, true)
	if err != nil {
		t.Fatalf("show results on A: %v", err)
	}
	shownAt := bFrames.waitFor(t, hiddenAt, "poll frame open visible after hiding", func(f clusterFrame) bool {
		return f.Type == "poll" && describePoll(f.poll()) == "open visible"
	})
	bFrames.waitFor(t, shownAt, "results frame sent on reveal", func(f clusterFrame) bool {
		return f.Type == "results" && f.resultsPoll() == poll.ID && f.Counts["o1"] == 1
	})

	_, err = a.hub.ClosePoll(ctx, poll.ID)
	if err != nil {
		t.Fatalf("ClosePoll on A: %v", err)
	}
	bFrames.waitForPoll(t, poll.ID, "closed visible")

	_, err = b.hub.Registry().CheckVote(poll.ID, []string{"o1"})
	if !errors.Is(err, ErrPollClosed) {
		t.Errorf("CheckVote on B after the close = %v, want poll_closed", err)
	}
	_, err = vote(t, b.hub, "voter-2", poll.ID)
	wantCode(t, err, CodePollClosed)

	syncWatches(t, store, a, b)

	want := []string{"draft visible", "open visible", "open hidden", "open visible", "closed visible"}
	if got := aFrames.pollStates(); !slices.Equal(got, want) {
		t.Errorf("poll frames on A, the writer = %v, want %v", got, want)
	}
	if got := bFrames.pollStates(); !slices.Equal(got, want) {
		t.Errorf("poll frames on B = %v, want %v", got, want)
	}
	for _, n := range []*clusterNode{a, b} {
		if logs := n.logs.String(); strings.Contains(logs, "level=ERROR") {
			t.Errorf("%s logged errors:\n%s", n.name, logs)
		}
	}
}

func TestClusterStaleRevisionIgnored(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	store := openClusterStore(t)
	a := startClusterNode(t, "hub A", store)
	b := startClusterNode(t, "hub B", store)
	a.startWatch(t)
	b.startWatch(t)

	event, poll := a.openPoll(t, "Stale values")
	syncWatches(t, store, b)

	key := pollKeyPrefix + poll.ID
	openValue, err := store.GetCatalog(ctx, key)
	if err != nil {
		t.Fatalf("GetCatalog(%s): %v", key, err)
	}
	openRevision := heldRevision(b.hub.Registry(), key)
	if openRevision == 0 {
		t.Fatalf("B holds no revision for %s after the watch applied it", key)
	}

	_, err = a.hub.ClosePoll(ctx, poll.ID)
	if err != nil {
		t.Fatalf("ClosePoll on A: %v", err)
	}
	syncWatches(t, store, b)
	bFrames := subscribeRecorder(t, b.hub, event.ID, RoleAudience)

	// A late copy of the open poll must not reopen it.
	b.hub.ApplyCatalogChange(key, openValue, openRevision)

	got, err := b.hub.Registry().Poll(poll.ID)
	if err != nil || got.State != PollClosed {
		t.Errorf("poll on B after a stale open value = %s, %v; want closed", got.State, err)
	}

	// A local write on B is newer than every value A wrote before it.
	closedValue, err := store.GetCatalog(ctx, key)
	if err != nil {
		t.Fatalf("GetCatalog(%s): %v", key, err)
	}
	closedRevision := heldRevision(b.hub.Registry(), key)
	_, err = b.hub.ShowResults(ctx, poll.ID, false)
	if err != nil {
		t.Fatalf("hide results on B: %v", err)
	}
	b.hub.ApplyCatalogChange(key, closedValue, closedRevision)

	got, err = b.hub.Registry().Poll(poll.ID)
	if err != nil || got.ResultsVisible {
		t.Errorf("poll on B after an older visible value: results_visible %v, %v; want false", got.ResultsVisible, err)
	}

	syncWatches(t, store, a, b)
	if states := bFrames.pollStates(); !slices.Equal(states, []string{"closed hidden"}) {
		t.Errorf("poll frames on B = %v, want only the local change [closed hidden]", states)
	}
	got, err = a.hub.Registry().Poll(poll.ID)
	if err != nil || got.ResultsVisible || got.State != PollClosed {
		t.Errorf("poll on A after B hid its results = %s, visible %v, %v; want closed and hidden", got.State, got.ResultsVisible, err)
	}
}

// heldRevision returns the catalog revision of the registry's value of key.
func heldRevision(r *Registry, key string) uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()

	return r.revisions[key]
}

func TestClusterBadValuesSkipped(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	store := openClusterStore(t)
	a := startClusterNode(t, "hub A", store)

	event, _, err := a.hub.Registry().CreateEvent(ctx, "Bad values")
	if err != nil {
		t.Fatalf("CreateEvent: %v", err)
	}
	otherKnown, _, err := a.hub.Registry().CreateEvent(ctx, "Another event")
	if err != nil {
		t.Fatalf("CreateEvent: %v", err)
	}
	poll, err := a.hub.CreatePoll(ctx, event.ID, colorPoll())
	if err != nil {
		t.Fatalf("CreatePoll: %v", err)
	}
	_, err = a.hub.ClosePoll(ctx, poll.ID)
	if err != nil {
		t.Fatalf("ClosePoll: %v", err)
	}
	frames := subscribeRecorder(t, a.hub, event.ID, RoleAudience)

	reopened, err := a.hub.Registry().Poll(poll.ID)
	if err != nil {
		t.Fatal(err)
	}
	reopened.State = PollOpen
	reopened.ClosedAt = nil

	orphan := reopened
	orphan.ID = uuid.NewString()
	orphan.Event = uuid.NewString()

	moved := reopened
	moved.State = PollClosed
	moved.Event = otherKnown.ID

	otherEvent := storedEvent{ID: uuid.NewString(), Code: event.Code, Title: "Same code", CreatedAt: time.Now(), TokenHash: strings.Repeat("a", 64)}
	badCode := otherEvent
	badCode.Code = "abc"

	// Revisions far above the store's make every value newer than what the
	// registry holds, so only the checks of the value can skip it.
	const revision = 1 << 40
	tests := []struct {
		name  string
		key   string
		value []byte
	}{
		{name: "undecodable poll", key: pollKeyPrefix + poll.ID, value: []byte(`{"id":`)},
		{name: "undecodable event", key: eventKeyPrefix + event.ID, value: []byte(`not json`)},
		{name: "poll of unknown event", key: pollKeyPrefix + orphan.ID, value: []byte(jsonOf(t, orphan))},
		{name: "poll id not the key's", key: pollKeyPrefix + uuid.NewString(), value: []byte(jsonOf(t, reopened))},
		{name: "closed poll reopened", key: pollKeyPrefix + poll.ID, value: []byte(jsonOf(t, reopened))},
		{name: "poll moved to another event", key: pollKeyPrefix + poll.ID, value: []byte(jsonOf(t, moved))},
		{name: "join code taken", key: eventKeyPrefix + otherEvent.ID, value: []byte(jsonOf(t, otherEvent))},
		{name: "invalid join code", key: eventKeyPrefix + badCode.ID, value: []byte(jsonOf(t, badCode))},
	}
	for i, tt := range tests {
		before := a.logs.String()
		a.hub.ApplyCatalogChange(tt.key, tt.value, revision+uint64(i))

		logged := strings.TrimPrefix(a.logs.String(), before)
		if !strings.Contains(logged, "level=ERROR") || !strings.Contains(logged, tt.key) {
			t.Errorf("%s: log = %q, want an error naming %s", tt.name, logged, tt.key)
		}
	}

	a.hub.ApplyCatalogChange(pollKeyPrefix+poll.ID, []byte(jsonOf(t, reopened)), 0)
	if logged := a.logs.String(); !strings.Contains(logged, "revision 0") {
		t.Errorf("log after revision 0 = %q, want an error about revision 0", logged)
	}

	got, err := a.hub.Registry().Poll(poll.ID)
	if err != nil || got.State != PollClosed || got.Event != event.ID {
		t.Errorf("poll after bad values = %s in event %s, %v; want closed in event %s", got.State, got.Event, err, event.ID)
	}
	stored, err := a.hub.Registry().EventByCode(event.Code)
	if err != nil || stored.ID != event.ID {
		t.Errorf("event with code %s after bad values = %s, %v; want %s", event.Code, stored.ID, err, event.ID)
	}
	for _, id := range []string{orphan.ID, otherEvent.ID} {
		if _, err := a.hub.Registry().Poll(id); err == nil {
			t.Errorf("poll %s of a skipped value is in the registry", id)
		}
		if _, err := a.hub.Registry().EventByID(id); err == nil {
			t.Errorf("event %s of a skipped value is in the registry", id)
		}
	}
	_, err = vote(t, a.hub, "voter-1", poll.ID)
	wantCode(t, err, CodePollClosed)
	if states := frames.pollStates(); len(states) != 0 {
		t.Errorf("bad values sent poll frames %v, want none", states)
	}
}

func TestClusterWatchAfterLoadHasNoGap(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	store := openClusterStore(t)
	a := startClusterNode(t, "hub A", store)

	first, _, err := a.hub.Registry().CreateEvent(ctx, "Before B loads")
	if err != nil {
		t.Fatalf("CreateEvent: %v", err)
	}
	poll, err := a.hub.CreatePoll(ctx, first.ID, colorPoll())
	if err != nil {
		t.Fatalf("CreatePoll: %v", err)
	}
	unchanged := colorPoll()
	unchanged.Question = "Stays a draft?"
	_, err = a.hub.CreatePoll(ctx, first.ID, unchanged)
	if err != nil {
		t.Fatalf("CreatePoll: %v", err)
	}

	b := startClusterNode(t, "hub B", store)
	bFrames := subscribeRecorder(t, b.hub, first.ID, RoleAudience)

	// These changes land after B's Load and before its watch starts.
	_, err = a.hub.OpenPoll(ctx, poll.ID)
	if err != nil {
		t.Fatalf("OpenPoll: %v", err)
	}
	second, _, err := a.hub.Registry().CreateEvent(ctx, "Before B watches")
	if err != nil {
		t.Fatalf("CreateEvent: %v", err)
	}

	b.startWatch(t)
	syncWatches(t, store, b)

	got, err := b.hub.Registry().Poll(poll.ID)
	if err != nil || got.State != PollOpen {
		t.Errorf("poll on B = %s, %v; want open", got.State, err)
	}
	_, err = b.hub.Registry().EventByCode(second.Code)
	if err != nil {
		t.Errorf("event created before B's watch started is missing on B: %v", err)
	}
	// The watch starts with the latest value of every key. The loaded event
	// and the draft that stayed a draft equal those values, so only the
	// opened poll is sent.
	if states := bFrames.pollStates(); !slices.Equal(states, []string{"open visible"}) {
		t.Errorf("poll frames on B = %v, want [open visible]", states)
	}
	if revision := heldRevision(b.hub.Registry(), eventKeyPrefix+first.ID); revision == 0 {
		t.Errorf("B holds no revision for the loaded event after the watch passed it")
	}
}

func TestClusterConcurrentCreatesAgree(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	store := openClusterStore(t)
	a := startClusterNode(t, "hub A", store)
	b := startClusterNode(t, "hub B", store)
	a.startWatch(t)
	b.startWatch(t)

	event, _, err := a.hub.Registry().CreateEvent(ctx, "Concurrent polls")
	if err != nil {
		t.Fatalf("CreateEvent: %v", err)
	}
	syncWatches(t, store, b)

	const perHub = 15
	var wg sync.WaitGroup
	errs := make(chan error, 2*perHub)
	for _, n := range []*clusterNode{a, b} {
		wg.Go(func() {
			for i := range perHub {
				p := colorPoll()
				p.Question = fmt.Sprintf("%s question %d?", n.name, i)
				poll, err := n.hub.CreatePoll(ctx, event.ID, p)
				if err == nil {
					_, err = n.hub.OpenPoll(ctx, poll.ID)
				}
				if err != nil {
					errs <- fmt.Errorf("%s: %w", n.name, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	syncWatches(t, store, a, b)

	pollsOf := func(n *clusterNode) []string {
		ev, err := n.hub.Registry().EventByID(event.ID)
		if err != nil {
			t.Fatalf("%s: EventByID: %v", n.name, err)
		}
		var out []string
		for _, p := range ev.Polls {
			out = append(out, p.ID+" "+string(p.State))
		}
		return out
	}
	onA, onB := pollsOf(a), pollsOf(b)
	if len(onA) != 2*perHub {
		t.Errorf("A has %d polls, want %d", len(onA), 2*perHub)
	}
	if !slices.Equal(onA, onB) {
		t.Errorf("polls differ between hubs:\nA %v\nB %v", onA, onB)
	}

	reloaded := NewRegistry(store, nil)
	err = reloaded.Load(ctx)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	ev, err := reloaded.EventByID(event.ID)
	if err != nil {
		t.Fatalf("EventByID after Load: %v", err)
	}
	var loaded []string
	for _, p := range ev.Polls {
		loaded = append(loaded, p.ID+" "+string(p.State))
	}
	if !slices.Equal(loaded, onA) {
		t.Errorf("poll order after Load differs from the watched order:\nLoad %v\nA    %v", loaded, onA)
	}
}

// TestClusterJoinCodesStayUnique makes two hubs draw the same join codes
// before either knows the other's events: the second hub's first code is
// reserved already, so it draws again, and the events end with two codes.
func TestClusterJoinCodesStayUnique(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	store := openClusterStore(t)
	a := startClusterNode(t, "hub A", store)
	b := startClusterNode(t, "hub B", store)

	first, second := NewJoinCode(), NewJoinCode()
	for first == second {
		second = NewJoinCode()
	}
	for _, n := range []*clusterNode{a, b} {
		codes := []string{first, second}
		n.hub.Registry().newJoinCode = func() string {
			code := codes[0]
			if len(codes) > 1 {
				codes = codes[1:]
			}
			return code
		}
	}

	onA, _, err := a.hub.Registry().CreateEvent(ctx, "On A")
	if err != nil {
		t.Fatalf("CreateEvent on A: %v", err)
	}
	onB, _, err := b.hub.Registry().CreateEvent(ctx, "On B")
	if err != nil {
		t.Fatalf("CreateEvent on B: %v", err)
	}
	if onA.Code != first {
		t.Errorf("A's event has code %s, want the first drawn, %s", onA.Code, first)
	}
	if onB.Code != second {
		t.Errorf("B's event has code %s, want %s: %s was reserved by A", onB.Code, second, first)
	}

	reserved, err := store.GetCatalog(ctx, joinCodeKeyPrefix+first)
	if err != nil {
		t.Fatalf("GetCatalog(code.%s): %v", first, err)
	}
	if string(reserved) != onA.ID {
		t.Errorf("code.%s holds %q, want A's event id %s", first, reserved, onA.ID)
	}

	a.startWatch(t)
	b.startWatch(t)
	syncWatches(t, store, a, b)
	for _, n := range []*clusterNode{a, b} {
		for _, want := range []Event{onA, onB} {
			got, err := n.hub.Registry().EventByCode(want.Code)
			if err != nil || got.ID != want.ID {
				t.Errorf("%s: code %s finds %s (%v), want event %s", n.name, want.Code, got.ID, err, want.ID)
			}
		}
	}
}

// TestClusterStaleChangeRefused changes a poll on hub B from a copy that is
// one revision behind, because hub A closed the poll and B has not seen it.
// The change is refused with a retry hint instead of writing the open copy
// over the close; once B has the closed poll, the same change goes through
// and the catalog holds a closed poll with hidden results.
func TestClusterStaleChangeRefused(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	store := openClusterStore(t)
	a := startClusterNode(t, "hub A", store)
	_, poll := a.openPoll(t, "Stale copies")

	// B has no watch: it loads the catalog and is handed each change the way
	// its watch would hand it over, with the value's revision.
	b := startClusterNode(t, "hub B", store)
	js, err := jetstream.New(store.Conn())
	if err != nil {
		t.Fatalf("JetStream context: %v", err)
	}
	catalog, err := js.KeyValue(ctx, persistence.CatalogBucket)
	if err != nil {
		t.Fatalf("catalog bucket: %v", err)
	}
	key := pollKeyPrefix + poll.ID
	deliver := func() {
		entry, err := catalog.Get(ctx, key)
		if err != nil {
			t.Fatalf("get %s: %v", key, err)
		}
		b.hub.ApplyCatalogChange(key, entry.Value(), entry.Revision())
	}
	deliver()

	_, err = a.hub.ClosePoll(ctx, poll.ID)
	if err != nil {
		t.Fatalf("ClosePoll on A: %v", err)
	}

	_, err = b.hub.ShowResults(ctx, poll.ID, false)
	e := AsError(err)
	if e == nil || e.Code != CodeOverloaded || e.RetryAfter <= 0 {
		t.Fatalf("hide results on B's stale copy: %v; want an overloaded error with a retry hint", err)
	}
	stored, err := store.GetCatalog(ctx, key)
	if err != nil {
		t.Fatalf("GetCatalog(%s): %v", key, err)
	}
	var inCatalog Poll
	if err := json.Unmarshal(stored, &inCatalog); err != nil {
		t.Fatalf("decode %s: %v", key, err)
	}
	if inCatalog.State != PollClosed || !inCatalog.ResultsVisible {
		t.Errorf("catalog after the refused change: %s, results visible %t; want A's closed poll with visible results", inCatalog.State, inCatalog.ResultsVisible)
	}

	deliver()
	_, err = b.hub.ShowResults(ctx, poll.ID, false)
	if err != nil {
		t.Fatalf("hide results on B after it has the close: %v", err)
	}

	reloaded := NewRegistry(store, nil)
	if err := reloaded.Load(ctx); err != nil {
		t.Fatalf("Load: %v", err)
	}
	got, err := reloaded.Poll(poll.ID)
	if err != nil || got.State != PollClosed || got.ResultsVisible {
		t.Errorf("poll after Load: %s, results visible %t, %v; want closed with hidden results", got.State, got.ResultsVisible, err)
	}
}
