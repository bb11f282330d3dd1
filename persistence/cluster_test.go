package persistence

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livevote/livevote/persistence/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

// The tests in this file run Store against three nats-server processes
// with every stream and bucket at 3 replicas. A killed stream leader takes
// nats-server v2.15 4 to 9 s to replace (its Raft election timeout), which
// sets the length of the tests that kill one.
//
// NOTE: on a cluster a few percent of Replay and ReplayAll calls stall. The
// new ordered consumer never receives the first pull request (NumWaiting 0,
// nothing delivered), so the call fails after DefaultTimeout with "read next
// message: context deadline exceeded", and so does the test that made it.
// Neither a single external server nor the embedded one shows it.

// clusterAppendTimeout is the deadline of each append while servers are
// killed, and clusterSlack covers scheduling delays on a loaded test machine.
const (
	clusterAppendTimeout = 2 * time.Second
	clusterSlack         = time.Second
)

// clusterStreams lists the streams behind the Store's stream, KV buckets
// and object store.
var clusterStreams = []string{
	VotesStream,
	"KV_" + ResultsBucket,
	"KV_" + CatalogBucket,
	"KV_" + SystemBucket,
	"OBJ_" + SnapshotsBucket,
}

// openClusterStore opens a Store with 3 replicas on the NATS servers of urls.
func openClusterStore(t *testing.T, urls string) *Store {
	t.Helper()

	return openTestStore(t, Config{NatsURL: urls, Replicas: 3})
}

// retryLogMessage is the log message of a publish that the committer
// retries with the same Msg-Id.
const retryLogMessage = "vote stream publish failed; retrying with the same Msg-Id"

// retryCounter is a slog handler that counts the committer's retries and
// passes every record on to the test log.
type retryCounter struct {
	slog.Handler
	retries *atomic.Int64
}

func (h retryCounter) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == retryLogMessage {
		h.retries.Add(1)
	}

	return h.Handler.Handle(ctx, r)
}

func (h retryCounter) WithAttrs(attrs []slog.Attr) slog.Handler {
	return retryCounter{h.Handler.WithAttrs(attrs), h.retries}
}

func (h retryCounter) WithGroup(name string) slog.Handler {
	return retryCounter{h.Handler.WithGroup(name), h.retries}
}

// streamInfo returns the info of stream name, as its leader reports it.
func streamInfo(t *testing.T, s *Store, name string) *jetstream.StreamInfo {
	t.Helper()

	ctx, cancel := context.WithTimeout(t.Context(), DefaultTimeout)
	defer cancel()

	stream, err := s.JetStream().Stream(ctx, name)
	if err != nil {
		t.Fatalf("info of stream %s: %v", name, err)
	}

	return stream.CachedInfo()
}

// streamLeader returns the index of the server that leads stream name.
func streamLeader(t *testing.T, s *Store, c *natstest.Cluster, name string) int {
	t.Helper()

	info := streamInfo(t, s, name)
	if info.Cluster == nil {
		t.Fatalf("stream %s has no cluster information", name)
	}
	leader := c.Index(info.Cluster.Leader)
	if leader < 0 {
		t.Fatalf("stream %s is led by %q, which is not a server of the cluster", name, info.Cluster.Leader)
	}

	return leader
}

// copyState is a server's own copy of a stream, from its /jsz endpoint.
type copyState struct {
	Msgs    uint64 `json:"messages"`
	LastSeq uint64 `json:"last_seq"`
}

// serverCopy returns server i's copy of stream name and whether it has one.
func serverCopy(c *natstest.Cluster, i int, name string) (copyState, bool, error) {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

	resp, err := client.Get(c.MonitorURL(i) + "/jsz?streams=true")
	if err != nil {
		return copyState{}, false, err
	}
	defer resp.Body.Close()

	var jsz struct {
		Accounts []struct {
			Streams []struct {
				Name  string    `json:"name"`
				State copyState `json:"state"`
			} `json:"stream_detail"`
		} `json:"account_details"`
	}
	err = json.NewDecoder(resp.Body).Decode(&jsz)
	if err != nil {
		return copyState{}, false, fmt.Errorf("decode /jsz of server %s: %w", c.Name(i), err)
	}

	for _, acc := range jsz.Accounts {
		for _, stream := range acc.Streams {
			if stream.Name == name {
				return stream.State, true, nil
			}
		}
	}

	return copyState{}, false, nil
}

