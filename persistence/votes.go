package persistence

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// replayPullMessages is the number of messages that Replay's ordered
// consumer keeps in flight: about 2.5 MiB of typical 100-vote batches and at
// most 128 MiB of MaxBatchBytes batches. It is a message count because
// BenchmarkReplay with nats.go v1.56's byte-limited pull option saw occasional
// slow-consumer drops. Each drop forces a consumer reset.
const replayPullMessages = 256

// replayInactiveThreshold is how long the server keeps a replay consumer
// whose client stopped pulling before it deletes the consumer.
const replayInactiveThreshold = 30 * time.Second

// VoteSubject returns the subject of a shard's vote batches.
func VoteSubject(shard int) string {
	return voteSubjectPrefix + strconv.Itoa(shard)
}

// AppendBatch encodes b, publishes it to the subject of b.Shard with b.ID as
// the JetStream Msg-Id and waits for the acknowledgement. It returns the
// stream sequence. A batch whose id the stream stored less than
// DuplicateWindow ago is not stored again, and AppendBatch returns the
// sequence of the stored copy with a nil error. So a retry with the same id
// after a timeout is safe within that window, but a later one stores the
// batch again. An invalid batch wraps ErrInvalidBatch and one above
// MaxBatchBytes wraps ErrBatchTooLarge, and neither is published. When ctx
// has no deadline, AppendBatch gives up after DefaultTimeout.
func (s *Store) AppendBatch(ctx context.Context, b Batch) (seq uint64, err error) {
	data, err := EncodeBatch(b)
	if err != nil {
		return 0, err
	}
	if len(data) > MaxBatchBytes {
		return 0, fmt.Errorf("%w: batch %q of %d votes encodes to %d bytes, above the limit of %d; "+
			"split it into smaller batches", ErrBatchTooLarge, b.ID, len(b.Votes), len(data), MaxBatchBytes)
	}

	ctx, cancel := withTimeout(ctx)
	defer cancel()

	msg := &nats.Msg{Subject: VoteSubject(b.Shard), Data: data}
	ack, err := s.js.PublishMsg(ctx, msg,
		jetstream.WithMsgID(b.ID),
		jetstream.WithExpectStream(VotesStream))
	if err != nil {
		return 0, fmt.Errorf("append batch %q to shard %d: %w", b.ID, b.Shard, err)
	}

	return ack.Sequence, nil
}

// Replay calls fn with every batch of shard whose stream sequence is above
// afterSeq, in stream order, and returns the number of batches and the last
// sequence delivered, or afterSeq when there were none. It returns once the
// consumer reports no pending batch, so batches appended during the replay
// may or may not be delivered. The first error of fn stops the replay and is
// returned with the count and last sequence of the batches before it. A stored
// message that does not decode stops the replay with an error wrapping
// ErrCorruptBatch. When ctx has no deadline, each wait for the next message
// gives up after DefaultTimeout.
func (s *Store) Replay(ctx context.Context, shard int, afterSeq uint64,
	fn func(seq uint64, b Batch) error) (n int, last uint64, err error) {
	if shard < 0 || shard >= MaxShards {
		return 0, afterSeq, fmt.Errorf("%w: shard %d is outside [0, %d)", ErrInvalidArgument, shard, MaxShards)
	}

	subject := VoteSubject(shard)
	lastSeq, err := s.lastSequence(ctx, subject)
	if err != nil {
		return 0, afterSeq, fmt.Errorf("replay shard %d: %w", shard, err)
	}
	if lastSeq <= afterSeq {
		return 0, afterSeq, nil
	}

	n, last, err = s.replayFrom(ctx, subject, afterSeq, fn)
	if err != nil {
		return n, last, fmt.Errorf("replay shard %d after sequence %d: %w", shard, last, err)
	}

	return n, last, nil
}

// lastSequence returns the stream sequence of the last message on subject,
// or 0 when there is none.
func (s *Store) lastSequence(ctx context.Context, subject string) (uint64, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()

	msg, err := s.votes.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read last message of %s: %w", subject, err)
	}

	return msg.Sequence, nil
}

// replayFrom delivers the messages of subject after afterSeq until the
// consumer reports none pending. The caller has checked that at least one
// exists, so the first wait cannot run into an empty subject.
func (s *Store) replayFrom(ctx context.Context, subject string, afterSeq uint64,
	fn func(seq uint64, b Batch) error) (n int, last uint64, err error) {
	last = afterSeq

	consumer, err := s.votes.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{subject},
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       afterSeq + 1,
		InactiveThreshold: replayInactiveThreshold,
	})
	if err != nil {
		return 0, last, fmt.Errorf("create ordered consumer: %w", err)
	}

	iter, err := consumer.Messages(jetstream.PullMaxMessages(replayPullMessages))
	if err != nil {
		return 0, last, fmt.Errorf("start ordered consumer: %w", err)
	}
	defer s.stopReplay(consumer, iter)

	for {
		seq, pending, err := s.replayNext(ctx, iter, fn)
		if err != nil {
			return n, last, err
		}
		n++
		last = seq

		if pending == 0 {
			return n, last, nil
		}
	}
}

// replayNext waits for one message, decodes it and hands it to fn. It
// returns the message's stream sequence and the number of messages still
// pending on the consumer.
func (s *Store) replayNext(ctx context.Context, iter jetstream.MessagesContext,
	fn func(seq uint64, b Batch) error) (seq, pending uint64, err error) {
	waitCtx, cancel := withTimeout(ctx)
	msg, err := iter.Next(jetstream.NextContext(waitCtx))
	cancel()
	if err != nil {
		return 0, 0, fmt.Errorf("read next message: %w", err)
	}

	meta, err := msg.Metadata()
	if err != nil {
		return 0, 0, fmt.Errorf("read message metadata: %w", err)
	}

	b, err := DecodeBatch(msg.Data())
	if err != nil {
		return 0, 0, fmt.Errorf("stream sequence %d: %w", meta.Sequence.Stream, err)
	}

	err = fn(meta.Sequence.Stream, b)
	if err != nil {
		return 0, 0, err
	}

	return meta.Sequence.Stream, meta.NumPending, nil
}

// stopReplay stops the iterator and deletes the consumer, so that it does
// not linger on the server until its inactive threshold.
func (s *Store) stopReplay(consumer jetstream.Consumer, iter jetstream.MessagesContext) {
	iter.Stop()

	info := consumer.CachedInfo()
	if info == nil {
		return
	}

	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()

	err := s.js.DeleteConsumer(ctx, VotesStream, info.Name)
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		s.log.Warn("delete replay consumer failed; the server removes it after its inactive threshold",
			"consumer", info.Name, "err", err)
	}
}
