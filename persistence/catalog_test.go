package persistence

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestCatalogPutGetList(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})
	ctx := t.Context()

	records := map[string]string{
		"event.e1":      `{"title":"first"}`,
		"event.e2":      `{"title":"second"}`,
		"poll.p1":       `{"question":"a?"}`,
		"poll.p2":       `{"question":"b?"}`,
		"poll.p2.extra": `{"note":"nested"}`,
		"eventual":      `{"not":"an event"}`,
	}
	for key, value := range records {
		_, err := s.PutCatalog(ctx, key, []byte(value))
		if err != nil {
			t.Fatalf("PutCatalog(%q): %v", key, err)
		}
	}
	_, err := s.PutCatalog(ctx, "event.e2", []byte(`{"title":"second, renamed"}`))
	if err != nil {
		t.Fatal(err)
	}
	records["event.e2"] = `{"title":"second, renamed"}`

	for key, want := range records {
		got, err := s.GetCatalog(ctx, key)
		if err != nil || string(got) != want {
			t.Errorf("GetCatalog(%q) = %q, %v; want %q", key, got, err, want)
		}
	}

	_, err = s.GetCatalog(ctx, "event.missing")
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("GetCatalog of a missing key: error = %v, want ErrNotFound", err)
	}

	tests := []struct {
		prefix string
		want   []string
	}{
		{prefix: "event.", want: []string{"event.e1", "event.e2"}},
		{prefix: "poll.", want: []string{"poll.p1", "poll.p2", "poll.p2.extra"}},
		{prefix: "event", want: []string{"event.e1", "event.e2", "eventual"}},
		{prefix: "poll.p2", want: []string{"poll.p2", "poll.p2.extra"}},
		{prefix: "", want: []string{"event.e1", "event.e2", "eventual", "poll.p1", "poll.p2", "poll.p2.extra"}},
		{prefix: "option.", want: []string{}},
	}
	for _, tt := range tests {
		got, err := s.ListCatalog(ctx, tt.prefix)
		if err != nil {
			t.Errorf("ListCatalog(%q): %v", tt.prefix, err)
			continue
		}
		if got == nil {
			t.Errorf("ListCatalog(%q) returned a nil map", tt.prefix)
		}

		want := map[string][]byte{}
		for _, key := range tt.want {
			want[key] = []byte(records[key])
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("ListCatalog(%q) = %q, want %q", tt.prefix, got, want)
		}
	}
}

func TestCatalogRejectsBadKey(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})
	ctx := t.Context()

	keys := []string{"", "event id", "event/1", "event.*", "poll.>", ".event", "event.", "a..b", "ümlaut",
		strings.Repeat("k", MaxKeyBytes+1)}
	for _, key := range keys {
		_, err := s.PutCatalog(ctx, key, []byte("x"))
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("PutCatalog(%q) error = %v, want ErrInvalidArgument", key, err)
			continue
		}
		if key != "" && !strings.Contains(err.Error(), key[:min(len(key), 20)]) {
			t.Errorf("PutCatalog(%q) error %q does not name the key", key, err)
		}

		_, err = s.GetCatalog(ctx, key)
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("GetCatalog(%q) error = %v, want ErrInvalidArgument", key, err)
		}
	}

	for _, prefix := range []string{".", "event..", "event.*", "a b"} {
		_, err := s.ListCatalog(ctx, prefix)
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ListCatalog(%q) error = %v, want ErrInvalidArgument", prefix, err)
		}
	}
}

func TestResultsPutGet(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})
	ctx := t.Context()

	_, err := s.GetResults(ctx, "p1")
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("GetResults before any put: error = %v, want ErrNotFound", err)
	}

	for _, doc := range []string{`{"poll":"p1","version":1}`, `{"poll":"p1","version":2}`} {
		err = s.PutResults(ctx, "p1", []byte(doc))
		if err != nil {
			t.Fatalf("PutResults: %v", err)
		}
		got, err := s.GetResults(ctx, "p1")
		if err != nil || string(got) != doc {
			t.Errorf("GetResults = %q, %v; want %q", got, err, doc)
		}
	}

	err = s.PutResults(ctx, "p 1", []byte("{}"))
	if !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("PutResults with a bad poll id: error = %v, want ErrInvalidArgument", err)
	}
}