// checkCopiesCurrent waits up to 10 s until every server's copy of the
// vote stream contains the messages of the leader's copy. The caller has
// stopped appending.
func checkCopiesCurrent(t *testing.T, s *Store, c *natstest.Cluster) {
	t.Helper()

	want := streamInfo(t, s, VotesStream).State
	deadline := time.Now().Add(10 * time.Second)

	for i := range c.Len() {
		for {
			got, ok, err := serverCopy(c, i, VotesStream)
			if err == nil && ok && got.Msgs == want.Msgs && got.LastSeq == want.LastSeq {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("server %s has %+v of stream %s (copy present: %t, error: %v), want %d messages up to sequence %d",
					c.Name(i), got, VotesStream, ok, err, want.Msgs, want.LastSeq)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func TestClusterResourcesHaveThreeReplicas(t *testing.T) {
	t.Parallel()
	c := natstest.Start(t, 3)
	s := openClusterStore(t, c.URLs())

	for _, name := range clusterStreams {
		info := streamInfo(t, s, name)
		if info.Config.Replicas != 3 {
			t.Errorf("stream %s has %d replicas in its configuration, want 3", name, info.Config.Replicas)
		}
		if info.Cluster == nil {
			t.Errorf("stream %s has no cluster information", name)
			continue
		}

		servers := []string{info.Cluster.Leader}
		for _, peer := range info.Cluster.Replicas {
			servers = append(servers, peer.Name)
		}
		slices.Sort(servers)
		want := []string{c.Name(0), c.Name(1), c.Name(2)}
		if !slices.Equal(servers, want) {
			t.Errorf("stream %s is on servers %v (leader %q), want one copy on each of %v",
				name, servers, info.Cluster.Leader, want)
		}
	}
}

func TestClusterAppendReplay(t *testing.T) {
	t.Parallel()
	c := natstest.Start(t, 3)
	s := openClusterStore(t, c.URLs())

	// Sequential appends get a message each; the concurrent ones below share
	// messages through the group commit.
	want := map[string]replayed{}
	for i := range 8 {
		b := testBatch(fmt.Sprintf("cluster-seq-%d", i), i%4, i+1)
		seq, err := s.AppendBatch(t.Context(), b)
		if err != nil {
			t.Fatalf("AppendBatch %s: %v", b.ID, err)
		}
		want[b.ID] = replayed{seq, b}
	}

	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			b := testBatch(fmt.Sprintf("cluster-par-%d", i), i%4, 3)
			seq, err := s.AppendBatch(t.Context(), b)
			if err != nil {
				t.Errorf("AppendBatch %s: %v", b.ID, err)
				return
			}
			mu.Lock()
			want[b.ID] = replayed{seq, b}
			mu.Unlock()
		})
	}
	wg.Wait()

	checkReplayEquals(t, s, want)

	// A second Store on one server finds the resources that the first one
	// created, unchanged, and replays the same batches.
	other := openClusterStore(t, c.URL(2))
	checkReplayEquals(t, other, want)

	checkCopiesCurrent(t, s, c)
}

// checkReplayEquals replays every shard of s and checks that it delivers
// exactly the batches of want, each once, at its sequence.
func checkReplayEquals(t *testing.T, s *Store, want map[string]replayed) {
	t.Helper()

	got := map[string]replayed{}
	for shard := range 4 {
		batches, _ := replayAll(t, s, shard, 0)
		for _, r := range batches {
			_, dup := got[r.batch.ID]
			if dup {
				t.Errorf("batch %q replayed twice", r.batch.ID)
			}
			got[r.batch.ID] = r
		}
	}

	if len(got) != len(want) {
		t.Errorf("replayed %d batches, want %d", len(got), len(want))
	}
	for id, w := range want {
		r, ok := got[id]
		if !ok {
			t.Errorf("batch %q (sequence %d) is missing from the replay", id, w.seq)
			continue
		}
		if r.seq != w.seq {
			t.Errorf("batch %q replayed at sequence %d, want %d", id, r.seq, w.seq)
		}
		if !reflect.DeepEqual(r.batch, w.batch) {
			t.Errorf("batch %q replayed as %+v, want %+v", id, r.batch, w.batch)
		}
	}
}

// clusterAppend is the outcome of one AppendBatch call.
type clusterAppend struct {
	batch   Batch
	seq     uint64
	err     error
	started time.Time
	elapsed time.Duration
}

// appendLog collects the outcomes of concurrent appends.
type appendLog struct {
	mu      sync.Mutex
	appends []clusterAppend
}

func (l *appendLog) add(a clusterAppend) {
	l.mu.Lock()
	defer l.mu.Unlock()

	l.appends = append(l.appends, a)
}

// succeededSince returns the number of appends that started at or after
// since and returned a sequence.
func (l *appendLog) succeededSince(since time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()

	n := 0
	for _, a := range l.appends {
		if a.err == nil && !a.started.Before(since) {
			n++
		}
	}

	return n
}

// all returns a copy of the outcomes.
func (l *appendLog) all() []clusterAppend {
	l.mu.Lock()
	defer l.mu.Unlock()

	return slices.Clone(l.appends)
}

// appendTimed appends b with deadline timeout and returns the outcome.
func appendTimed(t *testing.T, s *Store, b Batch, timeout time.Duration) clusterAppend {
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()

	start := time.Now()
	seq, err := s.AppendBatch(ctx, b)

	return clusterAppend{batch: b, seq: seq, err: err, started: start, elapsed: time.Since(start)}
}

// waitFor polls cond every 20 ms until it holds or timeout passes, and
// reports whether it held.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}

	return true
}

