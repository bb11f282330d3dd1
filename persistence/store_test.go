package persistence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// TestMain fails the run when goroutines of nats-server, nats.go or this
// package are still running after every Store is closed.
func TestMain(m *testing.M) {
	code := m.Run()

	if code == 0 {
		code = checkGoroutines()
	}
	os.Exit(code)
}

// checkGoroutines waits up to 10 s for the goroutines of nats-server, nats.go
// and this package to end, and prints their stacks when some do not.
// Goroutines of the runtime and the testing package are not counted.
func checkGoroutines() int {
	var leaked []string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		leaked = leakedGoroutines()
		if len(leaked) == 0 {
			return 0
		}
		time.Sleep(50 * time.Millisecond)
	}

	fmt.Fprintf(os.Stderr, "goroutine leak: %d goroutines still running:\n\n%s\n",
		len(leaked), strings.Join(leaked, "\n\n"))

	return 1
}

// leakedGoroutines returns the stacks of the goroutines that run code of
// nats-server, nats.go or this package, except the one that calls it.
func leakedGoroutines() []string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]

	var leaked []string
	for _, stack := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(stack, "persistence.leakedGoroutines") {
			continue
		}
		if strings.Contains(stack, "github.com/nats-io/") || strings.Contains(stack, "livevote/persistence.") {
			leaked = append(leaked, stack)
		}
	}

	return leaked
}

// testLogger returns a logger that writes warnings and errors to the test log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))

	return len(p), nil
}

// openTestStore opens a Store on cfg, using a new temporary data directory
// when cfg names none, and closes it when the test ends.
func openTestStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	if cfg.DataDir == "" && cfg.NatsURL == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}

	s, err := Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Open(%+v): %v", cfg, err)
	}
	t.Cleanup(func() {
		err := s.Close()
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	})

	return s
}

func TestOpenEmbedded(t *testing.T) {
	t.Parallel()

	tests := []struct {
		sync           SyncMode
		wantSyncAlways bool
	}{
		{sync: "", wantSyncAlways: true},
		{sync: SyncAlways, wantSyncAlways: true},
		{sync: SyncInterval, wantSyncAlways: false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("sync=%q", tt.sync), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()

			s := openTestStore(t, Config{DataDir: dir, Sync: tt.sync})

			if !s.Embedded() {
				t.Errorf("Embedded() = false, want true")
			}
			if !s.Conn().IsConnected() {
				t.Errorf("Conn().IsConnected() = false, want true")
			}
			got := s.server.JetStreamConfig()
			if got.SyncAlways != tt.wantSyncAlways {
				t.Errorf("JetStream SyncAlways = %v, want %v", got.SyncAlways, tt.wantSyncAlways)
			}
			// nats-server adds its own "jetstream" directory below the data directory.
			wantDir := filepath.Join(dir, "jetstream")
			if got.StoreDir != wantDir {
				t.Errorf("JetStream StoreDir = %q, want %q", got.StoreDir, wantDir)
			}
			checkResources(t, s)
		})
	}
}

