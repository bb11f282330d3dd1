// Package natstest starts real NATS clusters for tests, as net/http/httptest
// starts real HTTP servers: each server is a nats-server child process with
// JetStream, listening on 127.0.0.1 only, with its store in the test's
// temporary directory and fsync before every acknowledgement.
//
// The nats-server binary is the tool that go.mod declares, built once per
// test process with the go command, so the servers run the version that the
// module pins. The first build on a machine compiles nats-server, which takes
// tens of seconds, and longer while the module cache is cold. Later builds
// come from the Go build cache.
package natstest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// MaxServers is the largest cluster that Start accepts.
const MaxServers = 9

// MaxPayload is the max_payload of every server: 1 MiB, nats-server's
// default, written into the configuration so that tests run against the
// limit that a default production server has.
const MaxPayload = 1 << 20

// readyTimeout bounds the wait for started servers to serve JetStream.
const readyTimeout = 60 * time.Second

// exitTimeout bounds the wait for a process to exit after SIGKILL.
const exitTimeout = 10 * time.Second

// Cluster is a running NATS cluster of child processes. Start returns it,
// and the test's cleanup ends its processes. Its methods are safe for
// concurrent use, but Kill and Restart call t.Fatal on failure, so call
// them from the test goroutine.
type Cluster struct {
	t      testing.TB
	name   string // cluster name, unique per Start, so routes never join two clusters
	bin    string
	logDir string
	http   *http.Client

	mu      sync.Mutex // guards the process state of servers
	servers []*server
}

// Start starts a NATS cluster of n servers, 1 to MaxServers, with JetStream
// enabled, and waits up to 60 s until every server passes its full health
// check and the JetStream meta leader reports every other server as
// current. A single server runs without a cluster block. Start calls
// t.Fatal when the build, a start or the wait fails, and registers a
// cleanup that kills the processes it started. Server logs go to a
// directory that the cleanup removes when the test passed and keeps when it
// failed, and the cleanup prints its path and the end of each log then.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()

	if n < 1 || n > MaxServers {
		t.Fatalf("natstest: cluster size %d is not valid, use 1 to %d servers", n, MaxServers)
	}

	bin, err := serverBinary()
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}

	// TempDir registers its removal first, so that it runs after the cleanup
	// below has ended the processes that write into it.
	dataDir := t.TempDir()

	logDir, err := os.MkdirTemp("", "natstest-logs-")
	if err != nil {
		t.Fatalf("natstest: create log directory: %v", err)
	}

	c := &Cluster{
		t:      t,
		name:   "natstest-" + randomHex(4),
		bin:    bin,
		logDir: logDir,
		http:   &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	}
	t.Cleanup(c.cleanup)

	err = c.configure(n, dataDir)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}

	c.mu.Lock()
	for _, s := range c.servers {
		err = s.start(c.bin)
		if err != nil {
			break
		}
	}
	c.mu.Unlock()
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}

	err = c.waitReady()
	if err != nil {
		t.Fatalf("natstest: start cluster of %d servers: %v", n, err)
	}

	return c
}

// configure picks the ports of n servers and writes their configuration
// files.
func (c *Cluster) configure(n int, dataDir string) error {
	c.servers = make([]*server, n)
	for i := range c.servers {
		ports, err := freePorts(3)
		if err != nil {
			return err
		}

		name := "n" + strconv.Itoa(i)
		c.servers[i] = &server{
			name:        name,
			clientPort:  ports[0],
			routePort:   ports[1],
			monitorPort: ports[2],
			storeDir:    filepath.Join(dataDir, name),
			configPath:  filepath.Join(dataDir, name+".conf"),
			logPath:     filepath.Join(c.logDir, name+".log"),
		}
	}

	for _, s := range c.servers {
		err := os.WriteFile(s.configPath, []byte(c.config(s)), 0o600)
		if err != nil {
			return fmt.Errorf("write configuration of server %s: %w", s.name, err)
		}
	}

	return nil
}

