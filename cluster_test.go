package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/livevote/livevote/actors"
	"github.com/livevote/livevote/hub"
	"github.com/livevote/livevote/persistence/natstest"
)

// testCluster is three NATS servers with R3 storage and three hub processes
// of the real binary, all on loopback.
type testCluster struct {
	t    *testing.T
	nats *natstest.Cluster
	hubs []*childNode
}

// startCluster starts the NATS cluster and the hubs, and waits until every
// hub lists all three members.
func startCluster(t *testing.T) *testCluster {
	t.Helper()
	nats := natstest.Start(t, 3)
	return startHubs(t, nats, []string{nats.URLs(), nats.URLs(), nats.URLs()})
}

// startHubs starts one hub per entry of urls, each with that entry as its
// -nats-url, and waits until every hub lists all of them as members. The
// flags in extra[i], when given, come last for hub i, so they override.
func startHubs(t *testing.T, nats *natstest.Cluster, urls []string, extra ...[]string) *testCluster {
	t.Helper()
	c := &testCluster{t: t, nats: nats}
	for i, url := range urls {
		args := []string{"-addr", "127.0.0.1:0", "-data", t.TempDir(),
			"-nats-url", url, "-nats-replicas", "3",
			"-cluster-name", "test", "-cluster-addr", "127.0.0.1:0"}
		if i < len(extra) {
			args = append(args, extra[i]...)
		}
		c.hubs = append(c.hubs, startChildArgs(t, args...))
	}
	for i, h := range c.hubs {
		waitUntil(t, fmt.Sprintf("hub %d sees %d members", i, len(urls)), 30*time.Second, func() bool {
			return metricValue(t, h, "livevote_cluster_members") == float64(len(urls))
		})
	}
	return c
}