// checkStoredExactlyOnce replays the whole vote stream and checks that
// every append that returned a sequence is stored once, at that sequence,
// with its content, that a failed append is stored at most once, and that
// nothing else is stored.
func checkStoredExactlyOnce(t *testing.T, s *Store, appends []clusterAppend) {
	t.Helper()

	found := map[string][]replayed{}
	_, _, err := s.ReplayAll(t.Context(), 0, func(seq uint64, b Batch) error {
		found[b.ID] = append(found[b.ID], replayed{seq, b})
		return nil
	})
	if err != nil {
		t.Fatalf("ReplayAll: %v", err)
	}

	known := map[string]bool{}
	acked, failed := 0, 0
	for _, a := range appends {
		id := a.batch.ID
		known[id] = true
		stored := found[id]

		if a.err != nil {
			failed++
			if len(stored) > 1 {
				t.Errorf("failed append of batch %q is stored %d times", id, len(stored))
			}
			continue
		}

		acked++
		if len(stored) != 1 {
			t.Errorf("batch %q was acknowledged at sequence %d but is stored %d times", id, a.seq, len(stored))
			continue
		}
		if stored[0].seq != a.seq {
			t.Errorf("batch %q was acknowledged at sequence %d but is stored at %d", id, a.seq, stored[0].seq)
		}
		if !reflect.DeepEqual(stored[0].batch, a.batch) {
			t.Errorf("batch %q is stored as %+v, want %+v", id, stored[0].batch, a.batch)
		}
	}

	for id := range found {
		if !known[id] {
			t.Errorf("the stream contains batch %q, which no append of this test sent", id)
		}
	}

	t.Logf("%d appends acknowledged and %d failed; the stream contains %d distinct batches", acked, failed, len(found))
}

// checkAppendsBounded checks that every append returned within its deadline
// plus clusterSlack.
func checkAppendsBounded(t *testing.T, appends []clusterAppend, timeout time.Duration) {
	t.Helper()

	slowest := time.Duration(0)
	for _, a := range appends {
		slowest = max(slowest, a.elapsed)
	}
	if slowest > timeout+clusterSlack {
		t.Errorf("slowest AppendBatch took %v, want at most its %v deadline plus %v", slowest, timeout, clusterSlack)
	}
}

