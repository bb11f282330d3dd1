package persistence

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// SyncMode selects when the embedded JetStream server fsyncs its files.
type SyncMode string

const (
	// SyncAlways fsyncs every write before JetStream acknowledges it. An
	// acknowledged write survives an OS crash or power loss.
	SyncAlways SyncMode = "always"

	// SyncInterval leaves fsync to JetStream's timer (every 2 minutes in
	// nats-server v2.15). A process crash loses nothing, but an OS crash or
	// power loss can lose writes acknowledged since the last fsync.
	SyncInterval SyncMode = "interval"
)

// DefaultTimeout is the time limit that a Store call applies when its context
// has no deadline. Replays and the reads and writes of a shard's recovery
// apply it to each request and each wait for the next message, whatever the
// context's deadline, instead of to the whole call.
const DefaultTimeout = 5 * time.Second

// startTimeout is the time limit for the embedded server to become ready
// when the Open context has no deadline.
const startTimeout = 30 * time.Second

// externalStartTimeout is the time limit for an external NATS server or
// cluster to accept the setup, retries included. A cluster that starts with
// its hubs may take several seconds to elect a meta leader.
const externalStartTimeout = 60 * time.Second

// ParseSyncMode parses "always" or "interval". The empty string is SyncAlways.
func ParseSyncMode(s string) (SyncMode, error) {
	switch SyncMode(s) {
	case SyncAlways, "":
		return SyncAlways, nil
	case SyncInterval:
		return SyncInterval, nil
	}

	return "", fmt.Errorf("%w: sync mode %q is not valid, use %q or %q",
		ErrInvalidArgument, s, SyncAlways, SyncInterval)
}

// Config configures Open. The zero value of each field is its documented
// default, but DataDir is required unless NatsURL is set.
type Config struct {
	// DataDir is the directory of the embedded JetStream store, which lives
	// under DataDir/jetstream. It is required when NatsURL is empty and unused
	// otherwise. Open never falls back to another directory.
	DataDir string

	// NatsURL lists external NATS servers, comma separated. Empty starts the
	// embedded server.
	NatsURL string

	// Sync selects the fsync policy of the embedded server. The zero value
	// is SyncAlways. It has no effect on external servers.
	Sync SyncMode

	// Replicas is the replica count of the stream, the KV buckets and the
	// object store: 1 to 5, and 1 for the embedded server. Zero means 1. A
	// clustered deployment uses 3.
	Replicas int

	// Logger receives start, stop and error records. Nil discards them.
	Logger *slog.Logger
}

// normalize fills in defaults and validates cfg.
func (cfg Config) normalize() (Config, error) {
	mode, err := ParseSyncMode(string(cfg.Sync))
	if err != nil {
		return cfg, err
	}
	cfg.Sync = mode

	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.Replicas < 1 || cfg.Replicas > 5 {
		return cfg, fmt.Errorf("%w: replicas %d is not valid, use 1 to 5 (JetStream's limit)",
			ErrInvalidArgument, cfg.Replicas)
	}

	if cfg.NatsURL == "" && cfg.Replicas > 1 {
		return cfg, fmt.Errorf("%w: replicas %d needs a NATS cluster, but the embedded server is a single node; "+
			"use replicas 1 or set Config.NatsURL to the cluster", ErrInvalidArgument, cfg.Replicas)
	}

	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}

	if cfg.NatsURL == "" && cfg.DataDir == "" {
		return cfg, fmt.Errorf("%w: no data directory, set Config.DataDir or Config.NatsURL", ErrDataDir)
	}

	return cfg, nil
}

// requestTimeout returns ctx limited to DefaultTimeout, or to its own
// deadline when that comes first. It bounds one request or one wait inside a
// call whose context may allow minutes, such as a shard's recovery: a reply
// lost while the connection reconnected would otherwise hold the caller
// until that whole deadline.
func requestTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, DefaultTimeout)
}

// withTimeout returns ctx limited to DefaultTimeout when it has no deadline.
func withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}

	return context.WithTimeout(ctx, DefaultTimeout)
}
