package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"

	"github.com/coder/websocket"
)

// Socket limits of the load tester.
const (
	subprotocol     = "livevote.v1"
	wsReadLimit     = 1 << 20          // welcome messages carry the whole event
	inboxSize       = 256              // acks and errors waiting for the voter goroutine
	dialTimeout     = 30 * time.Second // handshake and welcome
	writeTimeout    = 10 * time.Second
	maxDialAttempts = 5
	resendDelay     = 250 * time.Millisecond
)

// serverMessage is any message the server sends over the socket. Type names the
// fields that are set.
type serverMessage struct {
	Type    string     `json:"type"`
	VoteID  string     `json:"vote_id"`
	Status  string     `json:"status"`
	Error   *wireError `json:"error"`
	Session string     `json:"session"`

	Poll       json.RawMessage  `json:"poll"`
	Counts     map[string]int64 `json:"counts"`
	TotalVotes int64            `json:"total_votes"`
	Voters     int64            `json:"voters"`
	Version    uint64           `json:"version"`
	Final      bool             `json:"final"`
	UpdatedAt  time.Time        `json:"updated_at"`

	at time.Time
}

// sentVote is a vote waiting for its ack.
type sentVote struct {
	poll int
	at   time.Time
}

// socketVoter is one WebSocket voter. Its goroutine owns the connection and the
// voter state; a reader goroutine per connection records broadcasts and passes acks
// through inbox.
type socketVoter struct {
	w       *workerRun
	v       *voter
	index   int
	session string

	conn       *websocket.Conn
	inbox      chan serverMessage
	readerDone chan struct{}

	sent   map[string]sentVote
	resend []int
	timer  *time.Timer
	broken bool
}

func (w *workerRun) runSocket(ctx context.Context, index int) {
	s := &socketVoter{w: w, v: newVoter(index, w.plan.Polls, w.plan.Seed), index: index, sent: map[string]sentVote{}}
	once := false
	markDrained := func() {
		if !once {
			once = true
			w.addLedger(s.v)
			w.drained.Done()
		}
	}
	defer markDrained()
	defer s.disconnect()

	at := connectAt(w.plan.Start, w.plan.Ramp, index, w.plan.TotalSockets)
	if !sleepUntil(ctx, at, w.votingDone) {
		return
	}
	if err := s.connect(ctx); err != nil {
		w.rec.c.ConnectFail.Add(1)
		return
	}
	w.rec.c.Connected.Add(1)
	w.rec.c.Open.Add(1)
	defer w.rec.c.Open.Add(-1)

	s.vote(ctx)
	markDrained()
	select {
	case <-w.finish:
	case <-ctx.Done():
	}
}

// connect dials until a welcome arrives, retrying a refused handshake with backoff.
func (s *socketVoter) connect(ctx context.Context) error {
	deadline := s.w.plan.Start.Add(s.w.plan.Duration + s.w.plan.Drain)
	backoff := 500 * time.Millisecond
	var err error
	for attempt := range maxDialAttempts {
		if attempt > 0 && !sleepUntil(ctx, time.Now().Add(backoff), nil) {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			break
		}
		err = s.dial(ctx)
		if err == nil {
			return nil
		}
		s.w.rec.fail("dial:" + dialCode(err))
		var se *apiStatusError
		if errors.As(err, &se) && se.RetryAfter > backoff {
			backoff = se.RetryAfter
		}
		backoff *= 2
	}
	return err
}

func dialCode(err error) string {
	var se *apiStatusError
	if errors.As(err, &se) {
		return se.Code
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout"
	}
	return "failed"
}

