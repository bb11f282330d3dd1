package persistence

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// MembersBucket is the KV bucket in which cluster members announce
// themselves.
const MembersBucket = "LIVEVOTE_MEMBERS"

// membersMaxAge is how long a member's record outlives its last heartbeat
// in the bucket. Members judge liveness by heartbeats, not by this age; it
// only clears records of members that are long gone.
const membersMaxAge = 10 * time.Minute

// Members returns the KV bucket of cluster members, creating it with the
// Store's replica count on first use.
func (s *Store) Members(ctx context.Context) (jetstream.KeyValue, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()

	kv, err := s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      MembersBucket,
		Description: "LiveVote cluster members and their heartbeats",
		History:     1,
		TTL:         membersMaxAge,
		Storage:     jetstream.FileStorage,
		Replicas:    s.cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("create or update KV bucket %s: %w", MembersBucket, err)
	}

	return kv, nil
}
