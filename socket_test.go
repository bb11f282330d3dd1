package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/livevote/livevote/actors"
	"github.com/livevote/livevote/hub"
	"github.com/livevote/livevote/transport"
)

func (n *testNode) wsURL(code string) string {
	return "ws" + strings.TrimPrefix(n.base, "http") + "/ws?event=" + code
}

// waitClose reads until the server closes the socket and returns the close status.
func waitClose(t *testing.T, c *websocket.Conn, timeout time.Duration) websocket.StatusCode {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		_, _, err := c.Read(ctx)
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			t.Fatalf("socket still open after %s", timeout)
		}
		return websocket.CloseStatus(err)
	}
}

func TestSocketHandshakeChecks(t *testing.T) {
	n := startNode(t, testConfig(t))
	ev := n.createEvent("Handshakes")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("foreign origin refused", func(t *testing.T) {
		header := http.Header{"Origin": []string{"https://evil.example"}}
		_, resp, err := websocket.Dial(ctx, n.wsURL(ev.Event.Code), &websocket.DialOptions{Subprotocols: []string{transport.Subprotocol}, HTTPHeader: header})
		if err == nil {
			t.Fatal("cross-origin handshake accepted")
		}
		if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("cross-origin handshake answered %v, want 403", resp)
		}
	})
	t.Run("unknown event", func(t *testing.T) {
		_, resp, err := websocket.Dial(ctx, n.wsURL("ZZZZZZ"), &websocket.DialOptions{Subprotocols: []string{transport.Subprotocol}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
			t.Fatalf("unknown event handshake: err %v, response %v, want 404", err, resp)
		}
	})
	t.Run("subprotocol required", func(t *testing.T) {
		c, _, err := websocket.Dial(ctx, n.wsURL(ev.Event.Code), nil)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.CloseNow()
		if status := waitClose(t, c, 5*time.Second); status != websocket.StatusPolicyViolation {
			t.Fatalf("close status %d, want 1008", status)
		}
	})
	t.Run("message over read limit", func(t *testing.T) {
		c := n.dial(ev.Event.Code, "")
		c.sendRaw(`{"type":"vote","poll":"` + strings.Repeat("p", transport.DefaultMaxMessageBytes) + `"}`)
		// The client's reader goroutine sees the close; drain until the channel closes.
		deadline := time.After(5 * time.Second)
		for {
			select {
			case _, ok := <-c.frames:
				if !ok {
					if status := websocket.CloseStatus(c.readErr); status != websocket.StatusMessageTooBig {
						t.Fatalf("close status %d, want 1009", status)
					}
					return
				}
			case <-deadline:
				t.Fatal("socket not closed after a message over the read limit")
			}
		}
	})
}

// slowClient never reads, so its TCP buffers fill and then its send queue.
func TestSlowSocketClosedWith1013(t *testing.T) {
	n := startNode(t, testConfig(t))
	ev := n.createEvent("Slow consumer")
	poll := n.createPoll(ev, hub.NewPoll{Question: "Q", Options: []string{"A", "B"}}, true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	slow, _, err := websocket.Dial(ctx, n.wsURL(ev.Event.Code), &websocket.DialOptions{Subprotocols: []string{transport.Subprotocol}})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer slow.CloseNow()
	slow.SetReadLimit(8 << 20)
	healthy := n.dial(ev.Event.Code, "")

	// Large documents (about 100 KiB each) overflow the slow socket's kernel buffers and
	// then its queue of transport.DefaultSendQueue frames.
	big := actors.Results{Poll: poll.ID, Event: ev.Event.ID, Counts: map[string]int64{}}
	for i := range 5000 {
		big.Counts["filler-"+strings.Repeat("x", 4)+string(rune('a'+i%26))+time.Duration(i).String()] = int64(i)
	}
	// The healthy client reads each document before the next goes out, so only the
	// slow socket falls behind.
	for i := range 400 {
		big.Version = uint64(i + 1)
		n.app.hub.Publish(big)
		healthy.resultsUntil(poll.ID, 10*time.Second, func(d actors.Results) bool { return d.Version == big.Version })
	}

	// The server gave up on the slow socket. Its close frame (1013) gets through only
	// when the peer's buffers have room, so a dropped connection counts too.
	status := waitClose(t, slow, 30*time.Second)
	if status != websocket.StatusTryAgainLater && status != -1 {
		t.Fatalf("slow socket close status %d, want 1013 or a dropped connection", status)
	}
	metrics := string(n.do("GET", "/metrics", nil, nil).Body)
	if !strings.Contains(metrics, "livevote_slow_consumers_total 1") {
		t.Fatal("livevote_slow_consumers_total is not 1 after one slow socket")
	}
	if !strings.Contains(metrics, "livevote_sockets 1") {
		t.Fatal("livevote_sockets is not 1 after the slow socket was dropped")
	}
}

func TestShutdownClosesSocketsWith1001(t *testing.T) {
	n := startNode(t, testConfig(t))
	ev := n.createEvent("Shutdown")
	poll := n.createPoll(ev, hub.NewPoll{Question: "Q", Options: []string{"A", "B"}}, true)
	c := n.dial(ev.Event.Code, "")
	c.vote(poll.ID, "o1")
	if ack := c.ack(); ack.Status != "accepted" {
		t.Fatalf("vote before shutdown = %+v", ack)
	}

	n.close()

	for range c.frames {
	}
	err := c.readErr
	if status := websocket.CloseStatus(err); status != websocket.StatusGoingAway {
		t.Fatalf("close status %d (%v), want 1001", status, err)
	}
}

func TestHealthReadinessAndMetrics(t *testing.T) {
	n := startNode(t, testConfig(t))
	ev := n.createEvent("Metrics")
	poll := n.createPoll(ev, hub.NewPoll{Question: "Q", Options: []string{"A", "B"}}, true)
	n.httpVote(n.newSession(), poll.ID, "9a4fdc58-2d3f-4c1e-8f36-0c1d2b3a4e5f", "o1")
	c := n.dial(ev.Event.Code, "")
	_ = c

	for _, path := range []string{"/healthz", "/readyz"} {
		if got := n.do("GET", path, nil, nil); got.Status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, got.Status, got.Body)
		}
	}
	metrics := string(n.do("GET", "/metrics", nil, nil).Body)
	for _, want := range []string{
		`livevote_votes_total{outcome="accepted"} 1`,
		"livevote_ack_seconds_bucket",
		"livevote_sockets 1",
		"livevote_shard_batch_size_bucket",
		"livevote_shard_queue_depth",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
