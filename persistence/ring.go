package persistence

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// RingSaltBytes is the size of the ring salt.
const RingSaltBytes = 32

// MaxSecretBytes is the largest secret that LoadOrCreateSecret creates.
const MaxSecretBytes = 1024

// ringKey is the system bucket key of the ring.
const ringKey = "ring"

// Ring is the stored input of the consistent-hash ring that maps sessions
// to shards. Both values are fixed for the life of a data directory, so a
// restart maps every session to the same shard. Salt is secret.
type Ring struct {
	Salt   []byte
	Shards int
}

// ringRecord is the stored form of a Ring.
type ringRecord struct {
	Version int    `json:"version"`
	Salt    []byte `json:"salt"`
	Shards  int    `json:"shards"`
}

// LoadOrCreateRing returns the stored ring. On the first call for a store it
// creates a ring with a random RingSaltBytes salt and the given shard count,
// which must be 1 to MaxShards. The create is atomic, so concurrent callers
// all return the same ring. Once a ring exists, shards 0 accepts its shard
// count and any other count must equal it: a different one returns an error
// wrapping ErrShardMismatch. When ctx has no deadline, it gives up after
// DefaultTimeout.
func (s *Store) LoadOrCreateRing(ctx context.Context, shards int) (Ring, error) {
	if shards < 0 || shards > MaxShards {
		return Ring{}, fmt.Errorf("%w: shard count %d is outside 1 to %d", ErrInvalidArgument, shards, MaxShards)
	}

	ctx, cancel := withTimeout(ctx)
	defer cancel()

	newRing := func() ([]byte, error) {
		if shards == 0 {
			return nil, fmt.Errorf("%w: no shard ring is stored yet, so the shard count must be 1 to %d, not 0",
				ErrInvalidArgument, MaxShards)
		}
		return json.Marshal(ringRecord{Version: 1, Salt: randomBytes(RingSaltBytes), Shards: shards})
	}
	data, created, err := s.loadOrCreate(ctx, ringKey, newRing)
	if err != nil {
		return Ring{}, fmt.Errorf("load or create shard ring: %w", err)
	}

	ring, err := decodeRing(data)
	if err != nil {
		return Ring{}, err
	}
	if created {
		s.log.Info("created shard ring", "shards", ring.Shards)
	}

	if shards != 0 && ring.Shards != shards {
		return Ring{}, fmt.Errorf("%w: the store has %d shards but %d were requested; the shard count is fixed "+
			"for the life of a data directory, so start with %d shards or use a new data directory",
			ErrShardMismatch, ring.Shards, shards, ring.Shards)
	}

	return ring, nil
}

func decodeRing(data []byte) (Ring, error) {
	var rec ringRecord
	err := json.Unmarshal(data, &rec)
	if err != nil {
		return Ring{}, fmt.Errorf("%w: shard ring: %v", ErrCorruptRecord, err)
	}
	if rec.Version != 1 || len(rec.Salt) != RingSaltBytes || rec.Shards < 1 || rec.Shards > MaxShards {
		return Ring{}, fmt.Errorf("%w: shard ring has version %d, a %d byte salt and %d shards; "+
			"want version 1, %d bytes and 1 to %d shards", ErrCorruptRecord, rec.Version, len(rec.Salt),
			rec.Shards, RingSaltBytes, MaxShards)
	}

	return Ring{Salt: rec.Salt, Shards: rec.Shards}, nil
}

