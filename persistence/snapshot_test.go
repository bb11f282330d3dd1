package persistence

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
)

func TestSnapshotSaveLoad(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})
	ctx := t.Context()

	_, _, err := s.LoadSnapshot(ctx, 3)
	if !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("LoadSnapshot before any save: error = %v, want ErrNoSnapshot", err)
	}

	large := make([]byte, 2<<20+12345)
	rand.Read(large)

	tests := []struct {
		name  string
		shard int
		seq   uint64
		data  []byte
	}{
		{name: "small", shard: 3, seq: 42, data: []byte("counts of shard 3")},
		{name: "replace", shard: 3, seq: 97, data: []byte("newer counts of shard 3")},
		{name: "empty", shard: 4, seq: 0, data: []byte{}},
		{name: "above 2 MiB", shard: 5, seq: 1 << 40, data: large},
	}
	for _, tt := range tests {
		err := s.SaveSnapshot(ctx, tt.shard, tt.seq, tt.data)
		if err != nil {
			t.Fatalf("%s: SaveSnapshot: %v", tt.name, err)
		}

		seq, data, err := s.LoadSnapshot(ctx, tt.shard)
		if err != nil {
			t.Fatalf("%s: LoadSnapshot: %v", tt.name, err)
		}
		if seq != tt.seq {
			t.Errorf("%s: LoadSnapshot sequence = %d, want %d", tt.name, seq, tt.seq)
		}
		if !bytes.Equal(data, tt.data) {
			t.Errorf("%s: LoadSnapshot returned %d bytes that differ from the %d saved", tt.name, len(data), len(tt.data))
		}
	}

	_, _, err = s.LoadSnapshot(ctx, 6)
	if !errors.Is(err, ErrNoSnapshot) {
		t.Errorf("LoadSnapshot of a shard without one: error = %v, want ErrNoSnapshot", err)
	}
}

func TestSnapshotRejectsBadShard(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, Config{})

	err := s.SaveSnapshot(t.Context(), -1, 1, []byte("x"))
	if !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("SaveSnapshot(shard -1) error = %v, want ErrInvalidArgument", err)
	}
	_, _, err = s.LoadSnapshot(t.Context(), MaxShards)
	if !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("LoadSnapshot(shard %d) error = %v, want ErrInvalidArgument", MaxShards, err)
	}
}
