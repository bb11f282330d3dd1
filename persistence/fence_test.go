package persistence

import (
	"context"
	"errors"
	"testing"
)

func fencedBatch(id string, shard int, voter string) Batch {
	return Batch{ID: id, Shard: shard, Votes: []VoteRecord{{VoteID: id + "-v", Poll: "p1", Voter: voter, Options: []string{"a"}, At: 1}}}
}

// TestClaimFencesTheEarlierWriter runs the handover of one shard between two
// writers: after the second claim, the first writer's appends are refused
// and a replay shows both claims and every stored batch once.
func TestClaimFencesTheEarlierWriter(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t, Config{DataDir: t.TempDir()})

	// Another shard's traffic on the packed subject and on its own subject
	// must not disturb shard 3's fence.
	_, err := s.AppendBatch(ctx, fencedBatch("other-packed", 4, "x"))
	if err != nil {
		t.Fatal(err)
	}

	last, err := s.LastShardSeq(ctx, 3)
	if err != nil || last != 0 {
		t.Fatalf("LastShardSeq of an unused shard = %d, %v; want 0, nil", last, err)
	}

	claimA, err := s.ClaimShard(ctx, 3, "writer-a", 0)
	if err != nil {
		t.Fatalf("first claim: %v", err)
	}
	seqA1, err := s.AppendFenced(ctx, fencedBatch("a1", 3, "v1"), claimA)
	if err != nil {
		t.Fatalf("append after own claim: %v", err)
	}
	_, err = s.AppendFenced(ctx, fencedBatch("other-fenced", 5, "y"), 0)
	if err != nil {
		t.Fatalf("append to another shard's subject: %v", err)
	}

	// Writer B claims with a stale expectation first and is refused.
	_, err = s.ClaimShard(ctx, 3, "writer-b", claimA)
	if !errors.Is(err, ErrFenced) {
		t.Fatalf("claim behind the last message: err = %v, want ErrFenced", err)
	}
	claimB, err := s.ClaimShard(ctx, 3, "writer-b", seqA1)
	if err != nil {
		t.Fatalf("claim after the last message: %v", err)
	}

	_, err = s.AppendFenced(ctx, fencedBatch("a2", 3, "v2"), seqA1)
	if !errors.Is(err, ErrFenced) {
		t.Fatalf("append by the fenced writer: err = %v, want ErrFenced", err)
	}
	seqB1, err := s.AppendFenced(ctx, fencedBatch("b1", 3, "v3"), claimB)
	if err != nil {
		t.Fatalf("append by the new owner: %v", err)
	}

	var ids []string
	r, err := s.ReplayShard(ctx, 3, 0, func(_ uint64, b Batch) error {
		ids = append(ids, b.ID)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 2 || ids[0] != "a1" || ids[1] != "b1" {
		t.Fatalf("replayed batches = %v, want [a1 b1]", ids)
	}
	if len(r.Claims) != 2 || r.Claims[0].Owner != "writer-a" || r.Claims[1].Owner != "writer-b" || r.Claims[1].Seq != claimB {
		t.Fatalf("claims = %+v, want writer-a then writer-b at %d", r.Claims, claimB)
	}
	if r.SubjectLast != seqB1 || r.Messages != 4 {
		t.Fatalf("SubjectLast = %d, Messages = %d; want %d and 4", r.SubjectLast, r.Messages, seqB1)
	}

	last, err = s.LastShardSeq(ctx, 3)
	if err != nil || last != seqB1 {
		t.Fatalf("LastShardSeq = %d, %v; want %d", last, err, seqB1)
	}

	// A replay after the last message of the shard delivers nothing: it
	// reads the packed subject, which may hold any shard's batches, and
	// skips other shards' own subjects.
	_, err = s.AppendFenced(ctx, fencedBatch("other-later-fenced", 5, "w"), 4)
	if err != nil {
		t.Fatal(err)
	}
	later, err := s.AppendBatch(ctx, fencedBatch("other-later", 4, "z"))
	if err != nil {
		t.Fatal(err)
	}
	r, err = s.ReplayShard(ctx, 3, seqB1, func(uint64, Batch) error {
		t.Error("replay after the last message delivered a batch")
		return nil
	})
	if err != nil || r.Messages != 0 || r.Last != later || r.SubjectLast != 0 {
		t.Fatalf("empty replay = %+v, %v", r, err)
	}

	// The single-node recovery reads claims as messages without batches.
	n := 0
	_, _, err = s.ReplayAll(ctx, 0, func(uint64, Batch) error { n++; return nil })
	if err != nil || n != 6 {
		t.Fatalf("ReplayAll delivered %d batches, err %v; want 6", n, err)
	}
}

func TestDecodeClaimRejectsDamage(t *testing.T) {
	good := encodeClaim(7, "owner-1")
	c, ok, err := decodeClaim(good)
	if !ok || err != nil || c.Shard != 7 || c.Owner != "owner-1" {
		t.Fatalf("decodeClaim(good) = %+v, %v, %v", c, ok, err)
	}

	for name, data := range map[string][]byte{
		"version":   append([]byte{'L', 'V', 'C', 9}, good[4:]...),
		"truncated": good[:len(good)-1],
		"trailing":  append(append([]byte{}, good...), 0),
	} {
		_, ok, err := decodeClaim(data)
		if !ok || !errors.Is(err, ErrCorruptBatch) {
			t.Errorf("%s: ok %v, err %v; want a claim with ErrCorruptBatch", name, ok, err)
		}
		_, err = DecodeMessage(data)
		if !errors.Is(err, ErrCorruptBatch) {
			t.Errorf("%s: DecodeMessage err %v; want ErrCorruptBatch", name, err)
		}
	}
}
