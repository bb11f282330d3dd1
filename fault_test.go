package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/livevote/livevote/hub"
	"github.com/livevote/livevote/persistence/natstest"
	"github.com/livevote/livevote/transport"
)

// freeAddr returns a loopback address for a server that a test restarts where the
// clients already point. Its port is reserved against other test processes until
// this one exits.
func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := natstest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// retryingVoter sends one vote until it gets an answer that settles it: accepted or
// duplicate. Connection errors, timeouts and overloaded answers leave it unknown and
// it retries with the same vote id, as a real client must; a rate_limited answer
// makes it wait the time that the answer gives first.
type retryingVoter struct {
	session, voteID, option string
	settled                 atomic.Bool
	attempts                atomic.Int32
}

func (v *retryingVoter) run(ctx context.Context, client *http.Client, base *atomic.Value, poll string) error {
	body, _ := json.Marshal(map[string]any{"vote_id": v.voteID, "options": []string{v.option}})
	for ctx.Err() == nil {
		v.attempts.Add(1)
		req, _ := http.NewRequestWithContext(ctx, "POST", base.Load().(string)+"/api/polls/"+poll+"/votes", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(transport.SessionHeader, v.session)
		resp, err := client.Do(req)
		if err == nil {
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusAccepted:
				v.settled.Store(true)
				return nil
			case http.StatusServiceUnavailable:
			case http.StatusTooManyRequests:
				// Fast retries of 503 replies can use up the session's vote
				// rate, so a client waits for the time that the reply gives.
				var e struct {
					Error struct {
						RetryAfterMs int `json:"retry_after_ms"`
					} `json:"error"`
				}
				wait := time.Second
				if json.Unmarshal(data, &e) == nil && e.Error.RetryAfterMs > 0 {
					wait = time.Duration(e.Error.RetryAfterMs) * time.Millisecond
				}
				time.Sleep(wait)
			default:
				return fmt.Errorf("vote %s answered %d: %s", v.voteID, resp.StatusCode, data)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("vote %s not settled after %d attempts", v.voteID, v.attempts.Load())
}

// TestSIGKILLDuringSurge kills the server several times while voters are voting and
// retrying. Every voter ends acknowledged, and the final tally counts each exactly once.
func TestSIGKILLDuringSurge(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts the binary several times; skipped with -short")
	}
	const (
		voters     = 300
		killPoints = 3
	)
	dataDir, addr := t.TempDir(), freeAddr(t)
	node := startChildAt(t, dataDir, addr)
	ev := node.createEvent("Kill surge")
	poll := node.createPoll(ev, hub.NewPoll{Question: "Still here?", Options: []string{"Yes", "No"}}, true)

	all := make([]*retryingVoter, voters)
	for i := range all {
		all[i] = &retryingVoter{session: node.newSession(), voteID: uuid.NewString(), option: poll.Options[i%2].ID}
	}
	var base atomic.Value
	base.Store(node.base)
	client := &http.Client{Timeout: 3 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	var wg sync.WaitGroup
	for i, v := range all {
		wg.Go(func() {
			time.Sleep(time.Duration(i%100) * time.Millisecond)
			if err := v.run(ctx, client, &base, poll.ID); err != nil {
				t.Error(err)
			}
		})
	}
	for k := range killPoints {
		time.Sleep(time.Duration(30+40*k) * time.Millisecond)
		node.kill()
		node = startChildAt(t, dataDir, addr)
	}
	wg.Wait()

	want := map[string]int64{"o1": voters / 2, "o2": voters / 2}
	doc := node.closeAndWaitFinal(ev, poll.ID)
	if doc.Counts["o1"] != want["o1"] || doc.Counts["o2"] != want["o2"] || doc.Voters != voters {
		t.Fatalf("after %d kills: final %v voters %d, want %v and %d", killPoints, doc.Counts, doc.Voters, want, voters)
	}
	retried := 0
	for _, v := range all {
		if v.attempts.Load() > 1 {
			retried++
		}
	}
	t.Logf("%d voters, %d needed retries across %d kills", voters, retried, killPoints)
}

// startChildAt starts the binary listening on addr.
func startChildAt(t *testing.T, dataDir, addr string) *childNode {
	t.Helper()
	return startChildArgs(t, "-addr", addr, "-data", dataDir)
}

// TestExternalNATSOutage stops an external nats-server during a surge: votes are
// refused overloaded (never a false accepted), the hub recovers on its own when the
// server returns, and the tally is exact.
func TestExternalNATSOutage(t *testing.T) {
	natsDir := t.TempDir()
	natsAddr := freeAddr(t)
	ns := startTestNATS(t, natsDir, natsAddr)

	cfg := testConfig(t)
	cfg.NatsURL = "nats://" + natsAddr
	n := startNode(t, cfg)
	ev := n.createEvent("Outage")
	poll := n.createPoll(ev, hub.NewPoll{Question: "Q", Options: []string{"A", "B"}}, true)

	const voters = 60
	all := make([]*retryingVoter, voters)
	for i := range all {
		_, session := n.app.hub.Sessions().New()
		all[i] = &retryingVoter{session: session, voteID: uuid.NewString(), option: poll.Options[i%2].ID}
	}
	var base atomic.Value
	base.Store(n.base)
	client := &http.Client{Timeout: 15 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// The first half votes while NATS is up, the second half during the outage.
	var wg sync.WaitGroup
	for _, v := range all[:voters/2] {
		wg.Go(func() {
			if err := v.run(ctx, client, &base, poll.ID); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()

	ns.Shutdown()
	ns.WaitForShutdown()
	outageStart := time.Now()
	var refusedDuringOutage atomic.Int32
	for _, v := range all[voters/2:] {
		wg.Go(func() {
			if err := v.run(ctx, client, &base, poll.ID); err != nil {
				t.Error(err)
			}
		})
	}
	// Longer than the shard's append timeout, so votes are both waiting and refused.
	time.Sleep(7 * time.Second)
	for _, v := range all[voters/2:] {
		if v.settled.Load() {
			t.Errorf("vote %s accepted while NATS was down", v.voteID)
		}
		if v.attempts.Load() > 1 {
			refusedDuringOutage.Add(1)
		}
	}

	ns = startTestNATS(t, natsDir, natsAddr)
	wg.Wait()
	t.Logf("outage of %s: %d voters retried, all settled after NATS returned", time.Since(outageStart).Round(time.Millisecond), refusedDuringOutage.Load())

	doc := n.closeAndWaitFinal(ev, poll.ID)
	if doc.Counts["o1"] != voters/2 || doc.Counts["o2"] != voters/2 || doc.Voters != voters {
		t.Fatalf("final %v voters %d, want %d each and %d voters", doc.Counts, doc.Voters, voters/2, voters)
	}
	// Stop the node while its NATS server still runs; cleanups would stop NATS first.
	n.close()
}

// startTestNATS runs a nats-server with JetStream in this process, listening on addr
// and storing in dir, as an external server for LiveVote.
func startTestNATS(t *testing.T, dir, addr string) *server.Server {
	t.Helper()
	host, portText, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portText)
	ns, err := server.NewServer(&server.Options{Host: host, Port: port, JetStream: true, StoreDir: dir, SyncAlways: true, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready within 10s")
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns
}

// TestShutdownWithNATSDown stops the hub while its external NATS server is gone: the
// shutdown ends within its timeout, and every vote acknowledged before is still counted
// after both come back.
func TestShutdownWithNATSDown(t *testing.T) {
	natsDir, natsAddr := t.TempDir(), freeAddr(t)
	ns := startTestNATS(t, natsDir, natsAddr)
	cfg := testConfig(t)
	cfg.NatsURL = "nats://" + natsAddr
	n := startNode(t, cfg)
	ev := n.createEvent("Stop without NATS")
	poll := n.createPoll(ev, hub.NewPoll{Question: "Q", Options: []string{"A", "B"}}, true)
	for range 20 {
		decodeInto[voteAnswer](t, n.httpVote(n.newSession(), poll.ID, uuid.NewString(), "o1"), http.StatusAccepted)
	}

	ns.Shutdown()
	ns.WaitForShutdown()
	const timeout = 3 * time.Second
	start := time.Now()
	err := n.app.stop(timeout, slog.New(slog.DiscardHandler))
	n.stop()
	<-n.done
	n.app = nil
	if took := time.Since(start); took > timeout+2*time.Second {
		t.Fatalf("shutdown took %s with a %s timeout", took, timeout)
	}
	if err == nil {
		t.Fatal("shutdown reported success although no snapshot could be saved")
	}

	startTestNATS(t, natsDir, natsAddr)
	again := startNode(t, cfg)
	doc := again.closeAndWaitFinal(ev, poll.ID)
	if doc.Counts["o1"] != 20 || doc.Voters != 20 {
		t.Fatalf("after restart: %v voters %d, want o1=20 and 20 voters", doc.Counts, doc.Voters)
	}
	again.close()
}
