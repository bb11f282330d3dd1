package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"
)

// maxSocketsPerProcess is the number of sockets one process opens at most. A process
// here may hold 20,000 open files (a hard limit) and each socket is one file, so 2,000
// are left for the HTTP client, the binary and the standard streams.
const maxSocketsPerProcess = 18000

// workerFlag is the hidden flag that makes the binary a worker process.
const workerFlag = "-worker"

// maxWorkerLine bounds one JSON line from a worker; the final figures line carries
// the histograms and the per-second buckets.
const maxWorkerLine = 256 << 20

// workerMessage is one line that a worker process writes on its standard output.
type workerMessage struct {
	Progress *progress `json:"progress,omitempty"`
	Drained  bool      `json:"drained,omitempty"`
	Figures  *figures  `json:"figures,omitempty"`
}

// worker is a running share of the load, in this process or a child process.
type worker interface {
	// progress returns the latest counters.
	progress() progress
	// drained is closed once every voter has the acks of its votes.
	drained() <-chan struct{}
	// finish makes the worker close its sockets and report.
	finish()
	// result waits for the figures.
	result() (figures, error)
}

// localWorker runs a plan in this process.
type localWorker struct {
	rec        *recorder
	drainedCh  chan struct{}
	finishCh   chan struct{}
	finishOnce sync.Once
	done       chan struct{}
	figs       figures
}

func startLocalWorker(ctx context.Context, p plan) *localWorker {
	lw := &localWorker{rec: newRecorder(p.Start), drainedCh: make(chan struct{}), finishCh: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(lw.done)
		lw.figs = runWorker(ctx, p, lw.rec, lw.finishCh, func() { close(lw.drainedCh) })
	}()
	return lw
}

func (lw *localWorker) progress() progress       { return lw.rec.c.snapshot() }
func (lw *localWorker) drained() <-chan struct{} { return lw.drainedCh }
func (lw *localWorker) finish()                  { lw.finishOnce.Do(func() { close(lw.finishCh) }) }
func (lw *localWorker) result() (figures, error) { <-lw.done; return lw.figs, nil }

// processWorker runs a plan in a child process of this binary.
type processWorker struct {
	cmd        *exec.Cmd
	stdin      io.WriteCloser
	drainedCh  chan struct{}
	finishOnce sync.Once
	done       chan struct{}

	mu   sync.Mutex
	last progress
	figs *figures
	err  error
}

func startProcessWorker(ctx context.Context, p plan) (*processWorker, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("%w: find own binary: %v", errWorker, err)
	}
	cmd := exec.CommandContext(ctx, exe, workerFlag)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errWorker, err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errWorker, err)
	}
	line, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("%w: encode plan: %v", errWorker, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%w: start %s: %v", errWorker, exe, err)
	}

	pw := &processWorker{cmd: cmd, stdin: stdin, drainedCh: make(chan struct{}), done: make(chan struct{})}
	go pw.readOutput(stdout)
	if _, err := stdin.Write(append(line, '\n')); err != nil {
		return nil, fmt.Errorf("%w: send plan to worker %d: %v", errWorker, cmd.Process.Pid, err)
	}
	return pw, nil
}

// readOutput reads the worker's JSON lines until it exits.
func (pw *processWorker) readOutput(stdout io.Reader) {
	defer close(pw.done)
	drained := false
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), maxWorkerLine)
	for sc.Scan() {
		var m workerMessage
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			pw.setErr(fmt.Errorf("%w: worker %d sent a malformed line: %v", errWorker, pw.cmd.Process.Pid, err))
			continue
		}
		pw.mu.Lock()
		if m.Progress != nil {
			pw.last = *m.Progress
		}
		if m.Figures != nil {
			pw.figs = m.Figures
		}
		pw.mu.Unlock()
		if m.Drained && !drained {
			drained = true
			close(pw.drainedCh)
		}
	}
	if err := sc.Err(); err != nil {
		pw.setErr(fmt.Errorf("%w: read worker %d: %v", errWorker, pw.cmd.Process.Pid, err))
	}
	if err := pw.cmd.Wait(); err != nil {
		pw.setErr(fmt.Errorf("%w: worker %d: %v", errWorker, pw.cmd.Process.Pid, err))
	}
	if !drained {
		close(pw.drainedCh)
	}
}

func (pw *processWorker) setErr(err error) {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	if pw.err == nil {
		pw.err = err
	}
}

func (pw *processWorker) progress() progress {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	return pw.last
}

func (pw *processWorker) drained() <-chan struct{} { return pw.drainedCh }

func (pw *processWorker) finish() {
	pw.finishOnce.Do(func() {
		_, _ = io.WriteString(pw.stdin, "finish\n")
		_ = pw.stdin.Close()
	})
}

func (pw *processWorker) result() (figures, error) {
	<-pw.done
	pw.mu.Lock()
	defer pw.mu.Unlock()
	if pw.err != nil {
		return figures{}, pw.err
	}
	if pw.figs == nil {
		return figures{}, fmt.Errorf("%w: worker %d exited without figures", errWorker, pw.cmd.Process.Pid)
	}
	return *pw.figs, nil
}

// workerMain runs as a worker process: it reads its plan from stdin, writes progress
// every second and its figures at the end on stdout, and closes its sockets when stdin
// reads "finish" or closes.
func workerMain(stdin io.Reader, stdout io.Writer) error {
	if _, err := raiseFileLimit(); err != nil {
		return err
	}
	in := bufio.NewReader(stdin)
	line, err := in.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("%w: read plan: %v", errWorker, err)
	}
	var p plan
	if err := json.Unmarshal(line, &p); err != nil {
		return fmt.Errorf("%w: decode plan: %v", errWorker, err)
	}

	finish := make(chan struct{})
	go func() {
		_, _ = in.ReadString('\n') // "finish", or EOF when the parent is gone
		close(finish)
	}()

	var outMu sync.Mutex
	send := func(m workerMessage) {
		outMu.Lock()
		defer outMu.Unlock()
		_ = json.NewEncoder(stdout).Encode(m)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := newRecorder(p.Start)
	var reporter sync.WaitGroup
	reporter.Go(func() { reportProgress(ctx, rec, send) })

	figs := runWorker(ctx, p, rec, finish, func() { send(workerMessage{Drained: true}) })
	cancel()
	reporter.Wait()
	send(workerMessage{Figures: &figs})
	return nil
}

func reportProgress(ctx context.Context, rec *recorder, send func(workerMessage)) {
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			p := rec.c.snapshot()
			send(workerMessage{Progress: &p})
		}
	}
}