// TestClusterKillStreamLeaderDuringAppends kills the vote stream's leader
// with SIGKILL while four writers append and waits until appends succeed
// again on the two other servers. Then it restarts the server and checks
// that no acknowledged batch is lost or stored twice and that the restarted
// server catches up.
func TestClusterKillStreamLeaderDuringAppends(t *testing.T) {
	t.Parallel()
	const writers, maxAppendsPerWriter = 4, 20000

	c := natstest.Start(t, 3)
	retries := &atomic.Int64{}
	logger := slog.New(retryCounter{testLogger(t).Handler(), retries})
	s := openTestStore(t, Config{NatsURL: c.URLs(), Replicas: 3, Logger: logger})
	results := &appendLog{}

	first := appendTimed(t, s, testBatch("kill-first", 0, 1), clusterAppendTimeout)
	results.add(first)
	if first.err != nil {
		t.Fatalf("first append: %v", first.err)
	}
	leader := streamLeader(t, s, c, VotesStream)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range maxAppendsPerWriter {
				select {
				case <-stop:
					return
				default:
				}
				b := testBatch(fmt.Sprintf("kill-%d-%d", w, i), w, 1+i%3)
				results.add(appendTimed(t, s, b, clusterAppendTimeout))
			}
		})
	}
	stopWriters := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	defer stopWriters()

	time.Sleep(300 * time.Millisecond)
	killedAt := time.Now()
	c.Kill(leader)
	t.Logf("killed stream leader %s after %d acknowledged appends", c.Name(leader), results.succeededSince(time.Time{}))

	recovered := waitFor(30*time.Second, func() bool { return results.succeededSince(killedAt) > 0 })
	if !recovered {
		stopWriters()
		t.Fatalf("no append succeeded within 30 s of killing server %s", c.Name(leader))
	}
	t.Logf("appends succeed again %v after the kill; new leader %s",
		time.Since(killedAt).Round(time.Millisecond), c.Name(streamLeader(t, s, c, VotesStream)))

	c.Restart(leader)
	restartedAt := time.Now()
	resumed := waitFor(10*time.Second, func() bool { return results.succeededSince(restartedAt) > 0 })
	stopWriters()
	if !resumed {
		t.Errorf("no append succeeded within 10 s of restarting server %s", c.Name(leader))
	}

	appends := results.all()
	t.Logf("the committer retried %d publishes with the same Msg-Id", retries.Load())
	checkAppendsBounded(t, appends, clusterAppendTimeout)
	checkCommitterIdle(t, s, clusterAppendTimeout+clusterSlack)
	checkStoredExactlyOnce(t, s, appends)
	checkCopiesCurrent(t, s, c)
}

