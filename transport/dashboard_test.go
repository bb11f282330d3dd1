package transport_test

import (
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/livevote/livevote/hub"
)

type dashboardDoc struct {
	Sockets        int      `json:"sockets"`
	VotesAccepted  uint64   `json:"votes_accepted_total"`
	VotesPerSecond float64  `json:"votes_per_second"`
	AckP50Ms       *float64 `json:"ack_p50_ms"`
	AckP99Ms       *float64 `json:"ack_p99_ms"`
	Events         []struct {
		Code     string `json:"code"`
		Audience int    `json:"audience"`
		Poll     *struct {
			Voters        int64    `json:"voters"`
			Participation *float64 `json:"participation"`
		} `json:"poll"`
	} `json:"events"`
	Shards []struct {
		VotesApplied uint64  `json:"votes_applied"`
		Share        float64 `json:"share"`
	} `json:"shards"`
	Ring struct {
		Shards          int     `json:"shards"`
		BusiestOverMean float64 `json:"busiest_over_mean"`
	} `json:"ring"`
}

func TestDashboardRequiresOperatorKey(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{operatorKey: "let-me-in"})

	for _, key := range []string{"", "wrong"} {
		r := n.do("GET", "/api/dashboard", nil, key)
		if r.status != http.StatusUnauthorized || r.errorCode() != "unauthorized" {
			t.Errorf("key %q: status %d code %q, want 401 unauthorized", key, r.status, r.errorCode())
		}
	}
	decode[dashboardDoc](t, n.do("GET", "/api/dashboard", nil, "let-me-in"), http.StatusOK)

	if page := n.do("GET", "/dashboard", nil, ""); page.status != http.StatusOK || !strings.Contains(string(page.body), "dashboard.js") {
		t.Errorf("GET /dashboard: status %d, want 200 with the page", page.status)
	}
}

func TestDashboardCountsVotesShardsAndParticipation(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{shards: 4})
	ev := n.createEvent("Dashboard")
	poll := n.createPoll(ev, hub.NewPoll{Question: "Which?", Options: []string{"A", "B"}}, true)

	const voters = 12
	sockets := make([]*socket, voters)
	for i := range sockets {
		sockets[i], _ = n.audience(ev)
	}
	for i, s := range sockets {
		if ack := vote(t, s, poll.ID, "o"+strconv.Itoa(i%2+1)); ack.Status != "accepted" {
			t.Fatalf("vote %d: status %q", i, ack.Status)
		}
	}
	// The participation figure reads the results document, which the aggregator
	// writes within a broadcast interval.
	sockets[0].await(5*time.Second, "results with every voter", func(f frame) bool { return isResultsOf(poll.ID)(f) && f.Voters == voters })

	doc := decode[dashboardDoc](t, n.do("GET", "/api/dashboard", nil, ""), http.StatusOK)
	if doc.VotesAccepted != voters {
		t.Errorf("votes_accepted_total = %d, want %d", doc.VotesAccepted, voters)
	}
	if doc.Sockets != voters {
		t.Errorf("sockets = %d, want %d", doc.Sockets, voters)
	}
	if doc.AckP50Ms == nil || doc.AckP99Ms == nil || *doc.AckP50Ms <= 0 || *doc.AckP99Ms < *doc.AckP50Ms {
		t.Errorf("ack p50 %v p99 %v, want 0 < p50 <= p99", doc.AckP50Ms, doc.AckP99Ms)
	}
	if len(doc.Shards) != 4 || doc.Ring.Shards != 4 {
		t.Fatalf("shards = %d, ring.shards = %d, want 4", len(doc.Shards), doc.Ring.Shards)
	}
	var applied uint64
	var shares float64
	for _, s := range doc.Shards {
		applied += s.VotesApplied
		shares += s.Share
	}
	if applied != voters || math.Abs(shares-1) > 1e-9 {
		t.Errorf("shards applied %d votes with shares summing to %g, want %d and 1", applied, shares, voters)
	}
	if doc.Ring.BusiestOverMean < 1 {
		t.Errorf("busiest_over_mean = %g, want >= 1", doc.Ring.BusiestOverMean)
	}
	if len(doc.Events) != 1 || doc.Events[0].Code != ev.Event.Code || doc.Events[0].Audience != voters {
		t.Fatalf("events = %+v, want %s with %d audience", doc.Events, ev.Event.Code, voters)
	}
	p := doc.Events[0].Poll
	if p == nil || p.Voters != voters || p.Participation == nil || *p.Participation != 1 {
		t.Errorf("event poll = %+v, want %d voters and participation 1", p, voters)
	}
}

func TestJoinQRCode(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})
	ev := n.createEvent("QR")

	r := n.do("GET", "/api/events/"+strings.ToLower(ev.Event.Code)+"/qr.svg", nil, "")
	if r.status != http.StatusOK || r.header.Get("Content-Type") != "image/svg+xml" {
		t.Fatalf("status %d type %q, want 200 image/svg+xml", r.status, r.header.Get("Content-Type"))
	}
	svg := string(r.body)
	link := n.base + "/e/" + ev.Event.Code
	if !strings.Contains(svg, "<title>QR code of "+link+"</title>") {
		t.Errorf("svg title does not name %s: %.200s", link, svg)
	}

	// A QR code of version v has 17+4v modules a side; with the 4-module quiet
	// zone on each side the view box is 25+4v.
	size := regexp.MustCompile(`viewBox="0 0 (\d+) (\d+)"`).FindStringSubmatch(svg)
	if size == nil || size[1] != size[2] {
		t.Fatalf("no square viewBox in %.200s", svg)
	}
	side, _ := strconv.Atoi(size[1])
	if side < 29 || (side-25)%4 != 0 {
		t.Errorf("viewBox side %d is not 25+4v for a QR version v >= 1", side)
	}
	// The top-left finder pattern starts with a run of 7 dark modules at (4,4).
	for x := 4; x < 11; x++ {
		if !strings.Contains(svg, "M"+strconv.Itoa(x)+" 4h1v1h-1z") {
			t.Errorf("finder pattern module (%d,4) is not dark", x)
		}
	}

	if r := n.do("GET", "/api/events/ZZZZZZ/qr.svg", nil, ""); r.status != http.StatusNotFound || r.errorCode() != "unknown_event" {
		t.Errorf("unknown event: status %d code %q, want 404 unknown_event", r.status, r.errorCode())
	}
}
