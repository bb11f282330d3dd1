package persistence

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// WatchResults calls fn with every results document in the store and then
// with every document stored later, in the bucket's order, until ctx ends
// or the watch fails. loaded runs once, after the documents stored before
// the call. Every process of a cluster watches the bucket, so each document
// that one aggregator stores reaches the sockets of all of them. fn runs on
// one goroutine and must return quickly. The watcher is an ordered
// consumer, which the client library recreates after a reconnect, so
// WatchResults returns only when ctx ends or the watcher's channel closes.
func (s *Store) WatchResults(ctx context.Context, fn func(poll string, doc []byte), loaded func()) error {
	watcher, err := s.results.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch %s: %w", s.results.Bucket(), err)
	}
	defer func() { _ = watcher.Stop() }()

	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case entry, ok := <-watcher.Updates():
			if !ok {
				return fmt.Errorf("watch %s: the watcher stopped", s.results.Bucket())
			}
			if entry == nil {
				loaded()
				continue
			}
			if entry.Operation() == jetstream.KeyValuePut {
				fn(entry.Key(), entry.Value())
			}
		}
	}
}
