package persistence

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func resultsDoc(version uint64, final bool, writer string) []byte {
	return fmt.Appendf(nil, `{"poll":"p1","version":%d,"final":%t,"writer":%q}`, version, final, writer)
}

func storedVersion(t *testing.T, s *Store, poll string) ResultsVersion {
	t.Helper()

	data, err := s.GetResults(t.Context(), poll)
	if err != nil {
		t.Fatalf("GetResults(%q): %v", poll, err)
	}
	v, err := ParseResultsVersion(data)
	if err != nil {
		t.Fatalf("stored results of %q: %v", poll, err)
	}

	return v
}

// watchVersions records the version of every update of poll that the
// results bucket delivers. wait returns them once the update with revision
// last arrived, or after 10 s.
func watchVersions(t *testing.T, s *Store, poll string) (wait func(last uint64) []uint64) {
	t.Helper()

	watcher, err := s.results.Watch(t.Context(), poll, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var versions []uint64
	var revision uint64
	go func() {
		for entry := range watcher.Updates() {
			v, err := ParseResultsVersion(entry.Value())
			mu.Lock()
			if err == nil {
				versions = append(versions, v.Version)
			}
			revision = entry.Revision()
			mu.Unlock()
		}
	}()

	return func(last uint64) []uint64 {
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			seen := revision
			mu.Unlock()
			if seen >= last || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}

		err := watcher.Stop()
		if err != nil {
			t.Errorf("stop watcher: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		if revision < last {
			t.Errorf("watcher saw revision %d, want %d", revision, last)
		}
		return slices.Clone(versions)
	}
}

// jitteredOrder returns the indexes 0 to n-1 roughly ascending but shuffled
// within about spread places, so that two writers overlap.
func jitteredOrder(n, spread int) []int {
	keys := make([]int, n)
	order := make([]int, n)
	for i := range n {
		keys[i] = i + rand.IntN(spread)
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return keys[order[a]] < keys[order[b]] })

	return order
}

// TestPutResultsRacingWritersKeepHighest lets two writers put versions 1 to
// 60 of one poll in shuffled orders at the same time and checks that the
// stored versions only grow and end at 60.
func TestPutResultsRacingWritersKeepHighest(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})
	const top = 60

	wait := watchVersions(t, s, "p1")

	var wg sync.WaitGroup
	var mu sync.Mutex
	stored, stale := 0, 0
	for _, writer := range []string{"a", "b"} {
		order := jitteredOrder(top, 8)
		wg.Go(func() {
			for _, i := range order {
				err := s.PutResults(t.Context(), "p1", resultsDoc(uint64(i+1), false, writer))
				mu.Lock()
				switch {
				case err == nil:
					stored++
				case errors.Is(err, ErrStaleResults):
					stale++
				default:
					t.Errorf("writer %s version %d: %v", writer, i+1, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()

	entry, err := s.results.Get(t.Context(), "p1")
	if err != nil {
		t.Fatal(err)
	}
	versions := wait(entry.Revision())
	t.Logf("%d puts stored and %d refused as stale; the watcher saw %d updates", stored, stale, len(versions))

	if got := storedVersion(t, s, "p1"); got.Version != top {
		t.Errorf("stored version after the race = %d, want %d", got.Version, top)
	}
	for i := 1; i < len(versions); i++ {
		if versions[i] <= versions[i-1] {
			t.Errorf("stored version went from %d to %d (updates %v)", versions[i-1], versions[i], versions)
			break
		}
	}
}

func TestPutResultsKeepsFinal(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})
	ctx := t.Context()

	err := s.PutResults(ctx, "p1", resultsDoc(3, true, "closer"))
	if err != nil {
		t.Fatalf("put final version 3: %v", err)
	}

	steps := []struct {
		version uint64
		final   bool
		wantErr error
	}{
		{4, false, ErrStaleResults},
		{3, true, ErrStaleResults},
		{2, true, ErrStaleResults},
		{5, true, nil},
		{6, false, ErrStaleResults},
	}
	for _, step := range steps {
		err = s.PutResults(ctx, "p1", resultsDoc(step.version, step.final, "late"))
		if !errors.Is(err, step.wantErr) {
			t.Errorf("put version %d final %t over a final document: error = %v, want %v",
				step.version, step.final, err, step.wantErr)
		}
	}

	if got := storedVersion(t, s, "p1"); got != (ResultsVersion{Version: 5, Final: true}) {
		t.Errorf("stored = %+v, want final version 5", got)
	}
}

func TestPutResultsRejectsBadDocument(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})

	for _, doc := range []string{`{}`, `{"version":0}`, `not json`, `{"version":"2"}`, `[1]`} {
		err := s.PutResults(t.Context(), "p1", []byte(doc))
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("PutResults(%s): error = %v, want ErrInvalidArgument", doc, err)
		}
	}

	_, err := s.GetResults(t.Context(), "p1")
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("GetResults after rejected puts: error = %v, want ErrNotFound", err)
	}
}

func TestPutResultsReplacesUnreadableDocument(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})

	_, err := s.results.Put(t.Context(), "p1", []byte("garbage"))
	if err != nil {
		t.Fatal(err)
	}

	err = s.PutResults(t.Context(), "p1", resultsDoc(1, false, "a"))
	if err != nil {
		t.Fatalf("PutResults over an unreadable document: %v", err)
	}
	if got := storedVersion(t, s, "p1"); got.Version != 1 {
		t.Errorf("stored version = %d, want 1", got.Version)
	}
}

func TestResultsVersionReplaces(t *testing.T) {
	t.Parallel()

	cases := []struct {
		next, current ResultsVersion
		want          bool
	}{
		{ResultsVersion{2, false}, ResultsVersion{1, false}, true},
		{ResultsVersion{1, false}, ResultsVersion{1, false}, false},
		{ResultsVersion{1, false}, ResultsVersion{2, false}, false},
		{ResultsVersion{3, true}, ResultsVersion{2, false}, true},
		{ResultsVersion{3, false}, ResultsVersion{2, true}, false},
		{ResultsVersion{3, true}, ResultsVersion{2, true}, true},
		{ResultsVersion{1, false}, ResultsVersion{}, true},
	}
	for _, tc := range cases {
		if got := tc.next.Replaces(tc.current); got != tc.want {
			t.Errorf("%+v.Replaces(%+v) = %v, want %v", tc.next, tc.current, got, tc.want)
		}
	}
}
