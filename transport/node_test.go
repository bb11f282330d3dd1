package transport_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livevote/livevote/actors"
	"github.com/livevote/livevote/hub"
	"github.com/livevote/livevote/persistence"
	"github.com/livevote/livevote/static"
	"github.com/livevote/livevote/transport"
)

// node is a whole LiveVote stack in the test process: an embedded NATS server with
// JetStream on a temporary directory, the shard actors, the hub and the HTTP server
// on 127.0.0.1.
type node struct {
	t      testing.TB
	base   string
	store  *persistence.Store
	shards *actors.System
	hub    *hub.Hub
	server *transport.Server
	served chan error
}

type nodeOptions struct {
	shards            int
	broadcastInterval time.Duration
	operatorKey       string
}

func startNode(t testing.TB, opts nodeOptions) *node {
	t.Helper()
	if opts.shards == 0 {
		opts.shards = 4
	}
	if opts.broadcastInterval == 0 {
		opts.broadcastInterval = 100 * time.Millisecond
	}
	logger := slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	n := &node{t: t, served: make(chan error, 1)}
	store, err := persistence.Open(ctx, persistence.Config{DataDir: t.TempDir(), Logger: logger})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	n.store = store
	t.Cleanup(n.stop)

	ring, err := store.LoadOrCreateRing(ctx, opts.shards)
	if err != nil {
		t.Fatalf("ring: %v", err)
	}
	hashRing, err := hub.NewRing(ring.Salt, ring.Shards)
	if err != nil {
		t.Fatalf("hash ring: %v", err)
	}
	key, err := store.LoadOrCreateSecret(ctx, "session-key", 32)
	if err != nil {
		t.Fatalf("session key: %v", err)
	}
	sessions, err := hub.NewSessions(key)
	if err != nil {
		t.Fatalf("sessions: %v", err)
	}
	registry := hub.NewRegistry(store, logger)
	if err := registry.Load(ctx); err != nil {
		t.Fatalf("load registry: %v", err)
	}

	reg := prometheus.NewRegistry()
	var publishTo atomic.Pointer[hub.Hub]
	n.shards, err = actors.Start(ctx, actors.Config{
		Shards: ring.Shards, Store: store, Logger: logger, BroadcastInterval: opts.broadcastInterval, Registerer: reg,
		Publish: func(doc actors.Results) {
			if h := publishTo.Load(); h != nil {
				h.Publish(doc)
			}
		},
	})
	if err != nil {
		t.Fatalf("start actors: %v", err)
	}
	metrics := hub.NewMetrics(reg)
	n.hub, err = hub.New(hub.Config{Registry: registry, Sessions: sessions, Ring: hashRing, Shards: n.shards, Metrics: metrics, Logger: logger})
	if err != nil {
		t.Fatalf("hub: %v", err)
	}
	publishTo.Store(n.hub)

	n.server, err = transport.New(transport.Config{
		Hub: n.hub, Static: static.Files, Ready: n.shards.Ready, Gatherer: reg, Metrics: metrics, Logger: logger,
		OperatorKey: opts.operatorKey, PresenceInterval: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("server: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	n.base = "http://" + ln.Addr().String()
	go func() { n.served <- n.server.Serve(ln) }()

	if err := n.shards.WaitReady(ctx); err != nil {
		t.Fatalf("shards not ready: %v", err)
	}
	return n
}

// stop shuts the node down in the order the binary uses.
func (n *node) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	if n.hub != nil {
		n.hub.Drain()
	}
	if n.server != nil {
		if err := n.server.Shutdown(ctx); err != nil {
			n.t.Errorf("server shutdown: %v", err)
		}
		if err := <-n.served; err != nil {
			n.t.Errorf("serve: %v", err)
		}
	}
	if n.shards != nil {
		if err := n.shards.Stop(ctx); err != nil {
			n.t.Errorf("stop actors: %v", err)
		}
	}
	if err := n.store.Close(); err != nil {
		n.t.Errorf("close store: %v", err)
	}
}

type testLogWriter struct{ t testing.TB }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// response is a finished HTTP exchange.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) errorCode() string {
	var body struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(r.body, &body)
	return body.Error.Code
}

// do sends a request with an optional JSON body and bearer token.
func (n *node) do(method, path string, body any, token string) response {
	n.t.Helper()
	var reader io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			n.t.Fatalf("encode body: %v", err)
		}
		reader = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, n.base+path, reader)
	if err != nil {
		n.t.Fatalf("new request: %v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		n.t.Fatalf("read %s %s: %v", method, path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}
}

func decode[T any](t testing.TB, r response, wantStatus int) T {
	t.Helper()
	if r.status != wantStatus {
		t.Fatalf("status %d, want %d: %s", r.status, wantStatus, r.body)
	}
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
	return v
}

type createdEvent struct {
	Event          hub.Event `json:"event"`
	PresenterToken string    `json:"presenter_token"`
}

func (n *node) createEvent(title string) createdEvent {
	n.t.Helper()
	return decode[createdEvent](n.t, n.do("POST", "/api/events", map[string]string{"title": title}, ""), http.StatusCreated)
}

func (n *node) createPoll(ev createdEvent, p hub.NewPoll, open bool) hub.Poll {
	n.t.Helper()
	poll := decode[hub.Poll](n.t, n.do("POST", "/api/events/"+ev.Event.Code+"/polls", p, ev.PresenterToken), http.StatusCreated)
	if open {
		poll = decode[hub.Poll](n.t, n.do("POST", "/api/polls/"+poll.ID+"/open", nil, ev.PresenterToken), http.StatusOK)
	}
	return poll
}
