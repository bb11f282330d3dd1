package transport

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/livevote/livevote/actors"
	"github.com/livevote/livevote/hub"
)

// SessionHeader carries the voter session token on HTTP votes.
const SessionHeader = "X-LiveVote-Session"

type createEventRequest struct {
	Title string `json:"title"`
}

type createEventResponse struct {
	Event          hub.Event `json:"event"`
	PresenterToken string    `json:"presenter_token"`
}

func (s *Server) createEvent(w http.ResponseWriter, r *http.Request) {
	var req createEventRequest
	if err := s.decodeBody(w, r, s.cfg.MaxBodyBytes, &req); err != nil {
		writeError(w, err)
		return
	}
	ev, token, err := s.hub.Registry().CreateEvent(r.Context(), req.Title)
	if err != nil {
		s.writeFailure(w, r, err)
		return
	}
	s.logger.Info("event created", "event", ev.ID, "code", ev.Code)
	writeJSON(w, http.StatusCreated, createEventResponse{Event: ev, PresenterToken: token})
}

func (s *Server) getEvent(w http.ResponseWriter, r *http.Request) {
	ev, err := s.hub.Registry().EventByCode(r.PathValue("code"))
	if err != nil {
		s.writeFailure(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ev)
}

func (s *Server) createPoll(w http.ResponseWriter, r *http.Request) {
	ev, err := s.hub.Registry().EventByCode(r.PathValue("code"))
	if err != nil {
		s.writeFailure(w, r, err)
		return
	}
	if err := s.hub.Registry().Authorize(ev.ID, bearerToken(r)); err != nil {
		s.writeFailure(w, r, err)
		return
	}
	var req hub.NewPoll
	if err := s.decodeBody(w, r, s.cfg.MaxBodyBytes, &req); err != nil {
		writeError(w, err)
		return
	}
	poll, err := s.hub.CreatePoll(r.Context(), ev.ID, req)
	if err != nil {
		s.writeFailure(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, poll)
}

func (s *Server) openPoll(w http.ResponseWriter, r *http.Request) {
	s.changePoll(w, r, s.hub.OpenPoll)
}

func (s *Server) closePoll(w http.ResponseWriter, r *http.Request) {
	s.changePoll(w, r, s.hub.ClosePoll)
}

func (s *Server) hideResults(w http.ResponseWriter, r *http.Request) {
	s.changePoll(w, r, func(ctx context.Context, pollID string) (hub.Poll, error) {
		return s.hub.ShowResults(ctx, pollID, false)
	})
}

func (s *Server) revealResults(w http.ResponseWriter, r *http.Request) {
	s.changePoll(w, r, func(ctx context.Context, pollID string) (hub.Poll, error) {
		return s.hub.ShowResults(ctx, pollID, true)
	})
}

func (s *Server) changePoll(w http.ResponseWriter, r *http.Request, change func(ctx context.Context, pollID string) (hub.Poll, error)) {
	poll, err := s.presenterPoll(r)
	if err != nil {
		s.writeFailure(w, r, err)
		return
	}
	if err := requireEmptyOrJSON(r); err != nil {
		writeError(w, err)
		return
	}
	poll, err = change(r.Context(), poll.ID)
	if err != nil {
		s.writeFailure(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, poll)
}

// presenterPoll finds the poll named in the path and checks the presenter token of its event.
func (s *Server) presenterPoll(r *http.Request) (hub.Poll, error) {
	poll, err := s.hub.Registry().Poll(r.PathValue("poll"))
	if err != nil {
		return hub.Poll{}, err
	}
	if err := s.hub.Registry().Authorize(poll.Event, bearerToken(r)); err != nil {
		return hub.Poll{}, err
	}
	return poll, nil
}

type sessionResponse struct {
	Session string `json:"session"`
}

func (s *Server) createSession(w http.ResponseWriter, r *http.Request) {
	if err := s.allowNewSession(r); err != nil {
		writeError(w, err)
		return
	}
	_, token := s.hub.Sessions().New()
	s.metrics.SessionIssued()
	writeJSON(w, http.StatusCreated, sessionResponse{Session: token})
}

// allowNewSession applies the per-IP limit on new voter sessions, so that clearing a
// session to vote again is slow.
func (s *Server) allowNewSession(r *http.Request) *hub.Error {
	ip := clientIP(r)
	ok, retry := s.sessions.Allow(ip, time.Now())
	if ok {
		return nil
	}
	e := hub.Errorf(hub.CodeRateLimited, "too many new sessions from %s: at most %d at once and %g per second; retry in %s", ip, s.cfg.SessionBurst, s.cfg.SessionRate, retry.Round(time.Millisecond))
	e.RetryAfter = retry
	return e
}

type voteBody struct {
	VoteID  string   `json:"vote_id"`
	Options []string `json:"options"`
}

func (s *Server) castVote(w http.ResponseWriter, r *http.Request) {
	sessionID, err := s.hub.Sessions().Verify(r.Header.Get(SessionHeader))
	if err != nil {
		writeError(w, hub.Errorf(hub.CodeInvalidSession, "header %s is missing or invalid: create a session with POST /api/sessions", SessionHeader))
		return
	}
	var body voteBody
	if err := s.decodeBody(w, r, s.cfg.MaxMessageBytes, &body); err != nil {
		writeError(w, err)
		return
	}
	if herr := checkVoteShape(body.VoteID, body.Options); herr != nil {
		writeError(w, herr)
		return
	}
	result, err := s.hub.Vote(r.Context(), sessionID, hub.VoteRequest{VoteID: body.VoteID, Poll: r.PathValue("poll"), Options: body.Options})
	if err != nil {
		s.writeFailure(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, result)
}

// getResults sends a poll's results document. While the presenter hides the results,
// only a request with the presenter token gets them, and no cache may keep them.
func (s *Server) getResults(w http.ResponseWriter, r *http.Request) {
	poll, err := s.hub.Registry().Poll(r.PathValue("poll"))
	if err != nil {
		s.writeFailure(w, r, err)
		return
	}
	cacheControl := "no-cache"
	if !poll.ResultsVisible {
		if s.hub.Registry().Authorize(poll.Event, bearerToken(r)) != nil {
			writeError(w, hub.Errorf(hub.CodeUnauthorized, "the presenter has hidden the results of poll %s: they are sent only with the presenter token in Authorization: Bearer <token>", poll.ID))
			return
		}
		cacheControl = "private, no-store"
	}
	doc, err := s.hub.Results(poll.ID)
	if err != nil {
		s.writeFailure(w, r, err)
		return
	}
	etag := resultsETag(doc)
	w.Header().Set("ETag", etag)
	w.Header().Set("Cache-Control", cacheControl)
	w.Header().Set("Vary", "Authorization")
	if etagMatches(r.Header.Get("If-None-Match"), etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	writeJSON(w, http.StatusOK, doc)
}

// resultsETag is strong and changes with every new document: versions only grow, and a
// final document differs from the last running one.
func resultsETag(doc actors.Results) string {
	tag := `"` + doc.Poll + "-v" + strconv.FormatUint(doc.Version, 10)
	if doc.Final {
		tag += "-final"
	}
	return tag + `"`
}

func etagMatches(header, etag string) bool {
	for candidate := range strings.SplitSeq(header, ",") {
		candidate = strings.TrimSpace(candidate)
		if candidate == "*" || strings.TrimPrefix(candidate, "W/") == etag {
			return true
		}
	}
	return false
}

func (s *Server) getResultsCSV(w http.ResponseWriter, r *http.Request) {
	poll, err := s.presenterPoll(r)
	if err != nil {
		s.writeFailure(w, r, err)
		return
	}
	doc, err := s.hub.Results(poll.ID)
	if err != nil {
		s.writeFailure(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="poll-`+poll.ID+`.csv"`)
	out := csv.NewWriter(w)
	_ = out.Write([]string{"option_id", "label", "votes", "share"})
	for _, o := range poll.Options {
		n := doc.Counts[o.ID]
		share := 0.0
		if doc.TotalVotes > 0 {
			share = float64(n) / float64(doc.TotalVotes)
		}
		_ = out.Write([]string{o.ID, csvSafe(o.Label), strconv.FormatInt(n, 10), strconv.FormatFloat(share, 'f', 4, 64)})
	}
	_ = out.Write([]string{"", "voters", strconv.FormatInt(doc.Voters, 10), ""})
	out.Flush()
	if err := out.Error(); err != nil {
		s.logger.Warn("write csv failed", "poll", poll.ID, "error", err)
	}
}

// csvSafe keeps a spreadsheet from reading a label as a formula.
func csvSafe(label string) string {
	if label != "" && strings.ContainsRune("=+-@\t\r", rune(label[0])) {
		return "'" + label
	}
	return label
}

// unknownRoute returns the handler for API requests that no route of api
// matches. A path that has a route for another method gets 405 with an
// Allow header; any other path gets 400. Both carry invalid_message.
func unknownRoute(api *http.ServeMux) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var allowed []string
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			if method == r.Method {
				continue
			}
			probe := r.Clone(r.Context())
			probe.Method = method
			if _, pattern := api.Handler(probe); pattern != "/api/" {
				allowed = append(allowed, method)
			}
		}

		if len(allowed) == 0 {
			writeError(w, hub.Errorf(hub.CodeInvalidMessage, "no API endpoint %s %s: see docs/protocol.md for the routes", r.Method, r.URL.Path))
			return
		}
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		e := hub.Errorf(hub.CodeInvalidMessage, "%s is not allowed on %s: use %s", r.Method, r.URL.Path, strings.Join(allowed, " or "))
		writeJSON(w, http.StatusMethodNotAllowed, errorBody{Error: e})
	}
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.Ready() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "recovering"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// writeFailure writes a hub error with its wire code, or logs an unexpected error and
// answers overloaded so the client retries.
func (s *Server) writeFailure(w http.ResponseWriter, r *http.Request, err error) {
	if e := hub.AsError(err); e != nil {
		writeError(w, e)
		return
	}
	s.logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	e := hub.Errorf(hub.CodeOverloaded, "the server could not complete the request; retry shortly")
	e.RetryAfter = time.Second
	writeError(w, e)
}

type errorBody struct {
	Error *hub.Error `json:"error"`
}

func writeError(w http.ResponseWriter, e *hub.Error) {
	if e.RetryAfter > 0 {
		secs := int((e.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
	}
	writeJSON(w, e.Code.HTTPStatus(), errorBody{Error: e})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func bearerToken(r *http.Request) string {
	auth := r.Header.Get("Authorization")
	const prefix = "Bearer "
	if len(auth) > len(prefix) && strings.EqualFold(auth[:len(prefix)], prefix) {
		return strings.TrimSpace(auth[len(prefix):])
	}
	return ""
}

// clientIP is the peer address of the connection. Forwarded headers are not trusted.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
