package main

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

// sessionHeader carries a voter's session token on HTTP votes.
const sessionHeader = "X-LiveVote-Session"

// api is a client of the LiveVote HTTP API.
type api struct {
	base   string
	client *http.Client
	token  string // presenter token of the run's event
}

// pollRef names the poll of a run and its option ids.
type pollRef struct {
	id      string
	options []string
}

func newAPI(base string) *api {
	transport := &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 512, IdleConnTimeout: 30 * time.Second}
	return &api{base: base, client: &http.Client{Timeout: 3 * time.Second, Transport: transport}}
}

// call sends one request and decodes a JSON response into out when out is not nil.
func (a *api) call(ctx context.Context, method, path string, body any, header map[string]string, out any) (int, error) {
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

// setup creates an event and an open poll that does not allow changing a vote.
func (a *api) setup(ctx context.Context, optionCount int) (pollRef, error) {
	var ev struct {
		Event struct {
			Code string `json:"code"`
		} `json:"event"`
		PresenterToken string `json:"presenter_token"`
	}
	if _, err := a.call(ctx, "POST", "/api/events", map[string]string{"title": "NATS outage run"}, nil, &ev); err != nil {
		return pollRef{}, err
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
	if _, err := a.call(ctx, "POST", "/api/events/"+ev.Event.Code+"/polls", map[string]any{"question": "Still counting?", "options": labels}, auth, &poll); err != nil {
		return pollRef{}, err
	}
	if _, err := a.call(ctx, "POST", "/api/polls/"+poll.ID+"/open", nil, auth, nil); err != nil {
		return pollRef{}, err
	}
	ref := pollRef{id: poll.ID}
	for _, o := range poll.Options {
		ref.options = append(ref.options, o.ID)
	}
	return ref, nil
}

// voteAnswer is the body of a 202 response to a vote.
type voteAnswer struct {
	Status string `json:"status"`
}

// vote sends one vote and returns its status ("accepted", "duplicate") on 202, or an
// empty status with the HTTP status code otherwise (0 after a connection error).
func (a *api) vote(ctx context.Context, poll, session, voteID, option string) (string, int, error) {
	var answer voteAnswer
	body := map[string]any{"vote_id": voteID, "options": []string{option}}
	status, err := a.call(ctx, "POST", "/api/polls/"+poll+"/votes", body, map[string]string{sessionHeader: session}, &answer)
	if err != nil || status != http.StatusAccepted {
		return "", status, err
	}
	return answer.Status, status, nil
}

// replay sends an acknowledged vote again; a server that kept it answers duplicate.
func (a *api) replay(ctx context.Context, poll string, v *voter) (string, error) {
	for range 50 {
		status, _, err := a.vote(ctx, poll, v.session, v.voteID, v.option)
		if err == nil && status != "" {
			return status, nil
		}
		if !sleep(ctx, 100*time.Millisecond) {
			break
		}
	}
	return "", fmt.Errorf("replay of vote %s got no 202 response in 50 attempts", v.voteID)
}

// closePoll closes the poll and returns the counts of its final results document.
func (a *api) closePoll(ctx context.Context, poll pollRef) (map[string]int64, error) {
	auth := map[string]string{"Authorization": "Bearer " + a.token}
	for attempt := 0; ; attempt++ {
		status, err := a.call(ctx, "POST", "/api/polls/"+poll.id+"/close", nil, auth, nil)
		if err == nil && status == http.StatusOK {
			break
		}
		if attempt == 20 || !sleep(ctx, time.Second) {
			return nil, fmt.Errorf("close poll %s: status %d: %v", poll.id, status, err)
		}
	}
	var doc struct {
		Final  bool             `json:"final"`
		Counts map[string]int64 `json:"counts"`
	}
	if _, err := a.call(ctx, "GET", "/api/polls/"+poll.id+"/results", nil, nil, &doc); err != nil {
		return nil, err
	}
	if !doc.Final {
		return nil, fmt.Errorf("results of poll %s are not final after the close", poll.id)
	}
	return doc.Counts, nil
}