// LoadOrCreateSecret returns the secret stored under name, such as the
// session signing key. On the first call for name it stores size random
// bytes; the create is atomic, so concurrent callers all return the same
// secret. name follows ValidateKey and size must be 1 to MaxSecretBytes and
// equal to the stored size. When ctx has no deadline, it gives up after
// DefaultTimeout.
func (s *Store) LoadOrCreateSecret(ctx context.Context, name string, size int) ([]byte, error) {
	err := ValidateKey(name)
	if err != nil {
		return nil, fmt.Errorf("secret name: %w", err)
	}
	if size < 1 || size > MaxSecretBytes {
		return nil, fmt.Errorf("%w: secret %q size %d is outside 1 to %d bytes",
			ErrInvalidArgument, name, size, MaxSecretBytes)
	}

	ctx, cancel := withTimeout(ctx)
	defer cancel()

	newSecret := func() ([]byte, error) {
		return randomBytes(size), nil
	}
	secret, created, err := s.loadOrCreate(ctx, "secret."+name, newSecret)
	if err != nil {
		return nil, fmt.Errorf("load or create secret %q: %w", name, err)
	}
	if created {
		s.log.Info("created secret", "name", name, "bytes", size)
	}

	if len(secret) != size {
		return nil, fmt.Errorf("%w: secret %q is stored with %d bytes but %d were requested; "+
			"request the stored size", ErrInvalidArgument, name, len(secret), size)
	}

	return secret, nil
}

// loadOrCreate returns the system bucket value of key. When the key is
// missing, it stores the output of create with an atomic create, and when
// another caller created the key first, it returns that caller's value.
// created reports whether this call stored the value.
func (s *Store) loadOrCreate(ctx context.Context, key string, create func() ([]byte, error)) (value []byte, created bool, err error) {
	entry, err := s.getStarting(ctx, key)
	if err == nil {
		return entry.Value(), false, nil
	}
	if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, false, err
	}

	value, err = create()
	if err != nil {
		return nil, false, err
	}

	_, err = s.system.Create(ctx, key, value)
	if errors.Is(err, jetstream.ErrKeyExists) {
		// The bucket's leader has the other caller's value, but a read may
		// reach a replica that has not stored it yet, so a missing key is
		// read again for a moment.
		for attempt := 1; ; attempt++ {
			entry, err = s.system.Get(ctx, key)
			if err == nil {
				return entry.Value(), false, nil
			}
			if !errors.Is(err, jetstream.ErrKeyNotFound) || attempt == replicaReadAttempts {
				return nil, false, fmt.Errorf("read %s, which another process created: %w", key, err)
			}
			select {
			case <-ctx.Done():
				return nil, false, ctx.Err()
			case <-time.After(replicaReadWait):
			}
		}
	}
	if err != nil {
		return nil, false, err
	}

	return value, true, nil
}

// getStarting reads key from the system bucket. A bucket that a NATS cluster
// has just created may have no replica that serves reads yet, so a read
// that found no responder or timed out is tried again, as the setup is,
// for at most externalStartTimeout.
func (s *Store) getStarting(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	if s.server != nil {
		ctx, cancel := context.WithTimeout(ctx, setupAttemptTimeout)
		defer cancel()

		return s.system.Get(ctx, key)
	}

	var entry jetstream.KeyValueEntry
	err := s.retryStarting(ctx, "read "+key, func(actx context.Context) error {
		var err error
		entry, err = s.system.Get(actx, key)
		return err
	})

	return entry, err
}

// retryStarting runs attempt until it succeeds, fails with an error that
// transientSetupError does not accept, or externalStartTimeout has passed
// since the first attempt. Each attempt gets setupAttemptTimeout, and
// attempts are setupRetryWait apart. what names the work in the log and in
// the error after the last attempt.
func (s *Store) retryStarting(ctx context.Context, what string, attempt func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, externalStartTimeout)
	defer cancel()

	for n := 1; ; n++ {
		actx, acancel := context.WithTimeout(ctx, setupAttemptTimeout)
		err := attempt(actx)
		acancel()
		if err == nil || !transientSetupError(err) || ctx.Err() != nil {
			return err
		}

		s.log.Warn("start-up read failed; retrying", "what", what, "attempt", n, "retry_in", setupRetryWait, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s after %d attempts: %w", what, n, err)
		case <-time.After(setupRetryWait):
		}
	}
}

// A key that another process just created is read up to replicaReadAttempts
// times, replicaReadWait apart, until a replica has it.
const (
	replicaReadAttempts = 20
	replicaReadWait     = 50 * time.Millisecond
)

// randomBytes returns n bytes from crypto/rand. Since Go 1.24, rand.Read
// never returns an error: it crashes the program if the system source fails.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)

	return b
}
