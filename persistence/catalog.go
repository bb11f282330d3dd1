package persistence

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MaxKeyBytes is the longest catalog key, results key or secret name.
const MaxKeyBytes = 256

// ValidateKey checks that key is usable as a catalog key, results key or
// secret name. A key has 1 to MaxKeyBytes ASCII letters, digits, '-', '_' and
// '.'. It must not start or end with '.' or contain "..", because '.'
// separates the tokens of a NATS subject and a token cannot be empty. The
// error wraps ErrInvalidArgument and names the key.
func ValidateKey(key string) error {
	if key == "" || len(key) > MaxKeyBytes {
		return fmt.Errorf("%w: key %q must have 1 to %d bytes", ErrInvalidArgument, key, MaxKeyBytes)
	}
	if key[0] == '.' || key[len(key)-1] == '.' || strings.Contains(key, "..") {
		return fmt.Errorf("%w: key %q must not start or end with '.' or contain \"..\"", ErrInvalidArgument, key)
	}

	for i := 0; i < len(key); i++ {
		if !keyByte(key[i]) {
			return fmt.Errorf("%w: key %q contains %q at byte %d; use only letters, digits, '-', '_' and '.'",
				ErrInvalidArgument, key, key[i], i)
		}
	}

	return nil
}

// validatePrefix checks a ListCatalog prefix: empty, or the start of a key
// that ValidateKey accepts.
func validatePrefix(prefix string) error {
	valid := len(prefix) <= MaxKeyBytes && !strings.HasPrefix(prefix, ".") && !strings.Contains(prefix, "..")
	for i := 0; valid && i < len(prefix); i++ {
		valid = keyByte(prefix[i])
	}
	if !valid {
		return fmt.Errorf("%w: catalog prefix %q is not the start of a valid key; "+
			"use letters, digits, '-', '_' and single '.' separators", ErrInvalidArgument, prefix)
	}

	return nil
}

func keyByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '_' || c == '.'
}

// PutCatalog stores value under key, replacing the previous value, and
// returns the revision of the stored value. Revisions are the catalog
// bucket's stream sequence numbers, so a later put of any key gets a higher
// revision, and WatchCatalog reports the same number for this put. Keys
// follow ValidateKey, for example "event.<id>" and "poll.<id>". When ctx has
// no deadline, it gives up after DefaultTimeout.
func (s *Store) PutCatalog(ctx context.Context, key string, value []byte) (uint64, error) {
	return s.put(ctx, s.catalog, key, value)
}

// CreateCatalog stores value under key only when the key has no value yet,
// and returns the revision like PutCatalog. When the key has one, it stores
// nothing and returns an error wrapping ErrExists, however many writers
// race, so the first writer owns the key. When ctx has no deadline, it gives
// up after DefaultTimeout.
func (s *Store) CreateCatalog(ctx context.Context, key string, value []byte) (uint64, error) {
	err := ValidateKey(key)
	if err != nil {
		return 0, fmt.Errorf("create in %s: %w", s.catalog.Bucket(), err)
	}

	ctx, cancel := withTimeout(ctx)
	defer cancel()

	revision, err := s.catalog.Create(ctx, key, value)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("%w: %q in %s", ErrExists, key, s.catalog.Bucket())
	}
	if err != nil {
		return 0, fmt.Errorf("create %q in %s: %w", key, s.catalog.Bucket(), err)
	}

	return revision, nil
}

// UpdateCatalog stores value under key only when the key's latest value
// has revision, and returns the new revision. When another write came
// between, it stores nothing and returns an error wrapping ErrConflict, so
// a change made from a stale copy cannot replace a newer one. When ctx has
// no deadline, it gives up after DefaultTimeout.
func (s *Store) UpdateCatalog(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	err := ValidateKey(key)
	if err != nil {
		return 0, fmt.Errorf("update in %s: %w", s.catalog.Bucket(), err)
	}

	ctx, cancel := withTimeout(ctx)
	defer cancel()

	next, err := s.catalog.Update(ctx, key, value, revision)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return 0, fmt.Errorf("%w: %q in %s is past revision %d", ErrConflict, key, s.catalog.Bucket(), revision)
	}
	if err != nil {
		return 0, fmt.Errorf("update %q in %s: %w", key, s.catalog.Bucket(), err)
	}

	return next, nil
}

// GetCatalog returns the value under key, or an error wrapping ErrNotFound.
func (s *Store) GetCatalog(ctx context.Context, key string) ([]byte, error) {
	return s.get(ctx, s.catalog, key)
}

