package main

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/livevote/livevote/loadtest/internal/faultapi"
)

// voter votes once and retries with the same vote id until it gets 202.
type voter struct {
	option, session, voteID string
	attempts                int
	settled                 bool
	err                     error
}

// run gets a session, then sends the vote until it is accepted or a duplicate, or ctx
// ends. Connection errors, timeouts and 503 answers are retried after 50 ms.
func (v *voter) run(ctx context.Context, a *faultapi.Client, poll string) {
	v.voteID = uuid.NewString()
	for v.session == "" && ctx.Err() == nil {
		var s struct {
			Session string `json:"session"`
		}
		if _, err := a.Call(ctx, "POST", "/api/sessions", nil, nil, &s); err == nil {
			v.session = s.Session
			continue
		}
		faultapi.Sleep(ctx, 50*time.Millisecond)
	}

	for ctx.Err() == nil {
		v.attempts++
		status, _, err := a.Vote(ctx, poll, v.session, v.voteID, v.option)
		if err == nil && status != "" {
			v.settled = true
			return
		}
		v.err = err
		faultapi.Sleep(ctx, 50*time.Millisecond)
	}
}
