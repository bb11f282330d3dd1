package transport

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/livevote/livevote/actors"
	"github.com/livevote/livevote/hub"
)

// conn is one WebSocket client. Its reader goroutine decodes votes and hands each to a
// vote goroutine (at most VotesInFlight at once); one writer goroutine drains the
// bounded send queue. The reader owns the others and waits for them before returning.
type conn struct {
	srv     *Server
	ws      *websocket.Conn
	event   string
	session string
	role    hub.Role

	send      chan []byte   // broadcasts and the welcome; a full queue closes the socket with 1013
	replies   chan []byte   // acks and errors for the client's own messages; a full queue makes their senders wait
	closed    chan struct{} // closed once by shut
	closeOnce sync.Once
	status    websocket.StatusCode
	reason    string

	votes     sync.WaitGroup // vote goroutines
	inFlight  chan struct{}  // semaphore of VotesInFlight
	goingAway atomic.Bool    // set by goAway: new votes get overloaded
}

type welcomeMessage struct {
	Type     string           `json:"type"`
	Session  string           `json:"session"`
	Role     string           `json:"role"`
	Event    hub.Event        `json:"event"`
	Results  []actors.Results `json:"results"`
	Audience *int             `json:"audience,omitempty"` // presenters only
}

// presenceMessage tells presenter sockets how many audience sockets the event has.
type presenceMessage struct {
	Type     string `json:"type"`
	Audience int    `json:"audience"`
}

type ackMessage struct {
	Type    string          `json:"type"`
	VoteID  string          `json:"vote_id"`
	Status  string          `json:"status"`
	Receipt *actors.Receipt `json:"receipt,omitempty"`
	Error   *hub.Error      `json:"error,omitempty"`
}

type errorMessage struct {
	Type  string     `json:"type"`
	Error *hub.Error `json:"error"`
}

// serveWebSocket upgrades GET /ws?event=CODE[&session=TOKEN][&role=presenter]. Errors
// found before the upgrade are answered as JSON with their HTTP status. A presenter
// socket proves its token in its first message (see authenticate), so the token never
// appears in a URL.
func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	ev, err := s.hub.Registry().EventByCode(r.URL.Query().Get("event"))
	if err != nil {
		s.writeFailure(w, r, err)
		return
	}
	role, roleErr := parseRole(r.URL.Query().Get("role"))
	if roleErr != nil {
		writeError(w, roleErr)
		return
	}
	session, sessionErr := s.wsSession(r)
	if sessionErr != nil && sessionErr.Code == hub.CodeRateLimited {
		writeError(w, sessionErr)
		return
	}

	// The HTTP server's read and write deadlines would otherwise stay on the hijacked
	// connection and cut a long-lived socket.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})

	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols:    []string{Subprotocol},
		OriginPatterns:  s.cfg.OriginPatterns,
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		// Accept has already written the HTTP error (403 for a foreign origin).
		s.logger.Info("websocket handshake refused", "remote", clientIP(r), "origin", r.Header.Get("Origin"), "error", err)
		return
	}
	if ws.Subprotocol() != Subprotocol {
		ws.Close(websocket.StatusPolicyViolation, "subprotocol "+Subprotocol+" is required")
		return
	}
	ws.SetReadLimit(s.cfg.MaxMessageBytes)

	c := &conn{
		srv:      s,
		ws:       ws,
		event:    ev.ID,
		session:  session.id,
		role:     role,
		send:     make(chan []byte, s.cfg.SendQueue),
		replies:  make(chan []byte, s.cfg.SendQueue),
		closed:   make(chan struct{}),
		inFlight: make(chan struct{}, s.cfg.VotesInFlight),
	}
	if !s.track(c) {
		ws.Close(websocket.StatusGoingAway, "server shutting down")
		return
	}
	defer s.untrack(c)
	s.metrics.SocketOpened()
	defer s.metrics.SocketClosed()

	c.run(r.Context(), ev, session, sessionErr)
}

type wsSessionInfo struct {
	id    string
	token string
}

// wsSession keeps the session the client sent back, or issues a new one (rate-limited
// per IP). A token that does not verify is reported to the client, which then gets a
// new session.
func (s *Server) wsSession(r *http.Request) (wsSessionInfo, *hub.Error) {
	var refused *hub.Error
	if token := r.URL.Query().Get("session"); token != "" {
		id, err := s.hub.Sessions().Verify(token)
		if err == nil {
			return wsSessionInfo{id: id, token: token}, nil
		}
		refused = hub.Errorf(hub.CodeInvalidSession, "the session sent with this connection is invalid; a new session was issued")
	}
	if err := s.allowNewSession(r); err != nil {
		return wsSessionInfo{}, err
	}
	id, token := s.hub.Sessions().New()
	s.metrics.SessionIssued()
	return wsSessionInfo{id: id, token: token}, refused
}