// dial opens one connection and waits for its welcome, keeping the session it gives.
func (s *socketVoter) dial(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()

	u := s.w.wsURL()
	q := url.Values{"event": {s.w.plan.EventCode}}
	if s.session != "" {
		q.Set("session", s.session)
	}
	u.RawQuery = q.Encode()

	conn, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{
		HTTPClient:      s.w.client(s.index),
		Subprotocols:    []string{subprotocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		if resp != nil && resp.Body != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			return statusError("GET", "/ws", resp, body)
		}
		return err
	}
	conn.SetReadLimit(wsReadLimit)
	s.conn = conn
	s.inbox = make(chan serverMessage, inboxSize)
	s.readerDone = make(chan struct{})
	go s.read(conn, s.inbox, s.readerDone)

	return s.awaitWelcome(ctx)
}

func (s *socketVoter) awaitWelcome(ctx context.Context) error {
	for {
		select {
		case m, ok := <-s.inbox:
			if !ok {
				s.disconnect()
				return errors.New("connection closed before the welcome message")
			}
			if m.Type == "error" && m.Error != nil {
				s.w.rec.fail(m.Error.Code)
				if m.Error.Code == "invalid_session" && s.session != "" {
					s.broken = true
				}
				continue
			}
			if m.Type == "welcome" {
				s.session = m.Session
				return nil
			}
		case <-ctx.Done():
			s.disconnect()
			return ctx.Err()
		}
	}
}

// read decodes messages until the connection ends, then closes inbox and done.
func (s *socketVoter) read(conn *websocket.Conn, inbox chan<- serverMessage, done chan<- struct{}) {
	defer close(done)
	defer close(inbox)
	for {
		_, data, err := conn.Read(context.Background())
		if err != nil {
			return
		}
		at := time.Now()
		var m serverMessage
		if err := json.Unmarshal(data, &m); err != nil {
			s.w.rec.fail("undecodable_message")
			continue
		}
		m.at = at
		switch m.Type {
		case "results":
			var poll string
			_ = json.Unmarshal(m.Poll, &poll)
			s.w.rec.broadcastAt(resultsDoc{Poll: poll, Counts: m.Counts, Voters: m.Voters, Version: m.Version, Final: m.Final, UpdatedAt: m.UpdatedAt}, at)
		case "poll":
		default:
			select {
			case inbox <- m:
			default:
				s.w.rec.fail("inbox_overflow")
			}
		}
	}
}

func (s *socketVoter) disconnect() {
	if s.conn == nil {
		return
	}
	_ = s.conn.Close(websocket.StatusNormalClosure, "")
	<-s.readerDone
	s.conn = nil
}

func (w *workerRun) wsURL() *url.URL {
	u, _ := url.Parse(w.plan.URL)
	u = u.JoinPath("/ws")
	if u.Scheme == "https" {
		u.Scheme = "wss"
	} else {
		u.Scheme = "ws"
	}
	return u
}

// vote sends votes while the voting window is open and then waits for the acks
// still owed, for at most plan.Drain.
func (s *socketVoter) vote(ctx context.Context) {
	limit := min(maxInFlightPerSocket, len(s.w.plan.Polls))
	votingDone := s.w.votingDone
	var drainC <-chan time.Time

	for {
		over := votingDone == nil
		if over && s.v.inFlight == 0 {
			return
		}

		var tokens <-chan struct{}
		var wake <-chan struct{}
		if !over && !s.w.plan.Idle && s.v.ready(limit) {
			if s.w.tokens != nil {
				tokens = s.w.tokens
			} else {
				f, wk := s.w.gate.state()
				if activeShare(s.index) < f {
					s.sendNext()
					continue
				}
				wake = wk
			}
		}

		select {
		case m, ok := <-s.inbox:
			if !ok {
				if !s.reconnect(ctx) {
					return
				}
				continue
			}
			s.handle(m)
		case <-tokens:
			s.sendNext()
		case <-wake:
		case <-s.timerC():
			s.timer = nil
			s.resendDue()
		case <-votingDone:
			votingDone = nil
			drain := time.NewTimer(s.w.plan.Drain)
			defer drain.Stop()
			drainC = drain.C
		case <-drainC:
			return
		case <-ctx.Done():
			return
		}
		if s.broken {
			return
		}
	}
}

func (s *socketVoter) timerC() <-chan time.Time {
	if s.timer == nil {
		return nil
	}
	return s.timer.C
}

