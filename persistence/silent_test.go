package persistence

import (
	"context"
	"testing"
	"time"

	"github.com/livevote/livevote/persistence/natstest"
)

// TestReplayShardGivesUpOnASilentServer replays a shard while its server has
// fallen silent: the connection stays open but carries nothing, as when the
// server freezes or the network holds its packets. The replay's context
// allows a minute, as a shard's recovery does, yet the replay returns an
// error within DefaultTimeout per request instead of waiting out that minute.
func TestReplayShardGivesUpOnASilentServer(t *testing.T) {
	t.Parallel()
	ns := startRestartableServer(t, t.TempDir(), -1)
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	proxy := natstest.StartProxy(t, ns.Addr().String())
	store := openTestStore(t, Config{NatsURL: "nats://" + proxy.Addr()})

	_, err := store.AppendFenced(t.Context(), Batch{ID: "b1", Shard: 0, Votes: []VoteRecord{{VoteID: "v1", Poll: "p", Voter: "u1", Options: []string{"a"}}}}, 0)
	if err != nil {
		t.Fatalf("AppendFenced: %v", err)
	}

	proxy.Cut()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	returned := make(chan error, 1)
	go func() {
		_, err := store.ReplayShard(ctx, 0, 0, func(uint64, Batch) error { return nil })
		returned <- err
	}()

	select {
	case err := <-returned:
		if err == nil {
			t.Error("ReplayShard succeeded while the server was silent")
		}
		t.Logf("ReplayShard returned: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("ReplayShard still waits 30 s after the server fell silent; each request should give up after DefaultTimeout")
	}

	// The store closes cleanly only on a connection that is not
	// reconnecting, so the link heals before the cleanup closes it.
	proxy.Heal()
	deadline := time.Now().Add(20 * time.Second)
	for !store.Conn().IsConnected() {
		if time.Now().After(deadline) {
			t.Fatal("the store did not reconnect within 20 s of the heal")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
