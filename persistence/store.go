package persistence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// drainTimeout is the time limit for draining the connection in Close.
const drainTimeout = 10 * time.Second

// Store is LiveVote's handle on JetStream: the vote stream, the results and
// catalog buckets, the system bucket and the snapshot object store. Its
// methods are safe for concurrent use.
type Store struct {
	cfg Config
	log *slog.Logger

	nc        *nats.Conn
	connClose chan struct{} // closed by the connection's closed handler
	js        jetstream.JetStream

	votes     jetstream.Stream
	results   jetstream.KeyValue
	catalog   jetstream.KeyValue
	system    jetstream.KeyValue
	snapshots jetstream.ObjectStore

	commit *committer // nil until Open succeeds

	server *server.Server // nil in external mode
	dir    *dataDir       // nil in external mode

	closeOnce sync.Once
	closeErr  error
}

// Open connects to JetStream and creates or updates the stream, buckets and
// object store that LiveVote uses. With an empty cfg.NatsURL it first locks
// cfg.DataDir and starts the embedded server there. When ctx has no deadline,
// Open gives up after 30 s. The caller must Close the returned Store.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}

	_, ok := ctx.Deadline()
	if !ok {
		var cancel context.CancelFunc
		limit := startTimeout
		if cfg.NatsURL != "" {
			limit = externalStartTimeout
		}
		ctx, cancel = context.WithTimeout(ctx, limit)
		defer cancel()
	}

	s := &Store{cfg: cfg, log: cfg.Logger, connClose: make(chan struct{})}

	err = s.connect(ctx)
	if err == nil {
		err = s.setup(ctx)
	}
	if err != nil {
		cleanupErr := s.shutdown()
		if cleanupErr != nil {
			s.log.Error("release resources after failed open", "err", cleanupErr)
		}
		return nil, err
	}

	s.startCommitter()
	s.logStart()

	return s, nil
}

// connect starts the embedded server when configured and connects to NATS.
func (s *Store) connect(ctx context.Context) error {
	if s.cfg.NatsURL != "" {
		return s.connectExternal()
	}

	dir, err := openDataDir(s.cfg.DataDir)
	if err != nil {
		return err
	}
	s.dir = dir

	ns, err := startEmbedded(ctx, dir.path, s.cfg.Sync, s.log)
	if err != nil {
		return err
	}
	s.server = ns

	nc, err := nats.Connect("", s.connOptions(nats.InProcessServer(ns))...)
	if err != nil {
		return fmt.Errorf("connect to embedded NATS server in %q: %w", dir.path, err)
	}
	s.nc = nc

	return nil
}

// connOptions returns the connection options of both modes plus extra.
func (s *Store) connOptions(extra ...nats.Option) []nats.Option {
	opts := []nats.Option{
		nats.Name("livevote"),
		nats.DrainTimeout(drainTimeout),
		nats.ClosedHandler(func(*nats.Conn) { close(s.connClose) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			s.log.Error("NATS asynchronous error", "subject", subject, "err", err)
		}),
	}

	return append(opts, extra...)
}

// setup checks the server and creates or updates every JetStream resource.
func (s *Store) setup(ctx context.Context) error {
	js, err := jetstream.New(s.nc)
	if err != nil {
		return fmt.Errorf("create JetStream context: %w", err)
	}
	s.js = js

	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, setupAttemptTimeout)
		err = s.checkServer(actx)
		if err == nil {
			err = s.ensureResources(actx)
		}
		cancel()
		if err == nil || s.server != nil || !transientSetupError(err) {
			return err
		}

		// A NATS cluster that is still electing its meta leader, or that
		// gets the same streams created by several hubs at once, replies
		// late or not at all. The creates are idempotent, so try again.
		s.log.Warn("JetStream not ready; retrying", "attempt", attempt, "retry_in", setupRetryWait, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("JetStream on %s not ready after %d attempts: %w", s.nc.ConnectedUrlRedacted(), attempt, err)
		case <-time.After(setupRetryWait):
		}
	}
}

// Bounds of the setup retries against an external NATS server.
const (
	setupAttemptTimeout = 5 * time.Second
	setupRetryWait      = time.Second
)

// JetStream API error codes that a cluster which is still starting returns:
// a system that is temporarily unavailable, as while the servers elect
// their meta leader, and no peers for a replicated stream, as while the
// leader still counts a server offline that just joined.
const (
	errJetStreamUnavailable jetstream.ErrorCode = 10008
	errNoPeersForPlacement  jetstream.ErrorCode = 10005
)

