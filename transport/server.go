package transport

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/livevote/livevote/hub"
)

// Default limits of a Server; a zero Config field takes these.
const (
	// DefaultMaxMessageBytes is the largest WebSocket message or vote body read, in bytes.
	// A larger WebSocket message closes the socket with 1009, a larger body gets 413.
	DefaultMaxMessageBytes = 4 << 10
	// DefaultMaxBodyBytes is the largest body of the other API requests, in bytes.
	DefaultMaxBodyBytes = 16 << 10
	// DefaultSendQueue is how many frames may wait for a slow socket before it is closed
	// with 1013.
	DefaultSendQueue = 64
	// DefaultWriteTimeout bounds one WebSocket write.
	DefaultWriteTimeout = 10 * time.Second
	// DefaultPingInterval is how often an idle socket is pinged. A peer that does not
	// respond within the next interval is dropped.
	DefaultPingInterval = 30 * time.Second
	// DefaultVotesInFlight is how many votes of one socket may wait for their acks at once.
	// The socket is not read while that many are pending.
	DefaultVotesInFlight = 32
	// DefaultSessionRate and DefaultSessionBurst limit new voter sessions per client IP.
	// A whole hall often shares one address behind the venue's NAT, so the burst is
	// sized for a room arriving at once.
	DefaultSessionRate  = 20.0
	DefaultSessionBurst = 500
	// DefaultAuthTimeout bounds the wait for the auth message of a presenter socket.
	DefaultAuthTimeout = 10 * time.Second
	// DefaultPresenceInterval is how often presenter sockets are told the audience
	// count, when it changed.
	DefaultPresenceInterval = time.Second
)

// Subprotocol is the WebSocket subprotocol of the wire contract, version 1.
const Subprotocol = "livevote.v1"

// Config holds a Server's settings. Hub and Static are required.
type Config struct {
	Hub      *hub.Hub
	Static   fs.FS // the embedded pages
	Ready    func() bool
	Gatherer prometheus.Gatherer // served at /metrics; nil serves the default registry
	Metrics  *hub.Metrics
	Logger   *slog.Logger

	// OriginPatterns lists extra host patterns (path.Match syntax, e.g. "*.example.com")
	// allowed to open WebSockets and send votes cross-site. Same-host requests are
	// always allowed.
	OriginPatterns []string

	// OperatorKey guards the operator dashboard's data (GET /api/dashboard), which
	// then requires "Authorization: Bearer <key>". Empty leaves it open.
	OperatorKey string

	MaxMessageBytes  int64         // zero = DefaultMaxMessageBytes
	MaxBodyBytes     int64         // zero = DefaultMaxBodyBytes
	SendQueue        int           // zero = DefaultSendQueue
	WriteTimeout     time.Duration // zero = DefaultWriteTimeout
	PingInterval     time.Duration // zero = DefaultPingInterval
	VotesInFlight    int           // zero = DefaultVotesInFlight
	SessionRate      float64       // new sessions per second per IP; zero = DefaultSessionRate
	SessionBurst     int           // zero = DefaultSessionBurst
	AuthTimeout      time.Duration // zero = DefaultAuthTimeout
	PresenceInterval time.Duration // zero = DefaultPresenceInterval
}

// Server serves the HTTP API, the WebSocket endpoint and the pages.
type Server struct {
	cfg      Config
	hub      *hub.Hub
	logger   *slog.Logger
	metrics  *hub.Metrics
	sessions *hub.RateLimiter
	sampler  *statsSampler
	handler  http.Handler
	http     *http.Server

	// mu guards conns, closing and unused.
	mu      sync.Mutex
	conns   map[*conn]struct{}
	closing bool
	wg      sync.WaitGroup // one per open socket
	// unused holds the TCP connections that have not sent a request yet. Shutdown
	// closes them at once: http.Server.Shutdown would wait 5 s for each.
	unused map[net.Conn]struct{}
}

// New builds a Server from cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Hub == nil || cfg.Static == nil {
		return nil, errors.New("transport: Hub and Static are required")
	}
	setDefaults(&cfg)
	s := &Server{
		cfg:      cfg,
		hub:      cfg.Hub,
		logger:   cfg.Logger,
		metrics:  cfg.Metrics,
		sessions: hub.NewRateLimiter(cfg.SessionRate, cfg.SessionBurst, 100_000),
		conns:    make(map[*conn]struct{}),
		unused:   make(map[net.Conn]struct{}),
	}
	s.sampler = newStatsSampler(cfg.Hub, cfg.Metrics, time.Now)
	s.handler = s.routes()
	s.http = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
		ConnState:         s.trackUnused,
	}
	return s, nil
}

