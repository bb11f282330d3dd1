package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// httpVoteTimeout bounds one vote request. The server answers overloaded after 10 s
// without an answer from the shard, so 15 s leaves room for that answer.
const httpVoteTimeout = 15 * time.Second

// maxSessionAttempts bounds the requests for a voter session in HTTP mode.
const maxSessionAttempts = 5

// httpVoter is one voter of the HTTP mode: one vote in flight at a time, over the
// keep-alive connections of its client.
type httpVoter struct {
	w       *workerRun
	v       *voter
	index   int
	api     *apiClient
	session string
}

func (w *workerRun) runHTTPVoter(ctx context.Context, index int) {
	base, _ := url.Parse(w.plan.URL)
	h := &httpVoter{w: w, v: newVoter(index, w.plan.Polls, w.plan.Seed), index: index, api: &apiClient{base: base, client: w.client(index)}}
	once := false
	markDrained := func() {
		if !once {
			once = true
			w.addLedger(h.v)
			w.drained.Done()
		}
	}
	defer markDrained()

	at := connectAt(w.plan.Start, w.plan.Ramp, index, w.plan.TotalSockets)
	if !sleepUntil(ctx, at, w.votingDone) {
		return
	}
	if err := h.startSession(ctx); err != nil {
		w.rec.c.ConnectFail.Add(1)
		return
	}
	w.rec.c.Connected.Add(1)
	w.rec.c.Open.Add(1)
	defer w.rec.c.Open.Add(-1)

	h.vote(ctx)
	markDrained()
	select {
	case <-w.finish:
	case <-ctx.Done():
	}
}

func (h *httpVoter) startSession(ctx context.Context) error {
	backoff := 500 * time.Millisecond
	var err error
	for attempt := range maxSessionAttempts {
		if attempt > 0 && !sleepUntil(ctx, time.Now().Add(backoff), h.w.votingDone) {
			break
		}
		h.session, err = h.api.newSession(ctx)
		if err == nil {
			return nil
		}
		h.w.rec.fail("session:" + dialCode(err))
		var se *apiStatusError
		if errors.As(err, &se) && se.RetryAfter > backoff {
			backoff = se.RetryAfter
		}
		backoff *= 2
	}
	return err
}

// vote sends one vote at a time until the voting window closes.
func (h *httpVoter) vote(ctx context.Context) {
	for {
		if !h.awaitTurn(ctx) {
			return
		}
		a, ok := h.v.next(h.w.plan.RetryShare, h.w.plan.ChangeShare)
		if !ok {
			return
		}
		switch a.kind {
		case kindRetry:
			h.w.rec.c.Retries.Add(1)
		case kindChange:
			h.w.rec.c.Changes.Add(1)
		}
		h.castUntilAnswered(ctx, a)
	}
}

// awaitTurn waits for a rate token or for the load profile to make this voter active.
// It returns false once the voting window is over.
func (h *httpVoter) awaitTurn(ctx context.Context) bool {
	for {
		if isClosed(h.w.votingDone) || ctx.Err() != nil || h.w.plan.Idle || !h.v.ready(1) {
			return false
		}
		if h.w.tokens != nil {
			select {
			case <-h.w.tokens:
				return true
			case <-h.w.votingDone:
				return false
			case <-ctx.Done():
				return false
			}
		}
		f, wake := h.w.gate.state()
		if activeShare(h.index) < f {
			return true
		}
		select {
		case <-wake:
		case <-h.w.votingDone:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// castUntilAnswered posts a and sends it again with the same vote_id while the answer
// is overloaded or missing, until the drain deadline.
func (h *httpVoter) castUntilAnswered(ctx context.Context, a action) {
	deadline := h.w.plan.Start.Add(h.w.plan.Duration + h.w.plan.Drain)
	for {
		status, code, err := h.post(ctx, a)
		var resend bool
		if err != nil {
			h.w.rec.fail("request_failed")
			resend = h.v.lost(a.poll)
		} else {
			resend = h.applyAnswer(a, status, code)
		}
		if !resend || time.Now().After(deadline) || !sleepUntil(ctx, time.Now().Add(resendDelay), nil) {
			return
		}
		next, ok := h.v.resend(a.poll)
		if !ok {
			return
		}
		h.w.rec.c.Resends.Add(1)
		a = next
	}
}

func (h *httpVoter) applyAnswer(a action, status, code string) (resend bool) {
	c := &h.w.rec.c
	switch status {
	case "accepted":
		c.Acked.Add(1)
		c.Accepted.Add(1)
	case "duplicate":
		c.Acked.Add(1)
		c.Duplicates.Add(1)
	default:
		c.Rejected.Add(1)
		h.w.rec.fail(fallback(code, "rejected_without_code"))
	}
	switch h.v.answer(a.poll, a.voteID, status, code) {
	case outcomeUnexpected:
		c.Unexpected.Add(1)
		h.w.rec.fail("unexpected_" + status)
	case outcomeResend:
		return true
	}
	return false
}

// post sends one vote and returns the status (accepted, duplicate or rejected) and
// the error code of a rejection.
func (h *httpVoter) post(ctx context.Context, a action) (status, code string, err error) {
	ctx, cancel := context.WithTimeout(ctx, httpVoteTimeout)
	defer cancel()

	body := []byte(`{"vote_id":"` + a.voteID + `","options":["o` + strconv.Itoa(a.option+1) + `"]}`)
	path := "/api/polls/" + url.PathEscape(h.w.plan.Polls[a.poll].ID) + "/votes"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.api.base.JoinPath(path).String(), bytes.NewReader(body))
	if err != nil {
		return "", "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-LiveVote-Session", h.session)

	h.w.rec.c.Sent.Add(1)
	sent := time.Now()
	resp, err := h.api.client.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	at := time.Now()
	if err != nil {
		return "", "", err
	}

	if resp.StatusCode != http.StatusAccepted {
		return "rejected", statusError(http.MethodPost, path, resp, data).Code, nil
	}
	var out struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return "", "", err
	}
	h.w.rec.ackAt(sent, at)
	return out.Status, "", nil
}