// Len returns the number of servers, running or killed.
func (c *Cluster) Len() int {
	return len(c.servers)
}

// URLs returns the client URLs of every server, comma separated, in index
// order: the form of persistence.Config.NatsURL.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.servers))
	for i := range c.servers {
		urls[i] = c.URL(i)
	}

	return strings.Join(urls, ",")
}

// URL returns the client URL of server i, such as nats://127.0.0.1:41234.
// It stays the same across Kill and Restart.
func (c *Cluster) URL(i int) string {
	return "nats://127.0.0.1:" + strconv.Itoa(c.server(i).clientPort)
}

// MonitorURL returns the base URL of the HTTP monitoring endpoints of
// server i (/healthz, /jsz, /routez), such as http://127.0.0.1:41236.
func (c *Cluster) MonitorURL(i int) string {
	return "http://127.0.0.1:" + strconv.Itoa(c.server(i).monitorPort)
}

// Name returns the server_name of server i: "n" and its index, as JetStream
// reports it in stream and meta leader information.
func (c *Cluster) Name(i int) string {
	return c.server(i).name
}

// Index returns the index of the server whose server_name is name, or -1.
func (c *Cluster) Index(name string) int {
	for i, s := range c.servers {
		if s.name == name {
			return i
		}
	}

	return -1
}

// LogPath returns the log file of server i. Every start of the server
// appends to it.
func (c *Cluster) LogPath(i int) string {
	return c.server(i).logPath
}

// Running reports whether server i runs: started and not killed.
func (c *Cluster) Running(i int) bool {
	s := c.server(i)

	c.mu.Lock()
	defer c.mu.Unlock()

	return s.running()
}

// Kill sends SIGKILL to server i and waits for the process to exit. It does
// nothing when the server does not run. It calls t.Fatal when the process
// had already exited without Kill or does not exit within 10 s.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	s := c.server(i)

	c.mu.Lock()
	err := s.kill()
	c.mu.Unlock()
	if err != nil {
		c.t.Fatalf("natstest: %v", err)
	}
}

// Restart starts server i again with the same ports, configuration and
// store directory, killing it first when it still runs. It waits up to 60 s
// until the running servers are ready as Start defines it. That includes
// the full health check of server i, which passes once its streams have
// caught up with their leaders. It calls t.Fatal when the start or the wait
// fails.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	s := c.server(i)

	c.mu.Lock()
	err := s.kill()
	if err == nil {
		err = s.start(c.bin)
	}
	c.mu.Unlock()
	if err != nil {
		c.t.Fatalf("natstest: restart server %s: %v", s.name, err)
	}

	err = c.waitReady()
	if err != nil {
		c.t.Fatalf("natstest: restart server %s: %v", s.name, err)
	}
}

// server returns server i and panics with a clear message for an index out
// of range, like a slice does.
func (c *Cluster) server(i int) *server {
	if i < 0 || i >= len(c.servers) {
		panic(fmt.Sprintf("natstest: server index %d is outside [0, %d)", i, len(c.servers)))
	}

	return c.servers[i]
}

// cleanup kills every process that the cluster started and reports servers
// that exited on their own. When the test failed, it prints the log
// directory and the end of each log and keeps the directory.
func (c *Cluster) cleanup() {
	c.t.Helper()

	c.mu.Lock()
	for _, s := range c.servers {
		if s == nil {
			continue
		}
		err := s.kill()
		if err != nil {
			c.t.Errorf("natstest: %v", err)
		}
	}
	c.mu.Unlock()

	if !c.t.Failed() {
		err := os.RemoveAll(c.logDir)
		if err != nil {
			c.t.Logf("natstest: remove log directory: %v", err)
		}
		return
	}

	c.t.Logf("natstest: server logs are kept in %s", c.logDir)
	for _, s := range c.servers {
		if s != nil {
			c.t.Logf("natstest: last lines of %s:\n%s", s.logPath, logTail(s.logPath, failureLogLines))
		}
	}
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never returns an error

	return hex.EncodeToString(b)
}