func setDefaults(cfg *Config) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Ready == nil {
		cfg.Ready = func() bool { return true }
	}
	if cfg.Gatherer == nil {
		cfg.Gatherer = prometheus.DefaultGatherer
	}
	if cfg.MaxMessageBytes == 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.SendQueue == 0 {
		cfg.SendQueue = DefaultSendQueue
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.PingInterval == 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.VotesInFlight == 0 {
		cfg.VotesInFlight = DefaultVotesInFlight
	}
	if cfg.SessionRate == 0 {
		cfg.SessionRate = DefaultSessionRate
	}
	if cfg.SessionBurst == 0 {
		cfg.SessionBurst = DefaultSessionBurst
	}
	if cfg.AuthTimeout == 0 {
		cfg.AuthTimeout = DefaultAuthTimeout
	}
	if cfg.PresenceInterval == 0 {
		cfg.PresenceInterval = DefaultPresenceInterval
	}
}

// Handler returns the server's root handler, for tests with httptest.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes() http.Handler {
	api := http.NewServeMux()
	api.HandleFunc("POST /api/events", s.createEvent)
	api.HandleFunc("GET /api/events/{code}", s.getEvent)
	api.HandleFunc("POST /api/events/{code}/polls", s.createPoll)
	api.HandleFunc("POST /api/polls/{poll}/open", s.openPoll)
	api.HandleFunc("POST /api/polls/{poll}/close", s.closePoll)
	api.HandleFunc("POST /api/polls/{poll}/hide", s.hideResults)
	api.HandleFunc("POST /api/polls/{poll}/reveal", s.revealResults)
	api.HandleFunc("GET /api/events/{code}/qr.svg", s.getJoinQR)
	api.HandleFunc("GET /api/dashboard", s.getDashboard)
	api.HandleFunc("POST /api/sessions", s.createSession)
	api.HandleFunc("POST /api/polls/{poll}/votes", s.castVote)
	api.HandleFunc("GET /api/polls/{poll}/results", s.getResults)
	api.HandleFunc("GET /api/polls/{poll}/results.csv", s.getResultsCSV)
	api.HandleFunc("/api/", unknownRoute(api))

	// Cross-site form posts and fetches from other origins are refused before any API
	// handler runs; requests without browser headers (curl, load testers) pass.
	protection := http.NewCrossOriginProtection()
	for _, pattern := range s.cfg.OriginPatterns {
		for _, scheme := range []string{"http://", "https://"} {
			if err := protection.AddTrustedOrigin(scheme + pattern); err != nil {
				s.logger.Warn("origin pattern not usable for the HTTP API", "pattern", pattern, "error", err)
			}
		}
	}
	protection.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, hub.Errorf(hub.CodeUnauthorized, "cross-origin request from %q refused: serve the page from this host or add it to -allowed-origins", r.Header.Get("Origin")))
	}))

	mux := http.NewServeMux()
	mux.Handle("/api/", protection.Handler(api))
	mux.HandleFunc("GET /ws", s.serveWebSocket)
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{}))
	s.pageRoutes(mux)
	return mux
}

// Serve accepts connections on ln until Shutdown. It returns nil after a Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	err := s.http.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting connections, waits for HTTP requests in flight, lets every
// socket finish the votes it is waiting on and closes it with 1001 (going away).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	var (
		err     error
		closing sync.WaitGroup
	)
	closing.Go(func() { err = s.http.Shutdown(ctx) })
	for _, c := range conns {
		closing.Go(func() { c.goAway(ctx) })
	}
	s.closeUnused()
	closing.Wait()

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("transport: %d sockets still open at shutdown deadline: %w", s.openSockets(), ctx.Err())
	}
	return err
}

// trackUnused records connections that are open but have not sent a request.
func (s *Server) trackUnused(c net.Conn, state http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if state == http.StateNew {
		s.unused[c] = struct{}{}
	} else {
		delete(s.unused, c)
	}
}

// closeUnused closes the connections that never sent a request. A client that was
// about to use one sees the connection closed and retries, as after any shutdown.
func (s *Server) closeUnused() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.unused {
		_ = c.Close()
		delete(s.unused, c)
	}
}

func (s *Server) openSockets() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// track registers a socket; it returns false once the server is shutting down.
func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}
