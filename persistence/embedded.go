package persistence

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// startEmbedded starts a JetStream-enabled nats-server that stores its files
// under dataDir/jetstream and accepts only in-process connections. It waits for
// the server to become ready until ctx ends, or for 30 s when ctx has no
// deadline.
func startEmbedded(ctx context.Context, dataDir string, mode SyncMode, log *slog.Logger) (*server.Server, error) {
	opts := &server.Options{
		ServerName: "livevote",
		JetStream:  true,
		StoreDir:   dataDir, // nats-server keeps its files in a "jetstream" folder under it
		DontListen: true,
		NoSigs:     true,
		SyncAlways: mode == SyncAlways,
	}

	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("create embedded NATS server for %q: %w", dataDir, err)
	}

	logs := &serverLogger{log: log.With("component", "nats-server")}
	ns.SetLoggerV2(logs, false, false, false)
	ns.Start()

	fatal := logs.fatalMessage()
	if fatal != "" {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("start embedded NATS server in %q: %s; "+
			"make that path a writable directory or choose another data directory", opts.StoreDir, fatal)
	}

	wait := startTimeout
	deadline, ok := ctx.Deadline()
	if ok {
		wait = time.Until(deadline)
	}

	if !ns.ReadyForConnections(wait) || !ns.JetStreamEnabled() {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("embedded NATS server in %q was not ready with JetStream within %s; "+
			"check the server log records and free disk space", opts.StoreDir, wait.Round(time.Millisecond))
	}

	return ns, nil
}

// serverLogger routes nats-server log lines to slog. Notices go to debug,
// because the server reports every routine step at that level, and warnings,
// errors and fatal errors go to warn and error. A fatal error is also kept so
// that startEmbedded can return it: the server stops starting but does not
// exit the process when it has a custom logger.
type serverLogger struct {
	log *slog.Logger

	mu    sync.Mutex
	fatal string
}

func (l *serverLogger) Noticef(format string, v ...any) {
	l.write(slog.LevelDebug, format, v)
}

func (l *serverLogger) Warnf(format string, v ...any) {
	l.write(slog.LevelWarn, format, v)
}

func (l *serverLogger) Errorf(format string, v ...any) {
	l.write(slog.LevelError, format, v)
}

func (l *serverLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error(msg, "fatal", true)

	l.mu.Lock()
	if l.fatal == "" {
		l.fatal = msg
	}
	l.mu.Unlock()
}

func (l *serverLogger) Debugf(format string, v ...any) {
	l.write(slog.LevelDebug, format, v)
}

func (l *serverLogger) Tracef(format string, v ...any) {
	l.write(slog.LevelDebug, format, v)
}

// write formats and logs one line when level is enabled.
func (l *serverLogger) write(level slog.Level, format string, v []any) {
	ctx := context.Background()
	if !l.log.Enabled(ctx, level) {
		return
	}

	l.log.Log(ctx, level, fmt.Sprintf(format, v...))
}

// fatalMessage returns the first fatal message, or "" when there was none.
func (l *serverLogger) fatalMessage() string {
	l.mu.Lock()
	defer l.mu.Unlock()

	return l.fatal
}
