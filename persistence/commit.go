package persistence

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MaxPendingAppends is the number of batches that may wait for the group
// commit, from all callers together. AppendBatch blocks on a full queue
// until a place frees or its context ends.
const MaxPendingAppends = 8192

// maxPublishAttempts is how many times the committer publishes one stream
// message whose ack did not arrive: the first publish and two retries. The
// retries republish the same bytes with the same Msg-Id, so JetStream stores
// the message once while it is within DuplicateWindow.
const maxPublishAttempts = 3

// publishRetryWait is the pause before each retry, so that publishes that
// fail at once, as on a connection that is reconnecting, do not use up
// their attempts within a millisecond.
const publishRetryWait = 50 * time.Millisecond

// publishFunc publishes one stream message and returns JetStream's ack. The
// committer calls jetstream.JetStream.PublishMsg through it.
type publishFunc func(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)

// appendRequest is one AppendBatch call waiting for the committer.
type appendRequest struct {
	ctx   context.Context
	batch Batch
	body  []byte // appendBatchBody of batch
	reply chan appendReply
}

type appendReply struct {
	seq uint64
	err error
}

// committer is the group commit of a Store: one goroutine that publishes
// the waiting batches of every caller together in one stream message.
type committer struct {
	requests chan *appendRequest
	ctx      context.Context // cancelled by stop, which ends a publish in flight
	cancel   context.CancelFunc
	done     chan struct{} // closed once the goroutine has replied to every request it took

	idPrefix string // makes the Msg-Id of multi-batch messages unique across starts
	messages uint64 // multi-batch messages published, the last part of their Msg-Id

	// held is the number of requests that the goroutine took from requests
	// and has not answered yet.
	held atomic.Int64

	// publish sends a message to JetStream. It is the Store's PublishMsg,
	// and tests replace it before the goroutine starts.
	publish publishFunc
}

// startCommitter starts the committer goroutine. stopCommitter stops it.
func (s *Store) startCommitter() {
	s.commit = newCommitter(s.js.PublishMsg)
	go s.runCommitter()
}

func newCommitter(publish publishFunc) *committer {
	random := make([]byte, 8)
	_, _ = rand.Read(random) // crypto/rand.Read never returns an error

	ctx, cancel := context.WithCancel(context.Background())

	return &committer{
		requests: make(chan *appendRequest, MaxPendingAppends),
		ctx:      ctx,
		cancel:   cancel,
		done:     make(chan struct{}),
		idPrefix: "livevote-log-" + hex.EncodeToString(random) + "-",
		publish:  publish,
	}
}

// stopCommitter cancels the publish in flight, replies ErrClosed to every
// waiting request and waits for the committer goroutine to end.
func (s *Store) stopCommitter() {
	if s.commit == nil {
		return
	}

	s.commit.cancel()
	<-s.commit.done
}

// submit hands req to the committer and waits for its reply. A request the
// committer never took when it stopped gets ErrClosed.
func (s *Store) submit(ctx context.Context, req *appendRequest) (uint64, error) {
	c := s.commit

	select {
	case c.requests <- req:
	case <-ctx.Done():
		return 0, fmt.Errorf("wait for a place in the append queue of %d batches: %w", MaxPendingAppends, ctx.Err())
	case <-c.done:
		return 0, ErrClosed
	}

	select {
	case r := <-req.reply:
		return r.seq, r.err
	case <-ctx.Done():
		return 0, fmt.Errorf("wait for the append to be acknowledged: %w", ctx.Err())
	case <-c.done:
	}

	// The committer replies to every request it took before it closes done.
	select {
	case r := <-req.reply:
		return r.seq, r.err
	default:
		return 0, ErrClosed
	}
}

// runCommitter publishes one message at a time. While a publish is in
// flight new requests wait in the channel, and the next message takes all
// of them that fit MaxMessageBytes.
func (s *Store) runCommitter() {
	c := s.commit
	defer close(c.done)

	var waiting []*appendRequest
	for {
		if len(waiting) == 0 {
			select {
			case req := <-c.requests:
				c.held.Add(1)
				waiting = append(waiting, req)
			case <-c.ctx.Done():
				s.failRequests(nil)
				return
			}
		}
		if c.ctx.Err() != nil {
			s.failRequests(waiting)
			return
		}

		waiting = s.collect(waiting)
		var message []*appendRequest
		message, waiting = s.cutMessage(waiting)
		if len(message) > 0 {
			s.publish(message)
		}
	}
}

// collect adds the requests waiting in the channel to waiting, without
// blocking, until they fill one message.
func (s *Store) collect(waiting []*appendRequest) []*appendRequest {
	size := 0
	for _, req := range waiting {
		size += len(req.body)
	}

	for size < MaxMessageBytes {
		select {
		case req := <-s.commit.requests:
			s.commit.held.Add(1)
			waiting = append(waiting, req)
			size += len(req.body)
		default:
			return waiting
		}
	}

	return waiting
}

// cutMessage splits waiting into the requests of the next message and the
// rest. A request whose caller has given up gets its context's error and
// is left out, so it is never stored.
func (s *Store) cutMessage(waiting []*appendRequest) (message, rest []*appendRequest) {
	size := len(messageMagic) + binary.MaxVarintLen64
	n := 0

	for n < len(waiting) {
		req := waiting[n]
		if req.ctx.Err() != nil {
			s.commit.answer(req, appendReply{err: fmt.Errorf("batch %q was not appended: %w", req.batch.ID, req.ctx.Err())})
			waiting = append(waiting[:n], waiting[n+1:]...)
			continue
		}
		if len(message) > 0 && size+len(req.body) > MaxMessageBytes {
			break
		}
		size += len(req.body)
		message = append(message, req)
		n++
	}

	rest = append([]*appendRequest(nil), waiting[n:]...)

	return message, rest
}

