package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxResponseBytes bounds what the load tester reads of one HTTP response body.
const maxResponseBytes = 1 << 20

// apiTimeout bounds one set-up, close or results call.
const apiTimeout = 30 * time.Second

// resultsDoc is a LiveVote results document.
type resultsDoc struct {
	Poll       string           `json:"poll"`
	Counts     map[string]int64 `json:"counts"`
	TotalVotes int64            `json:"total_votes"`
	Voters     int64            `json:"voters"`
	Version    uint64           `json:"version"`
	Final      bool             `json:"final"`
	UpdatedAt  time.Time        `json:"updated_at"`
}

// wireError is the error member of an HTTP error body, an ack or an error message.
type wireError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// apiClient calls the LiveVote HTTP API as presenter and voter.
type apiClient struct {
	base   *url.URL
	client *http.Client
	token  string // presenter token, once the event exists
}

type createdEvent struct {
	Event struct {
		ID   string `json:"id"`
		Code string `json:"code"`
	} `json:"event"`
	PresenterToken string `json:"presenter_token"`
}

type createdPoll struct {
	ID      string `json:"id"`
	Options []struct {
		ID string `json:"id"`
	} `json:"options"`
}

// createEvent creates an event and keeps its presenter token for later calls.
func (c *apiClient) createEvent(ctx context.Context, title string) (code string, err error) {
	var out createdEvent
	if err := c.call(ctx, http.MethodPost, "/api/events", map[string]string{"title": title}, http.StatusCreated, &out); err != nil {
		return "", err
	}
	c.token = out.PresenterToken
	return out.Event.Code, nil
}

// createPoll creates a single-choice poll with options labelled "option 1", … and
// returns its id.
func (c *apiClient) createPoll(ctx context.Context, code, question string, options int, allowChange bool) (string, error) {
	labels := make([]string, options)
	for i := range labels {
		labels[i] = fmt.Sprintf("option %d", i+1)
	}
	body := map[string]any{"question": question, "options": labels, "kind": "single", "allow_change": allowChange}

	var out createdPoll
	if err := c.call(ctx, http.MethodPost, "/api/events/"+url.PathEscape(code)+"/polls", body, http.StatusCreated, &out); err != nil {
		return "", err
	}
	if len(out.Options) != options {
		return "", fmt.Errorf("%w: poll %s was created with %d options, sent %d", errAPI, out.ID, len(out.Options), options)
	}
	for i, o := range out.Options {
		if o.ID != optionID(i) {
			return "", fmt.Errorf("%w: poll %s option %d has id %q, expected %q", errAPI, out.ID, i, o.ID, optionID(i))
		}
	}
	return out.ID, nil
}

// openPoll opens a draft poll.
func (c *apiClient) openPoll(ctx context.Context, poll string) error {
	return c.call(ctx, http.MethodPost, "/api/polls/"+url.PathEscape(poll)+"/open", nil, http.StatusOK, nil)
}

// closePoll closes a poll. It returns once the server has sent the final results.
func (c *apiClient) closePoll(ctx context.Context, poll string) error {
	return c.call(ctx, http.MethodPost, "/api/polls/"+url.PathEscape(poll)+"/close", nil, http.StatusOK, nil)
}

// results fetches a poll's results document.
func (c *apiClient) results(ctx context.Context, poll string) (resultsDoc, error) {
	var doc resultsDoc
	err := c.call(ctx, http.MethodGet, "/api/polls/"+url.PathEscape(poll)+"/results", nil, http.StatusOK, &doc)
	return doc, err
}

// newSession requests a voter session token.
func (c *apiClient) newSession(ctx context.Context) (string, error) {
	var out struct {
		Session string `json:"session"`
	}
	err := c.call(ctx, http.MethodPost, "/api/sessions", nil, http.StatusCreated, &out)
	return out.Session, err
}

// apiStatusError is a response with an unexpected HTTP status.
type apiStatusError struct {
	Method, Path string
	Status       int
	Code         string
	Message      string
	RetryAfter   time.Duration
}

func (e *apiStatusError) Error() string {
	return fmt.Sprintf("%s %s: HTTP %d %s: %s", e.Method, e.Path, e.Status, e.Code, e.Message)
}

func (e *apiStatusError) Unwrap() error { return errAPI }

func (c *apiClient) call(ctx context.Context, method, path string, body any, want int, out any) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()

	var reader io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		reader = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.JoinPath(path).String(), reader)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}

	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %s %s: %v", errAPI, method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return fmt.Errorf("%w: %s %s: read body: %v", errAPI, method, path, err)
	}
	if resp.StatusCode != want {
		return statusError(method, path, resp, data)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%w: %s %s: decode body: %v", errAPI, method, path, err)
	}
	return nil
}

func statusError(method, path string, resp *http.Response, body []byte) *apiStatusError {
	e := &apiStatusError{Method: method, Path: path, Status: resp.StatusCode}
	var wrapped struct {
		Error wireError `json:"error"`
	}
	if json.Unmarshal(body, &wrapped) == nil && wrapped.Error.Code != "" {
		e.Code, e.Message = wrapped.Error.Code, wrapped.Error.Message
	} else {
		e.Code = fmt.Sprintf("http_%d", resp.StatusCode)
		e.Message = strings.TrimSpace(string(body))
	}
	if s := resp.Header.Get("Retry-After"); s != "" {
		var secs int
		if _, err := fmt.Sscanf(s, "%d", &secs); err == nil {
			e.RetryAfter = time.Duration(secs) * time.Second
		}
	}
	return e
}
