package natstest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

// failureLogLines is how many lines of each server log a failed test prints.
const failureLogLines = 40

// server is one nats-server of a Cluster. The Cluster's mutex guards proc.
type server struct {
	name        string
	clientPort  int
	routePort   int
	monitorPort int
	storeDir    string
	configPath  string
	logPath     string

	starts int
	proc   *process // nil before the first start and after a kill
}

// process is one run of a server's child process.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once the process has exited and err is set
	err    error         // the result of cmd.Wait
}

// config returns the nats-server configuration of s.
func (c *Cluster) config(s *server) string {
	var b strings.Builder

	fmt.Fprintf(&b, "server_name: %s\n", s.name)
	fmt.Fprintf(&b, "listen: 127.0.0.1:%d\n", s.clientPort)
	fmt.Fprintf(&b, "http: 127.0.0.1:%d\n", s.monitorPort)
	fmt.Fprintf(&b, "max_payload: %d\n", MaxPayload)
	fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n  sync_interval: always\n}\n", s.storeDir)

	if len(c.servers) == 1 {
		return b.String()
	}

	// no_advertise keeps the servers from telling clients each other's
	// addresses, so a client reaches only the URLs a test gives it, such as
	// those of a proxy that can cut the link.
	fmt.Fprintf(&b, "cluster {\n  name: %s\n  listen: 127.0.0.1:%d\n  no_advertise: true\n  routes: [\n", c.name, s.routePort)
	for _, peer := range c.servers {
		if peer != s {
			fmt.Fprintf(&b, "    nats-route://127.0.0.1:%d\n", peer.routePort)
		}
	}
	b.WriteString("  ]\n}\n")

	return b.String()
}

// start starts the process of s, with its output appended to s.logPath. It
// does not wait for the server to be ready. The caller holds Cluster.mu.
func (s *server) start(bin string) error {
	s.starts++

	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open log of server %s: %w", s.name, err)
	}
	defer logFile.Close() // the child process has its own copy of the descriptor

	fmt.Fprintf(logFile, "natstest: start %d of server %s at %s\n", s.starts, s.name, time.Now().Format(time.RFC3339Nano))

	cmd := exec.Command(bin, "-c", s.configPath)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = procAttr()

	err = cmd.Start()
	if err != nil {
		return fmt.Errorf("start server %s (%s -c %s): %w", s.name, bin, s.configPath, err)
	}

	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	s.proc = p

	return nil
}

// running reports whether the process of s was started and has not exited.
// The caller holds Cluster.mu.
func (s *server) running() bool {
	if s.proc == nil {
		return false
	}

	select {
	case <-s.proc.exited:
		return false
	default:
		return true
	}
}

// exitError returns an error when the process of s exited without kill, or
// nil. The caller holds Cluster.mu.
func (s *server) exitError() error {
	if s.proc == nil {
		return nil
	}

	select {
	case <-s.proc.exited:
		return fmt.Errorf("%w: server %s (pid %d) exited on its own: %v; its log is %s",
			errExited, s.name, s.proc.cmd.Process.Pid, s.proc.err, s.logPath)
	default:
		return nil
	}
}

// errExited marks a server process that exited without Kill.
var errExited = errors.New("server process exited")

// kill sends SIGKILL to the process of s, by its pid, and waits up to
// exitTimeout for it to exit. It does nothing when s does not run. It
// returns an error when the process had already exited on its own. The
// caller holds Cluster.mu.
func (s *server) kill() error {
	p := s.proc
	if p == nil {
		return nil
	}

	err := s.exitError()
	if err != nil {
		s.proc = nil
		return err
	}

	err = p.cmd.Process.Kill()
	if errors.Is(err, os.ErrProcessDone) {
		<-p.exited
		err = s.exitError()
		s.proc = nil
		return err
	}
	if err != nil {
		return fmt.Errorf("kill server %s (pid %d): %w", s.name, p.cmd.Process.Pid, err)
	}

	select {
	case <-p.exited:
		s.proc = nil
		return nil
	case <-time.After(exitTimeout):
		return fmt.Errorf("server %s (pid %d) did not exit within %s of SIGKILL", s.name, p.cmd.Process.Pid, exitTimeout)
	}
}

// logTail returns the last n lines of the file at path, read from its last
// 64 KiB, or a note why it cannot.
func logTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot open the log: %v)", err)
	}
	defer f.Close()

	const maxTail = 64 << 10
	info, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(cannot read the log: %v)", err)
	}
	offset := max(info.Size()-maxTail, 0)

	data, err := io.ReadAll(io.NewSectionReader(f, offset, maxTail))
	if err != nil {
		return fmt.Sprintf("(cannot read the log: %v)", err)
	}

	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if offset > 0 && len(lines) > 1 {
		lines = lines[1:] // the first line is cut
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}

	return string(bytes.Join(lines, []byte("\n")))
}
