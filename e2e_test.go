package main

import (
	"encoding/json"
	"maps"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/livevote/livevote/actors"
	"github.com/livevote/livevote/hub"
)

func TestVotePipelineEndToEnd(t *testing.T) {
	n := startNode(t, testConfig(t))
	ev := n.createEvent("Town hall")
	poll := n.createPoll(ev, hub.NewPoll{Question: "Lunch?", Options: []string{"Pizza", "Salad", "Soup"}}, true)

	// Ten sockets and five HTTP voters: socket i votes for option i%3, HTTP voter j for o1.
	want := map[string]int64{"o1": 0, "o2": 0, "o3": 0}
	clients := make([]*wsClient, 10)
	for i := range clients {
		clients[i] = n.dial(ev.Event.Code, "")
	}
	var wg sync.WaitGroup
	for i, c := range clients {
		option := poll.Options[i%3].ID
		want[option]++
		wg.Go(func() {
			id := c.vote(poll.ID, option)
			ack := c.ack()
			if ack.Status != "accepted" || ack.VoteID != id || ack.Receipt == nil || ack.Receipt.Seq == 0 {
				t.Errorf("socket vote ack = %+v, want accepted with a receipt", ack)
			}
		})
	}
	wg.Wait()
	for range 5 {
		want["o1"]++
		resp := n.httpVote(n.newSession(), poll.ID, uuid.NewString(), "o1")
		got := decodeInto[voteAnswer](t, resp, http.StatusAccepted)
		if got.Status != "accepted" || got.Receipt == nil {
			t.Fatalf("http vote = %+v, want accepted with a receipt", got)
		}
	}

	// Every socket sees the merged totals in a broadcast.
	for _, c := range clients {
		doc := c.resultsUntil(poll.ID, 10*time.Second, func(d actors.Results) bool { return d.Voters == 15 })
		if !maps.Equal(doc.Counts, want) {
			t.Fatalf("broadcast counts = %v, want %v", doc.Counts, want)
		}
		if doc.TotalVotes != 15 {
			t.Fatalf("broadcast total_votes = %d, want 15", doc.TotalVotes)
		}
	}

	// The results endpoint serves the same document with an ETag.
	resp := n.do("GET", "/api/polls/"+poll.ID+"/results", nil, nil)
	doc := decodeInto[actors.Results](t, resp, http.StatusOK)
	if !maps.Equal(doc.Counts, want) || doc.Version == 0 {
		t.Fatalf("results = %+v, want counts %v and a version", doc, want)
	}
	etag := resp.Header.Get("ETag")
	if etag == "" {
		t.Fatal("results without ETag")
	}
	if got := n.do("GET", "/api/polls/"+poll.ID+"/results", nil, map[string]string{"If-None-Match": etag}); got.Status != http.StatusNotModified {
		t.Fatalf("If-None-Match with the current ETag: status %d, want 304", got.Status)
	}

	// Closing is a barrier: the final document goes out at once with every vote in it.
	closed := decodeInto[hub.Poll](t, n.do("POST", "/api/polls/"+poll.ID+"/close", nil, bearer(ev.PresenterToken)), http.StatusOK)
	if closed.State != "closed" {
		t.Fatalf("closed poll state = %q", closed.State)
	}
	final := clients[0].resultsUntil(poll.ID, 3*time.Second, func(d actors.Results) bool { return d.Final })
	if !maps.Equal(final.Counts, want) {
		t.Fatalf("final counts = %v, want %v", final.Counts, want)
	}
	late := decodeInto[actors.Results](t, n.do("GET", "/api/polls/"+poll.ID+"/results", nil, nil), http.StatusOK)
	if !late.Final || late.Version < doc.Version {
		t.Fatalf("results after close = %+v, want final with version >= %d", late, doc.Version)
	}
}

func TestSocketPollMessages(t *testing.T) {
	n := startNode(t, testConfig(t))
	ev := n.createEvent("Poll messages")
	c := n.dial(ev.Event.Code, "")

	poll := n.createPoll(ev, hub.NewPoll{Question: "Ready?", Options: []string{"Yes", "No"}}, true)
	for _, state := range []string{"draft", "open"} {
		frame := c.next("poll", 5*time.Second)
		var got hub.Poll
		if err := json.Unmarshal(frame["poll"], &got); err != nil {
			t.Fatalf("decode poll message: %v", err)
		}
		if got.ID != poll.ID || string(got.State) != state {
			t.Fatalf("poll message = %s %s, want %s %s", got.ID, got.State, poll.ID, state)
		}
	}
}

