package transport_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/livevote/livevote/hub"
	"github.com/livevote/livevote/transport"
)

// socket is a real WebSocket client of the node. One goroutine reads every frame into
// a channel, because a read whose context ends closes a coder/websocket connection.
type socket struct {
	t      testing.TB
	ws     *websocket.Conn
	frames chan frame
	done   chan struct{} // closed when the reader stops
	err    error         // the read error that stopped the reader; read after done
}

// frame is any server message, with the fields the tests read.
type frame struct {
	Type     string          `json:"type"`
	Role     string          `json:"role"`
	Session  string          `json:"session"`
	Audience *int            `json:"audience"`
	Results  json.RawMessage `json:"results"`
	Poll     json.RawMessage `json:"poll"`
	VoteID   string          `json:"vote_id"`
	Status   string          `json:"status"`
	Voters   int64           `json:"voters"`
	Version  uint64          `json:"version"`
	Error    *struct {
		Code string `json:"code"`
	} `json:"error"`
}

// pollID returns the poll a "results" or "poll" frame is about.
func (f frame) pollID() string {
	if f.Type == "results" {
		var id string
		_ = json.Unmarshal(f.Poll, &id)
		return id
	}
	var p hub.Poll
	_ = json.Unmarshal(f.Poll, &p)
	return p.ID
}

func (n *node) dial(query string) *socket {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	url := "ws" + strings.TrimPrefix(n.base, "http") + "/ws?" + query
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{transport.Subprotocol}})
	if err != nil {
		n.t.Fatalf("dial %s: %v", url, err)
	}
	s := &socket{t: n.t, ws: ws, frames: make(chan frame, 256), done: make(chan struct{})}
	go s.readLoop()
	n.t.Cleanup(func() {
		ws.CloseNow()
		<-s.done
	})
	return s
}

func (s *socket) readLoop() {
	defer close(s.done)
	defer close(s.frames)
	for {
		_, data, err := s.ws.Read(context.Background())
		if err != nil {
			s.err = err
			return
		}
		var f frame
		if err := json.Unmarshal(data, &f); err != nil {
			f = frame{Type: "undecodable: " + string(data)}
		}
		select {
		case s.frames <- f:
		default:
			s.err = errors.New("test socket buffer of 256 frames is full")
			s.ws.CloseNow()
			return
		}
	}
}

func (s *socket) send(v any) {
	s.t.Helper()
	data, _ := json.Marshal(v)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.ws.Write(ctx, websocket.MessageText, data); err != nil {
		s.t.Fatalf("write: %v", err)
	}
}

// next returns the next frame, or ok false when none arrives within wait or the
// socket closed.
func (s *socket) next(wait time.Duration) (frame, bool) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case f, ok := <-s.frames:
		return f, ok
	case <-timer.C:
		return frame{}, false
	}
}

// await reads frames until match accepts one, failing after wait. It returns the
// frames skipped on the way as well.
func (s *socket) await(wait time.Duration, what string, match func(frame) bool) (frame, []frame) {
	s.t.Helper()
	deadline := time.Now().Add(wait)
	var skipped []frame
	for time.Now().Before(deadline) {
		f, ok := s.next(time.Until(deadline))
		if !ok {
			break
		}
		if match(f) {
			return f, skipped
		}
		skipped = append(skipped, f)
	}
	s.t.Fatalf("no %s within %s; got %+v", what, wait, skipped)
	return frame{}, nil
}

// readCloseStatus drains frames until the server closes the socket and returns the
// close status, or -1 when the socket is still open after wait.
func (s *socket) readCloseStatus(wait time.Duration) websocket.StatusCode {
	s.t.Helper()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-s.done:
		return websocket.CloseStatus(s.err)
	case <-timer.C:
		return -1
	}
}

func (n *node) presenter(ev createdEvent) (*socket, frame) {
	n.t.Helper()
	s := n.dial("event=" + ev.Event.Code + "&role=presenter")
	s.send(map[string]string{"type": "auth", "token": ev.PresenterToken})
	welcome, _ := s.await(5*time.Second, "presenter welcome", func(f frame) bool { return f.Type == "welcome" })
	return s, welcome
}

func (n *node) audience(ev createdEvent) (*socket, frame) {
	n.t.Helper()
	s := n.dial("event=" + ev.Event.Code)
	welcome, _ := s.await(5*time.Second, "audience welcome", func(f frame) bool { return f.Type == "welcome" })
	return s, welcome
}

