package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/livevote/livevote/hub"
	"github.com/livevote/livevote/transport"
)

func TestConnectionCapPerIP(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxConnsPerIP = 3
	n := startNode(t, cfg)
	ev := n.createEvent("Cap")

	// Keep-alive HTTP connections count too. The server notices their close a moment
	// after the client drops them, so the first dials retry briefly.
	http.DefaultClient.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	held := make([]*websocket.Conn, 3)
	for i := range held {
		for {
			c, _, err := websocket.Dial(ctx, n.wsURL(ev.Event.Code), &websocket.DialOptions{Subprotocols: []string{transport.Subprotocol}})
			if err == nil {
				held[i] = c
				defer c.CloseNow()
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("connection %d of 3 refused: %v", i+1, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	_, resp, err := websocket.Dial(ctx, n.wsURL(ev.Event.Code), &websocket.DialOptions{Subprotocols: []string{transport.Subprotocol}})
	if err == nil {
		t.Fatal("fourth connection from one IP accepted with a cap of 3")
	}
	if resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("fourth connection answered %v, want 503 with Retry-After", resp)
	}

	held[0].Close(websocket.StatusNormalClosure, "")
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, _, err := websocket.Dial(ctx, n.wsURL(ev.Event.Code), &websocket.DialOptions{Subprotocols: []string{transport.Subprotocol}})
		if err == nil {
			c.CloseNow()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection possible after one of three closed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rawHandshake opens a WebSocket at the TCP level and then never reads or answers:
// a peer that died without closing.
func rawHandshake(t *testing.T, n *testNode, code string) net.Conn {
	t.Helper()
	addr := strings.TrimPrefix(n.base, "http://")
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	fmt.Fprintf(conn, "GET /ws?event=%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n\r\n",
		code, addr, base64.StdEncoding.EncodeToString(key), transport.Subprotocol)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("raw handshake: %v %v", resp, err)
	}
	return conn
}

func TestPingKeepsIdleAndDropsDead(t *testing.T) {
	cfg := testConfig(t)
	cfg.PingInterval = 150 * time.Millisecond
	n := startNode(t, cfg)
	ev := n.createEvent("Liveness")
	poll := n.createPoll(ev, hub.NewPoll{Question: "Q", Options: []string{"A", "B"}}, true)

	idle := n.dial(ev.Event.Code, "")
	dead := rawHandshake(t, n, ev.Event.Code)

	// The dead peer never answers a ping: it is dropped within two intervals (plus
	// scheduling slack), while the idle client, which answers pings, stays.
	start := time.Now()
	_ = dead.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, dead)
	if err != nil {
		t.Fatalf("dead peer not dropped: %v", err)
	}
	if took := time.Since(start); took > 2*cfg.PingInterval+time.Second {
		t.Fatalf("dead peer dropped after %s, want within two ping intervals", took)
	}
	time.Sleep(5 * cfg.PingInterval)
	idle.vote(poll.ID, "o1")
	if ack := idle.ack(); ack.Status != "accepted" {
		t.Fatalf("idle client after %s: %+v", 5*cfg.PingInterval, ack)
	}
}

func TestSlowHeadersTimeOut(t *testing.T) {
	n := startNode(t, testConfig(t))
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(n.base, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n")

	// The header is never finished; the server drops the connection after its header
	// timeout (5 s) instead of holding it.
	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, _ = io.Copy(io.Discard, conn)
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("slow header held for %s", took)
	}
}

func TestCrossSiteVoteRefused(t *testing.T) {
	n := startNode(t, testConfig(t))
	ev := n.createEvent("Cross-site")
	poll := n.createPoll(ev, hub.NewPoll{Question: "Q", Options: []string{"A", "B"}}, true)
	session := n.newSession()
	body := `{"vote_id":"` + uuid.NewString() + `","options":["o1"]}`

	cases := []struct {
		name   string
		header map[string]string
		status int
		code   string
	}{
		{"browser cross-site fetch", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, 401, "unauthorized"},
		{"form post content type", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 400, "invalid_message"},
		{"text/plain content type", map[string]string{"Content-Type": "text/plain"}, 400, "invalid_message"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			header := map[string]string{transport.SessionHeader: session}
			for k, v := range tc.header {
				header[k] = v
			}
			got := n.do("POST", "/api/polls/"+poll.ID+"/votes", body, header)
			if got.Status != tc.status || got.errorCode() != tc.code {
				t.Fatalf("answered %d %s, want %d %s", got.Status, got.Body, tc.status, tc.code)
			}
		})
	}
	// A same-origin browser request passes.
	got := n.do("POST", "/api/polls/"+poll.ID+"/votes", body, map[string]string{transport.SessionHeader: session, "Sec-Fetch-Site": "same-origin"})
	if got.Status != http.StatusAccepted {
		t.Fatalf("same-origin vote answered %d %s", got.Status, got.Body)
	}
}

// TestBadVoteInput is the catalogue of malformed votes in docs/limits.md: each gets its
// error code and the socket stays usable.
func TestBadVoteInput(t *testing.T) {
	n := startNode(t, testConfig(t))
	ev := n.createEvent("Bad input")
	single := n.createPoll(ev, hub.NewPoll{Question: "Single", Options: []string{"A", "B"}}, true)
	multi := n.createPoll(ev, hub.NewPoll{Question: "Multi", Options: []string{"A", "B", "C"}, Kind: hub.PollMultiple}, true)
	c := n.dial(ev.Event.Code, "")

	vote := func(poll, options string) string {
		return `{"type":"vote","vote_id":"` + uuid.NewString() + `","poll":"` + poll + `","options":` + options + `}`
	}
	cases := []struct {
		name  string
		frame string
		code  string
	}{
		{"empty vote", vote(single.ID, `[]`), "invalid_message"},
		{"null options", vote(single.ID, `null`), "invalid_message"},
		{"duplicate options", vote(multi.ID, `["o1","o1"]`), "invalid_message"},
		{"two options in a single-choice poll", vote(single.ID, `["o1","o2"]`), "invalid_message"},
		{"eleven options", vote(multi.ID, `["o1","o2","o3","o1","o2","o3","o1","o2","o3","o1","o2"]`), "invalid_message"},
		{"option with a NUL", vote(single.ID, `["o1\u0000"]`), "unknown_option"},
		{"option with a right-to-left override", vote(single.ID, `["\u202eo1"]`), "unknown_option"},
		{"lone surrogate", vote(single.ID, `["\ud800"]`), "unknown_option"},
		{"number as option", vote(single.ID, `[1]`), "invalid_message"},
		{"vote id not a UUID", `{"type":"vote","vote_id":"1","poll":"` + single.ID + `","options":["o1"]}`, "invalid_message"},
		{"unknown poll", vote(uuid.NewString(), `["o1"]`), "unknown_poll"},
		{"deeply nested", `{"type":"vote","options":` + strings.Repeat("[", 500) + strings.Repeat("]", 500) + `}`, "invalid_message"},
	}
	for _, tc := range cases {
		c.sendRaw(tc.frame)
		code := nextErrorCode(t, c)
		if code != tc.code {
			t.Errorf("%s: code %q, want %q", tc.name, code, tc.code)
		}
	}

	// A binary frame is refused with invalid_message and the socket stays open.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageBinary, []byte{0x81, 0x00}); err != nil {
		t.Fatal(err)
	}
	if code := nextErrorCode(t, c); code != "invalid_message" {
		t.Fatalf("binary frame: code %q, want invalid_message", code)
	}
	c.vote(single.ID, "o1")
	if ack := c.ack(); ack.Status != "accepted" {
		t.Fatalf("vote after bad input: %+v", ack)
	}
}

// nextErrorCode returns the code of the next error or rejected ack.
func nextErrorCode(t *testing.T, c *wsClient) string {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case frame, ok := <-c.frames:
			if !ok {
				t.Fatal("socket closed")
			}
			switch string(frame["type"]) {
			case `"error"`:
				return jsonField(frame["error"], "code")
			case `"ack"`:
				if string(frame["status"]) == `"rejected"` {
					return jsonField(frame["error"], "code")
				}
				t.Fatalf("bad input acknowledged: %s", frame["status"])
			}
		case <-deadline:
			t.Fatal("no answer to bad input within 5s")
		}
	}
}

