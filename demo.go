package main

import (
	"context"
	"fmt"
	"io"

	"github.com/livevote/livevote/hub"
)

// createDemo creates an event with an open poll and prints the audience and presenter
// links, so that a first run shows LiveVote working.
func createDemo(ctx context.Context, a *app, stdout io.Writer) error {
	ev, token, err := a.hub.Registry().CreateEvent(ctx, "LiveVote demo")
	if err != nil {
		return fmt.Errorf("create demo event: %w", err)
	}
	poll, err := a.hub.CreatePoll(ctx, ev.ID, hub.NewPoll{
		Question: "Which talk should come next?",
		Options:  []string{"Actors in Go", "JetStream in practice", "Scaling WebSockets", "Live demo Q&A"},
		Kind:     hub.PollSingle,
	})
	if err != nil {
		return fmt.Errorf("create demo poll: %w", err)
	}
	if _, err := a.hub.OpenPoll(ctx, poll.ID); err != nil {
		return fmt.Errorf("open demo poll: %w", err)
	}

	base := baseURL(a.ln)
	fmt.Fprintf(stdout, "\nLiveVote demo is running. Join code: %s\n", ev.Code)
	fmt.Fprintf(stdout, "  audience:  %s/e/%s\n", base, ev.Code)
	fmt.Fprintf(stdout, "  presenter: %s/present/%s#token=%s\n", base, ev.Code, token)
	fmt.Fprintf(stdout, "  results:   %s/api/polls/%s/results\n\n", base, poll.ID)
	return nil
}
