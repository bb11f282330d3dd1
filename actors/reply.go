package actors

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// poisonTimeout bounds the wait for a poisoned actor to stop.
const poisonTimeout = 10 * time.Second

// errDeadLetter reports a request to an actor that no longer exists.
var errDeadLetter = errors.New("no actor at that PID")

// pendingReply is a one-shot process that receives the reply to one request.
// It replaces actor.Future because a future that has timed out still writes a
// late reply into its fields without a lock, which is a data race. Here the
// first message fills a one-slot channel and any later one is dropped.
type pendingReply struct {
	system *actor.ActorSystem
	pid    *actor.PID
	ch     chan any
}

func newPendingReply(system *actor.ActorSystem) *pendingReply {
	r := &pendingReply{system: system, ch: make(chan any, 1)}
	r.pid, _ = system.ProcessRegistry.Add(r, "reply"+system.ProcessRegistry.NextId())
	return r
}

// SendUserMessage takes the reply; a dead letter becomes errDeadLetter.
func (r *pendingReply) SendUserMessage(_ *actor.PID, message any) {
	msg := actor.UnwrapEnvelopeMessage(message)
	if _, ok := msg.(*actor.DeadLetterResponse); ok {
		msg = errDeadLetter
	}
	r.deliver(msg)
}

// SendSystemMessage takes system messages, such as *actor.Terminated for a watch.
func (r *pendingReply) SendSystemMessage(_ *actor.PID, message any) {
	r.deliver(message)
}

// Stop does nothing: wait removes the process from the registry.
func (r *pendingReply) Stop(*actor.PID) {}

func (r *pendingReply) deliver(msg any) {
	select {
	case r.ch <- msg:
	default:
	}
}

// wait returns the reply, or an error wrapping ErrTimeout naming target when ctx
// ends or timeout passes first. It unregisters the reply PID either way.
func (r *pendingReply) wait(ctx context.Context, target *actor.PID, timeout time.Duration) (any, error) {
	defer r.system.ProcessRegistry.Remove(r.pid)

	timer := time.NewTimer(max(timeout, 0))
	defer timer.Stop()
	select {
	case msg := <-r.ch:
		msg = decodeReply(msg)
		if err, ok := msg.(error); ok && (errors.Is(err, errDeadLetter) || errors.Is(err, errRemote)) {
			return nil, fmt.Errorf("%w: %s: %v", ErrTimeout, target.Id, err)
		}
		return msg, nil
	case <-timer.C:
		return nil, fmt.Errorf("%w: %s: no reply within %s", ErrTimeout, target.Id, timeout)
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %s: %v", ErrTimeout, target.Id, ctx.Err())
	}
}

// ask sends message to target with a fresh reply PID as its sender.
func ask(root *actor.RootContext, target *actor.PID, message any) *pendingReply {
	r := newPendingReply(root.ActorSystem())
	root.RequestWithCustomSender(target, message, r.pid)
	return r
}

// watchAndPoison stops the actor at target after the messages already in its
// mailbox; the reply is its *actor.Terminated.
func watchAndPoison(root *actor.RootContext, target *actor.PID) *pendingReply {
	r := newPendingReply(root.ActorSystem())
	if process, ok := root.ActorSystem().ProcessRegistry.Get(target); ok {
		process.SendSystemMessage(target, &actor.Watch{Watcher: r.pid})
	}
	root.Poison(target)
	return r
}