// metricValue reads one unlabelled gauge from a node's /metrics, or -1.
func metricValue(t *testing.T, n *childNode, name string) float64 {
	resp, err := http.Get(n.base + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for line := range strings.SplitSeq(string(body), "\n") {
		value, ok := strings.CutPrefix(line, name+" ")
		if ok {
			var v float64
			if _, err := fmt.Sscan(value, &v); err == nil {
				return v
			}
		}
	}
	return -1
}

func waitUntil(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// results reads a poll's results document from a hub, or a zero document.
func results(n *childNode, poll string) actors.Results {
	var doc actors.Results
	resp, err := http.Get(n.base + "/api/polls/" + poll + "/results")
	if err != nil {
		return doc
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		_ = json.NewDecoder(resp.Body).Decode(&doc)
	}
	return doc
}

// openPoll creates an event and an open two-option poll on hub 0 and waits
// until every hub has the poll.
func (c *testCluster) openPoll() (createdEvent, hub.Poll) {
	ev := c.hubs[0].createEvent("cluster")
	poll := c.hubs[0].createPoll(ev, hub.NewPoll{Question: "Which?", Options: []string{"Red", "Blue"}}, true)
	for i, h := range c.hubs {
		waitUntil(c.t, fmt.Sprintf("hub %d knows poll %s", i, poll.ID), 10*time.Second, func() bool {
			resp, err := http.Get(h.base + "/api/polls/" + poll.ID + "/results")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}
	return ev, poll
}

// voters makes n voters with sessions spread over the hubs. Voter i votes
// through hub i%3 and moves to the next live hub when its hub is gone.
func (c *testCluster) voters(n int, poll hub.Poll) []*retryingVoter {
	out := make([]*retryingVoter, n)
	for i := range out {
		out[i] = &retryingVoter{
			session: c.hubs[i%len(c.hubs)].newSession(),
			voteID:  uuid.NewString(),
			option:  poll.Options[i%2].ID,
		}
	}
	return out
}

// runVoters runs every voter against base(i) until it is settled and
// returns the first error.
func runVoters(ctx context.Context, voters []*retryingVoter, bases []*atomic.Value, poll string) error {
	client := &http.Client{Timeout: 5 * time.Second}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	sem := make(chan struct{}, 64)
	for i, v := range voters {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := v.run(ctx, client, bases[i%len(bases)], poll); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return firstErr
}

// startSurge runs every voter in the background, as runVoters does, and
// returns once a third of them are settled, so that a fault injected next
// hits the surge in its middle. The channel gets runVoters' result.
func startSurge(ctx context.Context, t *testing.T, voters []*retryingVoter, bases []*atomic.Value, poll string) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- runVoters(ctx, voters, bases, poll) }()
	waitUntil(t, "a third of the voters settled", time.Minute, func() bool {
		return settledCount(voters) >= len(voters)/3
	})
	return done
}

// proxiedNATS starts a natstest.Proxy in front of each server of nats and
// returns the proxies and a -nats-url value that names all of them.
func proxiedNATS(t *testing.T, nats *natstest.Cluster) ([]*natstest.Proxy, string) {
	t.Helper()
	proxies := make([]*natstest.Proxy, nats.Len())
	urls := make([]string, nats.Len())
	for i := range proxies {
		proxies[i] = natstest.StartProxy(t, strings.TrimPrefix(nats.URL(i), "nats://"))
		urls[i] = "nats://" + proxies[i].Addr()
	}
	return proxies, strings.Join(urls, ",")
}

func (c *testCluster) bases() []*atomic.Value {
	out := make([]*atomic.Value, len(c.hubs))
	for i, h := range c.hubs {
		out[i] = &atomic.Value{}
		out[i].Store(h.base)
	}
	return out
}

// checkFinal closes the poll through hub 0 and checks that the final
// document and every live hub's copy count each of n voters exactly once.
func (c *testCluster) checkFinal(ev createdEvent, poll hub.Poll, n int, live []int) {
	c.t.Helper()
	// A close during a failover may get overloaded, so it is sent again, as
	// a presenter would.
	var r apiResponse
	for range 20 {
		r = c.hubs[live[0]].do("POST", "/api/polls/"+poll.ID+"/close", nil, bearer(ev.PresenterToken))
		if r.Status != http.StatusServiceUnavailable {
			break
		}
		c.t.Logf("close answered 503, sending it again: %s", r.Body)
		time.Sleep(time.Second)
	}
	final := decodeInto[hub.Poll](c.t, r, http.StatusOK)
	if final.State != hub.PollClosed {
		c.t.Fatalf("poll state after close = %s", final.State)
	}
	for _, i := range live {
		waitUntil(c.t, fmt.Sprintf("hub %d has the final document", i), 20*time.Second, func() bool {
			return results(c.hubs[i], poll.ID).Final
		})
		doc := results(c.hubs[i], poll.ID)
		sum := int64(0)
		for _, n := range doc.Counts {
			sum += n
		}
		if doc.Voters != int64(n) || sum != int64(n) {
			c.t.Errorf("hub %d final document: %d voters, counts %v (sum %d); want %d each", i, doc.Voters, doc.Counts, sum, n)
		}
	}
}

// TestClusterCountsEveryVoteOnce runs three hubs on a 3-server NATS
// cluster: voters on every hub, exact totals on every hub, and a retry
// through another hub gets duplicate.
func TestClusterCountsEveryVoteOnce(t *testing.T) {
	c := startCluster(t)
	ev, poll := c.openPoll()

	// A socket on every hub, as the audience pages hold.
	sockets := make([]*wsClient, len(c.hubs))
	for i, h := range c.hubs {
		sockets[i] = h.dial(ev.Event.Code, "")
	}

	const n = 600
	voters := c.voters(n, poll)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := runVoters(ctx, voters, c.bases(), poll.ID); err != nil {
		t.Fatal(err)
	}

	// Every hub's stored copy, and every socket on every hub, gets the
	// document with every voter.
	for i, h := range c.hubs {
		deadline := time.Now().Add(20 * time.Second)
		for results(h, poll.ID).Voters != n {
			if time.Now().After(deadline) {
				c.logState(voters)
				t.Fatalf("hub %d still serves %+v 20s after every voter settled", i, results(h, poll.ID))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for i, s := range sockets {
		doc := s.resultsUntil(poll.ID, 20*time.Second, func(d actors.Results) bool { return d.Voters == n })
		if doc.Counts[poll.Options[0].ID]+doc.Counts[poll.Options[1].ID] != n {
			t.Errorf("socket on hub %d: counts %v, want %d in all", i, doc.Counts, n)
		}
	}

	for i, h := range c.hubs {
		waitUntil(t, fmt.Sprintf("hub %d shows %d voters", i, n), 20*time.Second, func() bool {
			return results(h, poll.ID).Voters == n
		})
	}

	local := 0.0
	for i, h := range c.hubs {
		shards := metricValue(t, h, "livevote_cluster_local_shards")
		t.Logf("hub %d holds %v shards", i, shards)
		local += shards
	}
	if local != 8 {
		t.Errorf("the hubs hold %v shard activations in all, want 8", local)
	}

	// The operator dashboard says it shows one hub of three, and lists
	// only the shards that hub holds.
	type clusterDashboard struct {
		Shards  []json.RawMessage `json:"shards"`
		Cluster *struct {
			Members     int `json:"members"`
			LocalShards int `json:"local_shards"`
			TotalShards int `json:"total_shards"`
		} `json:"cluster"`
	}
	dash := decodeInto[clusterDashboard](t, c.hubs[0].do("GET", "/api/dashboard", nil, nil), http.StatusOK)
	if dash.Cluster == nil || dash.Cluster.Members != 3 || dash.Cluster.TotalShards != 8 || dash.Cluster.LocalShards != len(dash.Shards) {
		t.Errorf("dashboard cluster section %+v with %d shard rows, want 3 members, 8 shards and one row per local shard", dash.Cluster, len(dash.Shards))
	}

	for i, v := range voters[:60] {
		other := c.hubs[(i+1)%3]
		r := other.httpVote(v.session, poll.ID, v.voteID, v.option)
		answer := decodeInto[voteAnswer](t, r, http.StatusAccepted)
		if answer.Status != "duplicate" {
			t.Errorf("retry of vote %s through another hub: status %q, want duplicate", v.voteID, answer.Status)
		}
	}

	c.checkFinal(ev, poll, n, []int{0, 1, 2})
}

// TestClusterHubSIGKILL kills one hub during a surge. Its voters move to the
// next hub and retry with the same vote ids; its shards re-activate on the
// survivors from JetStream. No acknowledged vote is lost or counted twice.
func TestClusterHubSIGKILL(t *testing.T) {
	c := startCluster(t)
	ev, poll := c.openPoll()

	const n = 1500
	voters := c.voters(n, poll)
	bases := c.bases()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	done := startSurge(ctx, t, voters, bases, poll.ID)
	held := metricValue(t, c.hubs[2], "livevote_cluster_local_shards")
	killedAt := time.Now()
	before := settledCount(voters)
	c.hubs[2].kill()
	bases[2].Store(c.hubs[0].base)

	// The shards of the dead hub count as moved once the survivors hold
	// all of them again.
	movedAfter := make(chan time.Duration, 1)
	go func() {
		for time.Since(killedAt) < 2*time.Minute {
			if metricValue(t, c.hubs[0], "livevote_cluster_local_shards")+metricValue(t, c.hubs[1], "livevote_cluster_local_shards") == 8 &&
				metricValue(t, c.hubs[0], "livevote_cluster_members") == 2 && metricValue(t, c.hubs[1], "livevote_cluster_members") == 2 {
				movedAfter <- time.Since(killedAt)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		movedAfter <- -1
	}()

	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Logf("SIGKILL of hub 2, which held %v of 8 shards, with %d of %d voters settled; the rest settled %s later; "+
		"the survivors held every shard again %s after the kill", held, before, n, time.Since(killedAt).Round(time.Millisecond),
		(<-movedAfter).Round(time.Millisecond))

	c.checkFinal(ev, poll, n, []int{0, 1})
}

// TestClusterNATSServerSIGKILL kills one of the three NATS servers during a
// surge. The hubs move to the other servers, the R3 stream keeps its quorum,
// and every vote counts once.
func TestClusterNATSServerSIGKILL(t *testing.T) {
	c := startCluster(t)
	ev, poll := c.openPoll()

	const n = 1500
	voters := c.voters(n, poll)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	done := startSurge(ctx, t, voters, c.bases(), poll.ID)
	killedAt := time.Now()
	before := settledCount(voters)
	c.nats.Kill(1)

	if err := <-done; err != nil {
		c.logState(voters)
		t.Fatal(err)
	}
	t.Logf("SIGKILL of NATS server 1 with %d of %d voters settled; the rest settled %s later", before, n, time.Since(killedAt).Round(time.Millisecond))

	c.checkFinal(ev, poll, n, []int{0, 1, 2})
}

// TestClusterQuorumLossDropsNoHub stops two of the three NATS servers during
// a surge for longer than the member TTL and then starts them again.
// JetStream stores nothing meanwhile, so every hub's heartbeats fail along
// with the votes. Once quorum returns, no hub may take the others' silence
// for a crash. All three hubs still run at the end, each lists all three,
// and every voter counts once.
func TestClusterQuorumLossDropsNoHub(t *testing.T) {
	c := startCluster(t)
	ev, poll := c.openPoll()

	const n = 900
	voters := c.voters(n, poll)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	done := startSurge(ctx, t, voters, c.bases(), poll.ID)
	c.nats.Kill(1)
	c.nats.Kill(2)
	lostAt := time.Now()
	// Acknowledgements of appends that reached quorum before the second
	// kill may still be in transit for a moment. After that, no vote can be
	// stored, so none may be acknowledged.
	time.Sleep(time.Second)
	before := settledCount(voters)
	time.Sleep(actors.DefaultMemberTTL + 2*time.Second)
	if during := settledCount(voters) - before; during != 0 {
		t.Errorf("%d votes acknowledged while two of three NATS servers were down", during)
	}

	c.nats.Restart(1)
	back := time.Since(lostAt)
	c.nats.Restart(2)

	if err := <-done; err != nil {
		c.logState(voters)
		t.Fatal(err)
	}
	t.Logf("quorum lost with %d of %d voters settled; quorum back %s after the loss, every voter settled %s after it",
		before, n, back.Round(time.Millisecond), time.Since(lostAt).Round(time.Millisecond))

	for i, h := range c.hubs {
		waitUntil(t, fmt.Sprintf("hub %d runs and lists 3 members", i), 20*time.Second, func() bool {
			return metricValue(t, h, "livevote_cluster_members") == 3
		})
	}

	c.checkFinal(ev, poll, n, []int{0, 1, 2})
}

func settledCount(voters []*retryingVoter) int {
	n := 0
	for _, v := range voters {
		if v.settled.Load() {
			n++
		}
	}
	return n
}

// TestClusterHubGracefulStop stops one hub with SIGTERM: it leaves the
// cluster at once, exits cleanly, and the other hubs take its shards over
// without waiting for its heartbeats to time out.
func TestClusterHubGracefulStop(t *testing.T) {
	c := startCluster(t)
	ev, poll := c.openPoll()

	const n = 600
	voters := c.voters(n, poll)
	bases := c.bases()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	if err := runVoters(ctx, voters[:n/2], bases, poll.ID); err != nil {
		t.Fatal(err)
	}

	stoppedAt := time.Now()
	if err := c.hubs[2].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := c.hubs[2].cmd.Wait(); err != nil {
		t.Fatalf("hub 2 after SIGTERM: %v", err)
	}
	exited := time.Since(stoppedAt)
	bases[2].Store(c.hubs[0].base)
	for i := range 2 {
		waitUntil(t, fmt.Sprintf("hub %d sees 2 members", i), 10*time.Second, func() bool {
			return metricValue(t, c.hubs[i], "livevote_cluster_members") == 2
		})
	}
	left := time.Since(stoppedAt)

	// The rest vote, and the first half retry through the survivors.
	if err := runVoters(ctx, voters[n/2:], bases, poll.ID); err != nil {
		t.Fatal(err)
	}
	for i, v := range voters[:30] {
		answer := decodeInto[voteAnswer](t, c.hubs[i%2].httpVote(v.session, poll.ID, v.voteID, v.option), http.StatusAccepted)
		if answer.Status != "duplicate" {
			t.Errorf("retry of vote %s after the stop: status %q, want duplicate", v.voteID, answer.Status)
		}
	}
	t.Logf("SIGTERM: hub 2 exited after %s, the others saw 2 members after %s", exited.Round(time.Millisecond), left.Round(time.Millisecond))
	if left >= actors.DefaultMemberTTL {
		t.Errorf("the others dropped the stopped hub after %s, no sooner than a crashed one (%s)", left, actors.DefaultMemberTTL)
	}

	c.checkFinal(ev, poll, n, []int{0, 1})
}

// TestClusterFrozenHubComesBack freezes one hub with SIGSTOP for longer than
// the member TTL, so the others drop it and take its shards over while its
// own activations stay alive, then resumes it and closes the poll through
// it at once. Its superseded activations must not report their stale
// totals as final: the final document counts every voter once, and the
// resumed hub, which the others dropped for good, exits with an error.
func TestClusterFrozenHubComesBack(t *testing.T) {
	c := startCluster(t)
	ev, poll := c.openPoll()

	const n = 600
	voters := c.voters(n, poll)
	bases := c.bases()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	if err := runVoters(ctx, voters[:n/2], bases, poll.ID); err != nil {
		t.Fatal(err)
	}

	frozen := c.hubs[2]
	if err := frozen.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = frozen.cmd.Process.Signal(syscall.SIGCONT) })
	bases[2].Store(c.hubs[0].base)
	if err := runVoters(ctx, voters[n/2:], bases[:2], poll.ID); err != nil {
		t.Fatal(err)
	}
	// The voters may all be done before the TTL when the frozen hub held no
	// shard they needed, so wait until the others have dropped it.
	for i := range 2 {
		waitUntil(t, fmt.Sprintf("hub %d drops the frozen hub", i), 30*time.Second, func() bool {
			return metricValue(t, c.hubs[i], "livevote_cluster_members") == 2
		})
	}
	if err := frozen.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}

	exited := make(chan error, 1)
	go func() { exited <- frozen.cmd.Wait() }()

	// Close through the resumed hub while it still runs; a 503 is sent again,
	// through hub 0 once the resumed hub has gone.
	closer := frozen
	for attempt := 0; ; attempt++ {
		select {
		case <-exited:
			closer = c.hubs[0]
			exited = nil
		default:
		}
		r, err := postClose(closer, poll.ID, ev.PresenterToken)
		if err != nil && closer == frozen {
			// The resumed hub may exit during the request, so the next
			// attempt goes to hub 0 once the exit is seen.
			t.Logf("close through the resumed hub: %v", err)
			time.Sleep(500 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if r.Status == http.StatusOK {
			t.Logf("closed through %s after %d answers of 503", closer.base, attempt)
			break
		}
		if r.Status != http.StatusServiceUnavailable && closer == frozen {
			t.Logf("the resumed hub answered the close with %d: %s", r.Status, r.Body)
		} else if r.Status != http.StatusServiceUnavailable {
			t.Fatalf("close through hub 0: %d %s", r.Status, r.Body)
		}
		if attempt == 60 {
			t.Fatal("the close did not succeed within 60 attempts")
		}
		time.Sleep(500 * time.Millisecond)
	}

	for _, i := range []int{0, 1} {
		waitUntil(t, fmt.Sprintf("hub %d has the final document", i), 20*time.Second, func() bool {
			return results(c.hubs[i], poll.ID).Final
		})
		doc := results(c.hubs[i], poll.ID)
		if doc.Voters != n {
			t.Errorf("hub %d final document: %d voters, counts %v; want %d", i, doc.Voters, doc.Counts, n)
		}
	}

	if exited != nil {
		select {
		case err := <-exited:
			if err == nil {
				t.Error("the dropped hub exited with status 0, want an error")
			}
		case <-time.After(30 * time.Second):
			t.Error("the dropped hub still runs 30s after it was resumed")
		}
	}
}

// TestClusterHubCutFromNATS cuts every link between one hub and the NATS
// servers during a surge, while the hubs still reach each other, as a
// network partition does. The cut hub acknowledges nothing it cannot store,
// the others drop it after the member TTL and take its shards over, and once
// the link heals, the bytes held during the cut reach the servers: the
// fence refuses the stale appends among them, and the hub, dropped for good,
// exits with an error. Every voter ends counted exactly once.
func TestClusterHubCutFromNATS(t *testing.T) {
	nats := natstest.Start(t, 3)
	proxies, proxied := proxiedNATS(t, nats)
	c := startHubs(t, nats, []string{nats.URLs(), nats.URLs(), proxied})
	ev, poll := c.openPoll()

	const n = 1500
	voters := c.voters(n, poll)
	bases := c.bases()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	cutHub := c.hubs[2]
	exited := make(chan error, 1)
	go func() { exited <- cutHub.cmd.Wait() }()

	done := startSurge(ctx, t, voters, bases, poll.ID)
	held := metricValue(t, cutHub, "livevote_cluster_local_shards")
	cutAt := time.Now()
	before := settledCount(voters)
	for _, p := range proxies {
		p.Cut()
	}

	for i := range 2 {
		waitUntil(t, fmt.Sprintf("hub %d drops the cut hub", i), 30*time.Second, func() bool {
			return metricValue(t, c.hubs[i], "livevote_cluster_members") == 2
		})
	}
	dropped := time.Since(cutAt)
	waitUntil(t, "the other hubs hold every shard", 30*time.Second, func() bool {
		return metricValue(t, c.hubs[0], "livevote_cluster_local_shards")+metricValue(t, c.hubs[1], "livevote_cluster_local_shards") == 8
	})
	moved := time.Since(cutAt)

	// The voters of the cut hub keep sending to it for a while, as phones
	// that still hold its address would.
	time.Sleep(3 * time.Second)
	settledDuringCut := settledCount(voters) - before
	for _, p := range proxies {
		p.Heal()
	}
	healedAt := time.Now()

	select {
	case err := <-exited:
		if err == nil {
			t.Error("the cut hub exited with status 0 after the heal, want an error")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the cut hub still runs 30s after the link healed")
	}
	t.Logf("cut of hub 2, which held %v of 8 shards, with %d of %d voters settled: the others dropped it after %s "+
		"and held every shard after %s; %d voters settled during the cut; the hub exited %s after the heal",
		held, before, n, dropped.Round(time.Millisecond), moved.Round(time.Millisecond), settledDuringCut,
		time.Since(healedAt).Round(time.Millisecond))
	bases[2].Store(c.hubs[1].base)

	if err := <-done; err != nil {
		t.Fatal(err)
	}
	c.checkFinal(ev, poll, n, []int{0, 1})
}

// TestClusterHubUnreachableFromPeers cuts the link from the other hubs to
// one hub during a surge, while every hub still reaches NATS, as a network
// partition between hub machines does. The hub advertises a proxy in front
// of its Proto.Actor endpoint, and the proxy holds every byte while cut.
// Heartbeats travel through NATS, so no hub is dropped and nothing moves:
// votes that the other hubs send to the cut hub's shards get no reply and
// are retried. Once the link heals, every voter settles and counts once.
func TestClusterHubUnreachableFromPeers(t *testing.T) {
	nats := natstest.Start(t, 3)
	port, err := natstest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	endpoint := fmt.Sprintf("127.0.0.1:%d", port)
	proxy := natstest.StartProxy(t, endpoint)
	// 32 shards, so that the cut hub holds some of them.
	c := startHubs(t, nats, []string{nats.URLs(), nats.URLs(), nats.URLs()},
		[]string{"-shards", "32"}, []string{"-shards", "32"},
		[]string{"-shards", "32", "-cluster-addr", endpoint, "-cluster-advertise", proxy.Addr()})
	ev, poll := c.openPoll()

	const n = 1500
	voters := c.voters(n, poll)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	done := startSurge(ctx, t, voters, c.bases(), poll.ID)
	held := metricValue(t, c.hubs[2], "livevote_cluster_local_shards")
	before := settledCount(voters)
	proxy.Cut()
	cutAt := time.Now()
	time.Sleep(actors.DefaultMemberTTL + 3*time.Second)
	during := settledCount(voters) - before
	for i, h := range c.hubs {
		if members := metricValue(t, h, "livevote_cluster_members"); members != 3 {
			t.Errorf("hub %d lists %v members %s into the cut, want 3: no hub is dropped while NATS carries every heartbeat",
				i, members, time.Since(cutAt).Round(time.Millisecond))
		}
	}
	if settledCount(voters) == n {
		t.Error("every voter settled during the cut; the votes of the other hubs for the cut hub's shards should have waited")
	}
	proxy.Heal()
	healedAt := time.Now()

	if err := <-done; err != nil {
		c.logState(voters)
		t.Fatal(err)
	}
	t.Logf("cut of the link to hub 2, which held %v of 32 shards, with %d of %d voters settled: %d settled during the %s cut; "+
		"the rest settled %s after the heal", held, before, n, during, healedAt.Sub(cutAt).Round(time.Millisecond),
		time.Since(healedAt).Round(time.Millisecond))

	c.checkFinal(ev, poll, n, []int{0, 1, 2})
}

// TestClusterNATSServerFallsSilent makes the NATS server with the most hub
// connections fall silent to the hubs during a surge, as when it freezes or
// a cut leaves it reachable only by the other servers: the connections stay
// open but carry nothing, and the NATS cluster itself keeps its quorum. The
// hubs on that server must notice through their pings and move to another
// one. Every voter ends counted once.
func TestClusterNATSServerFallsSilent(t *testing.T) {
	nats := natstest.Start(t, 3)
	proxies, urls := proxiedNATS(t, nats)
	c := startHubs(t, nats, []string{urls, urls, urls})
	ev, poll := c.openPoll()

	const n = 1500
	voters := c.voters(n, poll)
	bases := c.bases()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()

	// A hub that exits, dropped by the others, loses its voters to the
	// next hub that still serves HTTP, as a client would move to another
	// address.
	gone := make([]atomic.Bool, len(c.hubs))
	monitorDone := make(chan struct{})
	go func() {
		defer close(monitorDone)
		for ctx.Err() == nil {
			for i, h := range c.hubs {
				if !gone[i].Load() && metricValue(t, h, "livevote_cluster_members") < 0 {
					gone[i].Store(true)
					bases[i].Store(c.hubs[(i+1)%len(c.hubs)].base)
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()

	done := startSurge(ctx, t, voters, bases, poll.ID)
	silent := 0
	for i, p := range proxies {
		if p.Links() > proxies[silent].Links() {
			silent = i
		}
	}
	onSilent := proxies[silent].Links()
	silentAt := time.Now()
	before := settledCount(voters)
	proxies[silent].Cut()

	err := <-done
	settled := time.Since(silentAt)
	cancel()
	<-monitorDone
	if err != nil {
		c.logState(voters)
		t.Fatalf("%v (%d of %d voters settled)", err, settledCount(voters), n)
	}

	var live []int
	for i := range c.hubs {
		if !gone[i].Load() {
			live = append(live, i)
		}
	}
	t.Logf("NATS server %d fell silent to its %d hub connections with %d of %d voters settled; the rest settled %s later; %d of %d hubs still run",
		silent, onSilent, before, n, settled.Round(time.Millisecond), len(live), len(c.hubs))
	if len(live) == 0 {
		t.Fatal("no hub runs after the server fell silent")
	}

	c.checkFinal(ev, poll, n, live)
}

// logState logs, for a failed test, how many voters of each hub are not
// settled and the shard rows of each hub's dashboard.
func (c *testCluster) logState(voters []*retryingVoter) {
	waiting := make([]int, len(c.hubs))
	for i, v := range voters {
		if !v.settled.Load() {
			waiting[i%len(c.hubs)]++
		}
	}
	for i, h := range c.hubs {
		r, err := http.Get(h.base + "/api/dashboard")
		if err != nil {
			c.t.Logf("hub %d: %d voters waiting; dashboard: %v", i, waiting[i], err)
			continue
		}
		body, _ := io.ReadAll(r.Body)
		r.Body.Close()
		var dash struct {
			Shards  json.RawMessage `json:"shards"`
			Cluster json.RawMessage `json:"cluster"`
		}
		_ = json.Unmarshal(body, &dash)
		c.t.Logf("hub %d: %d voters waiting; cluster %s; shards %s", i, waiting[i], dash.Cluster, dash.Shards)
	}
}

// postClose sends a presenter's close request and returns a transport error
// instead of failing the test, for a hub that may exit meanwhile.
func postClose(n *childNode, poll, token string) (apiResponse, error) {
	req, err := http.NewRequest("POST", n.base+"/api/polls/"+poll+"/close", nil)
	if err != nil {
		return apiResponse{}, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return apiResponse{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return apiResponse{Status: resp.StatusCode, Header: resp.Header, Body: body}, err
}