// TestClusterAppendsFailWithoutQuorum kills two of the three servers and
// checks that appends return an error within their deadline. After one
// server restarts, appends must succeed, and appending each failed batch
// again must store it once. The other server then restarts and must catch
// up.
func TestClusterAppendsFailWithoutQuorum(t *testing.T) {
	t.Parallel()
	const failingAppends = 3

	c := natstest.Start(t, 3)
	s := openClusterStore(t, c.URLs())
	var appends []clusterAppend

	first := appendTimed(t, s, testBatch("quorum-first", 1, 2), clusterAppendTimeout)
	appends = append(appends, first)
	if first.err != nil {
		t.Fatalf("first append: %v", first.err)
	}

	leader := streamLeader(t, s, c, VotesStream)
	follower := (leader + 1) % 3
	c.Kill(leader)
	c.Kill(follower)

	// An append without a deadline gives up after DefaultTimeout.
	start := time.Now()
	noDeadline := testBatch("quorum-no-deadline", 1, 1)
	seq, err := s.AppendBatch(context.Background(), noDeadline)
	appends = append(appends, clusterAppend{batch: noDeadline, seq: seq, err: err, started: start, elapsed: time.Since(start)})
	if err == nil {
		t.Errorf("append without quorum and without deadline returned sequence %d, want an error", seq)
	}
	if time.Since(start) > DefaultTimeout+clusterSlack {
		t.Errorf("append without quorum and without deadline took %v, want at most %v plus %v",
			time.Since(start), DefaultTimeout, clusterSlack)
	}
	t.Logf("append without quorum and without deadline: %v after %v", err, time.Since(start).Round(time.Millisecond))

	for i := range failingAppends {
		a := appendTimed(t, s, testBatch(fmt.Sprintf("quorum-lost-%d", i), 1, 1), time.Second)
		appends = append(appends, a)
		if a.err == nil {
			t.Errorf("append %d without quorum returned sequence %d, want an error", i, a.seq)
		}
		t.Logf("append %d without quorum: %v after %v", i, a.err, a.elapsed.Round(time.Millisecond))
	}
	checkAppendsBounded(t, appends[2:], time.Second)

	restartedAt := time.Now()
	c.Restart(leader)
	t.Logf("restarted server %s in %v", c.Name(leader), time.Since(restartedAt).Round(time.Millisecond))

	// The stream needs a new leader first, so the first appends may still fail.
	recovered := false
	for i := 0; !recovered && time.Since(restartedAt) < 30*time.Second; i++ {
		a := appendTimed(t, s, testBatch(fmt.Sprintf("quorum-back-%d", i), 2, 1), clusterAppendTimeout)
		appends = append(appends, a)
		recovered = a.err == nil
	}
	if !recovered {
		t.Fatalf("no append succeeded within 30 s of restarting server %s", c.Name(leader))
	}
	t.Logf("appends succeed again %v after the restart", time.Since(restartedAt).Round(time.Millisecond))

	for i := range 5 {
		a := appendTimed(t, s, testBatch(fmt.Sprintf("quorum-after-%d", i), 3, 2), clusterAppendTimeout)
		appends = append(appends, a)
		if a.err != nil {
			t.Errorf("append %d with two of three servers: %v", i, a.err)
		}
	}

	// Each failed batch was sent alone, so its id is its Msg-Id. Appending it
	// again stores it, or returns the sequence of a copy that the failed
	// append stored after all.
	var retried []clusterAppend
	for _, a := range appends {
		if a.err == nil {
			continue
		}
		retry := appendTimed(t, s, a.batch, clusterAppendTimeout)
		if retry.err != nil {
			t.Errorf("append of failed batch %q again: %v", a.batch.ID, retry.err)
		}
		retried = append(retried, retry)
	}
	appends = append(appends, retried...)
	t.Logf("%d failed batches appended again", len(retried))

	c.Restart(follower)
	checkCopiesCurrent(t, s, c)

	// The check for duplicates needs only the final outcome of each batch.
	final := map[string]clusterAppend{}
	for _, a := range appends {
		final[a.batch.ID] = a
	}
	checkStoredExactlyOnce(t, s, slices.Collect(maps.Values(final)))
}

func TestClusterOpenRejectsMoreReplicasThanServers(t *testing.T) {
	t.Parallel()
	c := natstest.Start(t, 1)

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	start := time.Now()
	s, err := Open(ctx, Config{NatsURL: c.URLs(), Replicas: 3, Logger: testLogger(t)})
	if err == nil {
		s.Close()
		t.Fatal("Open with 3 replicas on a single server succeeded, want an error")
	}
	if ctx.Err() != nil {
		t.Errorf("Open ran into its deadline after %v: %v", time.Since(start), err)
	}
	if !strings.Contains(err.Error(), "replicas") {
		t.Errorf("Open error %q does not name the replicas", err)
	}
}

// TestClusterOpenWaitsForQuorum opens a Store while two of the three
// servers are down, so JetStream cannot reply, and brings them back 3 s
// later: Open retries the setup and succeeds instead of failing on its
// first request.
func TestClusterOpenWaitsForQuorum(t *testing.T) {
	t.Parallel()

	c := natstest.Start(t, 3)
	c.Kill(1)
	c.Kill(2)

	type opened struct {
		s   *Store
		err error
	}
	done := make(chan opened, 1)
	start := time.Now()
	go func() {
		s, err := Open(context.Background(), Config{NatsURL: c.URL(0), Replicas: 3, Logger: testLogger(t)})
		done <- opened{s, err}
	}()

	time.Sleep(3 * time.Second)
	c.Restart(1)
	c.Restart(2)

	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("Open while the cluster regained its quorum: %v", r.err)
		}
		t.Cleanup(func() { _ = r.s.Close() })
		t.Logf("Open succeeded %s after it started, with the quorum back after about 3 s", time.Since(start).Round(time.Millisecond))
	case <-time.After(externalStartTimeout + 10*time.Second):
		t.Fatal("Open did not return within its start limit")
	}
}

