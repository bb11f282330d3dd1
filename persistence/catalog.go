package persistence

import (
	"context"
	"errors"
	"fmt"
	"strings"

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

// PutCatalog stores value under key, replacing the previous value. Keys
// follow ValidateKey, for example "event.<id>" and "poll.<id>". When ctx has
// no deadline, it gives up after DefaultTimeout.
func (s *Store) PutCatalog(ctx context.Context, key string, value []byte) error {
	return s.put(ctx, s.catalog, key, value)
}

// GetCatalog returns the value under key, or an error wrapping ErrNotFound.
func (s *Store) GetCatalog(ctx context.Context, key string) ([]byte, error) {
	return s.get(ctx, s.catalog, key)
}

// ListCatalog returns every catalog record whose key starts with prefix, such
// as "event.", or all records for the empty prefix. It returns an empty map
// when none match. A prefix that ends with '.' is filtered on the server;
// another prefix reads the whole catalog and filters in the client. When ctx
// has no deadline, it gives up after DefaultTimeout.
func (s *Store) ListCatalog(ctx context.Context, prefix string) (map[string][]byte, error) {
	err := validatePrefix(prefix)
	if err != nil {
		return nil, err
	}

	filter := jetstream.AllKeys
	if strings.HasSuffix(prefix, ".") {
		filter = prefix + ">"
	}

	ctx, cancel := withTimeout(ctx)
	defer cancel()

	var watcher jetstream.KeyWatcher
	watcher, err = s.catalog.Watch(ctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("list catalog with prefix %q: %w", prefix, err)
	}
	defer s.stopWatcher(watcher, prefix)

	return collectPrefix(ctx, watcher, prefix)
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

// put validates key and stores value in kv.
func (s *Store) put(ctx context.Context, kv jetstream.KeyValue, key string, value []byte) error {
	err := ValidateKey(key)
	if err != nil {
		return fmt.Errorf("put %s: %w", kv.Bucket(), err)
	}

	ctx, cancel := withTimeout(ctx)
	defer cancel()

	_, err = kv.Put(ctx, key, value)
	if err != nil {
		return fmt.Errorf("put %q in %s: %w", key, kv.Bucket(), err)
	}

	return nil
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
