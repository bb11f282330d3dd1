package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// readyTimeout bounds the wait for a started server to report every shard recovered.
const readyTimeout = 60 * time.Second

// server is the livevote binary running as a child process on a fixed data directory
// and loopback address, so that a restart takes over where the killed one stopped.
type server struct {
	bin, data, addr, logs string
	starts                int
	cmd                   *exec.Cmd
	logDone               chan struct{}
}

// newServer builds the binary into dir and picks the data directory and address.
func newServer(ctx context.Context, src, dir string) (*server, error) {
	bin, err := build(ctx, src, dir)
	if err != nil {
		return nil, err
	}
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	return &server{bin: bin, data: filepath.Join(dir, "data"), addr: addr, logs: filepath.Join(dir, "logs")}, nil
}

func (s *server) base() string { return "http://" + s.addr }

// start runs the binary and waits until it logs that every shard has recovered. Its
// log goes to logs/server-N.log in the run directory.
func (s *server) start(ctx context.Context) error {
	if err := os.MkdirAll(s.logs, 0o755); err != nil {
		return err
	}
	s.starts++
	logFile, err := os.Create(filepath.Join(s.logs, fmt.Sprintf("server-%02d.log", s.starts)))
	if err != nil {
		return err
	}
	cmd := exec.Command(s.bin, "-addr", s.addr, "-data", s.data, "-shards", "8", "-broadcast-interval", "1s",
		"-log-format", "json", "-vote-rate", "1000", "-vote-burst", "1000", "-session-rate", "100000", "-session-burst", "100000")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		logFile.Close()
		return err
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	s.cmd = cmd

	ready := make(chan struct{})
	s.logDone = make(chan struct{})
	go func() {
		defer close(s.logDone)
		defer logFile.Close()
		scanLog(io.TeeReader(stderr, logFile), ready)
	}()

	select {
	case <-ready:
		return nil
	case <-time.After(readyTimeout):
		return fmt.Errorf("%w: no ready line within %s (log in %s)", errNotReady, readyTimeout, logFile.Name())
	case <-ctx.Done():
		return ctx.Err()
	}
}

// scanLog reads the JSON log until it ends and closes ready at the ready line.
func scanLog(r io.Reader, ready chan<- struct{}) {
	scanner := bufio.NewScanner(r)
	scanner.Buffer(make([]byte, 64<<10), 1<<20)
	sent := false
	for scanner.Scan() {
		var line struct {
			Msg string `json:"msg"`
		}
		if json.Unmarshal(scanner.Bytes(), &line) == nil && line.Msg == "livevote ready: every shard recovered" && !sent {
			sent = true
			close(ready)
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

// kill sends SIGKILL and waits for the process and its log reader to end.
func (s *server) kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	_ = s.cmd.Wait()
	<-s.logDone
	s.cmd = nil
}

// stop ends the server for good with SIGTERM, or SIGKILL after 20 s.
func (s *server) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		_ = s.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}
	<-s.logDone
	s.cmd = nil
}