func resultPolls(t testing.TB, raw json.RawMessage) map[string]int64 {
	t.Helper()
	var docs []struct {
		Poll   string `json:"poll"`
		Voters int64  `json:"voters"`
	}
	if err := json.Unmarshal(raw, &docs); err != nil {
		t.Fatalf("decode welcome results %s: %v", raw, err)
	}
	out := make(map[string]int64, len(docs))
	for _, d := range docs {
		out[d.Poll] = d.Voters
	}
	return out
}

func vote(t testing.TB, s *socket, pollID, option string) frame {
	t.Helper()
	id := uuid.NewString()
	s.send(map[string]any{"type": "vote", "vote_id": id, "poll": pollID, "options": []string{option}})
	ack, _ := s.await(10*time.Second, "ack of "+id, func(f frame) bool { return f.Type == "ack" && f.VoteID == id })
	return ack
}

// isResultsOf reports whether f is a results document of poll.
func isResultsOf(poll string) func(frame) bool {
	return func(f frame) bool { return f.Type == "results" && f.pollID() == poll }
}

func TestHiddenResultsReachOnlyPresenters(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})
	ev := n.createEvent("Hidden results")
	hidden := false
	poll := n.createPoll(ev, hub.NewPoll{Question: "Tea or coffee?", Options: []string{"Tea", "Coffee"}, ResultsVisible: &hidden}, true)
	if poll.ResultsVisible {
		t.Fatalf("created poll has results_visible true, want false")
	}

	presenter, presenterWelcome := n.presenter(ev)
	if presenterWelcome.Role != "presenter" {
		t.Errorf("presenter welcome role = %q, want presenter", presenterWelcome.Role)
	}
	if _, ok := resultPolls(t, presenterWelcome.Results)[poll.ID]; !ok {
		t.Errorf("presenter welcome lacks the hidden poll's results: %s", presenterWelcome.Results)
	}
	voter, voterWelcome := n.audience(ev)
	if voterWelcome.Role != "audience" {
		t.Errorf("audience welcome role = %q, want audience", voterWelcome.Role)
	}
	if _, ok := resultPolls(t, voterWelcome.Results)[poll.ID]; ok {
		t.Errorf("audience welcome contains the hidden poll's results: %s", voterWelcome.Results)
	}

	if ack := vote(t, voter, poll.ID, "o1"); ack.Status != "accepted" {
		t.Fatalf("vote status = %q, want accepted", ack.Status)
	}
	doc, _ := presenter.await(5*time.Second, "results with 1 voter", func(f frame) bool { return isResultsOf(poll.ID)(f) && f.Voters == 1 })

	// Several broadcast intervals pass; the audience socket must get nothing of the poll.
	deadline := time.Now().Add(600 * time.Millisecond)
	for time.Now().Before(deadline) {
		f, ok := voter.next(time.Until(deadline))
		if ok && f.Type == "results" {
			t.Fatalf("audience socket got results of a hidden poll: %+v", f)
		}
	}

	anonymous := n.do("GET", "/api/polls/"+poll.ID+"/results", nil, "")
	if anonymous.status != http.StatusUnauthorized || anonymous.errorCode() != "unauthorized" {
		t.Errorf("results without token: status %d code %q, want 401 unauthorized", anonymous.status, anonymous.errorCode())
	}
	withToken := decode[frame](t, n.do("GET", "/api/polls/"+poll.ID+"/results", nil, ev.PresenterToken), http.StatusOK)
	if withToken.Voters != 1 {
		t.Errorf("results with token: voters %d, want 1", withToken.Voters)
	}

	revealed := decode[hub.Poll](t, n.do("POST", "/api/polls/"+poll.ID+"/reveal", nil, ev.PresenterToken), http.StatusOK)
	if !revealed.ResultsVisible {
		t.Errorf("reveal answered results_visible false")
	}
	shown, skipped := voter.await(5*time.Second, "results after reveal", isResultsOf(poll.ID))
	if shown.Voters != 1 || shown.Version != doc.Version {
		t.Errorf("revealed doc: voters %d version %d, want 1 and %d", shown.Voters, shown.Version, doc.Version)
	}
	if len(skipped) == 0 || skipped[len(skipped)-1].Type != "poll" {
		t.Errorf("audience got no poll message before the revealed results: %+v", skipped)
	}
	if public := n.do("GET", "/api/polls/"+poll.ID+"/results", nil, ""); public.status != http.StatusOK {
		t.Errorf("results after reveal without token: status %d, want 200", public.status)
	}
}

