package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/livevote/livevote/actors"
	"github.com/livevote/livevote/hub"
	"github.com/livevote/livevote/transport"
)

// checkEvery is how many documents go out between two reads of the socket gauge.
const checkEvery = 10

// stuckReadBuffer is the receive buffer of a stuck socket, in bytes: small, so that
// the server's side fills after a few documents.
const stuckReadBuffer = 4 << 10

// broadcastDelays holds the Publish-to-receipt delays at the healthy sockets.
type broadcastDelays []time.Duration

func (d broadcastDelays) quantile(q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	sorted := slices.Clone(d)
	slices.Sort(sorted)
	return sorted[int(q*float64(len(sorted)-1))]
}

// stuckOutcome is what a broadcast run with stuck sockets measured.
type stuckOutcome struct {
	baseline, withStuck broadcastDelays
	docsUntilMarked     int           // documents published until every stuck socket's queue was full
	markedAfter         time.Duration // from the first document with stuck sockets
	docsUntilClosed     int           // documents published until every stuck socket was gone
	closedAfter         time.Duration // from the first document with stuck sockets
	goroutinesBefore    int           // before the stuck sockets connected
	goroutinesStuck     int           // with the stuck sockets connected
	goroutinesAfter     int           // once they were closed
}

// healthyReader reads every frame of a WebSocket and reports the version and receipt
// time of each results document.
type healthyReader struct {
	conn *websocket.Conn
	got  chan receipt
}

type receipt struct {
	version uint64
	at      time.Time
}

var versionKey = []byte(`"version":`)

func (h *healthyReader) run(ctx context.Context) {
	defer close(h.got)
	for {
		_, data, err := h.conn.Read(ctx)
		if err != nil {
			return
		}
		at := time.Now()
		if !bytes.Contains(data, []byte(`"type":"results"`)) {
			continue
		}
		i := bytes.Index(data, versionKey)
		if i < 0 {
			continue
		}
		rest := data[i+len(versionKey):]
		end := bytes.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
		if end < 0 {
			end = len(rest)
		}
		v, err := strconv.ParseUint(string(rest[:end]), 10, 64)
		if err != nil {
			continue
		}
		select {
		case h.got <- receipt{v, at}:
		case <-ctx.Done():
			return
		}
	}
}

// waitVersion returns the receipt time of version v, skipping older documents.
func (h *healthyReader) waitVersion(v uint64, timeout time.Duration) (time.Time, error) {
	deadline := time.After(timeout)
	for {
		select {
		case r, ok := <-h.got:
			if !ok {
				return time.Time{}, fmt.Errorf("healthy socket closed while waiting for version %d", v)
			}
			if r.version == v {
				return r.at, nil
			}
		case <-deadline:
			return time.Time{}, fmt.Errorf("version %d not received within %s", v, timeout)
		}
	}
}

// dialStuck opens a WebSocket at the TCP level with a small receive buffer and never
// reads from it after the handshake, so its buffers fill and then its send queue.
func dialStuck(tb testing.TB, n *testNode, code string) net.Conn {
	tb.Helper()
	addr := strings.TrimPrefix(n.base, "http://")
	dialer := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, raw syscall.RawConn) error {
		var sockErr error
		err := raw.Control(func(fd uintptr) {
			sockErr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, stuckReadBuffer)
		})
		if err != nil {
			return err
		}
		return sockErr
	}}
	conn, err := dialer.Dial("tcp", addr)
	if err != nil {
		tb.Fatalf("dial stuck socket: %v", err)
	}
	tb.Cleanup(func() { conn.Close() })
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	fmt.Fprintf(conn, "GET /ws?event=%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n\r\n",
		code, addr, base64.StdEncoding.EncodeToString(key), transport.Subprotocol)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		tb.Fatalf("stuck socket handshake: %v %v", resp, err)
	}
	return conn
}

// fillerDoc returns a results document of about 40 KiB.
func fillerDoc(poll, event string) actors.Results {
	doc := actors.Results{Poll: poll, Event: event, Counts: make(map[string]int64, 1600)}
	for i := range 1600 {
		doc.Counts[fmt.Sprintf("filler-%04d", i)] = int64(i)
	}
	return doc
}

// queueFullLog is the message the server logs when it closes a socket whose send
// queue is full.
const queueFullLog = "slow websocket closed"

// countingHandler counts the records logged with queueFullLog and passes warnings and
// errors on to the test log.
type countingHandler struct {
	next      slog.Handler
	queueFull *atomic.Int64
}