// ListCatalog returns every catalog record whose key starts with prefix, such
// as "event.", or all records for the empty prefix. It returns an empty map
// when none match. A prefix that ends with '.' is filtered on the server;
// another prefix reads the whole catalog and filters in the client. With
// the embedded server, it gives up after DefaultTimeout when ctx has no
// deadline. External servers may still be electing the leaders of a bucket
// created a moment ago, as when every hub of a cluster starts at once.
// Against them it tries again like Open's setup: 5 s per attempt, for up to
// 60 s or until ctx ends.
func (s *Store) ListCatalog(ctx context.Context, prefix string) (map[string][]byte, error) {
	err := validatePrefix(prefix)
	if err != nil {
		return nil, err
	}

	filter := jetstream.AllKeys
	if strings.HasSuffix(prefix, ".") {
		filter = prefix + ">"
	}

	if s.server != nil {
		ctx, cancel := withTimeout(ctx)
		defer cancel()

		return s.listCatalogOnce(ctx, filter, prefix)
	}

	var records map[string][]byte
	err = s.retryStarting(ctx, fmt.Sprintf("list catalog with prefix %q", prefix), func(actx context.Context) error {
		var err error
		records, err = s.listCatalogOnce(actx, filter, prefix)
		return err
	})

	return records, err
}

// listCatalogOnce reads the catalog records under filter once.
func (s *Store) listCatalogOnce(ctx context.Context, filter, prefix string) (map[string][]byte, error) {
	watcher, err := s.catalog.Watch(ctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("list catalog with prefix %q: %w", prefix, err)
	}
	defer s.stopWatcher(watcher, prefix)

	return collectPrefix(ctx, watcher, prefix)
}

// watchRetryWait is the pause before WatchCatalog starts a new watcher after
// the previous one failed to start or ended while ctx was still live.
const watchRetryWait = time.Second

// watchDrainTimeout bounds how long a stopped catalog watcher is read to its
// end. Reading it frees the nats.go goroutine that may wait to deliver one
// more entry.
const watchDrainTimeout = 2 * time.Second

// WatchCatalog calls fn with the latest value of every catalog key and then
// with each later put, until ctx ends, and returns nil then. fn runs on the
// calling goroutine, one call at a time, and revisions only grow from one
// call to the next, so fn gets the puts in bucket order. The revision is the
// one PutCatalog returned for that value. When a key is put again before fn
// got the older value, fn may get only the newer one, because the bucket
// keeps one value per key. Deletes and purges are not passed on.
//
// The watcher is a JetStream ordered consumer. When it misses a message or
// stops getting heartbeats, nats.go recreates it from the revision after the
// last one it delivered. A server restart loses the consumer, and that
// recovery took about 20 s with nats.go v1.56 in this package's restart
// test, so WatchCatalog also starts a new watcher as soon as the connection
// has reconnected. When the watcher ends
// or fails to start while ctx is live, WatchCatalog logs a warning and
// starts a new one after 1 s. A new watcher delivers the latest value of
// every key again, and WatchCatalog passes fn only the revisions above the
// last one fn received. So fn gets the latest value of every key and never
// gets a revision twice. WatchCatalog returns
// an error wrapping ErrClosed once the connection is closed or draining.
// Cancel ctx and wait for WatchCatalog to return before Close, so that
// Close need not wait for fn.
func (s *Store) WatchCatalog(ctx context.Context, fn func(key string, value []byte, revision uint64)) error {
	var last uint64 // revision of the last value passed to fn

	reconnected := s.nc.StatusChanged(nats.CONNECTED)
	defer s.nc.RemoveStatusListener(reconnected)

	for {
		err := s.watchCatalogOnce(ctx, fn, &last, reconnected)
		if ctx.Err() != nil {
			return nil
		}
		if s.nc.IsClosed() || s.nc.IsDraining() {
			return fmt.Errorf("%w: catalog watch stopped after revision %d: %v", ErrClosed, last, err)
		}
		if errors.Is(err, errReconnected) {
			s.log.Info("restarting catalog watch after reconnect", "after_revision", last)
			continue
		}

		s.log.Warn("catalog watch ended; restarting", "err", err, "after_revision", last, "retry_in", watchRetryWait)

		select {
		case <-ctx.Done():
			return nil
		case <-time.After(watchRetryWait):
		}
	}
}