func (s *socketVoter) sendNext() {
	a, ok := s.v.next(s.w.plan.RetryShare, s.w.plan.ChangeShare)
	if !ok {
		return
	}
	switch a.kind {
	case kindRetry:
		s.w.rec.c.Retries.Add(1)
	case kindChange:
		s.w.rec.c.Changes.Add(1)
	}
	s.send(a)
}

// send writes one vote. A failed write leaves the vote in flight: the reader sees the
// broken connection and the voter reconnects and resends.
func (s *socketVoter) send(a action) {
	msg := make([]byte, 0, 128)
	msg = append(msg, `{"type":"vote","vote_id":"`...)
	msg = append(msg, a.voteID...)
	msg = append(msg, `","poll":"`...)
	msg = append(msg, s.w.plan.Polls[a.poll].ID...)
	msg = append(msg, `","options":["o`...)
	msg = strconv.AppendInt(msg, int64(a.option+1), 10)
	msg = append(msg, `"]}`...)

	s.sent[a.voteID] = sentVote{poll: a.poll, at: time.Now()}
	s.w.rec.c.Sent.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	if err := s.conn.Write(ctx, websocket.MessageText, msg); err != nil {
		s.w.rec.fail("write_failed")
		s.conn.CloseNow()
	}
}

func (s *socketVoter) handle(m serverMessage) {
	switch m.Type {
	case "ack":
		s.handleAck(m)
	case "error":
		if m.Error != nil {
			s.w.rec.fail(m.Error.Code)
		}
	}
}

func (s *socketVoter) handleAck(m serverMessage) {
	sv, ok := s.sent[m.VoteID]
	if !ok {
		s.w.rec.fail("ack_for_unknown_vote")
		return
	}
	delete(s.sent, m.VoteID)

	code := ""
	if m.Error != nil {
		code = m.Error.Code
	}
	c := &s.w.rec.c
	switch m.Status {
	case "accepted":
		c.Acked.Add(1)
		c.Accepted.Add(1)
		s.w.rec.ackAt(sv.at, m.at)
	case "duplicate":
		c.Acked.Add(1)
		c.Duplicates.Add(1)
		s.w.rec.ackAt(sv.at, m.at)
	default:
		c.Rejected.Add(1)
		s.w.rec.fail(fallback(code, "rejected_without_code"))
	}

	switch s.v.answer(sv.poll, m.VoteID, m.Status, code) {
	case outcomeUnexpected:
		c.Unexpected.Add(1)
		s.w.rec.fail(fmt.Sprintf("unexpected_%s", m.Status))
	case outcomeResend:
		s.queueResend(sv.poll)
	case outcomeUnknown:
		s.w.rec.fail("ack_for_unknown_vote")
	}
}

func fallback(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func (s *socketVoter) queueResend(poll int) {
	s.resend = append(s.resend, poll)
	if s.timer == nil {
		s.timer = time.NewTimer(resendDelay)
	}
}

func (s *socketVoter) resendDue() {
	polls := s.resend
	s.resend = nil
	seen := make(map[int]bool, len(polls))
	for _, p := range polls {
		if seen[p] {
			continue
		}
		seen[p] = true
		a, ok := s.v.resend(p)
		if !ok {
			continue
		}
		s.w.rec.c.Resends.Add(1)
		s.send(a)
	}
}

// reconnect replaces a broken connection with a new one under the same session and
// resends every vote that had no answer. It reports whether the voter can go on.
func (s *socketVoter) reconnect(ctx context.Context) bool {
	s.disconnect()
	s.w.rec.fail("connection_lost")
	s.w.rec.c.Reconnects.Add(1)

	for id, sv := range s.sent {
		delete(s.sent, id)
		if s.v.lost(sv.poll) {
			s.resend = append(s.resend, sv.poll)
		}
	}
	if err := s.connect(ctx); err != nil || s.broken {
		return false
	}
	s.resendDue()
	return true
}