// TestClusterListCatalogWaitsForQuorum lists the catalog while two of
// three servers are down, as a hub's registry does at start when it races
// the cluster's elections. The list waits and returns the stored record
// once the quorum is back, 6 s later, beyond one attempt's 5 s.
func TestClusterListCatalogWaitsForQuorum(t *testing.T) {
	t.Parallel()

	c := natstest.Start(t, 3)
	s := openClusterStore(t, c.URLs())
	if _, err := s.PutCatalog(t.Context(), "event.e1", []byte(`{"title":"kept"}`)); err != nil {
		t.Fatalf("PutCatalog: %v", err)
	}
	c.Kill(1)
	c.Kill(2)

	type listed struct {
		records map[string][]byte
		err     error
	}
	done := make(chan listed, 1)
	start := time.Now()
	go func() {
		records, err := s.ListCatalog(context.Background(), "event.")
		done <- listed{records, err}
	}()

	time.Sleep(6 * time.Second)
	c.Restart(1)
	c.Restart(2)

	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("ListCatalog while the cluster regained its quorum: %v", r.err)
		}
		if string(r.records["event.e1"]) != `{"title":"kept"}` {
			t.Errorf("ListCatalog returned %q, want the stored event", r.records)
		}
		t.Logf("ListCatalog returned %s after it started, with the quorum back after about 6 s", time.Since(start).Round(time.Millisecond))
	case <-time.After(externalStartTimeout + 10*time.Second):
		t.Fatal("ListCatalog did not return within its start limit")
	}
}

// TestClusterFencedAppendsBackToBack appends fenced batches as fast as
// the writers can, one writer per shard on 16 shards at once, each append
// expecting the sequence of the writer's previous one, as shard grains do.
// Every append must succeed: a single writer of a shard is never fenced,
// even while its previous message is still being replicated when the next
// one arrives.
func TestClusterFencedAppendsBackToBack(t *testing.T) {
	t.Parallel()
	const shards, appends = 16, 150

	c := natstest.Start(t, 3)
	s := openClusterStore(t, c.URLs())
	ctx := t.Context()

	var wg sync.WaitGroup
	for shard := range shards {
		wg.Go(func() {
			expect, err := s.ClaimShard(ctx, shard, "writer", 0)
			if err != nil {
				t.Errorf("claim shard %d: %v", shard, err)
				return
			}
			for i := range appends {
				seq, err := s.AppendFenced(ctx, testBatch(fmt.Sprintf("fenced-%d-%d", shard, i), shard, 1), expect)
				if err != nil {
					t.Errorf("shard %d: fenced append %d after sequence %d: %v", shard, i, expect, err)
					return
				}
				expect = seq
			}
		})
	}
	wg.Wait()
}

// TestClusterSecretCreatedOnceByConcurrentStores starts three stores at once
// on a fresh cluster, as three hubs do, and checks that all of them end up
// with the same session secret and shard ring.
func TestClusterSecretCreatedOnceByConcurrentStores(t *testing.T) {
	t.Parallel()

	c := natstest.Start(t, 3)
	stores := make([]*Store, 3)
	for i := range stores {
		stores[i] = openTestStore(t, Config{NatsURL: c.URL(i), Replicas: 3})
	}

	secrets := make([][]byte, len(stores))
	rings := make([]Ring, len(stores))
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Go(func() {
			var err error
			secrets[i], err = s.LoadOrCreateSecret(t.Context(), "session-key", 32)
			if err != nil {
				t.Errorf("store %d: %v", i, err)
			}
			rings[i], err = s.LoadOrCreateRing(t.Context(), 8)
			if err != nil {
				t.Errorf("store %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	for i := 1; i < len(stores); i++ {
		if !bytes.Equal(secrets[i], secrets[0]) || !bytes.Equal(rings[i].Salt, rings[0].Salt) {
			t.Errorf("store %d got another secret or ring salt than store 0", i)
		}
	}
}
