package transport_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/uuid"

	"github.com/livevote/livevote/actors"
	"github.com/livevote/livevote/hub"
	"github.com/livevote/livevote/transport"
)

// httpVote votes as a new voter over HTTP and returns the answer's status.
func (n *node) httpVote(pollID string, options ...string) string {
	n.t.Helper()
	session := decode[struct {
		Session string `json:"session"`
	}](n.t, n.do("POST", "/api/sessions", nil, ""), http.StatusCreated).Session

	req, err := http.NewRequest("POST", n.base+"/api/polls/"+pollID+"/votes",
		strings.NewReader(`{"vote_id":"`+uuid.NewString()+`","options":["`+strings.Join(options, `","`)+`"]}`))
	if err != nil {
		n.t.Fatalf("new request: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(transport.SessionHeader, session)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatalf("vote: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		n.t.Fatalf("vote answered HTTP %d, want 202", resp.StatusCode)
	}
	return "accepted"
}

// waitResults waits until the server's results of the poll have voters voters.
func (n *node) waitResults(pollID string, voters int64) actors.Results {
	n.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		doc, err := n.hub.Results(pollID)
		if err == nil && doc.Voters == voters {
			return doc
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("results of %s: %+v (%v), want %d voters", pollID, doc, err, voters)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestBrowserAudienceJoinsVotesAndSeesReceipt(t *testing.T) {
	n := startNode(t, nodeOptions{})
	ev := n.createEvent("Team meeting")
	poll := n.createPoll(ev, hub.NewPoll{Question: "Tea or coffee?", Options: []string{"Tea", "Coffee", "Water"}}, true)
	b := newBrowser(t)

	// Join by typing the code on the front page, lower case and with a dash.
	front := b.open("index", n.base+"/", phoneSize)
	front.checkAccessibility()
	code := strings.ToLower(ev.Event.Code[:3] + "-" + ev.Event.Code[3:])
	front.do("type the join code", chromedp.SendKeys(chromedp.ID("join-code"), code), chromedp.Click(chromedp.CSS(`#join-form button[type="submit"]`)))
	front.waitFor("audience page", `location.pathname === "/e/`+ev.Event.Code+`"`)

	// A second tab of the same browser shares the session but not the page's memory
	// of the vote, so its vote is the same voter voting twice.
	twin := b.open("audience-twin", n.base+"/e/"+ev.Event.Code, phoneSize)
	audience := front
	audience.name = "audience"
	audience.waitText(".connection-text", "Connected")
	audience.waitText(".poll-question", "Tea or coffee?")
	for _, label := range []string{"Tea", "Coffee", "Water"} {
		if got := audience.accessibleButtons(label); got != 1 {
			t.Errorf("accessible buttons named %q: %d, want 1", label, got)
		}
	}
	audience.fitsWidth()

	// Vote with the keyboard: focus the option and press Enter.
	audience.do("vote with the keyboard",
		chromedp.Focus(chromedp.JSPath(buttonExpression("Coffee"))),
		chromedp.KeyEvent("\r"))
	audience.waitText(".vote-status", "Counted. Receipt: shard ")
	status := audience.text(".vote-status")
	doc := n.waitResults(poll.ID, 1)
	if doc.Counts["o2"] != 1 {
		t.Errorf("server counts %v, want o2 = 1", doc.Counts)
	}
	audience.waitText(".totals", "1 vote from 1 voter.")
	if !strings.Contains(status, "sequence ") {
		t.Errorf("vote status %q names no stream sequence", status)
	}

	twin.waitText(".connection-text", "Connected")
	twin.clickButton("Tea")
	twin.waitText(".vote-status", "Refused: You have already voted in this poll, and it does not allow changing a vote.")

	audience.checkAccessibility()

	// A refresh keeps the session and the vote's state.
	audience.do("reload", chromedp.Reload())
	audience.waitText(".vote-status", status)
	var pressed string
	audience.eval(buttonExpression("Coffee")+`.getAttribute("aria-pressed")`, &pressed)
	if pressed != "true" {
		t.Errorf("after reload the Coffee button has aria-pressed %q, want true", pressed)
	}
}

func TestBrowserMultipleChoiceSubmit(t *testing.T) {
	n := startNode(t, nodeOptions{})
	ev := n.createEvent("Workshop")
	poll := n.createPoll(ev, hub.NewPoll{Question: "Which topics?", Options: []string{"Go", "NATS", "Actors"}, Kind: hub.PollMultiple, AllowChange: true}, true)
	b := newBrowser(t)

	audience := b.open("audience", n.base+"/e/"+ev.Event.Code, phoneSize)
	audience.waitText(".poll-question", "Which topics?")
	audience.clickButton("Go")
	audience.clickButton("Actors")
	audience.clickButton("Submit vote")
	audience.waitText(".vote-status", "Counted. Receipt")
	doc := n.waitResults(poll.ID, 1)
	if doc.Counts["o1"] != 1 || doc.Counts["o3"] != 1 || doc.Counts["o2"] != 0 {
		t.Errorf("counts %v, want o1 and o3", doc.Counts)
	}

	// Changing the vote replaces it.
	audience.clickButton("Go")
	audience.clickButton("NATS")
	audience.clickButton("Submit vote")
	audience.waitFor("second receipt", `document.querySelector(".vote-status").dataset.state === "counted"`)
	audience.waitText(".totals", "2 votes from 1 voter.")
	audience.checkAccessibility()
}

func TestBrowserPresenterRunsAPoll(t *testing.T) {
	n := startNode(t, nodeOptions{})
	ev := n.createEvent("All hands")
	b := newBrowser(t)

	presenter := b.open("presenter", n.base+"/present/"+ev.Event.Code+"#token="+ev.PresenterToken, projectorSize)
	presenter.waitText("#connection-text", "Live")
	if hash := presenter.text("#join-code"); hash != ev.Event.Code {
		t.Errorf("join code shown %q, want %s", hash, ev.Event.Code)
	}
	var location string
	presenter.eval(`location.href`, &location)
	if strings.Contains(location, ev.PresenterToken) {
		t.Errorf("the address bar still shows the presenter token: %s", location)
	}
	presenter.waitFor("QR code image loaded", `document.getElementById("qr").naturalWidth > 0 && !document.getElementById("qr").hidden`)
	var qrWidth float64
	presenter.eval(`document.getElementById("qr").getBoundingClientRect().width`, &qrWidth)
	if qrWidth < 300 {
		t.Errorf("QR code is %.0f px wide on a 1920 px projector, want at least 300", qrWidth)
	}

	// Create a poll through the form.
	presenter.do("fill in the poll form",
		chromedp.SendKeys(chromedp.ID("question"), "Where should we go?"),
		chromedp.SendKeys(chromedp.CSS(`#option-inputs li:nth-child(1) input`), "Beach"),
		chromedp.SendKeys(chromedp.CSS(`#option-inputs li:nth-child(2) input`), "Mountains"),
		chromedp.Click(chromedp.ID("add-option")),
		chromedp.SendKeys(chromedp.CSS(`#option-inputs li:nth-child(3) input`), "City"),
		chromedp.Click(chromedp.ID("create-poll")),
	)
	presenter.waitText(".state-badge", "Draft")
	presenter.checkAccessibility()
	presenter.clickButton("Open")
	presenter.waitText(".state-badge", "Open")

	audience := b.open("audience", n.base+"/e/"+ev.Event.Code, phoneSize)
	audience.waitText(".poll-question", "Where should we go?")
	presenter.waitText("#chart-participation", "1 person connected")
	audience.clickButton("Beach")
	audience.waitText(".vote-status", "Counted. Receipt")

	pollID := n.hub.Registry().Polls()[0].ID
	for _, option := range []string{"o1", "o1", "o1", "o2", "o2", "o3"} {
		n.httpVote(pollID, option)
	}

	// The chart reaches the exact totals.
	presenter.waitFor("exact totals on the chart",
		`JSON.stringify(Array.from(document.querySelectorAll("#chart-bars .bar-count")).map((e) => e.textContent)) === '["4","2","1"]'`)
	presenter.waitText("#chart-totals", "7 votes from 7 voters")
	presenter.waitText("#chart-participation", "Participation: 7 voters of 1 person connected")
	audience.waitText(".totals", "7 votes from 7 voters.")

	// Hide: the audience loses the chart, the presenter keeps counting.
	presenter.clickButton("Hide results")
	presenter.waitFor("hidden badge", `!document.getElementById("chart-hidden").hidden`)
	audience.waitText(".totals", "The presenter is not showing the results right now.")
	n.httpVote(pollID, "o3")
	presenter.waitText("#chart-totals", "8 votes from 8 voters")
	var audienceText string
	audience.eval(`document.body.innerText`, &audienceText)
	if strings.Contains(audienceText, "8 votes") {
		t.Errorf("audience page shows hidden results: %q", audienceText)
	}

	// Reveal: the audience sees the current totals.
	presenter.clickButton("Show results")
	audience.waitText(".totals", "8 votes from 8 voters.")

	presenter.clickButton("Close")
	presenter.waitText(".state-badge", "Closed")
	presenter.waitFor("final badge", `!document.getElementById("chart-final").hidden`)
	audience.waitText(".closed-note", "Voting closed")
	audience.waitText(".totals", "Final results.")

	dashboard := b.open("dashboard", n.base+"/dashboard", projectorSize)
	dashboard.waitText("#events-body", ev.Event.Code)
	dashboard.checkAccessibility()
}

func TestBrowserOutboxDeliversAfterOutage(t *testing.T) {
	n := startNode(t, nodeOptions{})
	ev := n.createEvent("Flaky network")
	kept := n.createPoll(ev, hub.NewPoll{Question: "Kept while offline?", Options: []string{"Yes", "No"}}, true)
	closing := n.createPoll(ev, hub.NewPoll{Question: "Closes during the outage?", Options: []string{"Red", "Blue"}}, true)
	proxy := newCutProxy(t, strings.TrimPrefix(n.base, "http://"))
	b := newBrowser(t)

	audience := b.open("audience", "http://"+proxy.addr+"/e/"+ev.Event.Code, phoneSize)
	audience.waitText(".connection-text", "Connected")
	audience.waitText(".poll-question", "Kept while offline?")

	proxy.cut()
	audience.waitText(".connection-text", "Connection lost")
	audience.clickButton("Yes")
	audience.clickButton("Blue")
	audience.waitText(".vote-status", "The vote is saved and goes out when the connection is back.")
	var queued int
	audience.eval(`JSON.parse(localStorage.getItem("livevote.outbox.`+ev.Event.Code+`") || "[]").length`, &queued)
	if queued != 2 {
		t.Errorf("outbox in localStorage holds %d votes, want 2", queued)
	}
	decode[hub.Poll](t, n.do("POST", "/api/polls/"+closing.ID+"/close", nil, ev.PresenterToken), http.StatusOK)

	proxy.restore()
	audience.waitText(".connection-text", "Connected")
	audience.waitText(".vote-status", "Counted. Receipt")
	audience.waitText(".vote-status", "Refused: Voting on this poll has closed.")
	doc := n.waitResults(kept.ID, 1)
	if doc.Counts["o1"] != 1 {
		t.Errorf("counts of the kept poll %v, want o1 = 1", doc.Counts)
	}
	audience.waitFor("empty outbox", `localStorage.getItem("livevote.outbox.`+ev.Event.Code+`") === null`)
}

func TestBrowserDashboardShowsShards(t *testing.T) {
	n := startNode(t, nodeOptions{shards: 8, operatorKey: "operator-secret"})
	ev := n.createEvent("Surge")
	poll := n.createPoll(ev, hub.NewPoll{Question: "Ready?", Options: []string{"Yes", "No"}}, true)
	b := newBrowser(t)

	dashboard := b.open("dashboard", n.base+"/dashboard", projectorSize)
	dashboard.waitFor("operator key form", `!document.getElementById("key-form").hidden`)
	dashboard.do("enter the key", chromedp.SendKeys(chromedp.ID("operator-key"), "operator-secret"), chromedp.Click(chromedp.CSS(`#key-form button`)))
	dashboard.waitFor("8 shard rows", `document.querySelectorAll("#shards-body tr").length === 8`)

	b.open("audience", n.base+"/e/"+ev.Event.Code, phoneSize).waitText(".poll-question", "Ready?")
	const votes = 40
	for i := range votes {
		n.httpVote(poll.ID, []string{"o1", "o2"}[i%2])
	}
	dashboard.waitText("#fig-total", "40")
	dashboard.waitText("#events-body", ev.Event.Code)
	dashboard.waitText("#ring-text", "Ring evenness")
	dashboard.waitFor("shard votes per second above zero", `Array.from(document.querySelectorAll("#shards-body .meter-value")).some((e) => parseFloat(e.textContent) > 0)`)
	dashboard.checkAccessibility()
	dashboard.do("phone size", chromedp.EmulateViewport(phoneSize[0], phoneSize[1]))
	dashboard.fitsWidth()
}
