// Command jsbench measures the raw JetStream publish ceiling on this machine: an
// embedded nats-server with a file store in a temporary directory, N clients each
// publishing one message per publish and waiting for its ack. It prints one JSON line
// with the messages per second and the ack latency percentiles.
//
//	go run ./loadtest/jsbench -clients 64 -duration 10s -sync
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// result is the JSON line that jsbench prints.
type result struct {
	Clients    int     `json:"clients"`
	Sync       bool    `json:"sync_always"`
	PayloadB   int     `json:"payload_bytes"`
	DurationS  float64 `json:"duration_s"`
	Published  int64   `json:"published"`
	Failed     int64   `json:"failed"`
	PerSecond  float64 `json:"msgs_per_second"`
	P50Ms      float64 `json:"ack_p50_ms"`
	P99Ms      float64 `json:"ack_p99_ms"`
	MaxMs      float64 `json:"ack_max_ms"`
	ServerNote string  `json:"server"`
}

func main() {
	clients := flag.Int("clients", 64, "concurrent publishers, each with one publish in flight (1 to 1024)")
	duration := flag.Duration("duration", 10*time.Second, "how long to publish (up to 5m)")
	syncAlways := flag.Bool("sync", false, "fsync the JetStream file store before each ack (sync_interval: always)")
	payload := flag.Int("payload", 64, "message size in bytes (1 to 65536)")
	flag.Parse()

	if *clients < 1 || *clients > 1024 || *duration <= 0 || *duration > 5*time.Minute || *payload < 1 || *payload > 65536 {
		fmt.Fprintln(os.Stderr, "jsbench: -clients must be 1 to 1024, -duration up to 5m, -payload 1 to 65536")
		os.Exit(2)
	}
	r, err := run(*clients, *duration, *syncAlways, *payload)
	if err != nil {
		fmt.Fprintln(os.Stderr, "jsbench:", err)
		os.Exit(1)
	}
	_ = json.NewEncoder(os.Stdout).Encode(r)
}

func run(clients int, duration time.Duration, syncAlways bool, payload int) (result, error) {
	dir, err := os.MkdirTemp("", "jsbench-")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)

	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, SyncAlways: syncAlways, NoSigs: true})
	if err != nil {
		return result{}, fmt.Errorf("start nats-server: %w", err)
	}
	go ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		return result{}, errors.New("nats-server not ready after 10 s")
	}

	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		return result{}, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return result{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), duration+time.Minute)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BENCH", Subjects: []string{"bench.>"}, Storage: jetstream.FileStorage}); err != nil {
		return result{}, fmt.Errorf("create stream: %w", err)
	}

	r := result{Clients: clients, Sync: syncAlways, PayloadB: payload, ServerNote: "embedded nats-server " + server.VERSION + ", file store"}
	hist, published, failed := publishAll(ctx, js, clients, duration, payload)
	r.DurationS = duration.Seconds()
	r.Published, r.Failed = published, failed
	r.PerSecond = float64(published) / duration.Seconds()
	r.P50Ms = float64(hist.ValueAtQuantile(50)) / 1000
	r.P99Ms = float64(hist.ValueAtQuantile(99)) / 1000
	r.MaxMs = float64(hist.Max()) / 1000
	return r, nil
}

// publishAll runs clients publishers until duration has passed and returns the ack
// latency histogram (µs) and the counts.
func publishAll(ctx context.Context, js jetstream.JetStream, clients int, duration time.Duration, payload int) (*hdrhistogram.Histogram, int64, int64) {
	var (
		mu        sync.Mutex
		hist      = hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)
		published atomic.Int64
		failed    atomic.Int64
		wg        sync.WaitGroup
	)
	msg := make([]byte, payload)
	end := time.Now().Add(duration)
	for i := range clients {
		wg.Go(func() {
			subject := fmt.Sprintf("bench.%d", i)
			for time.Now().Before(end) {
				start := time.Now()
				if _, err := js.Publish(ctx, subject, msg); err != nil {
					failed.Add(1)
					continue
				}
				d := time.Since(start)
				published.Add(1)
				mu.Lock()
				_ = hist.RecordValue(max(int64(d/time.Microsecond), 1))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return hist, published.Load(), failed.Load()
}
