package persistence

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MaxPendingAppends is the number of batches that may wait for the group
// commit, from all callers together. AppendBatch blocks on a full queue
// until a place frees or its context ends.
const MaxPendingAppends = 8192

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
}

// startCommitter starts the committer goroutine. stopCommitter stops it.
func (s *Store) startCommitter() {
	s.commit = newCommitter()
	go s.runCommitter()
}

func newCommitter() *committer {
	random := make([]byte, 8)
	_, _ = rand.Read(random) // crypto/rand.Read never returns an error

	ctx, cancel := context.WithCancel(context.Background())

	return &committer{
		requests: make(chan *appendRequest, MaxPendingAppends),
		ctx:      ctx,
		cancel:   cancel,
		done:     make(chan struct{}),
		idPrefix: "livevote-log-" + hex.EncodeToString(random) + "-",
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
			req.reply <- appendReply{err: fmt.Errorf("batch %q was not appended: %w", req.batch.ID, req.ctx.Err())}
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
	ack, err := s.js.PublishMsg(ctx, msg,
		jetstream.WithMsgID(msgID),
		jetstream.WithExpectStream(VotesStream))

	for _, req := range message {
		if err != nil {
			req.reply <- appendReply{err: fmt.Errorf("append batch %q of shard %d in a message of %d batches: %w",
				req.batch.ID, req.batch.Shard, len(message), err)}
			continue
		}
		req.reply <- appendReply{seq: ack.Sequence}
	}
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
	for _, req := range waiting {
		req.reply <- appendReply{err: ErrClosed}
	}

	for {
		select {
		case req := <-s.commit.requests:
			req.reply <- appendReply{err: ErrClosed}
		default:
			return
		}
	}
}
