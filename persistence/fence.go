package persistence

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Fenced appends give each shard a single writer when several processes
// share one vote stream. A shard's fenced batches and claims go to its own
// subject, ShardSubject, and each publish carries the sequence of the last
// message on that subject that the writer has seen. JetStream stores the
// message only if that is still the subject's last one, so a writer whose
// shard was claimed by another process has every later append refused.

// ErrFenced reports a fenced append or claim that JetStream refused because
// another message reached the shard's subject first. For an append it means
// that another process claimed the shard or that the writer's own earlier
// append was stored after all. ReplayShard shows which of the two it was.
var ErrFenced = errors.New("persistence: another writer appended to the shard's subject")

// claimMagic starts every claim message: "LVC" and the format version.
var claimMagic = [4]byte{'L', 'V', 'C', 1}

// errWrongLastSequence is the JetStream error code for a publish whose
// expected last subject sequence did not match.
const errWrongLastSequence jetstream.ErrorCode = 10071

// ShardSubject returns the subject of shard's fenced batches and claims,
// "livevote.votes.shard-0007" for 7.
func ShardSubject(shard int) string {
	return fmt.Sprintf("livevote.votes.shard-%04d", shard)
}

// Claim is the record that a process took over a shard: Owner names the
// shard actor's activation and Seq is the claim's stream sequence.
type Claim struct {
	Shard int
	Owner string
	Seq   uint64
}

// encodeClaim encodes a claim as "LVC" 0x01, owner, uvarint shard.
func encodeClaim(shard int, owner string) []byte {
	out := make([]byte, 0, len(claimMagic)+2*binary.MaxVarintLen64+len(owner))
	out = append(out, claimMagic[:]...)
	out = appendString(out, owner)

	return binary.AppendUvarint(out, uint64(shard))
}

// decodeClaim decodes a claim message, reporting false for any other
// message.
func decodeClaim(data []byte) (Claim, bool, error) {
	if len(data) < len(claimMagic) || string(data[:3]) != string(claimMagic[:3]) {
		return Claim{}, false, nil
	}
	if data[3] != claimMagic[3] {
		return Claim{}, true, fmt.Errorf("%w: claim format version %d, want %d", ErrCorruptBatch, data[3], claimMagic[3])
	}

	d := decoder{data: string(data), off: len(claimMagic)}
	owner, err := d.string("owner")
	if err != nil {
		return Claim{}, true, fmt.Errorf("%w: claim: %v", ErrCorruptBatch, err)
	}
	shard, err := d.count("shard", MaxShards-1)
	if err != nil {
		return Claim{}, true, fmt.Errorf("%w: claim: %v", ErrCorruptBatch, err)
	}
	if d.off != len(d.data) {
		return Claim{}, true, fmt.Errorf("%w: claim: %d trailing bytes", ErrCorruptBatch, len(d.data)-d.off)
	}

	return Claim{Shard: shard, Owner: owner}, true, nil
}

// LastShardSeq returns the stream sequence of the last message on shard's
// subject, or 0 when there is none.
func (s *Store) LastShardSeq(ctx context.Context, shard int) (uint64, error) {
	if shard < 0 || shard >= MaxShards {
		return 0, fmt.Errorf("%w: shard %d is outside [0, %d)", ErrInvalidArgument, shard, MaxShards)
	}

	ctx, cancel := requestTimeout(ctx)
	defer cancel()

	msg, err := s.votes.GetLastMsgForSubject(ctx, ShardSubject(shard))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read the last message of %s: %w", ShardSubject(shard), err)
	}

	return msg.Sequence, nil
}

// ClaimShard stores a claim of shard by owner on the shard's subject if the
// subject's last message has sequence expect, and returns the claim's
// sequence. From then on every fenced append that expects an earlier
// sequence is refused. When another message came first it returns an error
// wrapping ErrFenced: the caller replays the new messages and claims again.
func (s *Store) ClaimShard(ctx context.Context, shard int, owner string, expect uint64) (uint64, error) {
	if shard < 0 || shard >= MaxShards {
		return 0, fmt.Errorf("%w: shard %d is outside [0, %d)", ErrInvalidArgument, shard, MaxShards)
	}
	err := validateField("owner", owner)
	if err != nil {
		return 0, fmt.Errorf("%w: claim of shard %d: %v", ErrInvalidArgument, shard, err)
	}

	// A claim runs inside a recovery, whose deadline allows minutes.
	ctx, cancel := requestTimeout(ctx)
	defer cancel()

	seq, err := s.publishFenced(ctx, ShardSubject(shard), encodeClaim(shard, owner), expect)
	if err != nil {
		return 0, fmt.Errorf("claim shard %d for %s after sequence %d: %w", shard, owner, expect, err)
	}

	return seq, nil
}

