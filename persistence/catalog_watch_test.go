package persistence

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/livevote/livevote/persistence/natstest"
)

// watchWait bounds every wait for a watched entry, except after a server
// restart, which waitAfterRestart bounds.
const watchWait = 10 * time.Second

// waitAfterRestart bounds the wait for an entry after the NATS server
// restarted. The client reconnects within its 2 s reconnect wait, and
// WatchCatalog then starts a new watcher. Without that restart, nats.go
// v1.56 recreates the lost consumer only after about 20 s.
const waitAfterRestart = 30 * time.Second

// watchedEntry is one call of a WatchCatalog callback.
type watchedEntry struct {
	key      string
	value    string
	revision uint64
}

// catalogRecorder collects the entries that WatchCatalog passes to it.
type catalogRecorder struct {
	mu      sync.Mutex
	entries []watchedEntry
	changed chan struct{} // receives a token after each entry, without blocking
}

func newCatalogRecorder() *catalogRecorder {
	return &catalogRecorder{changed: make(chan struct{}, 1)}
}

func (r *catalogRecorder) record(key string, value []byte, revision uint64) {
	r.mu.Lock()
	r.entries = append(r.entries, watchedEntry{key: key, value: string(value), revision: revision})
	r.mu.Unlock()

	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *catalogRecorder) snapshot() []watchedEntry {
	r.mu.Lock()
	defer r.mu.Unlock()

	return append([]watchedEntry(nil), r.entries...)
}

// waitFor waits up to wait for an entry with key and revision and fails the
// test when none arrives.
func (r *catalogRecorder) waitFor(t *testing.T, key string, revision uint64, wait time.Duration) {
	t.Helper()

	deadline := time.NewTimer(wait)
	defer deadline.Stop()

	for {
		for _, entry := range r.snapshot() {
			if entry.key == key && entry.revision == revision {
				return
			}
		}

		select {
		case <-r.changed:
		case <-deadline.C:
			t.Fatalf("no watched entry %s at revision %d after %s; got %v", key, revision, wait, r.snapshot())
		}
	}
}

// startWatch runs WatchCatalog with rec until the test ends and returns the
// function that stops it and returns its error.
func startWatch(t *testing.T, s *Store, rec *catalogRecorder) (stop func() error) {
	t.Helper()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- s.WatchCatalog(ctx, rec.record)
	}()

	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(watchWait):
				err = fmt.Errorf("WatchCatalog did not return %s after its context ended", watchWait)
			}
		})
		return err
	}
	t.Cleanup(func() {
		err := stop()
		if err != nil {
			t.Errorf("WatchCatalog: %v", err)
		}
	})

	return stop
}

func mustPut(t *testing.T, s *Store, key, value string) uint64 {
	t.Helper()

	revision, err := s.PutCatalog(t.Context(), key, []byte(value))
	if err != nil {
		t.Fatalf("PutCatalog(%q): %v", key, err)
	}

	return revision
}

func TestPutCatalogRevisionsGrow(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})

	var last uint64
	for i, key := range []string{"event.e1", "poll.p1", "event.e1"} {
		revision := mustPut(t, s, key, fmt.Sprintf(`{"n":%d}`, i))
		if revision <= last {
			t.Errorf("put %d of %s returned revision %d, want more than %d", i, key, revision, last)
		}
		last = revision
	}
}

func TestWatchCatalogStartsWithLatestValues(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})

	mustPut(t, s, "event.e1", `{"v":1}`)
	bRevision := mustPut(t, s, "event.e2", `{"v":1}`)
	aRevision := mustPut(t, s, "event.e1", `{"v":2}`)
	cRevision := mustPut(t, s, "poll.p1", `{"v":1}`)

	rec := newCatalogRecorder()
	stop := startWatch(t, s, rec)
	rec.waitFor(t, "poll.p1", cRevision, watchWait)

	got := rec.snapshot()
	want := []watchedEntry{
		{key: "event.e2", value: `{"v":1}`, revision: bRevision},
		{key: "event.e1", value: `{"v":2}`, revision: aRevision},
		{key: "poll.p1", value: `{"v":1}`, revision: cRevision},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("initial entries = %v, want %v", got, want)
	}

	err := stop()
	if err != nil {
		t.Errorf("WatchCatalog after cancel = %v, want nil", err)
	}
}

