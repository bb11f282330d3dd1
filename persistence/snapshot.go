package persistence

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
)

// snapshotSeqKey is the object metadata key of the stream sequence that a
// snapshot covers.
const snapshotSeqKey = "seq"

// snapshotName returns the object name of a shard's snapshot.
func snapshotName(shard int) string {
	return "shard." + strconv.Itoa(shard)
}

// SaveSnapshot stores data as the snapshot of shard covering every batch up
// to stream sequence seq, and replaces the previous one. The object store
// splits data into chunks, so its size is limited only by the disk. The new
// snapshot becomes visible only once all of it is stored, so a failed save
// leaves the previous snapshot in place. When ctx has no deadline,
// SaveSnapshot gives up after DefaultTimeout.
func (s *Store) SaveSnapshot(ctx context.Context, shard int, seq uint64, data []byte) error {
	if shard < 0 || shard >= MaxShards {
		return fmt.Errorf("%w: shard %d is outside [0, %d)", ErrInvalidArgument, shard, MaxShards)
	}

	ctx, cancel := withTimeout(ctx)
	defer cancel()

	meta := jetstream.ObjectMeta{
		Name:     snapshotName(shard),
		Metadata: map[string]string{snapshotSeqKey: strconv.FormatUint(seq, 10)},
	}
	_, err := s.snapshots.Put(ctx, meta, bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("save snapshot of shard %d at sequence %d (%d bytes): %w", shard, seq, len(data), err)
	}

	return nil
}

// LoadSnapshot returns the latest snapshot of shard and the stream sequence
// it covers. It returns an error wrapping ErrNoSnapshot when shard has none.
// The object store checks the SHA-256 digest of the data. When ctx has no
// deadline, LoadSnapshot gives up after DefaultTimeout.
func (s *Store) LoadSnapshot(ctx context.Context, shard int) (seq uint64, data []byte, err error) {
	if shard < 0 || shard >= MaxShards {
		return 0, nil, fmt.Errorf("%w: shard %d is outside [0, %d)", ErrInvalidArgument, shard, MaxShards)
	}

	ctx, cancel := withTimeout(ctx)
	defer cancel()

	obj, err := s.snapshots.Get(ctx, snapshotName(shard))
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return 0, nil, fmt.Errorf("%w: shard %d", ErrNoSnapshot, shard)
	}
	if err != nil {
		return 0, nil, fmt.Errorf("load snapshot of shard %d: %w", shard, err)
	}
	defer obj.Close()

	info, err := obj.Info()
	if err != nil {
		return 0, nil, fmt.Errorf("load snapshot of shard %d: %w", shard, err)
	}

	seq, err = strconv.ParseUint(info.Metadata[snapshotSeqKey], 10, 64)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: snapshot of shard %d has sequence metadata %q",
			ErrCorruptRecord, shard, info.Metadata[snapshotSeqKey])
	}

	data = make([]byte, 0, info.Size)
	buf := bytes.NewBuffer(data)
	_, err = io.Copy(buf, obj)
	if err != nil {
		return 0, nil, fmt.Errorf("read snapshot of shard %d at sequence %d: %w", shard, seq, err)
	}

	return seq, buf.Bytes(), nil
}
