package persistence

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// WatchResults calls fn with every results document in the store and then
// with every document stored later, in the bucket's order, until ctx ends.
// loaded runs after the documents stored before the call. Every process of a
// cluster watches the bucket, so each document that one aggregator stores
// reaches the sockets of all of them. fn runs on one goroutine and must
// return quickly.
//
// Like WatchCatalog, WatchResults starts a new watcher when the connection
// reconnects, because a watcher whose server went away recovers only after
// about 20 s, and after 1 s when a watcher ends. A new watcher delivers the
// latest document of every poll again, so fn must ignore documents it has
// seen, as the version of a document lets it. WatchResults returns nil when
// ctx ends and an error wrapping ErrClosed when the connection is closed.
func (s *Store) WatchResults(ctx context.Context, fn func(poll string, doc []byte), loaded func()) error {
	reconnected := s.nc.StatusChanged(nats.CONNECTED)
	defer s.nc.RemoveStatusListener(reconnected)

	first := true
	for {
		err := s.watchResultsOnce(ctx, fn, func() {
			if first {
				first = false
				loaded()
			}
		}, reconnected)
		if ctx.Err() != nil {
			return nil
		}
		if s.nc.IsClosed() || s.nc.IsDraining() {
			return fmt.Errorf("%w: results watch stopped: %v", ErrClosed, err)
		}
		if errors.Is(err, errReconnected) {
			s.log.Info("restarting results watch after reconnect")
			continue
		}

		s.log.Warn("results watch ended; restarting", "err", err, "retry_in", watchRetryWait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(watchRetryWait):
		}
	}
}

func (s *Store) watchResultsOnce(ctx context.Context, fn func(poll string, doc []byte), loaded func(),
	reconnected <-chan nats.Status) error {
	watchCtx, cancel := context.WithCancel(ctx)
	defer cancel()

	watcher, err := s.results.WatchAll(watchCtx, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("start watcher of %s: %w", ResultsBucket, err)
	}
	defer s.stopKVWatcher(ResultsBucket, watcher)

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-reconnected:
			return errReconnected
		case entry, ok := <-watcher.Updates():
			if !ok {
				return fmt.Errorf("watcher of %s closed", ResultsBucket)
			}
			if entry == nil {
				loaded()
				continue
			}
			fn(entry.Key(), entry.Value())
		}
	}
}
