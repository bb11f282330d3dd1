package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/livevote/livevote/loadtest/internal/faultapi"
)

// outageGrace is how long after NATS stopped an accepted answer still counts as one
// whose append finished before the stop.
const outageGrace = 500 * time.Millisecond

// window is one outage: from the stop of NATS until it was back.
type window struct{ stopped, back time.Time }

// voter votes once and retries with the same vote id until it gets 202.
type voter struct {
	option, session, voteID string
	attempts, overloaded    int64
	connErrors              int64 // attempts without an HTTP answer: connection errors and the 3 s client timeout
	settled                 bool
	status                  string // status of the 202 answer
	ackedAt                 time.Time
}

// run gets a session, then sends the vote until it is accepted or a duplicate, or ctx
// ends. Connection errors, timeouts and 503 answers are retried after 100 ms.
func (v *voter) run(ctx context.Context, a *faultapi.Client, poll string, lastAck *atomic.Int64) {
	v.voteID = uuid.NewString()
	for v.session == "" && ctx.Err() == nil {
		var s struct {
			Session string `json:"session"`
		}
		if _, err := a.Call(ctx, "POST", "/api/sessions", nil, nil, &s); err == nil {
			v.session = s.Session
			continue
		}
		faultapi.Sleep(ctx, 100*time.Millisecond)
	}

	for ctx.Err() == nil {
		v.attempts++
		status, code, err := a.Vote(ctx, poll, v.session, v.voteID, v.option)
		if err == nil && status != "" {
			v.settled, v.status, v.ackedAt = true, status, time.Now()
			lastAck.Store(v.ackedAt.UnixNano())
			return
		}
		switch {
		case code == http.StatusServiceUnavailable:
			v.overloaded++
		case code == 0:
			v.connErrors++
		}
		faultapi.Sleep(ctx, 100*time.Millisecond)
	}
}

// surge starts the voters at a steady rate over the whole run and stops NATS for
// o.outage after every o.up. It returns the voters, the outage windows and, per
// outage, the time from NATS back to the first accepted vote.
func surge(ctx context.Context, o options, ns *child, a *faultapi.Client, poll faultapi.Poll, logger *slog.Logger) ([]*voter, []window, []time.Duration, error) {
	voters := make([]*voter, o.voters)
	for i := range voters {
		voters[i] = &voter{option: poll.Options[i%len(poll.Options)]}
	}
	total := o.up + time.Duration(o.outages)*(o.outage+o.up)
	var lastAck atomic.Int64
	// An early return cancels the voters before it waits for them.
	var wg sync.WaitGroup
	defer wg.Wait()
	voteCtx, cancelVoters := context.WithCancel(ctx)
	defer cancelVoters()
	wg.Go(func() { launch(voteCtx, voters, total, a, poll.ID, &lastAck) })

	var windows []window
	var recoveries []time.Duration
	for k := range o.outages {
		if !faultapi.Sleep(ctx, o.up) {
			return nil, nil, nil, fmt.Errorf("run deadline passed before outage %d", k+1)
		}
		w, err := outage(ctx, o, ns)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("outage %d: %w", k+1, err)
		}
		windows = append(windows, w)
		recovery, ok := waitAckAfter(ctx, &lastAck, w.back, 60*time.Second)
		if !ok {
			return nil, nil, nil, fmt.Errorf("no vote accepted within 60s after NATS came back from outage %d", k+1)
		}
		recoveries = append(recoveries, recovery)
		logger.Info("NATS outage over", "outage", k+1, "mode", o.mode, "length", w.back.Sub(w.stopped).Round(time.Millisecond),
			"first_accept_after", recovery.Round(time.Millisecond))
	}
	faultapi.Sleep(ctx, o.up)
	wg.Wait()

	return voters, windows, recoveries, nil
}

// launch starts voter i at i*total/len(voters) from now. Voters run until they
// settle or ctx ends.
func launch(ctx context.Context, voters []*voter, total time.Duration, a *faultapi.Client, poll string, lastAck *atomic.Int64) {
	var wg sync.WaitGroup
	defer wg.Wait()
	began := time.Now()
	step := total / time.Duration(len(voters))
	for i, v := range voters {
		if !faultapi.Sleep(ctx, time.Until(began.Add(time.Duration(i)*step))) {
			return
		}
		wg.Go(func() { v.run(ctx, a, poll, lastAck) })
	}
}

// outage stops NATS for o.outage and brings it back: SIGKILL and a restart on the
// same directory and port, or SIGSTOP and SIGCONT.
func outage(ctx context.Context, o options, ns *child) (window, error) {
	var w window
	if o.mode == "pause" {
		ns.signal(syscall.SIGSTOP)
		w.stopped = time.Now()
		faultapi.Sleep(ctx, o.outage)
		ns.signal(syscall.SIGCONT)
		w.back = time.Now()
		return w, nil
	}

	ns.kill()
	w.stopped = time.Now()
	faultapi.Sleep(ctx, o.outage)
	if err := ns.start(ctx); err != nil {
		return w, err
	}
	w.back = time.Now()

	return w, nil
}

// waitAckAfter waits until a vote was accepted after since and returns how long after
// since that was.
func waitAckAfter(ctx context.Context, lastAck *atomic.Int64, since time.Time, limit time.Duration) (time.Duration, bool) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if at := time.Unix(0, lastAck.Load()); at.After(since) {
			return at.Sub(since), true
		}
		if !faultapi.Sleep(ctx, 5*time.Millisecond) {
			break
		}
	}

	return 0, false
}