func TestSessionKeepsVoterAcrossReconnect(t *testing.T) {
	n := startNode(t, testConfig(t))
	ev := n.createEvent("Reconnect")
	poll := n.createPoll(ev, hub.NewPoll{Question: "Q", Options: []string{"A", "B"}}, true)

	first := n.dial(ev.Event.Code, "")
	id := first.vote(poll.ID, "o1")
	if ack := first.ack(); ack.Status != "accepted" {
		t.Fatalf("first vote: %+v", ack)
	}
	first.conn.CloseNow()

	again := n.dial(ev.Event.Code, first.session)
	if again.session != first.session {
		t.Fatal("reconnect with the session token issued a different session")
	}
	again.send(map[string]any{"type": "vote", "vote_id": id, "poll": poll.ID, "options": []string{"o1"}})
	if ack := again.ack(); ack.Status != "duplicate" || ack.Receipt == nil {
		t.Fatalf("replayed vote after reconnect = %+v, want duplicate with receipt", ack)
	}
	again.vote(poll.ID, "o2")
	if ack := again.ack(); ack.Error == nil || ack.Error.Code != "already_voted" {
		t.Fatalf("second vote of the same voter = %+v, want already_voted", ack)
	}
}

// TestErrorCodes produces every error code of the wire contract with a real request.
func TestErrorCodes(t *testing.T) {
	n := startNode(t, testConfig(t))
	ev := n.createEvent("Errors")
	open := n.createPoll(ev, hub.NewPoll{Question: "Open", Options: []string{"A", "B"}}, true)
	draft := n.createPoll(ev, hub.NewPoll{Question: "Draft", Options: []string{"A", "B"}}, false)
	closed := n.createPoll(ev, hub.NewPoll{Question: "Closed", Options: []string{"A", "B"}}, true)
	n.do("POST", "/api/polls/"+closed.ID+"/close", nil, bearer(ev.PresenterToken))
	voted := n.newSession()
	decodeInto[voteAnswer](t, n.httpVote(voted, open.ID, uuid.NewString(), "o1"), http.StatusAccepted)

	cases := []struct {
		name   string
		send   func() apiResponse
		status int
		code   string
	}{
		{"invalid_message", func() apiResponse {
			return n.do("POST", "/api/polls/"+open.ID+"/votes", `{"vote_id":`, map[string]string{"X-LiveVote-Session": n.newSession()})
		}, 400, "invalid_message"},
		{"unknown_option", func() apiResponse { return n.httpVote(n.newSession(), open.ID, uuid.NewString(), "o9") }, 400, "unknown_option"},
		{"too_large", func() apiResponse {
			big := `{"vote_id":"` + strings.Repeat("x", 8<<10) + `","options":["o1"]}`
			return n.do("POST", "/api/polls/"+open.ID+"/votes", big, map[string]string{"X-LiveVote-Session": n.newSession()})
		}, 413, "too_large"},
		{"unknown route", func() apiResponse { return n.do("GET", "/api/nothing/here", nil, nil) }, 400, "invalid_message"},
		{"wrong method", func() apiResponse {
			r := n.do("GET", "/api/polls/"+open.ID+"/votes", nil, nil)
			if r.Header.Get("Allow") != "POST" {
				t.Errorf("Allow header %q on GET of the votes route, want POST", r.Header.Get("Allow"))
			}
			return r
		}, 405, "invalid_message"},
		{"unknown_event", func() apiResponse { return n.do("GET", "/api/events/ZZZZZZ", nil, nil) }, 404, "unknown_event"},
		{"unknown_poll", func() apiResponse { return n.httpVote(n.newSession(), uuid.NewString(), uuid.NewString(), "o1") }, 404, "unknown_poll"},
		{"poll_not_open", func() apiResponse { return n.httpVote(n.newSession(), draft.ID, uuid.NewString(), "o1") }, 409, "poll_not_open"},
		{"poll_closed", func() apiResponse { return n.httpVote(n.newSession(), closed.ID, uuid.NewString(), "o1") }, 409, "poll_closed"},
		{"already_voted", func() apiResponse { return n.httpVote(voted, open.ID, uuid.NewString(), "o2") }, 409, "already_voted"},
		{"invalid_session", func() apiResponse { return n.httpVote(tamperedTag(n.newSession()), open.ID, uuid.NewString(), "o1") }, 401, "invalid_session"},
		{"unauthorized", func() apiResponse {
			return n.do("POST", "/api/polls/"+draft.ID+"/open", nil, bearer("wrong-token"))
		}, 401, "unauthorized"},
		{"rate_limited", func() apiResponse {
			session := n.newSession()
			var last apiResponse
			for range hub.DefaultVoteBurst + 5 {
				last = n.httpVote(session, open.ID, uuid.NewString(), "o1")
				if last.Status == http.StatusTooManyRequests {
					break
				}
			}
			return last
		}, 429, "rate_limited"},
		{"overloaded", func() apiResponse {
			// A draining hub answers every new vote overloaded, as during shutdown.
			n.app.hub.Drain()
			return n.httpVote(n.newSession(), open.ID, uuid.NewString(), "o1")
		}, 503, "overloaded"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.send()
			if got.Status != tc.status {
				t.Fatalf("status %d, want %d: %s", got.Status, tc.status, got.Body)
			}
			if code := got.errorCode(); code != tc.code {
				t.Fatalf("error code %q, want %q: %s", code, tc.code, got.Body)
			}
			if (tc.status == 429 || tc.status == 503) && got.Header.Get("Retry-After") == "" {
				t.Fatalf("status %d without Retry-After", tc.status)
			}
			if (tc.status == 429 || tc.status == 503) && !strings.Contains(string(got.Body), `"retry_after_ms":`) {
				t.Fatalf("status %d without retry_after_ms in the body: %s", tc.status, got.Body)
			}
		})
	}
}