// checkResources checks the configuration of the stream and the buckets.
func checkResources(t *testing.T, s *Store) {
	t.Helper()
	ctx := t.Context()

	stream, err := s.JetStream().Stream(ctx, VotesStream)
	if err != nil {
		t.Fatalf("Stream(%s): %v", VotesStream, err)
	}
	cfg := stream.CachedInfo().Config
	if len(cfg.Subjects) != 1 || cfg.Subjects[0] != "livevote.votes.*" {
		t.Errorf("stream subjects = %v, want [livevote.votes.*]", cfg.Subjects)
	}
	if cfg.Storage != jetstream.FileStorage {
		t.Errorf("stream storage = %v, want file", cfg.Storage)
	}
	if cfg.Duplicates != 2*time.Minute {
		t.Errorf("stream duplicate window = %v, want 2m", cfg.Duplicates)
	}
	if cfg.MaxAge != 0 || cfg.MaxBytes != -1 || cfg.MaxMsgs != -1 {
		t.Errorf("stream limits: max age %v, max bytes %d, max msgs %d; want 0, -1, -1",
			cfg.MaxAge, cfg.MaxBytes, cfg.MaxMsgs)
	}

	for _, bucket := range []string{ResultsBucket, CatalogBucket, SystemBucket} {
		kv, err := s.JetStream().KeyValue(ctx, bucket)
		if err != nil {
			t.Errorf("KeyValue(%s): %v", bucket, err)
			continue
		}
		status, err := kv.Status(ctx)
		if err != nil {
			t.Errorf("%s Status: %v", bucket, err)
			continue
		}
		if status.History() != 1 {
			t.Errorf("%s history = %d, want 1", bucket, status.History())
		}
	}

	_, err = s.JetStream().ObjectStore(ctx, SnapshotsBucket)
	if err != nil {
		t.Errorf("ObjectStore(%s): %v", SnapshotsBucket, err)
	}
}

func TestOpenRejectsUnusableDataDir(t *testing.T) {
	t.Parallel()

	file := filepath.Join(t.TempDir(), "regular-file")
	err := os.WriteFile(file, []byte("not a directory"), 0o600)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		cfg      Config
		wantText string
	}{
		{name: "under regular file", cfg: Config{DataDir: filepath.Join(file, "data")}, wantText: file},
		{name: "regular file", cfg: Config{DataDir: file}, wantText: file},
		{name: "missing", cfg: Config{}, wantText: "DataDir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			s, err := Open(t.Context(), tt.cfg)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%+v) succeeded, want an error", tt.cfg)
			}
			if !errors.Is(err, ErrDataDir) {
				t.Errorf("Open error = %v, want ErrDataDir", err)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("Open error = %q, want it to contain %q", err, tt.wantText)
			}
		})
	}
}

func TestOpenReportsJetStreamStartFailure(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()

	// A regular file where the JetStream store directory must be.
	err := os.WriteFile(filepath.Join(dir, "jetstream"), []byte("not a directory"), 0o600)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, Config{DataDir: dir, Logger: testLogger(t)})
	if err == nil {
		s.Close()
		t.Fatal("Open succeeded with a file in place of the JetStream directory")
	}
	if !strings.Contains(err.Error(), dir) {
		t.Errorf("Open error %q does not name the data directory", err)
	}

	// The lock is released, so a later Open of the repaired directory works.
	err = os.Remove(filepath.Join(dir, "jetstream"))
	if err != nil {
		t.Fatal(err)
	}
	openTestStore(t, Config{DataDir: dir})
}

func TestOpenRejectsLockedDataDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()

	first, err := Open(t.Context(), Config{DataDir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}

	second, err := Open(t.Context(), Config{DataDir: dir, Logger: testLogger(t)})
	if err == nil {
		second.Close()
		t.Fatal("second Open on a locked data directory succeeded")
	}
	if !errors.Is(err, ErrLocked) {
		t.Errorf("second Open error = %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), dir) {
		t.Errorf("second Open error = %q, want it to name %q", err, dir)
	}

	err = first.Close()
	if err != nil {
		t.Fatalf("Close: %v", err)
	}

	third := openTestStore(t, Config{DataDir: dir})
	if !third.Embedded() {
		t.Error("Open after Close: Embedded() = false")
	}
}

func TestOpenRejectsBadConfig(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name     string
		cfg      Config
		wantText string
	}{
		{name: "sync mode", cfg: Config{DataDir: t.TempDir(), Sync: "sometimes"}, wantText: `"sometimes"`},
		{name: "replicas above 5", cfg: Config{DataDir: t.TempDir(), Replicas: 7}, wantText: "replicas 7"},
		{name: "replicas embedded", cfg: Config{DataDir: t.TempDir(), Replicas: 3}, wantText: "replicas 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			s, err := Open(t.Context(), tt.cfg)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%+v) succeeded, want an error", tt.cfg)
			}
			if !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("Open error = %v, want ErrInvalidArgument", err)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("Open error = %q, want it to contain %q", err, tt.wantText)
			}
		})
	}
}

