// Package faultapi is the HTTP client that the fault runs (loadtest/killrun and
// loadtest/natsoutage) use to set up a poll, vote with retries, replay votes and read
// the final results of a LiveVote server.
package faultapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// SessionHeader carries a voter's session token on HTTP votes.
const SessionHeader = "X-LiveVote-Session"

// Client is a client of the LiveVote HTTP API. Each request times out after 3 s.
type Client struct {
	base   string
	client *http.Client
	token  string // presenter token of the run's event
}

// Poll names the poll of a run and its option ids.
type Poll struct {
	ID      string
	Options []string
}

// New returns a Client of the server at base, such as "http://127.0.0.1:8080".
func New(base string) *Client {
	transport := &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 512, IdleConnTimeout: 30 * time.Second}
	return &Client{base: base, client: &http.Client{Timeout: 3 * time.Second, Transport: transport}}
}

// Call sends one request and decodes a JSON response into out when out is not nil.
// A 503 response returns its status and no error, so that callers can retry it.
func (a *Client) Call(ctx context.Context, method, path string, body any, header map[string]string, out any) (int, error) {
	var reader io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		reader = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, reader)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}

	resp, err := a.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode response of %s %s: %w", method, path, err)
		}
	}
	if resp.StatusCode >= 300 && resp.StatusCode != http.StatusServiceUnavailable {
		return resp.StatusCode, fmt.Errorf("%s %s returned %d: %s", method, path, resp.StatusCode, strings.TrimSpace(string(data)))
	}
	return resp.StatusCode, nil
}

// Setup creates an event with the given title and an open poll of optionCount options
// that does not allow changing a vote.
func (a *Client) Setup(ctx context.Context, title string, optionCount int) (Poll, error) {
	var ev struct {
		Event struct {
			Code string `json:"code"`
		} `json:"event"`
		PresenterToken string `json:"presenter_token"`
	}
	if _, err := a.Call(ctx, "POST", "/api/events", map[string]string{"title": title}, nil, &ev); err != nil {
		return Poll{}, err
	}
	a.token = ev.PresenterToken

	labels := make([]string, optionCount)
	for i := range labels {
		labels[i] = fmt.Sprintf("Option %d", i+1)
	}
	var poll struct {
		ID      string `json:"id"`
		Options []struct {
			ID string `json:"id"`
		} `json:"options"`
	}
	auth := map[string]string{"Authorization": "Bearer " + a.token}
	if _, err := a.Call(ctx, "POST", "/api/events/"+ev.Event.Code+"/polls", map[string]any{"question": "Still counting?", "options": labels}, auth, &poll); err != nil {
		return Poll{}, err
	}
	if _, err := a.Call(ctx, "POST", "/api/polls/"+poll.ID+"/open", nil, auth, nil); err != nil {
		return Poll{}, err
	}
	ref := Poll{ID: poll.ID}
	for _, o := range poll.Options {
		ref.Options = append(ref.Options, o.ID)
	}
	return ref, nil
}

// voteAnswer is the body of a 202 response to a vote.
type voteAnswer struct {
	Status string `json:"status"`
}

// Vote sends one vote and returns its status ("accepted", "duplicate") on 202, or an
// empty status with the HTTP status code otherwise (0 after a connection error).
func (a *Client) Vote(ctx context.Context, poll, session, voteID, option string) (string, int, error) {
	var answer voteAnswer
	body := map[string]any{"vote_id": voteID, "options": []string{option}}
	status, err := a.Call(ctx, "POST", "/api/polls/"+poll+"/votes", body, map[string]string{SessionHeader: session}, &answer)
	if err != nil || status != http.StatusAccepted {
		return "", status, err
	}
	return answer.Status, status, nil
}

// Replay sends an acknowledged vote again, up to 50 times 100 ms apart until it gets a
// 202, and returns its status. A server that kept the vote returns "duplicate".
func (a *Client) Replay(ctx context.Context, poll, session, voteID, option string) (string, error) {
	for range 50 {
		status, _, err := a.Vote(ctx, poll, session, voteID, option)
		if err == nil && status != "" {
			return status, nil
		}
		if !Sleep(ctx, 100*time.Millisecond) {
			break
		}
	}
	return "", fmt.Errorf("replay of vote %s got no 202 response in 50 attempts", voteID)
}

// ClosePoll closes the poll, retrying a failed close for up to 20 s, and returns the
// counts of its final results document.
func (a *Client) ClosePoll(ctx context.Context, poll Poll) (map[string]int64, error) {
	auth := map[string]string{"Authorization": "Bearer " + a.token}
	for attempt := 0; ; attempt++ {
		status, err := a.Call(ctx, "POST", "/api/polls/"+poll.ID+"/close", nil, auth, nil)
		if err == nil && status == http.StatusOK {
			break
		}
		if attempt == 20 || !Sleep(ctx, time.Second) {
			return nil, fmt.Errorf("close poll %s: status %d: %v", poll.ID, status, err)
		}
	}
	var doc struct {
		Final  bool             `json:"final"`
		Counts map[string]int64 `json:"counts"`
	}
	if _, err := a.Call(ctx, "GET", "/api/polls/"+poll.ID+"/results", nil, nil, &doc); err != nil {
		return nil, err
	}
	if !doc.Final {
		return nil, fmt.Errorf("results of poll %s are not final after the close", poll.ID)
	}
	return doc.Counts, nil
}

// Sleep waits for d and returns true, or returns false as soon as ctx ends.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