func TestSocketErrorsKeepConnection(t *testing.T) {
	n := startNode(t, testConfig(t))
	ev := n.createEvent("Socket errors")
	poll := n.createPoll(ev, hub.NewPoll{Question: "Q", Options: []string{"A", "B"}}, true)
	c := n.dial(ev.Event.Code, "")

	cases := []struct {
		name  string
		frame string
		code  string
	}{
		{"malformed JSON", `{"type":"vote",`, "invalid_message"},
		{"unknown type", `{"type":"subscribe"}`, "invalid_message"},
		{"unknown field", `{"type":"vote","vote_id":"` + uuid.NewString() + `","poll":"` + poll.ID + `","options":["o1"],"weight":100}`, "invalid_message"},
		{"options wrong type", `{"type":"vote","vote_id":"` + uuid.NewString() + `","poll":"` + poll.ID + `","options":"o1"}`, "invalid_message"},
	}
	for _, tc := range cases {
		c.sendRaw(tc.frame)
		frame := c.next("error", 5*time.Second)
		var body struct {
			Code string `json:"code"`
		}
		if err := json.Unmarshal(frame["error"], &body); err != nil || body.Code != tc.code {
			t.Fatalf("%s: error %s, want code %s", tc.name, frame["error"], tc.code)
		}
	}
	// The connection survived every bad frame and still takes votes.
	c.vote(poll.ID, "o2")
	if ack := c.ack(); ack.Status != "accepted" {
		t.Fatalf("vote after bad frames = %+v, want accepted", ack)
	}
}

// TestRetryAfterCloseIsDuplicate replays an accepted vote after its poll closed: the
// voter learns that the vote counted, while a new vote is refused poll_closed.
func TestRetryAfterCloseIsDuplicate(t *testing.T) {
	n := startNode(t, testConfig(t))
	ev := n.createEvent("Retry after close")
	poll := n.createPoll(ev, hub.NewPoll{Question: "Q", Options: []string{"A", "B"}}, true)
	session, id := n.newSession(), uuid.NewString()
	first := decodeInto[voteAnswer](t, n.httpVote(session, poll.ID, id, "o1"), http.StatusAccepted)
	n.closeAndWaitFinal(ev, poll.ID)

	again := decodeInto[voteAnswer](t, n.httpVote(session, poll.ID, id, "o1"), http.StatusAccepted)
	if again.Status != "duplicate" || again.Receipt == nil || *again.Receipt != *first.Receipt {
		t.Fatalf("retry after close = %+v, want duplicate with receipt %+v", again, first.Receipt)
	}
	if got := n.httpVote(n.newSession(), poll.ID, uuid.NewString(), "o1"); got.errorCode() != "poll_closed" {
		t.Fatalf("new vote after close: %d %s, want poll_closed", got.Status, got.Body)
	}
	if got := n.httpVote(session, poll.ID, uuid.NewString(), "o2"); got.errorCode() != "poll_closed" {
		t.Fatalf("second vote of the voter after close: %d %s, want poll_closed", got.Status, got.Body)
	}
}

// tamperedTag changes one character inside the signature part of a session token, so
// the token keeps its length and encoding and only the signature check can reject it.
func tamperedTag(token string) string {
	b := []byte(token)
	i := len(b) - 8
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}