// startExternalServer starts a nats-server that listens on a random loopback
// port and returns its client URL.
func startExternalServer(t *testing.T, jetStream bool) string {
	t.Helper()

	opts := &server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		NoSigs:    true,
		NoLog:     true,
		JetStream: jetStream,
		StoreDir:  t.TempDir(),
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("external nats-server not ready after 10s")
	}

	return ns.ClientURL()
}

func TestOpenExternal(t *testing.T) {
	t.Parallel()
	url := startExternalServer(t, true)

	s := openTestStore(t, Config{NatsURL: url})

	if s.Embedded() {
		t.Error("Embedded() = true for an external server")
	}
	seq, err := s.AppendBatch(t.Context(), testBatch("external-1", 3, 2))
	if err != nil {
		t.Fatalf("AppendBatch: %v", err)
	}
	if seq != 1 {
		t.Errorf("AppendBatch sequence = %d, want 1", seq)
	}
}

func TestOpenExternalWithoutJetStream(t *testing.T) {
	t.Parallel()
	url := startExternalServer(t, false)

	s, err := Open(t.Context(), Config{NatsURL: url, Logger: testLogger(t)})
	if err == nil {
		s.Close()
		t.Fatal("Open succeeded against a server without JetStream")
	}
	if !errors.Is(err, ErrJetStreamDisabled) {
		t.Errorf("Open error = %v, want ErrJetStreamDisabled", err)
	}
}

func TestOpenExternalUnreachable(t *testing.T) {
	t.Parallel()

	// Port 1 on loopback has no NATS server.
	url := "nats://user:hunter2@127.0.0.1:1"
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	s, err := Open(ctx, Config{NatsURL: url, Logger: testLogger(t)})
	if err == nil {
		s.Close()
		t.Fatal("Open succeeded against a closed port")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("Open error %q contains the password", err)
	}
	if !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("Open error %q does not name the server", err)
	}
}

func TestCloseTwice(t *testing.T) {
	t.Parallel()

	s, err := Open(t.Context(), Config{DataDir: t.TempDir(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}

	err = s.Close()
	if err != nil {
		t.Fatalf("first Close: %v", err)
	}
	err = s.Close()
	if err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if !s.Conn().IsClosed() {
		t.Error("connection is open after Close")
	}
}

func TestParseSyncMode(t *testing.T) {
	t.Parallel()

	tests := []struct {
		in      string
		want    SyncMode
		wantErr bool
	}{
		{in: "always", want: SyncAlways},
		{in: "interval", want: SyncInterval},
		{in: "", want: SyncAlways},
		{in: "Always", wantErr: true},
		{in: "never", wantErr: true},
		{in: "2m", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseSyncMode(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("ParseSyncMode(%q) = %q, want an error", tt.in, got)
				continue
			}
			for _, want := range []string{fmt.Sprintf("%q", tt.in), `"always"`, `"interval"`} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("ParseSyncMode(%q) error %q does not contain %s", tt.in, err, want)
				}
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseSyncMode(%q) = %q, %v; want %q, nil", tt.in, got, err, tt.want)
		}
	}
}

func TestRedactURLs(t *testing.T) {
	t.Parallel()

	tests := []struct{ in, want string }{
		{in: "nats://127.0.0.1:4222", want: "nats://127.0.0.1:4222"},
		{in: "nats://u:p@127.0.0.1:4222, nats://tok@[::1]:4223",
			want: "nats://redacted@127.0.0.1:4222,nats://redacted@[::1]:4223"},
	}
	for _, tt := range tests {
		got := redactURLs(tt.in)
		if got != tt.want {
			t.Errorf("redactURLs(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