func TestWatchCatalogDeliversLaterPutsInOrder(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})

	first := mustPut(t, s, "event.e1", `{"v":1}`)
	rec := newCatalogRecorder()
	startWatch(t, s, rec)
	rec.waitFor(t, "event.e1", first, watchWait)

	var want []watchedEntry
	for i := range 20 {
		key := fmt.Sprintf("poll.p%d", i%3)
		value := fmt.Sprintf(`{"v":%d}`, i)
		want = append(want, watchedEntry{key: key, value: value, revision: mustPut(t, s, key, value)})
	}
	last := want[len(want)-1]
	rec.waitFor(t, last.key, last.revision, watchWait)

	got := rec.snapshot()[1:]
	for i := 1; i < len(got); i++ {
		if got[i].revision <= got[i-1].revision {
			t.Errorf("entry %d has revision %d after revision %d; revisions must grow", i, got[i].revision, got[i-1].revision)
		}
	}

	// The bucket keeps one value per key, so the watcher may skip a value
	// that a later put replaced before delivery, but never the last one.
	delivered := make(map[uint64]watchedEntry)
	for _, entry := range got {
		delivered[entry.revision] = entry
	}
	for _, put := range want {
		entry, ok := delivered[put.revision]
		if ok && entry != put {
			t.Errorf("revision %d delivered as %v, want %v", put.revision, entry, put)
		}
	}
	for _, put := range want[len(want)-3:] {
		if _, ok := delivered[put.revision]; !ok {
			t.Errorf("last put of %s at revision %d not delivered", put.key, put.revision)
		}
	}
}

func TestWatchCatalogEndsWithClosedStore(t *testing.T) {
	t.Parallel()
	s, err := Open(t.Context(), Config{DataDir: t.TempDir(), Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}

	revision := mustPut(t, s, "event.e1", `{}`)
	rec := newCatalogRecorder()
	done := make(chan error, 1)
	go func() {
		done <- s.WatchCatalog(context.Background(), rec.record)
	}()
	rec.waitFor(t, "event.e1", revision, watchWait)

	err = s.Close()
	if err != nil {
		t.Fatalf("Close: %v", err)
	}

	select {
	case err = <-done:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("WatchCatalog after Close = %v, want ErrClosed", err)
		}
	case <-time.After(watchWait):
		t.Fatalf("WatchCatalog did not return %s after Close", watchWait)
	}
}

// TestWatchCatalogSurvivesServerRestart restarts an external NATS server on
// the same port and store directory. The watching Store loses its ordered
// consumer with the server, and the puts made after the restart must still
// reach it.
func TestWatchCatalogSurvivesServerRestart(t *testing.T) {
	t.Parallel()
	storeDir := t.TempDir()

	// The stores close before the server that runs at the end shuts down.
	var current *server.Server
	t.Cleanup(func() {
		current.Shutdown()
		current.WaitForShutdown()
	})
	port, err := natstest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	current = startRestartableServer(t, storeDir, port)
	url := current.ClientURL()

	watching := openTestStore(t, Config{NatsURL: url})
	writing := openTestStore(t, Config{NatsURL: url})

	before := mustPut(t, writing, "event.e1", `{"v":1}`)
	rec := newCatalogRecorder()
	startWatch(t, watching, rec)
	rec.waitFor(t, "event.e1", before, watchWait)

	current.Shutdown()
	current.WaitForShutdown()
	restarted := time.Now()
	current = startRestartableServer(t, storeDir, port)

	var afterRevisions []uint64
	for i := range 3 {
		afterRevisions = append(afterRevisions, putWithRetry(t, writing, fmt.Sprintf("poll.p%d", i), `{"v":1}`))
	}
	t.Logf("puts stored %s after the restart", time.Since(restarted).Round(time.Millisecond))

	for i, revision := range afterRevisions {
		rec.waitFor(t, fmt.Sprintf("poll.p%d", i), revision, waitAfterRestart)
	}
	t.Logf("puts watched %s after the restart", time.Since(restarted).Round(time.Millisecond))

	got := rec.snapshot()
	for i := 1; i < len(got); i++ {
		if got[i].revision <= got[i-1].revision {
			t.Errorf("entry %d has revision %d after revision %d; a restarted watch must not repeat or reorder", i, got[i].revision, got[i-1].revision)
		}
	}
}

// startRestartableServer starts a JetStream nats-server on 127.0.0.1 that
// keeps its files in storeDir, on port. The caller shuts it down.
func startRestartableServer(t *testing.T, storeDir string, port int) *server.Server {
	t.Helper()

	ns, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      port,
		NoSigs:    true,
		NoLog:     true,
		JetStream: true,
		StoreDir:  storeDir,
	})
	if err != nil {
		t.Fatalf("create nats-server on port %d: %v", port, err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		t.Fatalf("nats-server on port %d not ready after 10s", port)
	}

	return ns
}

// putWithRetry puts value under key until a put succeeds, retrying the
// failures of a connection that is still coming back, for at most
// waitAfterRestart.
func putWithRetry(t *testing.T, s *Store, key, value string) uint64 {
	t.Helper()

	deadline := time.Now().Add(waitAfterRestart)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		revision, err := s.PutCatalog(ctx, key, []byte(value))
		cancel()
		if err == nil {
			return revision
		}
		if time.Now().After(deadline) {
			t.Fatalf("PutCatalog(%q) still failing after %s: %v", key, waitAfterRestart, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
