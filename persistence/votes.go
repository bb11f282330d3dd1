package persistence

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// replayPullMessages is the number of messages that the replay's ordered
// consumer keeps in flight: a few MiB of typical messages and at most
// 240 MiB of MaxMessageBytes messages. It is a message count because
// BenchmarkReplay with nats.go v1.56's byte-limited pull option saw occasional
// slow-consumer drops. Each drop forces a consumer reset.
const replayPullMessages = 256

// replayHeartbeat is the idle heartbeat of a replay's pulls. On a NATS
// cluster a new ordered consumer now and then never gets its first pull
// request. Two missed heartbeats make nats.go recreate the consumer, so
// such a replay is about 2 s late instead of failing after DefaultTimeout.
const replayHeartbeat = time.Second

// replayInactiveThreshold is how long the server keeps a replay consumer
// whose client stopped pulling before it deletes the consumer.
const replayInactiveThreshold = 30 * time.Second

// AppendBatch stores b in the vote stream and returns the stream sequence
// of the message that holds it, once JetStream has acknowledged that
// message. It never reports success for a batch that is not stored.
//
// Group commit: AppendBatch hands b to the Store's committer, which
// publishes one message at a time. Batches that arrive from any caller
// while a publish is in flight wait, and the next message carries all of
// them that fit MaxMessageBytes, so every caller of one message gets the
// same sequence. At most MaxPendingAppends batches wait, and AppendBatch
// blocks on a full queue until ctx ends. A batch whose ctx ends before its
// message is published is left out of it.
//
// A message that holds b alone uses b.ID as its JetStream Msg-Id: a batch
// whose id the stream stored that way less than DuplicateWindow ago is not
// stored again, and AppendBatch returns the sequence of the stored copy. A
// message of several batches gets a fresh Msg-Id, so a retry that shares a
// message with other batches may be stored twice. Callers that apply
// batches idempotently, as the shard actors do, count it once.
//
// When the ack of a message times out or the connection fails, the
// committer publishes the same bytes with the same Msg-Id again, up to 3
// times in all before the latest deadline of the message's callers. Each
// attempt waits for its ack at most its share of the time left. JetStream
// stores such a message once and acknowledges the retry with the stored
// sequence. A rejection by JetStream, such as a wrong stream, is not
// retried.
//
// An invalid batch wraps ErrInvalidBatch and one above MaxBatchBytes wraps
// ErrBatchTooLarge, and neither is published. A publish that failed every
// attempt returns an error to every caller of the message, and after Close
// AppendBatch returns ErrClosed. An error after the publish started means
// the batch may be stored anyway. When ctx has no deadline, AppendBatch
// gives up after DefaultTimeout.
func (s *Store) AppendBatch(ctx context.Context, b Batch) (seq uint64, err error) {
	err = validateBatch(b)
	if err != nil {
		return 0, fmt.Errorf("%w: batch %q: %v", ErrInvalidBatch, b.ID, err)
	}

	body := appendBatchBody(make([]byte, 0, encodedSize(b)), b)
	if len(batchMagic)+len(body) > MaxBatchBytes {
		return 0, fmt.Errorf("%w: batch %q of %d votes encodes to %d bytes, above the limit of %d; "+
			"split it into smaller batches", ErrBatchTooLarge, b.ID, len(b.Votes), len(batchMagic)+len(body), MaxBatchBytes)
	}

	ctx, cancel := withTimeout(ctx)
	defer cancel()

	if ctx.Err() != nil {
		return 0, fmt.Errorf("append batch %q of shard %d: %w", b.ID, b.Shard, ctx.Err())
	}

	req := &appendRequest{ctx: ctx, batch: b, body: body, reply: make(chan appendReply, 1)}
	seq, err = s.submit(ctx, req)
	if err != nil {
		return 0, fmt.Errorf("append batch %q of shard %d: %w", b.ID, b.Shard, err)
	}

	return seq, nil
}

// Replay calls fn with every batch of shard whose stream sequence is above
// afterSeq, in stream order, and returns the number of batches and the last
// sequence delivered, or afterSeq when there were none. It reads every
// message after afterSeq and skips the batches of other shards, so its cost
// is that of ReplayAll from afterSeq. It returns once it delivered the
// stream's last message as of its start, so batches appended during the
// replay may or may not be delivered. The first error of fn stops the replay and is returned with
// the count and last sequence of the batches before it. A stored message
// that does not decode stops the replay with an error wrapping
// ErrCorruptBatch. Each request and each wait for the next message gives up
// after DefaultTimeout, or sooner when ctx ends.
func (s *Store) Replay(ctx context.Context, shard int, afterSeq uint64,
	fn func(seq uint64, b Batch) error) (n int, last uint64, err error) {
	if shard < 0 || shard >= MaxShards {
		return 0, afterSeq, fmt.Errorf("%w: shard %d is outside [0, %d)", ErrInvalidArgument, shard, MaxShards)
	}

	last = afterSeq
	_, _, err = s.ReplayAll(ctx, afterSeq, func(seq uint64, b Batch) error {
		if b.Shard != shard {
			return nil
		}

		err := fn(seq, b)
		if err != nil {
			return err
		}
		n++
		last = seq

		return nil
	})
	if err != nil {
		return n, last, fmt.Errorf("replay shard %d after sequence %d: %w", shard, last, err)
	}

	return n, last, nil
}

