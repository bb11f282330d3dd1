package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/livevote/livevote/actors"
	"github.com/livevote/livevote/hub"
	"github.com/livevote/livevote/transport"
)

// testNode is a LiveVote node started in-process on 127.0.0.1 with its own data directory.
type testNode struct {
	t    testing.TB
	app  *app
	base string
	stop context.CancelFunc
	done chan error
}

func testConfig(t testing.TB) config {
	t.Helper()
	cfg, err := parseConfig([]string{"-addr", "127.0.0.1:0", "-data", t.TempDir(), "-shards", "8", "-broadcast-interval", "100ms"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	return cfg
}

// startNode starts a node and waits until every shard has recovered.
func startNode(t testing.TB, cfg config) *testNode {
	t.Helper()
	return startNodeWithLogger(t, cfg, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})))
}

func startNodeWithLogger(t testing.TB, cfg config, logger *slog.Logger) *testNode {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a, err := start(ctx, cfg, logger)
	if err != nil {
		cancel()
		t.Fatalf("start: %v", err)
	}
	n := &testNode{t: t, app: a, base: baseURL(a.ln), stop: cancel, done: make(chan error, 1)}
	go func() { n.done <- a.server.Serve(a.ln) }()

	readyCtx, readyCancel := context.WithTimeout(ctx, 30*time.Second)
	defer readyCancel()
	if err := a.shards.WaitReady(readyCtx); err != nil {
		t.Fatalf("shards not ready: %v", err)
	}
	t.Cleanup(n.close)
	return n
}

func (n *testNode) close() {
	if n.app == nil {
		return
	}
	err := n.app.stop(20*time.Second, slog.New(slog.DiscardHandler))
	n.stop()
	if serveErr := <-n.done; serveErr != nil {
		n.t.Errorf("serve: %v", serveErr)
	}
	if err != nil {
		n.t.Errorf("stop: %v", err)
	}
	n.app = nil
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// apiResponse is a decoded HTTP answer.
type apiResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r apiResponse) errorCode() string {
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.Unmarshal(r.Body, &body)
	return body.Error.Code
}

