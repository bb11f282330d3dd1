package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestMain lets the test binary serve as a worker process, as the loadtest binary does.
func TestMain(m *testing.M) {
	if len(os.Args) == 2 && os.Args[1] == workerFlag {
		if err := workerMain(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "loadtest worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startServer builds LiveVote from the module root, runs it on a free loopback port
// with a temporary data directory, and stops it when the test ends.
func startServer(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "livevote")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build livevote: %v\n%s", err, out)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()

	logFile, err := os.Create(filepath.Join(dir, "livevote.log"))
	if err != nil {
		t.Fatalf("create server log: %v", err)
	}
	srv := exec.Command(bin, "-addr", addr, "-data", filepath.Join(dir, "data"), "-broadcast-interval", "500ms",
		"-vote-rate", "1000", "-vote-burst", "1000", "-session-rate", "10000", "-session-burst", "100000")
	srv.Stdout, srv.Stderr = logFile, logFile
	if err := srv.Start(); err != nil {
		t.Fatalf("start livevote: %v", err)
	}
	t.Cleanup(func() {
		_ = srv.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = srv.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = srv.Process.Kill()
			<-done
		}
		logFile.Close()
		if t.Failed() {
			log, _ := os.ReadFile(logFile.Name())
			t.Logf("server log:\n%s", log)
		}
	})

	base := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("livevote at %s not ready after 30 s (last error %v)", base, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestRunAgainstServer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the LiveVote server")
	}
	base := startServer(t)

	cases := []struct {
		name string
		args []string
	}{
		{"websocket", []string{"-sockets", "50", "-duration", "3s", "-ramp", "500ms"}},
		{"websocket surge two workers", []string{"-sockets", "60", "-duration", "3s", "-ramp", "500ms", "-profile", "surge", "-rate", "2000", "-workers", "2"}},
		{"http", []string{"-http", "-sockets", "20", "-duration", "2s", "-ramp", "200ms"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			jsonPath := filepath.Join(t.TempDir(), "report.json")
			args := append([]string{"-url", base, "-drain", "20s", "-max-duration", "2m", "-json", jsonPath}, tc.args...)
			cfg, err := parseFlags(args, io.Discard)
			if err != nil {
				t.Fatalf("parseFlags: %v", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), cfg.MaxDuration)
			defer cancel()

			rep, err := run(ctx, cfg, io.Discard, io.Discard)
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			if rep.Acked <= 0 {
				t.Errorf("acked = %d, want > 0", rep.Acked)
			}
			if rep.Lost != 0 {
				t.Errorf("lost = %d, want 0 (verify: %+v)", rep.Lost, rep.Verify)
			}
			if rep.DoubleCounted != 0 {
				t.Errorf("double_counted = %d, want 0 (verify: %+v)", rep.DoubleCounted, rep.Verify)
			}
			if rep.Connected != int64(cfg.Sockets) {
				t.Errorf("connected = %d, want %d", rep.Connected, cfg.Sockets)
			}
			if _, err := os.Stat(jsonPath); err != nil {
				t.Errorf("-json report: %v", err)
			}
		})
	}
}