func (c *conn) run(ctx context.Context, ev hub.Event, session wsSessionInfo, sessionErr *hub.Error) {
	var writer sync.WaitGroup
	writer.Go(func() { c.writeLoop(ctx) })

	if sessionErr != nil {
		c.enqueueJSON(errorMessage{Type: "error", Error: sessionErr})
	}
	if c.role == hub.RolePresenter && !c.authenticate(ctx, ev.ID) {
		writer.Wait()
		return
	}
	unsubscribe := c.welcome(ev, session)
	defer unsubscribe()

	c.readLoop(ctx)

	// Send the ack of every vote already taken before the socket closes.
	c.votes.Wait()
	c.shut(websocket.StatusNormalClosure, "")
	writer.Wait()
}

// welcome sends the welcome message and subscribes the socket to the event. A
// document published between reading the results for the welcome and subscribing
// would be missed, so the results are read again after subscribing and any newer
// document is sent as a results message.
func (c *conn) welcome(ev hub.Event, session wsSessionInfo) (unsubscribe func()) {
	msg := welcomeMessage{Type: "welcome", Session: session.token, Role: c.role.String(), Event: ev, Results: c.srv.hub.EventResults(ev, c.role)}
	if c.role == hub.RolePresenter {
		audience := c.srv.hub.Presence(c.event).Audience
		msg.Audience = &audience
	}
	c.enqueueJSON(msg)
	unsubscribe = c.srv.hub.Subscribe(c.event, c, c.role)

	sent := make(map[string]uint64, len(msg.Results))
	for _, doc := range msg.Results {
		sent[doc.Poll] = doc.Version
	}
	for _, doc := range c.srv.hub.EventResults(ev, c.role) {
		if version, ok := sent[doc.Poll]; ok && doc.Version == version {
			continue
		}
		if frame, err := hub.EncodeResultsFrame(doc); err == nil {
			c.Enqueue(frame)
		}
	}
	return unsubscribe
}

// readLoop reads client messages until the peer goes, the socket is shut or an error
// occurs. Cancelling a read would close the socket, so the loop ends only through the
// connection itself.
func (c *conn) readLoop(ctx context.Context) {
	for {
		typ, data, err := c.ws.Read(ctx)
		if err != nil {
			c.readFailed(err)
			return
		}
		if typ != websocket.MessageText {
			c.reply(errorMessage{Type: "error", Error: hub.Errorf(hub.CodeInvalidMessage, "binary messages are not supported: send JSON text")})
			continue
		}
		msg, derr := decodeClientMessage(data)
		if derr != nil {
			c.reply(errorMessage{Type: "error", Error: derr})
			continue
		}
		select {
		case c.inFlight <- struct{}{}:
		case <-c.closed:
			return
		}
		if c.goingAway.Load() {
			<-c.inFlight
			c.reply(ackMessage{Type: "ack", VoteID: msg.VoteID, Status: "rejected", Error: shuttingDown()})
			continue
		}
		c.votes.Go(func() {
			defer func() { <-c.inFlight }()
			c.castVote(ctx, msg)
		})
	}
}

func shuttingDown() *hub.Error {
	e := hub.Errorf(hub.CodeOverloaded, "the server is shutting down; retry with the same vote_id")
	e.RetryAfter = time.Second
	return e
}

func (c *conn) readFailed(err error) {
	var closeErr websocket.CloseError
	switch {
	case errors.As(err, &closeErr):
		// The peer closed; the library has answered its close frame.
	case websocket.CloseStatus(err) == websocket.StatusMessageTooBig:
		c.srv.logger.Info("websocket message over the read limit", "event", c.event, "limit", c.srv.cfg.MaxMessageBytes)
	case errors.Is(err, context.Canceled):
	default:
		c.srv.logger.Debug("websocket read ended", "event", c.event, "error", err)
	}
}

func (c *conn) castVote(ctx context.Context, msg clientMessage) {
	result, err := c.srv.hub.Vote(ctx, c.session, hub.VoteRequest{VoteID: msg.VoteID, Poll: msg.Poll, Options: msg.Options})
	ack := ackMessage{Type: "ack", VoteID: msg.VoteID, Status: result.Status, Receipt: result.Receipt}
	if err != nil {
		e := hub.AsError(err)
		if e == nil {
			c.srv.logger.Error("vote failed", "event", c.event, "poll", msg.Poll, "vote_id", msg.VoteID, "error", err)
			e = hub.Errorf(hub.CodeOverloaded, "the vote could not be stored yet; retry with the same vote_id")
		}
		ack.Status = "rejected"
		ack.Error = e
	}
	c.reply(ack)
}

// reply queues the reply to one of the client's own messages. Unlike Enqueue it waits
// while the reply queue is full, and the socket is not read meanwhile. The client
// caused the replies, so a burst gets back-pressure rather than a 1013.
func (c *conn) reply(v any) {
	frame, err := json.Marshal(v)
	if err != nil {
		c.srv.logger.Error("encode websocket message failed", "event", c.event, "error", err)
		return
	}
	select {
	case c.replies <- frame:
	case <-c.closed:
	}
}

