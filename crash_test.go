package main

import (
	"bufio"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/livevote/livevote/actors"
	"github.com/livevote/livevote/hub"
)

// binaryDir holds the binary that buildBinary compiles; TestMain removes it.
var binaryDir = sync.OnceValues(func() (string, error) { return os.MkdirTemp("", "livevote-bin-") })

func TestMain(m *testing.M) {
	code := m.Run()
	if dir, err := binaryDir(); err == nil {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

// buildBinary compiles the livevote command once per test binary run.
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := binaryDir()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "livevote")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", &buildError{out: string(out), err: err}
	}
	return bin, nil
})

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return "go build: " + e.err.Error() + "\n" + e.out }

// childNode is the real livevote binary running as a child process.
type childNode struct {
	testNode
	cmd *exec.Cmd
}

// startChild starts the binary on dataDir and waits until it reports ready.
func startChild(t *testing.T, dataDir string) *childNode {
	t.Helper()
	return startChildArgs(t, "-addr", "127.0.0.1:0", "-data", dataDir)
}

// startChildArgs starts the binary with 8 shards, a 100 ms broadcast interval, JSON
// logs and the given flags, and waits until it reports ready.
func startChildArgs(t *testing.T, args ...string) *childNode {
	t.Helper()
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	args = append([]string{"-shards", "8", "-broadcast-interval", "100ms", "-log-format", "json"}, args...)
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})

	// The child's log is kept in a file, which stays for reading when the
	// test fails.
	logFile, err := os.CreateTemp("", "livevote-child-*.log")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		logFile.Close()
		if t.Failed() {
			t.Logf("log of child %d kept in %s", cmd.Process.Pid, logFile.Name())
			return
		}
		os.Remove(logFile.Name())
	})

	addr, ready := make(chan string, 1), make(chan struct{})
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		scanChildLog(t, io.TeeReader(stderr, logFile), addr, ready)
	}()
	c := &childNode{cmd: cmd}
	c.t = t
	// The log reader ends when the child exits, so a child that fails at
	// start fails the test at once, with its log kept.
	select {
	case a := <-addr:
		c.base = "http://" + a
	case <-logDone:
		t.Fatalf("child %d exited before it reported its listen address", cmd.Process.Pid)
	case <-time.After(60 * time.Second):
		t.Fatal("child did not report its listen address within 60s")
	}
	select {
	case <-ready:
	case <-logDone:
		t.Fatalf("child %d exited before it became ready", cmd.Process.Pid)
	case <-time.After(60 * time.Second):
		t.Fatal("child did not become ready within 60s")
	}
	return c
}

func scanChildLog(t *testing.T, r io.Reader, addr chan<- string, ready chan<- struct{}) {
	scanner := bufio.NewScanner(r)
	readySent := false
	for scanner.Scan() {
		var line struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal(scanner.Bytes(), &line) != nil {
			continue
		}
		switch {
		case line.Msg == "livevote listening":
			addr <- line.Addr
		case strings.HasPrefix(line.Msg, "livevote ready: ") && !readySent:
			readySent = true
			close(ready)
		}
	}
}

func (c *childNode) kill() {
	c.t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		c.t.Fatalf("kill: %v", err)
	}
	_ = c.cmd.Wait()
}

func TestCrashRecoveryAfterSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary twice; skipped with -short")
	}
	dataDir := t.TempDir()
	// A broadcast interval of an hour means that correct results after the restart
	// come from the round that runs as soon as every shard has recovered.
	first := startChildArgs(t, "-addr", "127.0.0.1:0", "-data", dataDir, "-broadcast-interval", "1h")
	ev := first.createEvent("Crash")
	poll := first.createPoll(ev, hub.NewPoll{Question: "Survive?", Options: []string{"Yes", "No", "Maybe"}}, true)

	type acked struct {
		session, voteID, option string
		receipt                 actors.Receipt
	}
	const voters = 120
	results := make([]acked, voters)
	var wg sync.WaitGroup
	for i := range voters {
		wg.Go(func() {
			session := first.newSession()
			option := poll.Options[i%3].ID
			id := uuid.NewString()
			answer := decodeInto[voteAnswer](t, first.httpVote(session, poll.ID, id, option), http.StatusAccepted)
			results[i] = acked{session, id, option, *answer.Receipt}
		})
	}
	wg.Wait()
	first.kill()

	second := startChildArgs(t, "-addr", "127.0.0.1:0", "-data", dataDir, "-broadcast-interval", "1h")
	want := map[string]int64{"o1": 0, "o2": 0, "o3": 0}
	for _, r := range results {
		want[r.option]++
	}
	deadline := time.Now().Add(5 * time.Second)
	var doc actors.Results
	for time.Now().Before(deadline) {
		doc = decodeInto[actors.Results](t, second.do("GET", "/api/polls/"+poll.ID+"/results", nil, nil), http.StatusOK)
		if doc.Voters == voters {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !maps.Equal(doc.Counts, want) || doc.Voters != voters {
		t.Fatalf("after SIGKILL and restart: counts %v voters %d, want %v and %d", doc.Counts, doc.Voters, want, voters)
	}

	// Every session maps to the same shard: a replayed vote answers duplicate with the
	// receipt issued before the crash.
	for _, r := range results[:20] {
		answer := decodeInto[voteAnswer](t, second.httpVote(r.session, poll.ID, r.voteID, r.option), http.StatusAccepted)
		if answer.Status != "duplicate" || answer.Receipt == nil || *answer.Receipt != r.receipt {
			t.Fatalf("replay after restart = %+v, want duplicate with receipt %+v", answer, r.receipt)
		}
	}
}