// Transient reports whether a failed request to external NATS servers may
// succeed when sent again a moment later, as while a cluster that has just
// started elects its leaders: the errors that Open's setup retries.
func Transient(err error) bool {
	return transientSetupError(err)
}

// transientSetupError reports whether a failed setup may succeed when tried
// again: a request that timed out or found no responder, or one of the
// errors of a cluster that is still starting. A placement that can never
// succeed, such as a tag no server has, then fails after the start limit
// with JetStream's own error.
func transientSetupError(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == errJetStreamUnavailable || apiErr.ErrorCode == errNoPeersForPlacement
	}
	// KV watchers still subscribe through nats.go's older JetStream API,
	// whose errors have a type of their own.
	var legacyErr *nats.APIError
	if errors.As(err, &legacyErr) {
		code := jetstream.ErrorCode(legacyErr.ErrorCode)
		return code == errJetStreamUnavailable || code == errNoPeersForPlacement
	}

	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrDisconnected) || errors.Is(err, nats.ErrConnectionReconnecting)
}

// checkServer verifies that JetStream is enabled and that the server accepts
// messages of the largest vote batch.
func (s *Store) checkServer(ctx context.Context) error {
	_, err := s.js.AccountInfo(ctx)
	if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
		return fmt.Errorf("%w on NATS server %s: start nats-server with -js or a jetstream block, "+
			"and enable it for this account", ErrJetStreamDisabled, s.nc.ConnectedUrlRedacted())
	}
	if err != nil {
		return fmt.Errorf("read JetStream account info from %s: %w", s.nc.ConnectedUrlRedacted(), err)
	}

	maxPayload := s.nc.MaxPayload()
	if maxPayload < maxMessageBytes {
		return fmt.Errorf("%w: NATS server max_payload is %d bytes, below the %d bytes that a vote stream "+
			"message may need; raise max_payload to at least %d", ErrInvalidArgument, maxPayload, maxMessageBytes, maxMessageBytes)
	}

	return nil
}

// Close returns ErrClosed to every append that waits for the group commit,
// cancels the publish in flight, drains the connection, shuts down the embedded server, waits for it
// to stop and releases the data directory lock. Calls after the first return
// the first result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.shutdown()
		if s.closeErr != nil {
			s.log.Error("persistence stopped with errors", "mode", s.mode(), "err", s.closeErr)
			return
		}
		s.log.Info("persistence stopped", "mode", s.mode())
	})

	return s.closeErr
}

// shutdown releases whatever connect and setup acquired, in reverse order.
func (s *Store) shutdown() error {
	var errs []error

	s.stopCommitter()

	if s.nc != nil {
		errs = append(errs, s.drain())
	}

	if s.server != nil {
		s.server.Shutdown()
		s.server.WaitForShutdown()
	}

	if s.dir != nil {
		errs = append(errs, s.dir.close())
	}

	return errors.Join(errs...)
}

// drain drains the connection and waits for it to close.
func (s *Store) drain() error {
	err := s.nc.Drain()
	if errors.Is(err, nats.ErrConnectionClosed) {
		return nil
	}
	if err != nil {
		s.nc.Close()
		return fmt.Errorf("drain NATS connection: %w", err)
	}

	select {
	case <-s.connClose:
		return nil
	case <-time.After(drainTimeout + time.Second):
		s.nc.Close()
		return fmt.Errorf("drain NATS connection: not closed after %s", drainTimeout+time.Second)
	}
}

// Conn returns the NATS connection. It is closed by Close.
func (s *Store) Conn() *nats.Conn {
	return s.nc
}

// JetStream returns the JetStream context of the connection.
func (s *Store) JetStream() jetstream.JetStream {
	return s.js
}

// Embedded reports whether the Store runs its own nats-server.
func (s *Store) Embedded() bool {
	return s.server != nil
}

func (s *Store) mode() string {
	if s.cfg.NatsURL != "" {
		return "external"
	}

	return "embedded"
}

func (s *Store) logStart() {
	if s.Embedded() {
		s.log.Info("persistence started", "mode", "embedded", "data_dir", s.dir.path,
			"sync", string(s.cfg.Sync), "replicas", s.cfg.Replicas)
		return
	}

	s.log.Info("persistence started", "mode", "external", "nats_url", s.nc.ConnectedUrlRedacted(),
		"replicas", s.cfg.Replicas)
}
