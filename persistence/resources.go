package persistence

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Names of the JetStream resources. Renaming one orphans the stored data.
const (
	VotesStream     = "LIVEVOTE_VOTES"
	ResultsBucket   = "LIVEVOTE_RESULTS"
	CatalogBucket   = "LIVEVOTE_CATALOG"
	SystemBucket    = "LIVEVOTE_SYSTEM"
	SnapshotsBucket = "LIVEVOTE_SNAPSHOTS"

	// VoteSubject is the subject of the vote stream's messages, each of
	// which holds the batches of one group commit.
	VoteSubject = "livevote.votes.log"

	// voteSubjects is the stream's subject filter. It also matches the
	// per-shard subjects livevote.votes.<shard> of releases that stored one
	// batch per message, so their messages stay in the stream and replay.
	voteSubjects = "livevote.votes.*"
)

// DuplicateWindow is how long the vote stream remembers a batch id. A batch
// appended again with the same id within this window is stored once.
const DuplicateWindow = 2 * time.Minute

// maxMessageBytes is the largest vote stream message: MaxMessageBytes plus
// room for the headers.
const maxMessageBytes = MaxMessageBytes + messageHeaderRoom

// ensureResources creates or updates the stream, buckets and object store.
// Every step is idempotent, so concurrent Opens against one cluster agree.
func (s *Store) ensureResources(ctx context.Context) error {
	var err error

	s.votes, err = s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        VotesStream,
		Description: "LiveVote vote batches, several per message",
		Subjects:    []string{voteSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      0,
		MaxBytes:    -1,
		MaxMsgs:     -1,
		MaxMsgSize:  maxMessageBytes,
		Duplicates:  DuplicateWindow,
		Replicas:    s.cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("create or update stream %s: %w", VotesStream, err)
	}

	s.results, err = s.ensureBucket(ctx, ResultsBucket, "LiveVote results document per poll")
	if err != nil {
		return err
	}

	s.catalog, err = s.ensureBucket(ctx, CatalogBucket, "LiveVote events, polls and options")
	if err != nil {
		return err
	}

	s.system, err = s.ensureBucket(ctx, SystemBucket, "LiveVote shard ring and secrets")
	if err != nil {
		return err
	}

	s.snapshots, err = s.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      SnapshotsBucket,
		Description: "LiveVote shard snapshots",
		Storage:     jetstream.FileStorage,
		Replicas:    s.cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("create or update object store %s: %w", SnapshotsBucket, err)
	}

	return nil
}

// ensureBucket creates or updates a file-backed KV bucket that keeps only the
// latest value of each key.
func (s *Store) ensureBucket(ctx context.Context, name, description string) (jetstream.KeyValue, error) {
	kv, err := s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      name,
		Description: description,
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    s.cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("create or update KV bucket %s: %w", name, err)
	}

	return kv, nil
}
