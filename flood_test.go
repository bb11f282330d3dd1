package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/livevote/livevote/hub"
	"github.com/livevote/livevote/transport"
)

// floodHeapCap is the maximum growth of the heap (runtime.MemStats.HeapInuse) of the
// test process, server and clients together, while a node is flooded with votes.
const floodHeapCap = 256 << 20

// floodTally counts the answers of a vote flood.
type floodTally struct {
	accepted, overloaded, other atomic.Int64
	missingHint                 atomic.Int64 // overloaded answers without a retry hint
	firstOther                  atomic.Value // the first answer counted in other, as text
	slowest                     atomic.Int64 // longest wait for one answer, in nanoseconds
	httpOverloaded              atomic.Int64
	httpWithRetryAfter          atomic.Int64
}

func (f *floodTally) waited(d time.Duration) {
	for {
		old := f.slowest.Load()
		if int64(d) <= old || f.slowest.CompareAndSwap(old, int64(d)) {
			return
		}
	}
}

// TestFloodAnswersOverloadedWithBoundedHeap floods a one-shard node over WebSocket with
// more votes in flight than the shard may hold (actors.DefaultMaxQueue plus one batch).
// Votes past that limit get overloaded with a retry hint (the WebSocket ack, or HTTP
// 503 with Retry-After) instead of waiting. Every vote gets its ack within 20 s, which
// is the hub's 10 s wait for a shard plus slack for -race on a busy machine. The heap
// stays under floodHeapCap.
func TestFloodAnswersOverloadedWithBoundedHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("floods a node with votes for several seconds; skipped with -short")
	}
	const (
		sockets  = 400
		inFlight = transport.DefaultVotesInFlight
		duration = 6 * time.Second
		// httpProbes is how many HTTP voters vote during the flood, one vote at a time.
		httpProbes = 16
	)
	cfg := testConfig(t)
	cfg.Shards = 1
	cfg.VoteRate, cfg.VoteBurst = 1e9, 1e9
	cfg.SessionRate, cfg.SessionBurst = 1e6, 1e6
	cfg.BroadcastInterval = time.Second
	// Every refused vote logs a warning; keep errors only.
	n := startNodeWithLogger(t, cfg, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelError})))
	ev := n.createEvent("Flood")
	poll := n.createPoll(ev, hub.NewPoll{Question: "Q", Options: []string{"A", "B"}, AllowChange: true}, true)

	conns := make([]*websocket.Conn, sockets)
	for i := range conns {
		c, _, err := websocket.Dial(context.Background(), n.wsURL(ev.Event.Code), &websocket.DialOptions{Subprotocols: []string{transport.Subprotocol}})
		if err != nil {
			t.Fatalf("dial socket %d: %v", i, err)
		}
		c.SetReadLimit(1 << 20)
		defer c.CloseNow()
		conns[i] = c
	}

	var tally floodTally
	var peakHeap atomic.Uint64
	// Earlier tests in this process leave garbage and caches behind, so the cap
	// applies to the growth over the live heap measured here.
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { sampleHeap(ctx, &peakHeap) })
	for range httpProbes {
		wg.Go(func() { probeHTTP(ctx, t, n, poll.ID, &tally) })
	}
	for i, c := range conns {
		wg.Go(func() {
			if err := floodSocket(ctx, c, poll.ID, poll.Options[i%2].ID, inFlight, &tally); err != nil {
				t.Errorf("socket %d: %v", i, err)
			}
		})
	}
	wg.Wait()

	t.Logf("%d sockets x %d votes in flight for %s: %d accepted, %d overloaded, %d other; slowest answer %s; HTTP probe: %d overloaded, %d with Retry-After; peak HeapInuse %.1f MiB",
		sockets, inFlight, duration, tally.accepted.Load(), tally.overloaded.Load(), tally.other.Load(),
		time.Duration(tally.slowest.Load()).Round(time.Millisecond), tally.httpOverloaded.Load(), tally.httpWithRetryAfter.Load(),
		float64(peakHeap.Load())/(1<<20))
	if tally.overloaded.Load() == 0 {
		t.Fatal("no vote was answered overloaded: the flood never filled the shard queue")
	}
	if tally.missingHint.Load() > 0 {
		t.Fatalf("%d overloaded acks lacked the code or the retry hint", tally.missingHint.Load())
	}
	// Whether a one-at-a-time HTTP voter meets a full queue depends on timing, so only
	// the 503s that occurred are checked; TestErrorCodes/overloaded always sends one.
	if tally.httpOverloaded.Load() != tally.httpWithRetryAfter.Load() {
		t.Fatalf("%d HTTP 503 answers, only %d with Retry-After", tally.httpOverloaded.Load(), tally.httpWithRetryAfter.Load())
	}
	// Every vote gets accepted or overloaded: the vote limit is set out of reach, so a
	// rate_limited reply here means the limiter refused a caller that read the clock
	// before a later call of its session took the lock.
	if other := tally.other.Load(); other > 0 {
		t.Fatalf("%d votes answered neither accepted nor overloaded; the first: %v", other, tally.firstOther.Load())
	}
	if slowest := time.Duration(tally.slowest.Load()); slowest > 20*time.Second {
		t.Fatalf("a vote waited %s for its answer, longer than the hub's 10 s wait for a shard plus 10 s of slack", slowest)
	}
	if growth := int64(peakHeap.Load()) - int64(before.HeapInuse); growth > floodHeapCap {
		t.Fatalf("HeapInuse grew by %d MiB during the flood, over the cap of %d MiB", growth>>20, floodHeapCap>>20)
	}
}