// errReconnected ends a catalog watcher when the connection has reconnected.
var errReconnected = errors.New("NATS connection reconnected")

// watchCatalogOnce runs one catalog watcher until ctx ends, the watcher ends
// or reconnected receives. It passes fn the entries whose revision is above
// *last and advances *last.
func (s *Store) watchCatalogOnce(ctx context.Context, fn func(key string, value []byte, revision uint64),
	last *uint64, reconnected <-chan nats.Status) error {
	// The watcher's subscription ends with watchCtx, so a restart leaves
	// nothing of the previous watcher behind.
	watchCtx, cancel := context.WithCancel(ctx)
	defer cancel()

	watcher, err := s.catalog.WatchAll(watchCtx, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("start watcher of %s: %w", CatalogBucket, err)
	}
	defer s.stopKVWatcher(CatalogBucket, watcher)

	s.log.Debug("catalog watch started", "after_revision", *last)

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-reconnected:
			return errReconnected
		case entry, ok := <-watcher.Updates():
			if !ok {
				return fmt.Errorf("watcher of %s closed", CatalogBucket)
			}
			if entry == nil {
				s.log.Debug("catalog watch caught up", "revision", *last)
				continue
			}
			if entry.Revision() <= *last {
				continue
			}

			*last = entry.Revision()
			fn(entry.Key(), entry.Value(), entry.Revision())
		}
	}
}

// stopKVWatcher stops a watcher of bucket and reads its channel until
// nats.go closes it, for at most watchDrainTimeout.
func (s *Store) stopKVWatcher(bucket string, watcher jetstream.KeyWatcher) {
	// A subscription that already ended, or whose consumer a server restart
	// removed, needs no stop.
	err := watcher.Stop()
	if err != nil && !errors.Is(err, nats.ErrBadSubscription) && !errors.Is(err, nats.ErrConnectionClosed) &&
		!errors.Is(err, nats.ErrConsumerNotFound) {
		s.log.Warn("stop KV watcher failed", "bucket", bucket, "err", err)
	}

	timeout := time.NewTimer(watchDrainTimeout)
	defer timeout.Stop()

	for {
		select {
		case _, ok := <-watcher.Updates():
			if !ok {
				return
			}
		case <-timeout.C:
			s.log.Warn("KV watcher not closed after stop", "bucket", bucket, "waited", watchDrainTimeout)
			return
		}
	}
}

// collectPrefix reads the watcher's initial values up to the nil entry that
// ends them and keeps the keys that start with prefix.
func collectPrefix(ctx context.Context, watcher jetstream.KeyWatcher, prefix string) (map[string][]byte, error) {
	records := make(map[string][]byte)

	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("list catalog with prefix %q: %w", prefix, ctx.Err())
		case entry, ok := <-watcher.Updates():
			if !ok {
				return nil, fmt.Errorf("list catalog with prefix %q: watcher closed early", prefix)
			}
			if entry == nil {
				return records, nil
			}
			if strings.HasPrefix(entry.Key(), prefix) {
				records[entry.Key()] = entry.Value()
			}
		}
	}
}

func (s *Store) stopWatcher(watcher jetstream.KeyWatcher, prefix string) {
	err := watcher.Stop()
	if err != nil {
		s.log.Warn("stop catalog watcher failed", "prefix", prefix, "err", err)
	}
}

// put validates key, stores value in kv and returns the revision.
func (s *Store) put(ctx context.Context, kv jetstream.KeyValue, key string, value []byte) (uint64, error) {
	err := ValidateKey(key)
	if err != nil {
		return 0, fmt.Errorf("put %s: %w", kv.Bucket(), err)
	}

	ctx, cancel := withTimeout(ctx)
	defer cancel()

	revision, err := kv.Put(ctx, key, value)
	if err != nil {
		return 0, fmt.Errorf("put %q in %s: %w", key, kv.Bucket(), err)
	}

	return revision, nil
}

// get validates key and reads its value from kv.
func (s *Store) get(ctx context.Context, kv jetstream.KeyValue, key string) ([]byte, error) {
	err := ValidateKey(key)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", kv.Bucket(), err)
	}

	ctx, cancel := withTimeout(ctx)
	defer cancel()

	entry, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: %q in %s", ErrNotFound, key, kv.Bucket())
	}
	if err != nil {
		return nil, fmt.Errorf("get %q from %s: %w", key, kv.Bucket(), err)
	}

	return entry.Value(), nil
}