// ReplayAll calls fn with every batch of every message whose stream
// sequence is above afterSeq, in stream order and in a single pass. It
// returns the number of messages read and the sequence of the last one, or
// afterSeq when there were none. The batches of one message share its
// sequence and come in the order they were appended. It returns once it
// delivered the stream's last message as of its start, so messages appended
// during the replay may or may not be delivered. The first error of fn stops the replay
// and is returned. A stored message that does not decode stops the replay
// with an error wrapping ErrCorruptBatch. Each request and each wait for
// the next message gives up after DefaultTimeout, or sooner when ctx ends.
func (s *Store) ReplayAll(ctx context.Context, afterSeq uint64,
	fn func(seq uint64, b Batch) error) (messages int, last uint64, err error) {
	lastSeq, err := s.lastSequence(ctx)
	if err != nil {
		return 0, afterSeq, fmt.Errorf("replay vote stream: %w", err)
	}
	if lastSeq <= afterSeq {
		return 0, afterSeq, nil
	}

	messages, last, err = s.replayFrom(ctx, afterSeq, lastSeq, fn)
	if err != nil {
		return messages, last, fmt.Errorf("replay vote stream after sequence %d: %w", last, err)
	}

	return messages, last, nil
}

// lastSequence returns the sequence of the last message in the vote
// stream, or 0 when it is empty.
func (s *Store) lastSequence(ctx context.Context) (uint64, error) {
	ctx, cancel := requestTimeout(ctx)
	defer cancel()

	info, err := s.votes.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("read state of stream %s: %w", VotesStream, err)
	}

	return info.State.LastSeq, nil
}

// replayFrom delivers the messages after afterSeq until it has delivered
// untilSeq, the stream's last sequence when the replay began. It does not
// stop at the consumer's pending count: an ordered consumer that nats.go
// recreated after missed heartbeats may report none pending before the
// end, and the messages after that point would be skipped. The caller has
// checked that untilSeq is above afterSeq, so the first wait cannot run
// into an empty stream.
func (s *Store) replayFrom(ctx context.Context, afterSeq, untilSeq uint64,
	fn func(seq uint64, b Batch) error) (n int, last uint64, err error) {
	last = afterSeq

	cctx, cancel := requestTimeout(ctx)
	consumer, err := s.votes.OrderedConsumer(cctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       afterSeq + 1,
		InactiveThreshold: replayInactiveThreshold,
	})
	cancel()
	if err != nil {
		return 0, last, fmt.Errorf("create ordered consumer: %w", err)
	}

	iter, err := consumer.Messages(jetstream.PullMaxMessages(replayPullMessages), jetstream.PullHeartbeat(replayHeartbeat))
	if err != nil {
		return 0, last, fmt.Errorf("start ordered consumer: %w", err)
	}
	defer s.stopReplay(consumer, iter)

	for {
		seq, _, err := s.replayNext(ctx, iter, fn)
		if err != nil {
			return n, last, err
		}
		n++
		last = seq

		if seq >= untilSeq {
			return n, last, nil
		}
	}
}

// replayNext waits for one message, decodes it and hands each of its
// batches to fn. It returns the message's stream sequence and the number of messages still
// pending on the consumer.
func (s *Store) replayNext(ctx context.Context, iter jetstream.MessagesContext,
	fn func(seq uint64, b Batch) error) (seq, pending uint64, err error) {
	waitCtx, cancel := requestTimeout(ctx)
	msg, err := iter.Next(jetstream.NextContext(waitCtx))
	cancel()
	if err != nil {
		return 0, 0, fmt.Errorf("read next message: %w", err)
	}

	meta, err := msg.Metadata()
	if err != nil {
		return 0, 0, fmt.Errorf("read message metadata: %w", err)
	}

	batches, err := DecodeMessage(msg.Data())
	if err != nil {
		return 0, 0, fmt.Errorf("stream sequence %d: %w", meta.Sequence.Stream, err)
	}

	for _, b := range batches {
		err = fn(meta.Sequence.Stream, b)
		if err != nil {
			return 0, 0, err
		}
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