func TestHidingStopsAudienceResults(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})
	ev := n.createEvent("Hide mid-poll")
	poll := n.createPoll(ev, hub.NewPoll{Question: "Cats or dogs?", Options: []string{"Cats", "Dogs"}}, true)
	if !poll.ResultsVisible {
		t.Fatalf("a poll created without results_visible has it false, want true by default")
	}

	presenter, _ := n.presenter(ev)
	voter, _ := n.audience(ev)
	vote(t, voter, poll.ID, "o2")
	voter.await(5*time.Second, "visible results", isResultsOf(poll.ID))

	decode[hub.Poll](t, n.do("POST", "/api/polls/"+poll.ID+"/hide", nil, ev.PresenterToken), http.StatusOK)
	voter.await(5*time.Second, "poll message with hidden results", func(f frame) bool {
		if f.Type != "poll" {
			return false
		}
		var p hub.Poll
		_ = json.Unmarshal(f.Poll, &p)
		return p.ID == poll.ID && !p.ResultsVisible
	})

	second, _ := n.audience(ev)
	vote(t, second, poll.ID, "o1")
	presenter.await(5*time.Second, "results with 2 voters", func(f frame) bool { return isResultsOf(poll.ID)(f) && f.Voters == 2 })
	for _, s := range []*socket{voter, second} {
		deadline := time.Now().Add(500 * time.Millisecond)
		for time.Now().Before(deadline) {
			if f, ok := s.next(time.Until(deadline)); ok && f.Type == "results" {
				t.Fatalf("audience socket got results after hide: %+v", f)
			}
		}
	}

	closed := decode[hub.Poll](t, n.do("POST", "/api/polls/"+poll.ID+"/close", nil, ev.PresenterToken), http.StatusOK)
	if closed.ResultsVisible {
		t.Errorf("closing revealed the results")
	}
	if r := n.do("GET", "/api/polls/"+poll.ID+"/results.csv", nil, ev.PresenterToken); r.status != http.StatusOK || !strings.Contains(string(r.body), "Cats,1") {
		t.Errorf("csv: status %d body %q, want 200 with Cats,1", r.status, r.body)
	}
}

func TestPresenterSocketAuth(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})
	ev := n.createEvent("Auth")
	other := n.createEvent("Other")

	tests := []struct {
		name string
		auth any
	}{
		{"wrong token", map[string]string{"type": "auth", "token": other.PresenterToken}},
		{"empty token", map[string]string{"type": "auth", "token": ""}},
		{"vote first", map[string]any{"type": "vote", "vote_id": uuid.NewString(), "poll": "x", "options": []string{"o1"}}},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			s := n.dial("event=" + ev.Event.Code + "&role=presenter")
			s.send(test.auth)
			f, ok := s.next(5 * time.Second)
			if !ok || f.Type != "error" || f.Error == nil || f.Error.Code == "" {
				t.Fatalf("first frame = %+v, want an error", f)
			}
			if f.Type == "welcome" {
				t.Fatalf("refused presenter got a welcome")
			}
			if status := s.readCloseStatus(5 * time.Second); status != websocket.StatusPolicyViolation {
				t.Errorf("close status %d, want 1008", status)
			}
		})
	}

	if r := n.do("GET", "/ws?event="+ev.Event.Code+"&role=admin", nil, ""); r.status != http.StatusBadRequest || r.errorCode() != "invalid_message" {
		t.Errorf("role=admin: status %d code %q, want 400 invalid_message", r.status, r.errorCode())
	}
}

func TestPresenterLearnsAudienceCount(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})
	ev := n.createEvent("Presence")

	presenter, welcome := n.presenter(ev)
	if welcome.Audience == nil || *welcome.Audience != 0 {
		t.Fatalf("presenter welcome audience = %v, want 0", welcome.Audience)
	}
	n.audience(ev)
	n.audience(ev)
	presenter.await(5*time.Second, "presence of 2", func(f frame) bool { return f.Type == "presence" && f.Audience != nil && *f.Audience == 2 })
}