// AppendFenced stores b alone in one message on its shard's subject if the
// subject's last message has sequence expect, and returns the message's
// sequence once JetStream acknowledged it. It publishes once, without the
// retries of AppendBatch, because a retry of a stored message would be
// refused by the same check. An error wrapping ErrFenced means the batch is
// not stored. Any other error after the publish started means it may be
// stored; the caller replays the shard to find out.
func (s *Store) AppendFenced(ctx context.Context, b Batch, expect uint64) (uint64, error) {
	err := validateBatch(b)
	if err != nil {
		return 0, fmt.Errorf("%w: batch %q: %v", ErrInvalidBatch, b.ID, err)
	}

	data, err := EncodeBatch(b)
	if err != nil {
		return 0, err
	}
	if len(data) > MaxBatchBytes {
		return 0, fmt.Errorf("%w: batch %q of %d votes encodes to %d bytes, above the limit of %d; "+
			"split it into smaller batches", ErrBatchTooLarge, b.ID, len(b.Votes), len(data), MaxBatchBytes)
	}

	seq, err := s.publishFenced(ctx, ShardSubject(b.Shard), data, expect)
	if err != nil {
		return 0, fmt.Errorf("append batch %q of shard %d after sequence %d: %w", b.ID, b.Shard, expect, err)
	}

	return seq, nil
}

// publishFenced publishes data on subject with the expected last subject
// sequence and maps JetStream's refusal to ErrFenced.
func (s *Store) publishFenced(ctx context.Context, subject string, data []byte, expect uint64) (uint64, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()

	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(expect, 10))
	msg.Header.Set(jetstream.ExpectedStreamHeader, VotesStream)

	for attempt := 1; ; attempt++ {
		ack, err := s.js.PublishMsg(ctx, msg)
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == errWrongLastSequence {
			return 0, fmt.Errorf("%w: %s", ErrFenced, apiErr.Description)
		}
		// A clustered stream rejects the check while an earlier message on
		// the subject is still being replicated, even one whose ack the
		// writer already has. It stores nothing, so the publish is sent
		// again a moment later.
		if errors.As(err, &apiErr) && apiErr.ErrorCode == errSubjectInProcess && attempt < subjectBusyAttempts {
			select {
			case <-ctx.Done():
				return 0, err
			case <-time.After(time.Duration(attempt) * subjectBusyWait):
			}
			continue
		}
		if err != nil {
			return 0, err
		}

		return ack.Sequence, nil
	}
}

// errSubjectInProcess is the JetStream error code of an expected-sequence
// check refused because a message on the subject is still in process.
const errSubjectInProcess jetstream.ErrorCode = 10164

// A fenced publish refused with errSubjectInProcess is sent again up to
// subjectBusyAttempts times in all, waiting attempt times subjectBusyWait
// before each.
const (
	subjectBusyAttempts = 5
	subjectBusyWait     = 2 * time.Millisecond
)

// ShardReplay is the outcome of ReplayShard.
type ShardReplay struct {
	// Messages is the number of messages read that held a batch or a
	// claim of the shard.
	Messages int
	// Last is the sequence of the last message read, or the afterSeq
	// passed in when there was none.
	Last uint64
	// SubjectLast is the sequence of the last message read on the shard's
	// subject, or 0 when there was none.
	SubjectLast uint64
	// Claims lists the claims of the shard read, in stream order.
	Claims []Claim
}

