package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// readyTimeout bounds the wait for a started server's ready line.
const readyTimeout = 60 * time.Second

var errNotReady = errors.New("server not ready")

// child is one server binary run as a child process whose stderr goes to a log file
// and is scanned for the line that marks it ready.
type child struct {
	name, bin, logs string
	args            []string
	isReady         func(line string) bool
	starts          int
	cmd             *exec.Cmd
	logDone         chan struct{}
}

// start runs the binary and waits for its ready line. Its log goes to
// logs/NAME-N.log in the run directory.
func (c *child) start(ctx context.Context) error {
	c.starts++
	logFile, err := os.Create(filepath.Join(c.logs, fmt.Sprintf("%s-%02d.log", c.name, c.starts)))
	if err != nil {
		return err
	}
	cmd := exec.Command(c.bin, c.args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		logFile.Close()
		return err
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start %s: %w", c.bin, err)
	}
	c.cmd = cmd

	ready := make(chan struct{})
	c.logDone = make(chan struct{})
	go func() {
		defer close(c.logDone)
		defer logFile.Close()
		scanReady(io.TeeReader(stderr, logFile), c.isReady, ready)
	}()

	select {
	case <-ready:
		return nil
	case <-time.After(readyTimeout):
		return fmt.Errorf("%w: %s logged no ready line within %s (log in %s)", errNotReady, c.name, readyTimeout, logFile.Name())
	case <-ctx.Done():
		return ctx.Err()
	}
}

// scanReady reads r until it ends and closes ready at the first line isReady accepts.
func scanReady(r io.Reader, isReady func(string) bool, ready chan<- struct{}) {
	scanner := bufio.NewScanner(r)
	scanner.Buffer(make([]byte, 64<<10), 1<<20)
	sent := false
	for scanner.Scan() {
		if !sent && isReady(scanner.Text()) {
			sent = true
			close(ready)
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

// signal sends sig to the running process.
func (c *child) signal(sig syscall.Signal) {
	if c.cmd != nil {
		_ = c.cmd.Process.Signal(sig)
	}
}

// kill sends SIGKILL and waits for the process and its log reader to end.
func (c *child) kill() {
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGCONT)
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	_ = c.cmd.Wait()
	<-c.logDone
	c.cmd = nil
}

// stop ends the process for good with SIGTERM, or SIGKILL after 20 s.
func (c *child) stop() {
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGCONT)
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		_ = c.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}
	<-c.logDone
	c.cmd = nil
}

func (c *child) base() string { return "http://" + c.args[1] }

// startBoth builds both binaries into dir, starts nats-server with JetStream and then
// livevote against it, and returns both.
func startBoth(ctx context.Context, src, dir string) (ns, lv *child, err error) {
	logs := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return nil, nil, err
	}
	lvBin, err := build(ctx, src, filepath.Join(dir, "livevote"), ".")
	if err != nil {
		return nil, nil, err
	}
	nsBin, err := build(ctx, src, filepath.Join(dir, "nats-server"), "github.com/nats-io/nats-server/v2")
	if err != nil {
		return nil, nil, err
	}
	natsAddr, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	host, port, _ := net.SplitHostPort(natsAddr)
	ns = &child{name: "nats", bin: nsBin, logs: logs,
		args:    []string{"-js", "-a", host, "-p", port, "-sd", filepath.Join(dir, "nats")},
		isReady: func(line string) bool { return strings.Contains(line, "Server is ready") }}
	if err := ns.start(ctx); err != nil {
		return nil, nil, err
	}

	addr, err := freePort()
	if err != nil {
		ns.stop()
		return nil, nil, err
	}
	lv = &child{name: "livevote", bin: lvBin, logs: logs,
		args: []string{"-addr", addr, "-nats-url", "nats://" + natsAddr, "-data", filepath.Join(dir, "data"), "-shards", "8",
			"-broadcast-interval", "1s", "-log-format", "json", "-vote-rate", "1000", "-vote-burst", "1000",
			"-session-rate", "100000", "-session-burst", "100000"},
		isReady: livevoteReady}
	if err := lv.start(ctx); err != nil {
		ns.stop()
		return nil, nil, err
	}

	return ns, lv, nil
}

// livevoteReady reports whether line is livevote's JSON ready log line.
func livevoteReady(line string) bool {
	var entry struct {
		Msg string `json:"msg"`
	}

	return json.Unmarshal([]byte(line), &entry) == nil && entry.Msg == "livevote ready: every shard recovered"
}

// freePort returns a loopback address whose port was free a moment ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()

	return ln.Addr().String(), nil
}

// build compiles package pkg of the module in src into out.
func build(ctx context.Context, src, out, pkg string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = src
	if output, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s in %s: %w\n%s", pkg, src, err, output)
	}

	return out, nil
}
