package persistence

import (
	"bytes"
	"fmt"
	"reflect"
	"testing"
)

// TestReopenKeepsEverything writes every kind of record, closes the Store
// and checks that a new Store on the same data directory reads all of it.
func TestReopenKeepsEverything(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := t.Context()

	first, err := Open(ctx, Config{DataDir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}

	var batches []Batch
	var lastSeq uint64
	for i := range 6 {
		b := testBatch(fmt.Sprintf("durable-%d", i), i%2, i+1)
		lastSeq, err = first.AppendBatch(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		batches = append(batches, b)
	}
	ring, err := first.LoadOrCreateRing(ctx, 8)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := first.LoadOrCreateSecret(ctx, "session-key", 32)
	if err != nil {
		t.Fatal(err)
	}
	snapshot := bytes.Repeat([]byte("snapshot "), 50000)
	err = first.SaveSnapshot(ctx, 1, lastSeq, snapshot)
	if err != nil {
		t.Fatal(err)
	}
	_, err = first.PutCatalog(ctx, "event.e1", []byte(`{"title":"kept"}`))
	if err != nil {
		t.Fatal(err)
	}
	err = first.PutResults(ctx, "p1", []byte(`{"version":7}`))
	if err != nil {
		t.Fatal(err)
	}

	err = first.Close()
	if err != nil {
		t.Fatalf("Close: %v", err)
	}

	second := openTestStore(t, Config{DataDir: dir})

	for shard := range 2 {
		got, _ := replayAll(t, second, shard, 0)
		var want []Batch
		for _, b := range batches {
			if b.Shard == shard {
				want = append(want, b)
			}
		}
		var gotBatches []Batch
		for _, r := range got {
			gotBatches = append(gotBatches, r.batch)
		}
		if !reflect.DeepEqual(gotBatches, want) {
			t.Errorf("shard %d after reopen: replayed %d batches, want %d equal ones", shard, len(gotBatches), len(want))
		}
	}

	ring2, err := second.LoadOrCreateRing(ctx, 8)
	if err != nil || !reflect.DeepEqual(ring2, ring) {
		t.Errorf("ring after reopen = %+v, %v; want the stored ring", ring2.Shards, err)
	}
	secret2, err := second.LoadOrCreateSecret(ctx, "session-key", 32)
	if err != nil || !bytes.Equal(secret2, secret) {
		t.Errorf("secret after reopen differs (err %v)", err)
	}
	seq, data, err := second.LoadSnapshot(ctx, 1)
	if err != nil || seq != lastSeq || !bytes.Equal(data, snapshot) {
		t.Errorf("snapshot after reopen: sequence %d, %d bytes, %v; want %d, %d bytes", seq, len(data), err, lastSeq, len(snapshot))
	}
	event, err := second.GetCatalog(ctx, "event.e1")
	if err != nil || string(event) != `{"title":"kept"}` {
		t.Errorf("catalog after reopen = %q, %v", event, err)
	}
	results, err := second.GetResults(ctx, "p1")
	if err != nil || string(results) != `{"version":7}` {
		t.Errorf("results after reopen = %q, %v", results, err)
	}

	// The duplicate window survives the restart, so a retried append of a
	// batch acknowledged before the restart is not stored twice.
	seq, err = second.AppendBatch(ctx, batches[5])
	if err != nil || seq != lastSeq {
		t.Errorf("retry after reopen = sequence %d, %v; want the original %d", seq, err, lastSeq)
	}
	seq, err = second.AppendBatch(ctx, testBatch("after-reopen", 0, 1))
	if err != nil || seq != lastSeq+1 {
		t.Errorf("append after reopen = sequence %d, %v; want %d", seq, err, lastSeq+1)
	}
}