// ReplayShard calls fn with every batch of shard whose stream sequence is
// above afterSeq, in stream order: the batches of the shard's own subject
// and those that the group commit packed into VoteSubject. Other shards'
// subjects are not read. It also reports the shard's claims and the
// sequence of the last message on its subject. It returns once it read the
// messages that matched when it began. A message that does not decode stops the
// replay with an error wrapping ErrCorruptBatch. Each request and each wait
// for the next message gives up after DefaultTimeout, or sooner when ctx
// ends.
func (s *Store) ReplayShard(ctx context.Context, shard int, afterSeq uint64,
	fn func(seq uint64, b Batch) error) (ShardReplay, error) {
	out := ShardReplay{Last: afterSeq}
	if shard < 0 || shard >= MaxShards {
		return out, fmt.Errorf("%w: shard %d is outside [0, %d)", ErrInvalidArgument, shard, MaxShards)
	}

	subject := ShardSubject(shard)
	lastSeq, err := s.lastSequence(ctx)
	if err != nil || lastSeq <= afterSeq {
		return out, err
	}

	cctx, cancel := requestTimeout(ctx)
	consumer, err := s.votes.OrderedConsumer(cctx, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{VoteSubject, subject},
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       afterSeq + 1,
		InactiveThreshold: replayInactiveThreshold,
	})
	cancel()
	if err != nil {
		return out, fmt.Errorf("replay shard %d: create ordered consumer: %w", shard, err)
	}

	// A filtered consumer that matches nothing after afterSeq never
	// delivers, so check the pending count before the first wait.
	ictx, cancel := requestTimeout(ctx)
	info, err := consumer.Info(ictx)
	cancel()
	if err != nil {
		return out, fmt.Errorf("replay shard %d: read consumer info: %w", shard, err)
	}
	if info.NumPending == 0 {
		s.deleteConsumer(info.Name)
		return out, nil
	}

	iter, err := consumer.Messages(jetstream.PullMaxMessages(replayPullMessages), jetstream.PullHeartbeat(replayHeartbeat))
	if err != nil {
		return out, fmt.Errorf("replay shard %d: start ordered consumer: %w", shard, err)
	}
	defer s.stopReplay(consumer, iter)

	// The replay stops after the messages that matched when it began, by
	// count and not by the pending count of later messages, which a
	// consumer that nats.go recreated may report as 0 too early.
	for read := uint64(1); ; read++ {
		_, err := s.replayShardNext(ctx, iter, shard, subject, &out, fn)
		if err != nil {
			return out, fmt.Errorf("replay shard %d after sequence %d: %w", shard, out.Last, err)
		}
		if read >= info.NumPending {
			return out, nil
		}
	}
}

// replayShardNext reads one message for ReplayShard and returns the number
// still pending.
func (s *Store) replayShardNext(ctx context.Context, iter jetstream.MessagesContext, shard int, subject string,
	out *ShardReplay, fn func(seq uint64, b Batch) error) (uint64, error) {
	waitCtx, cancel := requestTimeout(ctx)
	msg, err := iter.Next(jetstream.NextContext(waitCtx))
	cancel()
	if err != nil {
		return 0, fmt.Errorf("read next message: %w", err)
	}

	meta, err := msg.Metadata()
	if err != nil {
		return 0, fmt.Errorf("read message metadata: %w", err)
	}
	seq := meta.Sequence.Stream
	out.Last = seq
	if msg.Subject() == subject {
		out.SubjectLast = seq
	}

	claim, isClaim, err := decodeClaim(msg.Data())
	if err != nil {
		return 0, fmt.Errorf("stream sequence %d: %w", seq, err)
	}
	if isClaim {
		if claim.Shard == shard {
			claim.Seq = seq
			out.Claims = append(out.Claims, claim)
			out.Messages++
		}
		return meta.NumPending, nil
	}

	batches, err := DecodeMessage(msg.Data())
	if err != nil {
		return 0, fmt.Errorf("stream sequence %d: %w", seq, err)
	}

	counted := false
	for _, b := range batches {
		if b.Shard != shard {
			continue
		}
		if !counted {
			out.Messages++
			counted = true
		}
		err = fn(seq, b)
		if err != nil {
			return 0, err
		}
	}

	return meta.NumPending, nil
}

// deleteConsumer removes a replay consumer that was not iterated.
func (s *Store) deleteConsumer(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()

	err := s.js.DeleteConsumer(ctx, VotesStream, name)
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		s.log.Warn("delete replay consumer failed; the server removes it after its inactive threshold",
			"consumer", name, "err", err)
	}
}