// floodSocket keeps up to inFlight votes waiting for their acks on c until ctx ends,
// then waits for the acks still due. It records each answer and its wait in tally.
func floodSocket(ctx context.Context, c *websocket.Conn, poll, option string, inFlight int, tally *floodTally) error {
	var (
		mu   sync.Mutex
		sent = make(map[string]time.Time)
		slot = make(chan struct{}, inFlight)
		done = make(chan error, 1)
	)
	readCtx, cancelRead := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancelRead()
	go func() { done <- readAcks(readCtx, c, &mu, sent, slot, tally) }()

	for ctx.Err() == nil {
		select {
		case slot <- struct{}{}:
		case <-ctx.Done():
			continue
		case err := <-done:
			return err
		}
		id := uuid.NewString()
		mu.Lock()
		sent[id] = time.Now()
		mu.Unlock()
		frame := fmt.Sprintf(`{"type":"vote","vote_id":%q,"poll":%q,"options":[%q]}`, id, poll, option)
		if err := c.Write(readCtx, websocket.MessageText, []byte(frame)); err != nil {
			return fmt.Errorf("write vote: %w", err)
		}
	}

	// Wait until every vote sent has its ack.
	for range inFlight {
		select {
		case slot <- struct{}{}:
		case err := <-done:
			return err
		case <-readCtx.Done():
			mu.Lock()
			defer mu.Unlock()
			return fmt.Errorf("%d votes without an answer after 60 s", len(sent))
		}
	}
	return nil
}

// readAcks reads frames from c, matches acks to the votes in sent and frees a slot for
// each, until readCtx ends or the socket fails.
func readAcks(readCtx context.Context, c *websocket.Conn, mu *sync.Mutex, sent map[string]time.Time, slot chan struct{}, tally *floodTally) error {
	for {
		_, data, err := c.Read(readCtx)
		if err != nil {
			if readCtx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read: %w", err)
		}
		var ack wsAck
		if err := json.Unmarshal(data, &ack); err != nil {
			return fmt.Errorf("decode %q: %w", data, err)
		}
		if ack.Type != "ack" {
			continue
		}
		mu.Lock()
		at, ok := sent[ack.VoteID]
		delete(sent, ack.VoteID)
		mu.Unlock()
		if !ok {
			return fmt.Errorf("ack for a vote never sent: %s", data)
		}
		tally.waited(time.Since(at))
		switch {
		case ack.Status == "accepted":
			tally.accepted.Add(1)
		case ack.Error != nil && ack.Error.Code == "overloaded":
			tally.overloaded.Add(1)
			if !strings.Contains(ack.Error.Message, "retry") {
				tally.missingHint.Add(1)
			}
		default:
			if tally.other.Add(1) == 1 {
				tally.firstOther.Store(string(data))
			}
		}
		<-slot
	}
}

// probeHTTP sends HTTP votes one after another during the flood and counts the 503
// answers and those among them that carry Retry-After.
func probeHTTP(ctx context.Context, t *testing.T, n *testNode, poll string, tally *floodTally) {
	_, session := n.app.hub.Sessions().New()
	client := &http.Client{Timeout: 20 * time.Second}
	for ctx.Err() == nil {
		body := fmt.Sprintf(`{"vote_id":%q,"options":["o1"]}`, uuid.NewString())
		// A connection that breaks under the flood is retried with the same
		// vote id, as clients do, up to three times in all.
		var (
			resp *http.Response
			err  error
		)
		for attempt := 1; attempt <= 3; attempt++ {
			req, _ := http.NewRequest("POST", n.base+"/api/polls/"+poll+"/votes", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set(transport.SessionHeader, session)
			resp, err = client.Do(req)
			if err == nil {
				break
			}
			t.Logf("HTTP vote during the flood, attempt %d: %v", attempt, err)
		}
		if err != nil {
			t.Errorf("HTTP vote during the flood got no answer in 3 attempts: %v", err)
			return
		}
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusAccepted:
		case http.StatusServiceUnavailable:
			tally.httpOverloaded.Add(1)
			if resp.Header.Get("Retry-After") != "" {
				tally.httpWithRetryAfter.Add(1)
			}
		default:
			t.Errorf("HTTP vote during the flood answered %d", resp.StatusCode)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sampleHeap records the largest HeapInuse seen every 20 ms until ctx ends.
func sampleHeap(ctx context.Context, peak *atomic.Uint64) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var m runtime.MemStats
	for {
		runtime.ReadMemStats(&m)
		if m.HeapInuse > peak.Load() {
			peak.Store(m.HeapInuse)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