// publish stores the batches of message as one stream message and replies
// to each request with its sequence or the error. The publish waits until the
// latest deadline among the requests; callers with an earlier one give up
// on their own.
func (s *Store) publish(message []*appendRequest) {
	c := s.commit

	deadline := time.Now().Add(DefaultTimeout)
	for _, req := range message {
		d, ok := req.ctx.Deadline()
		if ok && d.After(deadline) {
			deadline = d
		}
	}
	ctx, cancel := context.WithDeadline(c.ctx, deadline)
	defer cancel()

	msg, msgID := s.buildMessage(message)
	ack, err := s.publishWithRetry(ctx, msg, msgID)

	for _, req := range message {
		if err != nil {
			c.answer(req, appendReply{err: fmt.Errorf("append batch %q of shard %d in a message of %d batches: %w",
				req.batch.ID, req.batch.Shard, len(message), err)})
			continue
		}
		c.answer(req, appendReply{seq: ack.Sequence})
	}
}

// publishWithRetry publishes msg with Msg-Id msgID up to maxPublishAttempts
// times before ctx ends. Each attempt waits for its ack at most its share of
// the time left, so a lost ack leaves time for the retries. Only a timeout
// or a connection error is retried, because JetStream may have stored the
// message then. A rejection, such as a wrong stream or a message above
// max_payload, and the end of ctx are returned at once. Every attempt sends
// the same bytes and Msg-Id, so a message that one attempt stored is not
// stored again, and the ack of a retry carries the stored sequence.
func (s *Store) publishWithRetry(ctx context.Context, msg *nats.Msg, msgID string) (*jetstream.PubAck, error) {
	var err error

	for attempt := 1; attempt <= maxPublishAttempts; attempt++ {
		var ack *jetstream.PubAck
		ack, err = s.publishAttempt(ctx, msg, msgID, maxPublishAttempts-attempt+1)
		if err == nil {
			return ack, nil
		}
		if ctx.Err() != nil || !retryablePublishError(err) || attempt == maxPublishAttempts {
			break
		}

		s.log.Warn("vote stream publish failed; retrying with the same Msg-Id", "msg_id", msgID,
			"attempt", attempt, "max_attempts", maxPublishAttempts, "err", err)
		s.waitBeforeRetry(ctx)
	}

	if ctx.Err() != nil {
		return nil, fmt.Errorf("publish message %q: %w (last error: %v)", msgID, ctx.Err(), err)
	}

	return nil, fmt.Errorf("publish message %q: %w", msgID, err)
}

// publishAttempt publishes msg once and waits for the ack at most the time
// left in ctx divided by attemptsLeft.
func (s *Store) publishAttempt(ctx context.Context, msg *nats.Msg, msgID string,
	attemptsLeft int) (*jetstream.PubAck, error) {
	deadline, _ := ctx.Deadline() // publish always sets one
	share := time.Until(deadline) / time.Duration(attemptsLeft)

	attemptCtx, cancel := context.WithTimeout(ctx, share)
	defer cancel()

	return s.commit.publish(attemptCtx, msg, jetstream.WithMsgID(msgID), jetstream.WithExpectStream(VotesStream))
}

// waitBeforeRetry pauses publishRetryWait or until ctx ends.
func (s *Store) waitBeforeRetry(ctx context.Context) {
	timer := time.NewTimer(publishRetryWait)
	defer timer.Stop()

	select {
	case <-timer.C:
	case <-ctx.Done():
	}
}

// retryablePublishError reports whether err leaves open whether JetStream
// stored the message: a missing ack or a connection that is down. A reply
// from JetStream, such as a jetstream.APIError or a rejection by the
// client library, is final.
func retryablePublishError(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return false
	}

	return errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.Is(err, nats.ErrStaleConnection)
}

// buildMessage encodes the requests' batches in the message format and
// picks the Msg-Id: the batch id for a single batch, so that JetStream
// stores a retried batch once, and a fresh id for several.
func (s *Store) buildMessage(message []*appendRequest) (*nats.Msg, string) {
	size := len(messageMagic) + binary.MaxVarintLen64
	for _, req := range message {
		size += len(req.body)
	}

	data := make([]byte, 0, size)
	data = append(data, messageMagic[:]...)
	data = binary.AppendUvarint(data, uint64(len(message)))
	for _, req := range message {
		data = append(data, req.body...)
	}

	msgID := message[0].batch.ID
	if len(message) > 1 {
		s.commit.messages++
		msgID = s.commit.idPrefix + strconv.FormatUint(s.commit.messages, 10)
	}

	return &nats.Msg{Subject: VoteSubject, Data: data}, msgID
}

// failRequests replies ErrClosed to waiting and to every request still in
// the channel. The caller is the committer goroutine, which is stopping.
func (s *Store) failRequests(waiting []*appendRequest) {
	c := s.commit
	for _, req := range waiting {
		c.answer(req, appendReply{err: ErrClosed})
	}

	for {
		select {
		case req := <-c.requests:
			c.held.Add(1)
			c.answer(req, appendReply{err: ErrClosed})
		default:
			return
		}
	}
}

// answer sends r to the caller of req, which never blocks because reply has
// room for one value, and counts req as answered.
func (c *committer) answer(req *appendRequest, r appendReply) {
	req.reply <- r
	c.held.Add(-1)
}