func (h countingHandler) Enabled(_ context.Context, level slog.Level) bool {
	return level >= slog.LevelInfo
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == queueFullLog {
		h.queueFull.Add(1)
	}
	if r.Level >= slog.LevelWarn {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h countingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return countingHandler{next: h.next.WithAttrs(attrs), queueFull: h.queueFull}
}

func (h countingHandler) WithGroup(name string) slog.Handler {
	return countingHandler{next: h.next.WithGroup(name), queueFull: h.queueFull}
}

// slowClientNode starts a node that lets one client IP open every socket of the test,
// and returns the count of sockets it closed because their send queue was full.
func slowClientNode(tb testing.TB) (*testNode, *atomic.Int64) {
	cfg := testConfig(tb)
	cfg.SessionRate, cfg.SessionBurst = 1e6, 1e6
	cfg.BroadcastInterval = time.Hour
	queueFull := new(atomic.Int64)
	handler := countingHandler{next: slog.NewTextHandler(testWriter{tb}, nil), queueFull: queueFull}
	return startNodeWithLogger(tb, cfg, slog.New(handler)), queueFull
}

// runStuckBroadcast connects healthy reading sockets and measures Publish-to-receipt
// delays over baselineDocs documents. It then connects stuck sockets and publishes
// until the server has closed all of them (checked every checkEvery documents, at most
// maxDocs documents), measuring the same delays, and waits until their goroutines are gone.
func runStuckBroadcast(tb testing.TB, n *testNode, queueFull *atomic.Int64, healthy, stuck, baselineDocs, maxDocs int) stuckOutcome {
	tb.Helper()
	ev := n.createEvent("Stuck sockets")
	poll := n.createPoll(ev, hub.NewPoll{Question: "Q", Options: []string{"A", "B"}}, true)
	readers := connectHealthy(tb, n, ev.Event.Code, healthy)

	doc := fillerDoc(poll.ID, ev.Event.ID)
	var out stuckOutcome
	for range baselineDocs {
		out.baseline = append(out.baseline, publishAndWait(tb, n, readers, &doc)...)
	}
	out.goroutinesBefore = settledGoroutines(0, 5*time.Second)

	for range stuck {
		dialStuck(tb, n, ev.Event.Code)
	}
	waitSockets(tb, n, healthy+stuck, 10*time.Second)
	out.goroutinesStuck = runtime.NumGoroutine()

	start := time.Now()
	for out.docsUntilClosed%checkEvery != 0 || socketsOpen(tb, n) > healthy {
		if out.docsUntilClosed == maxDocs {
			tb.Fatalf("%d sockets still open after %d documents; want the %d stuck ones closed", socketsOpen(tb, n), out.docsUntilClosed, stuck)
		}
		out.withStuck = append(out.withStuck, publishAndWait(tb, n, readers, &doc)...)
		out.docsUntilClosed++
		if out.docsUntilMarked == 0 && queueFull.Load() >= int64(stuck) {
			out.docsUntilMarked, out.markedAfter = out.docsUntilClosed, time.Since(start)
		}
	}
	out.closedAfter = time.Since(start)
	out.goroutinesAfter = settledGoroutines(out.goroutinesBefore, 30*time.Second)
	return out
}

func connectHealthy(tb testing.TB, n *testNode, code string, count int) []*healthyReader {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	tb.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	readers := make([]*healthyReader, count)
	for i := range readers {
		c, _, err := websocket.Dial(ctx, n.wsURL(code), &websocket.DialOptions{Subprotocols: []string{transport.Subprotocol}})
		if err != nil {
			tb.Fatalf("dial healthy socket: %v", err)
		}
		c.SetReadLimit(1 << 20)
		tb.Cleanup(func() { c.CloseNow() })
		readers[i] = &healthyReader{conn: c, got: make(chan receipt, 16)}
		wg.Go(func() { readers[i].run(ctx) })
	}
	return readers
}

// publishAndWait publishes the next version of doc and returns its delay at every
// healthy socket.
func publishAndWait(tb testing.TB, n *testNode, readers []*healthyReader, doc *actors.Results) broadcastDelays {
	tb.Helper()
	doc.Version++
	sent := time.Now()
	n.app.hub.Publish(*doc)
	delays := make(broadcastDelays, 0, len(readers))
	for _, r := range readers {
		at, err := r.waitVersion(doc.Version, 10*time.Second)
		if err != nil {
			tb.Fatal(err)
		}
		delays = append(delays, at.Sub(sent))
	}
	return delays
}

// socketsOpen reads the livevote_sockets gauge.
func socketsOpen(tb testing.TB, n *testNode) int {
	tb.Helper()
	for line := range strings.Lines(string(n.do("GET", "/metrics", nil, nil).Body)) {
		if value, ok := strings.CutPrefix(line, "livevote_sockets "); ok {
			count, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
			if err != nil {
				tb.Fatalf("livevote_sockets %q: %v", value, err)
			}
			return int(count)
		}
	}
	tb.Fatal("/metrics has no livevote_sockets gauge")
	return 0
}

func waitSockets(tb testing.TB, n *testNode, want int, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for socketsOpen(tb, n) != want {
		if time.Now().After(deadline) {
			tb.Fatalf("livevote_sockets %d after %s, want %d", socketsOpen(tb, n), timeout, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settledGoroutines waits until the goroutine count is at most target plus a
// tolerance of 10 (timers, HTTP keep-alive), or the timeout passes, and returns it.
// A target of zero waits for two equal counts 100 ms apart instead.
func settledGoroutines(target int, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	last := runtime.NumGoroutine()
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		now := runtime.NumGoroutine()
		if (target == 0 && now == last) || (target > 0 && now <= target+10) {
			return now
		}
		last = now
	}
	return runtime.NumGoroutine()
}

// slowConsumers reads the livevote_slow_consumers_total counter.
func slowConsumers(tb testing.TB, n *testNode) int {
	tb.Helper()
	for line := range strings.Lines(string(n.do("GET", "/metrics", nil, nil).Body)) {
		if value, ok := strings.CutPrefix(line, "livevote_slow_consumers_total "); ok {
			count, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
			if err != nil {
				tb.Fatalf("livevote_slow_consumers_total %q: %v", value, err)
			}
			return int(count)
		}
	}
	return 0
}

// TestStuckSocketsDoNotDelayOthers connects 50 reading sockets and 100 sockets that
// never read to one event and publishes results documents of about 40 KiB. The server
// closes every stuck socket because its send queue is full, their goroutines end, and
// the median delay from Publish to receipt at the reading sockets stays within 10% plus
// 50 ms of the median measured before the stuck sockets connected.
func TestStuckSocketsDoNotDelayOthers(t *testing.T) {
	const (
		healthy = 50
		stuck   = 100
	)
	n, queueFull := slowClientNode(t)
	out := runStuckBroadcast(t, n, queueFull, healthy, stuck, 100, 2000)
	logStuckOutcome(t, healthy, stuck, out)

	if got := queueFull.Load(); got != stuck {
		t.Errorf("%d sockets closed for a full send queue, want %d (one per stuck socket)", got, stuck)
	}
	if got := slowConsumers(t, n); got != stuck {
		t.Errorf("livevote_slow_consumers_total %d, want %d (one per stuck socket)", got, stuck)
	}
	if out.goroutinesAfter > out.goroutinesBefore+10 {
		t.Errorf("%d goroutines after the stuck sockets were closed, %d before they connected: their goroutines did not end", out.goroutinesAfter, out.goroutinesBefore)
	}
	base, with := out.baseline.quantile(0.5), out.withStuck.quantile(0.5)
	// The absolute slack covers other test packages sharing the cores in a full run;
	// BenchmarkBroadcastWithStuckSockets gives the figure on a quiet machine.
	if limit := base + base/10 + 50*time.Millisecond; with > limit {
		t.Errorf("median delay %s with %d stuck sockets, %s without: over the limit of %s", with, stuck, base, limit)
	}
}

func logStuckOutcome(tb testing.TB, healthy, stuck int, out stuckOutcome) {
	tb.Logf("%d healthy, %d stuck: baseline p50 %s p90 %s p99 %s; with stuck p50 %s p90 %s p99 %s; %d documents (%s) until every stuck socket's queue was full, %d (%s) until every one was gone; goroutines %d before, %d with stuck, %d after",
		healthy, stuck,
		out.baseline.quantile(0.5), out.baseline.quantile(0.9), out.baseline.quantile(0.99),
		out.withStuck.quantile(0.5), out.withStuck.quantile(0.9), out.withStuck.quantile(0.99),
		out.docsUntilMarked, out.markedAfter.Round(time.Millisecond), out.docsUntilClosed, out.closedAfter.Round(time.Millisecond),
		out.goroutinesBefore, out.goroutinesStuck, out.goroutinesAfter)
}

// BenchmarkBroadcastWithStuckSockets runs the measurement of
// TestStuckSocketsDoNotDelayOthers with 50 reading and 1,000 stuck sockets. Run it
// once per invocation: go test -run '^$' -bench BenchmarkBroadcastWithStuckSockets -benchtime 1x.
func BenchmarkBroadcastWithStuckSockets(b *testing.B) {
	const (
		healthy = 50
		stuck   = 1000
	)
	for range b.N {
		n, queueFull := slowClientNode(b)
		out := runStuckBroadcast(b, n, queueFull, healthy, stuck, 200, 5000)
		logStuckOutcome(b, healthy, stuck, out)
		if got := queueFull.Load(); got != stuck {
			b.Errorf("%d sockets closed for a full send queue, want %d", got, stuck)
		}
		b.ReportMetric(float64(out.baseline.quantile(0.5).Microseconds())/1000, "base-p50-ms")
		b.ReportMetric(float64(out.baseline.quantile(0.99).Microseconds())/1000, "base-p99-ms")
		b.ReportMetric(float64(out.withStuck.quantile(0.5).Microseconds())/1000, "stuck-p50-ms")
		b.ReportMetric(float64(out.withStuck.quantile(0.99).Microseconds())/1000, "stuck-p99-ms")
		b.ReportMetric(float64(out.docsUntilMarked), "docs-to-full")
		b.ReportMetric(out.markedAfter.Seconds(), "s-to-full")
		b.ReportMetric(float64(out.docsUntilClosed), "docs-to-close")
		b.ReportMetric(out.closedAfter.Seconds(), "s-to-close")
		b.ReportMetric(float64(out.goroutinesAfter-out.goroutinesBefore), "goroutines-left")
		n.close()
	}
}