// Enqueue queues a frame without blocking. A full queue means the client cannot keep up:
// the socket is closed with 1013 so that it does not slow the others.
func (c *conn) Enqueue(frame []byte) bool {
	select {
	case <-c.closed:
		return false
	default:
	}
	select {
	case c.send <- frame:
		return true
	default:
		c.srv.logger.Info("slow websocket closed", "event", c.event, "queue", cap(c.send))
		c.shut(websocket.StatusTryAgainLater, "too slow: send queue full")
		return false
	}
}

func (c *conn) enqueueJSON(v any) {
	frame, err := json.Marshal(v)
	if err != nil {
		c.srv.logger.Error("encode websocket message failed", "event", c.event, "error", err)
		return
	}
	c.Enqueue(frame)
}

// shut records the close status and wakes the writer, which sends the close frame.
func (c *conn) shut(status websocket.StatusCode, reason string) {
	c.closeOnce.Do(func() {
		c.status = status
		c.reason = reason
		if status == websocket.StatusTryAgainLater {
			c.srv.metrics.SlowConsumer()
		}
		close(c.closed)
	})
}

// goAway stops taking votes, waits until the votes in flight are answered (or ctx
// ends), and closes the socket with 1001 (going away) once the acks are written.
func (c *conn) goAway(ctx context.Context) {
	c.goingAway.Store(true)
	for range cap(c.inFlight) {
		select {
		case c.inFlight <- struct{}{}:
		case <-c.closed:
			return
		case <-ctx.Done():
			c.shut(websocket.StatusGoingAway, "server shutting down")
			return
		}
	}
	c.shut(websocket.StatusGoingAway, "server shutting down")
}

// writeLoop writes queued frames, pings the peer, and closes the socket when shut.
func (c *conn) writeLoop(ctx context.Context) {
	ping := time.NewTicker(c.srv.cfg.PingInterval)
	defer ping.Stop()

	// Presenter sockets learn the audience count once per PresenceInterval when it
	// changed; audience sockets never tick.
	var presence <-chan time.Time
	lastAudience := -1
	if c.role == hub.RolePresenter {
		ticker := time.NewTicker(c.srv.cfg.PresenceInterval)
		defer ticker.Stop()
		presence = ticker.C
		lastAudience = c.srv.hub.Presence(c.event).Audience
	}

	for {
		// The welcome and broadcasts go before replies that are also waiting, so the
		// welcome is always the first message.
		select {
		case frame := <-c.send:
			if err := c.write(ctx, frame); err != nil {
				c.writeFailed(err)
				return
			}
			continue
		default:
		}

		select {
		case <-presence:
			audience := c.srv.hub.Presence(c.event).Audience
			if audience == lastAudience {
				continue
			}
			lastAudience = audience
			frame, _ := json.Marshal(presenceMessage{Type: "presence", Audience: audience})
			if err := c.write(ctx, frame); err != nil {
				c.srv.logger.Info("websocket write failed", "event", c.event, "error", err)
				c.shut(websocket.StatusTryAgainLater, "write timed out")
				c.ws.CloseNow()
				return
			}
		case frame := <-c.send:
			if err := c.write(ctx, frame); err != nil {
				c.writeFailed(err)
				return
			}
		case frame := <-c.replies:
			if err := c.write(ctx, frame); err != nil {
				c.writeFailed(err)
				return
			}
		case <-ping.C:
			if err := c.ping(ctx); err != nil {
				c.srv.logger.Info("websocket peer did not respond to ping", "event", c.event, "error", err)
				c.ws.CloseNow()
				c.shut(websocket.StatusGoingAway, "")
				return
			}
		case <-c.closed:
			c.flush(ctx)
			c.ws.Close(c.status, c.reason)
			return
		}
	}
}

// writeFailed drops a socket whose write failed or timed out. A close frame could not
// get through a full connection, so the connection is closed without one.
func (c *conn) writeFailed(err error) {
	c.srv.logger.Info("websocket write failed", "event", c.event, "error", err)
	c.shut(websocket.StatusTryAgainLater, "write timed out")
	c.ws.CloseNow()
}

func (c *conn) write(ctx context.Context, frame []byte) error {
	ctx, cancel := context.WithTimeout(ctx, c.srv.cfg.WriteTimeout)
	defer cancel()
	return c.ws.Write(ctx, websocket.MessageText, frame)
}

func (c *conn) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.srv.cfg.PingInterval)
	defer cancel()
	return c.ws.Ping(ctx)
}

// flush writes what is still queued, unless the socket was closed for being slow.
func (c *conn) flush(ctx context.Context) {
	if c.status == websocket.StatusTryAgainLater {
		return
	}
	for {
		var frame []byte
		select {
		case frame = <-c.send:
		case frame = <-c.replies:
		default:
			return
		}
		if err := c.write(ctx, frame); err != nil {
			return
		}
	}
}
