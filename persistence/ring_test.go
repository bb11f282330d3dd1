package persistence

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
)

func TestRingCreateReloadMismatch(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})
	ctx := t.Context()

	_, err := s.LoadOrCreateRing(ctx, 0)
	if !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("LoadOrCreateRing(0) before any ring: error = %v, want ErrInvalidArgument", err)
	}

	ring, err := s.LoadOrCreateRing(ctx, 64)
	if err != nil {
		t.Fatalf("LoadOrCreateRing(64): %v", err)
	}
	if ring.Shards != 64 || len(ring.Salt) != RingSaltBytes {
		t.Errorf("new ring has %d shards and a %d byte salt, want 64 and %d", ring.Shards, len(ring.Salt), RingSaltBytes)
	}
	if bytes.Equal(ring.Salt, make([]byte, RingSaltBytes)) {
		t.Error("new ring salt is all zero")
	}

	for _, shards := range []int{64, 0} {
		again, err := s.LoadOrCreateRing(ctx, shards)
		if err != nil {
			t.Fatalf("LoadOrCreateRing(%d) on a stored ring: %v", shards, err)
		}
		if again.Shards != 64 || !bytes.Equal(again.Salt, ring.Salt) {
			t.Errorf("LoadOrCreateRing(%d) = %d shards, salt equal %v; want the stored ring",
				shards, again.Shards, bytes.Equal(again.Salt, ring.Salt))
		}
	}

	_, err = s.LoadOrCreateRing(ctx, 32)
	if !errors.Is(err, ErrShardMismatch) {
		t.Fatalf("LoadOrCreateRing(32) on a 64 shard ring: error = %v, want ErrShardMismatch", err)
	}
	for _, want := range []string{"64", "32", "fixed for the life of a data directory"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("mismatch error %q does not contain %q", err, want)
		}
	}

	for _, shards := range []int{-1, MaxShards + 1} {
		_, err = s.LoadOrCreateRing(ctx, shards)
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("LoadOrCreateRing(%d) error = %v, want ErrInvalidArgument", shards, err)
		}
	}
}

func TestRingConcurrentCreateAgrees(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})

	const callers = 8
	rings := make([]Ring, callers)
	errs := make([]error, callers)

	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			rings[i], errs[i] = s.LoadOrCreateRing(t.Context(), 16)
		})
	}
	wg.Wait()

	for i := range callers {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if !bytes.Equal(rings[i].Salt, rings[0].Salt) || rings[i].Shards != 16 {
			t.Errorf("caller %d got a different ring than caller 0", i)
		}
	}
}

func TestSecretCreateReload(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})
	ctx := t.Context()

	key, err := s.LoadOrCreateSecret(ctx, "session-key", 32)
	if err != nil {
		t.Fatalf("LoadOrCreateSecret: %v", err)
	}
	if len(key) != 32 {
		t.Errorf("secret has %d bytes, want 32", len(key))
	}

	again, err := s.LoadOrCreateSecret(ctx, "session-key", 32)
	if err != nil || !bytes.Equal(again, key) {
		t.Errorf("second LoadOrCreateSecret = equal %v, %v; want the stored secret", bytes.Equal(again, key), err)
	}

	other, err := s.LoadOrCreateSecret(ctx, "other-key", 32)
	if err != nil || bytes.Equal(other, key) {
		t.Errorf("LoadOrCreateSecret of another name = equal %v, %v; want a different secret", bytes.Equal(other, key), err)
	}

	tests := []struct {
		name string
		size int
	}{
		{name: "session-key", size: 16},
		{name: "bad name", size: 32},
		{name: "zero-size", size: 0},
		{name: "too-large", size: MaxSecretBytes + 1},
	}
	for _, tt := range tests {
		_, err := s.LoadOrCreateSecret(ctx, tt.name, tt.size)
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("LoadOrCreateSecret(%q, %d) error = %v, want ErrInvalidArgument", tt.name, tt.size, err)
		}
	}

	list, err := s.ListCatalog(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 0 {
		t.Errorf("ListCatalog(\"\") returned %d records after storing secrets, want 0", len(list))
	}
}