func jsonField(raw []byte, name string) string {
	var m map[string]string
	_ = json.Unmarshal(raw, &m)
	return m[name]
}

// TestCompressedFrameRefused sends a frame marked as compressed (RSV1) on a socket that
// negotiated no compression: the server closes with 1002 instead of inflating it.
func TestCompressedFrameRefused(t *testing.T) {
	n := startNode(t, testConfig(t))
	ev := n.createEvent("Deflate")
	conn := rawHandshake(t, n, ev.Event.Code)

	payload := []byte("not really deflate")
	mask := [4]byte{1, 2, 3, 4}
	frame := []byte{0x80 | 0x40 | 0x1, 0x80 | byte(len(payload))}
	frame = append(frame, mask[:]...)
	for i, b := range payload {
		frame = append(frame, b^mask[i%4])
	}
	if _, err := conn.Write(frame); err != nil {
		t.Fatal(err)
	}

	// Skip the welcome message, then expect a close frame with status 1002.
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(conn)
	for {
		header := make([]byte, 2)
		if _, err := io.ReadFull(r, header); err != nil {
			t.Fatalf("connection ended without a close frame: %v", err)
		}
		length := int(header[1] & 0x7f)
		switch length {
		case 126:
			ext := make([]byte, 2)
			_, _ = io.ReadFull(r, ext)
			length = int(ext[0])<<8 | int(ext[1])
		case 127:
			t.Fatal("unexpected 64-bit frame length")
		}
		body := make([]byte, length)
		if _, err := io.ReadFull(r, body); err != nil {
			t.Fatal(err)
		}
		if header[0]&0x0f == 0x8 {
			if len(body) < 2 {
				t.Fatal("close frame without status")
			}
			if status := int(body[0])<<8 | int(body[1]); status != int(websocket.StatusProtocolError) {
				t.Fatalf("close status %d, want 1002", status)
			}
			return
		}
	}
}

// TestSlowBodyTimesOut sends a request whose body never finishes: the server gives up
// after its read timeout (15 s) instead of holding the connection.
func TestSlowBodyTimesOut(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the 15 s read timeout; skipped with -short")
	}
	n := startNode(t, testConfig(t))
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(n.base, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"title\":")

	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, _ = io.Copy(io.Discard, conn)
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("slow body held for %s", took)
	}
	if took := time.Since(start); took < 10*time.Second {
		t.Fatalf("connection ended after %s, before the read timeout: something else closed it", took)
	}
}
