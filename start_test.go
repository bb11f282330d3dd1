package main

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
)

// TestStartFailuresReturnErrors checks that each refusal at start is an error that
// names the problem, and that the store opened before it is closed again.
func TestStartFailuresReturnErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	used := t.TempDir()

	cases := []struct {
		name string
		edit func(*config)
		want string
	}{
		{"port in use", func(c *config) { c.Addr = busy.Addr().String() }, "listen on -addr " + busy.Addr().String()},
		{"unwritable data directory", func(c *config) { c.Data = "/proc/livevote-test" }, "/proc/livevote-test"},
		{"shard count changed", func(c *config) { c.Data = used; c.Shards = 4 }, "shard"},
		{"NATS unreachable", func(c *config) { c.NatsURL = "nats://127.0.0.1:1" }, "127.0.0.1:1"},
	}
	// The data directory of "shard count changed" is created with 8 shards first.
	seed := testConfig(t)
	seed.Data = used
	startNode(t, seed).close()

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			tc.edit(&cfg)
			a, err := start(context.Background(), cfg, slog.New(slog.DiscardHandler))
			if err == nil {
				a.stop(cfg.ShutdownTimeout, slog.New(slog.DiscardHandler))
				t.Fatal("start succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not name %q", err, tc.want)
			}
		})
	}

	// The failed starts released the data directory: a normal start on it works.
	retry := testConfig(t)
	retry.Data = used
	startNode(t, retry).close()
}
