package main

import (
	"context"
	"fmt"
	"time"

	"github.com/livevote/livevote/loadtest/internal/faultapi"
)

// verify replays every acknowledged vote id, closes the poll, and compares the final
// counts with the acknowledgements per option. It also counts the votes answered
// accepted while NATS was down.
func verify(ctx context.Context, a *faultapi.Client, poll faultapi.Poll, voters []*voter, windows []window) (summary, error) {
	sum := summary{Voters: len(voters)}
	acked := make(map[string]int64)
	unsettled := make(map[string]int64)
	for _, v := range voters {
		sum.Attempts += v.attempts
		sum.Overloaded += v.overloaded
		sum.ConnErrors += v.connErrors
		if !v.settled {
			sum.Unsettled++
			unsettled[v.option]++
			continue
		}
		sum.Acked++
		acked[v.option]++
		if v.status == "accepted" && inOutage(v.ackedAt, windows) {
			sum.AckedInOutage++
		}
		if err := replayOnce(ctx, a, poll.ID, v, &sum); err != nil {
			return sum, err
		}
	}

	counts, err := a.ClosePoll(ctx, poll)
	if err != nil {
		return sum, err
	}
	for _, option := range poll.Options {
		got, want := counts[option], acked[option]
		switch {
		case got < want:
			sum.Lost += want - got
		case got > want+unsettled[option]:
			sum.DoubleCounted += got - want - unsettled[option]
			sum.UnknownExtra += unsettled[option]
		default:
			sum.UnknownExtra += got - want
		}
	}

	return sum, nil
}

// replayOnce sends an acknowledged vote again; a server that kept it answers duplicate.
func replayOnce(ctx context.Context, a *faultapi.Client, poll string, v *voter, sum *summary) error {
	for range 50 {
		status, _, err := a.Vote(ctx, poll, v.session, v.voteID, v.option)
		if err == nil && status != "" {
			if status != "duplicate" {
				sum.ReplayMismatch++
			}
			return nil
		}
		if !faultapi.Sleep(ctx, 100*time.Millisecond) {
			break
		}
	}

	return fmt.Errorf("replay of vote %s got no 202 response in 50 attempts", v.voteID)
}

// inOutage reports whether at lies in an outage window, later than outageGrace after
// its start.
func inOutage(at time.Time, windows []window) bool {
	for _, w := range windows {
		if at.After(w.stopped.Add(outageGrace)) && at.Before(w.back) {
			return true
		}
	}

	return false
}