func (n *testNode) do(method, path string, body any, header map[string]string) apiResponse {
	n.t.Helper()
	var reader io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		reader = strings.NewReader(b)
	case []byte:
		reader = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			n.t.Fatalf("encode body: %v", err)
		}
		reader = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, n.base+path, reader)
	if err != nil {
		n.t.Fatalf("new request: %v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		n.t.Fatalf("read body of %s %s: %v", method, path, err)
	}
	return apiResponse{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

func decodeInto[T any](t testing.TB, r apiResponse, want int) T {
	t.Helper()
	if r.Status != want {
		t.Fatalf("status %d, want %d: %s", r.Status, want, r.Body)
	}
	var v T
	if err := json.Unmarshal(r.Body, &v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
	return v
}

type createdEvent struct {
	Event          hub.Event `json:"event"`
	PresenterToken string    `json:"presenter_token"`
}

func (n *testNode) createEvent(title string) createdEvent {
	return decodeInto[createdEvent](n.t, n.do("POST", "/api/events", map[string]string{"title": title}, nil), http.StatusCreated)
}

func bearer(token string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + token}
}

func (n *testNode) createPoll(ev createdEvent, p hub.NewPoll, open bool) hub.Poll {
	n.t.Helper()
	poll := decodeInto[hub.Poll](n.t, n.do("POST", "/api/events/"+ev.Event.Code+"/polls", p, bearer(ev.PresenterToken)), http.StatusCreated)
	if open {
		poll = decodeInto[hub.Poll](n.t, n.do("POST", "/api/polls/"+poll.ID+"/open", nil, bearer(ev.PresenterToken)), http.StatusOK)
	}
	return poll
}

func (n *testNode) newSession() string {
	n.t.Helper()
	var s struct {
		Session string `json:"session"`
	}
	s = decodeInto[struct {
		Session string `json:"session"`
	}](n.t, n.do("POST", "/api/sessions", nil, nil), http.StatusCreated)
	return s.Session
}

type voteAnswer struct {
	VoteID  string          `json:"vote_id"`
	Status  string          `json:"status"`
	Receipt *actors.Receipt `json:"receipt"`
}

func (n *testNode) httpVote(session, poll, voteID string, options ...string) apiResponse {
	return n.do("POST", "/api/polls/"+poll+"/votes", map[string]any{"vote_id": voteID, "options": options}, map[string]string{transport.SessionHeader: session})
}

// wsClient is a real WebSocket voter.
type wsClient struct {
	t       testing.TB
	conn    *websocket.Conn
	session string
	frames  chan map[string]json.RawMessage
	// readErr is the error that ended the reader; it is set before frames is closed.
	readErr error
}

func (n *testNode) dial(code, session string) *wsClient {
	n.t.Helper()
	url := "ws" + strings.TrimPrefix(n.base, "http") + "/ws?event=" + code
	if session != "" {
		url += "&session=" + session
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{transport.Subprotocol}})
	if err != nil {
		n.t.Fatalf("dial %s: %v", url, err)
	}
	conn.SetReadLimit(8 << 20)
	c := &wsClient{t: n.t, conn: conn, frames: make(chan map[string]json.RawMessage, 1024)}
	go c.readAll()
	n.t.Cleanup(func() { conn.Close(websocket.StatusNormalClosure, "") })

	welcome := c.next("welcome", 10*time.Second)
	if err := json.Unmarshal(welcome["session"], &c.session); err != nil || c.session == "" {
		n.t.Fatalf("welcome without session: %v", err)
	}
	return c
}

func (c *wsClient) readAll() {
	defer close(c.frames)
	for {
		_, data, err := c.conn.Read(context.Background())
		if err != nil {
			c.readErr = err
			return
		}
		var frame map[string]json.RawMessage
		if err := json.Unmarshal(data, &frame); err != nil {
			c.t.Errorf("server sent invalid JSON %q: %v", data, err)
			return
		}
		c.frames <- frame
	}
}

// next returns the next frame of the given type, skipping others.
func (c *wsClient) next(typ string, timeout time.Duration) map[string]json.RawMessage {
	c.t.Helper()
	frame := c.nextOrNil(typ, timeout)
	if frame == nil {
		c.t.Fatalf("no %q message within %s", typ, timeout)
	}
	return frame
}

// nextOrNil returns the next message of type typ, or nil when none comes
// within timeout.
func (c *wsClient) nextOrNil(typ string, timeout time.Duration) map[string]json.RawMessage {
	c.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case frame, ok := <-c.frames:
			if !ok {
				c.t.Fatalf("socket closed while waiting for %q", typ)
			}
			var got string
			_ = json.Unmarshal(frame["type"], &got)
			if got == typ {
				return frame
			}
		case <-deadline:
			return nil
		}
	}
}

func (c *wsClient) send(v any) {
	c.t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		c.t.Fatalf("encode: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, data); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *wsClient) sendRaw(frame string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *wsClient) vote(poll string, options ...string) (voteID string) {
	voteID = uuid.NewString()
	c.send(map[string]any{"type": "vote", "vote_id": voteID, "poll": poll, "options": options})
	return voteID
}

type wsAck struct {
	Type    string          `json:"type"`
	VoteID  string          `json:"vote_id"`
	Status  string          `json:"status"`
	Receipt *actors.Receipt `json:"receipt"`
	Error   *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (c *wsClient) ack() wsAck {
	c.t.Helper()
	frame := c.next("ack", 15*time.Second)
	data, _ := json.Marshal(frame)
	var a wsAck
	if err := json.Unmarshal(data, &a); err != nil {
		c.t.Fatalf("decode ack: %v", err)
	}
	return a
}

// resultsUntil waits for a results message of the poll that satisfies ok.
func (c *wsClient) resultsUntil(poll string, timeout time.Duration, ok func(actors.Results) bool) actors.Results {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var last *actors.Results
	for {
		left := time.Until(deadline)
		frame := c.nextOrNil("results", max(left, 0))
		if frame == nil {
			if last == nil {
				c.t.Fatalf("no results message for poll %s within %s", poll, timeout)
			}
			c.t.Fatalf("no matching results for poll %s within %s; the last one was %+v", poll, timeout, *last)
		}
		data, _ := json.Marshal(frame)
		var doc actors.Results
		if err := json.Unmarshal(data, &doc); err != nil {
			c.t.Fatalf("decode results: %v", err)
		}
		if doc.Poll == poll && ok(doc) {
			return doc
		}
		if doc.Poll == poll {
			last = &doc
		}
	}
}
