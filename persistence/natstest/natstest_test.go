package natstest

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// connect connects to url and closes the connection when the test ends.
func connect(t *testing.T, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()

	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)

	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream.New: %v", err)
	}

	return nc, js
}

func TestStartSingleServer(t *testing.T) {
	t.Parallel()
	c := Start(t, 1)

	if c.Len() != 1 {
		t.Errorf("Len() = %d, want 1", c.Len())
	}
	if c.URLs() != c.URL(0) {
		t.Errorf("URLs() = %q, want URL(0) = %q", c.URLs(), c.URL(0))
	}
	if !strings.HasPrefix(c.URL(0), "nats://127.0.0.1:") {
		t.Errorf("URL(0) = %q, want a nats://127.0.0.1 URL", c.URL(0))
	}

	nc, js := connect(t, c.URL(0))
	if nc.MaxPayload() != MaxPayload {
		t.Errorf("max payload = %d, want %d", nc.MaxPayload(), MaxPayload)
	}

	_, err := js.AccountInfo(t.Context())
	if err != nil {
		t.Fatalf("AccountInfo: %v", err)
	}
}

// streamInfo returns the info of stream name, retried for up to 10 s while
// JetStream has no stream leader.
func streamInfo(t *testing.T, js jetstream.JetStream, name string) *jetstream.StreamInfo {
	t.Helper()

	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		stream, err := js.Stream(ctx, name)
		cancel()
		if err == nil {
			return stream.CachedInfo()
		}
		if time.Now().After(deadline) {
			t.Fatalf("info of stream %s: %v", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestClusterKillRestart(t *testing.T) {
	t.Parallel()
	c := Start(t, 3)
	ctx := t.Context()

	got := strings.Count(c.URLs(), ",") + 1
	if got != 3 {
		t.Fatalf("URLs() = %q lists %d URLs, want 3", c.URLs(), got)
	}
	for i := range 3 {
		if c.Index(c.Name(i)) != i {
			t.Errorf("Index(Name(%d)) = %d", i, c.Index(c.Name(i)))
		}
		if !c.Running(i) {
			t.Errorf("server %d does not run after Start", i)
		}
	}

	_, js := connect(t, c.URLs())
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "KIT", Subjects: []string{"kit.>"}, Storage: jetstream.FileStorage, Replicas: 3,
	})
	if err != nil {
		t.Fatalf("create R3 stream: %v", err)
	}
	_, err = js.Publish(ctx, "kit.1", []byte("one"))
	if err != nil {
		t.Fatalf("publish: %v", err)
	}

	info := streamInfo(t, js, "KIT")
	if info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream cluster info = %+v, want a leader and 2 replicas", info.Cluster)
	}
	leader := c.Index(info.Cluster.Leader)
	if leader < 0 {
		t.Fatalf("stream leader %q is not a server of the cluster", info.Cluster.Leader)
	}

	c.Kill(leader)
	c.Kill(leader) // a second Kill does nothing
	if c.Running(leader) {
		t.Errorf("server %d runs after Kill", leader)
	}
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(c.URL(leader), "nats://"), time.Second)
	if err == nil {
		conn.Close()
		t.Errorf("client port of killed server %d accepts connections", leader)
	}

	// Two of three servers keep a quorum, so the stream elects a new leader
	// and stores more messages.
	deadline := time.Now().Add(20 * time.Second)
	for {
		pubCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = js.Publish(pubCtx, "kit.2", []byte("two"))
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("publish with server %d killed: %v", leader, err)
		}
	}

	c.Restart(leader)
	if !c.Running(leader) {
		t.Fatalf("server %d does not run after Restart", leader)
	}

	// Restart waits for the full health check of the restarted server, so
	// its copy of the stream is current and has both messages.
	msgs := streamMessages(t, c, leader, "KIT")
	if msgs != 2 {
		t.Errorf("restarted server %d holds %d messages of stream KIT, want 2", leader, msgs)
	}
}

// streamMessages returns the message count of stream name in server i's
// own copy, read from its /jsz monitoring endpoint.
func streamMessages(t *testing.T, c *Cluster, i int, name string) uint64 {
	t.Helper()

	resp, err := http.Get(c.MonitorURL(i) + "/jsz?streams=true")
	if err != nil {
		t.Fatalf("GET /jsz of server %d: %v", i, err)
	}
	defer resp.Body.Close()

	var jsz struct {
		Accounts []struct {
			Streams []struct {
				Name  string `json:"name"`
				State struct {
					Msgs uint64 `json:"messages"`
				} `json:"state"`
			} `json:"stream_detail"`
		} `json:"account_details"`
	}
	err = json.NewDecoder(resp.Body).Decode(&jsz)
	if err != nil {
		t.Fatalf("decode /jsz of server %d: %v", i, err)
	}

	for _, acc := range jsz.Accounts {
		for _, stream := range acc.Streams {
			if stream.Name == name {
				return stream.State.Msgs
			}
		}
	}
	t.Fatalf("server %d has no copy of stream %s", i, name)

	return 0
}

func TestCleanupEndsServers(t *testing.T) {
	t.Parallel()

	var addrs []string
	var logDir string
	t.Run("cluster", func(t *testing.T) {
		c := Start(t, 2)
		for i := range c.Len() {
			addrs = append(addrs, strings.TrimPrefix(c.URL(i), "nats://"))
		}
		logDir = c.logDir
	})

	for _, addr := range addrs {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			t.Errorf("%s accepts connections after the test that started its server ended", addr)
		}
	}

	_, err := os.Stat(logDir)
	if !os.IsNotExist(err) {
		t.Errorf("log directory %s of a passed test: Stat error %v, want it removed", logDir, err)
	}
}
