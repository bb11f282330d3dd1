// Command livevote serves live polls: audience phones vote over WebSocket or HTTP, shard
// actors store each vote in NATS JetStream before acknowledging it, and merged results
// go out to every socket at a fixed interval.
//
// Run it with the embedded NATS server and a demo poll:
//
//	go run . -demo
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/livevote/livevote/actors"
	"github.com/livevote/livevote/hub"
	"github.com/livevote/livevote/persistence"
	"github.com/livevote/livevote/static"
	"github.com/livevote/livevote/transport"
)

func main() {
	cfg, err := parseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "livevote:", err)
		os.Exit(2)
	}
	logger := newLogger(cfg, os.Stderr)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, logger, os.Stdout); err != nil {
		logger.Error("livevote stopped with an error", "error", err)
		os.Exit(1)
	}
}

func newLogger(cfg config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// app is a running LiveVote node: store, shard actors, hub and HTTP server.
type app struct {
	store  *persistence.Store
	shards *actors.System
	hub    *hub.Hub
	server *transport.Server
	ln     net.Listener

	stopWatch context.CancelFunc // ends the catalog watch of cluster mode
	watchDone chan struct{}
}

// endWatch stops the catalog watch, if one runs, and waits for it.
func (a *app) endWatch() {
	if a.stopWatch != nil {
		a.stopWatch()
		<-a.watchDone
		a.stopWatch = nil
	}
}

// run starts LiveVote, serves until ctx ends, then shuts down gracefully. stdout gets
// the demo links.
func run(ctx context.Context, cfg config, logger *slog.Logger, stdout io.Writer) error {
	started := time.Now()
	a, err := start(ctx, cfg, logger)
	if err != nil {
		return err
	}
	syncMode := string(cfg.Sync)
	if cfg.NatsURL != "" {
		syncMode = "set by the NATS server"
	}
	logger.Info("livevote listening", "addr", a.ln.Addr().String(), "shards", cfg.Shards, "sync", syncMode, "broadcast_interval", cfg.BroadcastInterval)

	serveErr := make(chan error, 1)
	go func() { serveErr <- a.server.Serve(a.ln) }()

	// The demo links are printed once recovery is done, below the recovery log lines.
	readyCtx, cancelReady := context.WithCancel(ctx)
	var readiness sync.WaitGroup
	readiness.Go(func() {
		if err := a.shards.WaitReady(readyCtx); err != nil {
			return
		}
		if cfg.ClusterName != "" {
			logger.Info("livevote ready: joined the cluster", "cluster", cfg.ClusterName, "took", time.Since(started).Round(time.Millisecond))
		} else {
			logger.Info("livevote ready: every shard recovered", "took", time.Since(started).Round(time.Millisecond))
		}
		if cfg.Demo {
			if err := createDemo(readyCtx, a, stdout); err != nil {
				logger.Error("demo setup failed", "error", err)
			}
		}
	})

	select {
	case <-ctx.Done():
		logger.Info("livevote stopping: signal received")
	case err = <-serveErr:
		logger.Error("http server failed", "error", err)
	case <-a.shards.Dropped():
		err = errors.New("another hub dropped this hub from the cluster after it missed its heartbeats; start it again to rejoin")
		logger.Error("livevote stopping", "error", err)
	}
	cancelReady()
	readiness.Wait()
	if stopErr := a.stop(cfg.ShutdownTimeout, logger); stopErr != nil {
		err = errors.Join(err, stopErr)
	}
	return err
}

// start opens the store, recovers the ring and secrets, and starts the actors, the hub
// and the listener. It closes what it opened when a later step fails.
func start(ctx context.Context, cfg config, logger *slog.Logger) (_ *app, err error) {
	a := &app{}
	defer func() {
		if err != nil {
			a.closeOnError(logger)
		}
	}()

	a.store, err = persistence.Open(ctx, persistence.Config{DataDir: cfg.Data, NatsURL: cfg.NatsURL, Sync: cfg.Sync,
		Replicas: cfg.NatsReplicas, Logger: logger})
	if err != nil {
		return nil, err
	}
	ring, err := a.store.LoadOrCreateRing(ctx, cfg.Shards)
	if err != nil {
		return nil, err
	}
	hashRing, err := hub.NewRing(ring.Salt, ring.Shards)
	if err != nil {
		return nil, err
	}
	sessionKey, err := a.store.LoadOrCreateSecret(ctx, "session-key", 32)
	if err != nil {
		return nil, err
	}
	sessions, err := hub.NewSessions(sessionKey)
	if err != nil {
		return nil, err
	}
	registry := hub.NewRegistry(a.store, logger)
	if err := registry.Load(ctx); err != nil {
		return nil, err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// The aggregator publishes through the hub, which needs the actor system first.
	var publishTo atomic.Pointer[hub.Hub]
	var clusterCfg *actors.ClusterConfig
	if cfg.ClusterName != "" {
		clusterCfg = &actors.ClusterConfig{Name: cfg.ClusterName, Addr: cfg.ClusterAddr, Advertise: cfg.ClusterAdvertise}
	}
	a.shards, err = actors.Start(ctx, actors.Config{
		Cluster:           clusterCfg,
		Shards:            ring.Shards,
		Store:             a.store,
		Logger:            logger,
		BroadcastInterval: cfg.BroadcastInterval,
		Registerer:        reg,
		Publish: func(doc actors.Results) {
			if h := publishTo.Load(); h != nil {
				h.Publish(doc)
			}
		},
	})
	if err != nil {
		return nil, err
	}

	metrics := hub.NewMetrics(reg)
	a.hub, err = hub.New(hub.Config{Registry: registry, Sessions: sessions, Ring: hashRing, Shards: a.shards, Metrics: metrics, Logger: logger, VoteRate: cfg.VoteRate, VoteBurst: cfg.VoteBurst})
	if err != nil {
		return nil, err
	}
	publishTo.Store(a.hub)
	if cfg.ClusterName != "" {
		// Events and polls that other hubs create or change reach this hub's
		// registry and sockets through the catalog watch.
		watchCtx, cancel := context.WithCancel(context.Background())
		a.stopWatch = cancel
		a.watchDone = make(chan struct{})
		go func() {
			defer close(a.watchDone)
			if err := a.store.WatchCatalog(watchCtx, a.hub.ApplyCatalogChange); err != nil && watchCtx.Err() == nil {
				logger.Error("catalog watch ended; changes made on other hubs no longer arrive", "error", err)
			}
		}()
	}

	a.server, err = transport.New(transport.Config{
		Hub:            a.hub,
		Static:         static.Files,
		Ready:          a.shards.Ready,
		Gatherer:       reg,
		Metrics:        metrics,
		Logger:         logger,
		OriginPatterns: cfg.AllowedOrigins,
		OperatorKey:    cfg.OperatorKey,
		SessionRate:    cfg.SessionRate,
		SessionBurst:   cfg.SessionBurst,
		PingInterval:   cfg.PingInterval,
	})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on -addr %s: %w", cfg.Addr, err)
	}
	a.ln = transport.LimitListener(ln, cfg.MaxConnsPerIP, logger)
	return a, nil
}

// stop shuts down in dependency order: no new votes, sockets send the acks of the votes
// they hold and close with 1001, shards finish their appends and save snapshots, and
// the store closes.
func (a *app) stop(timeout time.Duration, logger *slog.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	a.hub.Drain()
	var errs []error
	if err := a.server.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("http shutdown: %w", err))
	}
	a.endWatch()
	if err := a.shards.Stop(ctx); err != nil {
		errs = append(errs, fmt.Errorf("stop shards: %w", err))
	}
	if err := a.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close store: %w", err))
	}
	err := errors.Join(errs...)
	if err != nil {
		logger.Error("shutdown incomplete", "error", err)
	} else {
		logger.Info("livevote stopped")
	}
	return err
}

func (a *app) closeOnError(logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if a.ln != nil {
		a.ln.Close()
	}
	a.endWatch()
	if a.shards != nil {
		if err := a.shards.Stop(ctx); err != nil {
			logger.Error("stop shards after a failed start", "error", err)
		}
	}
	if a.store != nil {
		if err := a.store.Close(); err != nil {
			logger.Error("close store after a failed start", "error", err)
		}
	}
}

// baseURL is the address people type to reach this node. A wildcard listen address is
// shown as localhost.
func baseURL(ln net.Listener) string {
	host, port, err := net.SplitHostPort(ln.Addr().String())
	if err != nil {
		return "http://" + ln.Addr().String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port)
}
