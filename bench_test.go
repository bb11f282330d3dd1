package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/livevote/livevote/hub"
	"github.com/livevote/livevote/persistence"
	"github.com/livevote/livevote/transport"
)

// BenchmarkVoteRoundTrip measures votes over real WebSockets against a node with the
// embedded JetStream store fsyncing before each ack: each of 64 sockets sends a vote,
// waits for its ack and sends the next (a vote change, so every vote is stored).
func BenchmarkVoteRoundTrip(b *testing.B) {
	for _, sync := range []string{"always", "interval"} {
		b.Run("sync="+sync, func(b *testing.B) { benchmarkRoundTrip(b, sync, 64) })
	}
}

func benchmarkRoundTrip(b *testing.B, syncMode string, sockets int) {
	cfg := testConfig(b)
	cfg.Sync = persistence.SyncMode(syncMode)
	cfg.Shards = 64
	cfg.VoteRate, cfg.VoteBurst = 1e9, 1e9
	n := startNode(b, cfg)
	ev := n.createEvent("Bench")
	poll := n.createPoll(ev, hub.NewPoll{Question: "Q", Options: []string{"A", "B", "C", "D"}, AllowChange: true}, true)

	conns := make([]*websocket.Conn, sockets)
	for i := range conns {
		_, token := n.app.hub.Sessions().New()
		url := "ws" + strings.TrimPrefix(n.base, "http") + "/ws?event=" + ev.Event.Code + "&session=" + token
		c, _, err := websocket.Dial(context.Background(), url, &websocket.DialOptions{Subprotocols: []string{transport.Subprotocol}})
		if err != nil {
			b.Fatalf("dial: %v", err)
		}
		defer c.CloseNow()
		conns[i] = c
	}

	var (
		mu        sync.Mutex
		latencies []time.Duration
		next      = make(chan struct{}, b.N)
	)
	for range b.N {
		next <- struct{}{}
	}
	close(next)

	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() {
			own := make([]time.Duration, 0, b.N/sockets+1)
			for range next {
				sent := time.Now()
				if err := roundTrip(c, poll.ID, poll.Options[i%4].ID); err != nil {
					b.Error(err)
					return
				}
				own = append(own, time.Since(sent))
			}
			mu.Lock()
			latencies = append(latencies, own...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()

	slices.Sort(latencies)
	if len(latencies) > 0 {
		b.ReportMetric(float64(len(latencies))/elapsed.Seconds(), "votes/s")
		b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds())/1000, "p99-ms")
	}
}

// roundTrip sends one vote and reads until its ack, skipping broadcasts.
func roundTrip(c *websocket.Conn, poll, option string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := uuid.NewString()
	frame := fmt.Sprintf(`{"type":"vote","vote_id":%q,"poll":%q,"options":[%q]}`, id, poll, option)
	if err := c.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
		return err
	}
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			return err
		}
		var ack struct {
			Type   string `json:"type"`
			VoteID string `json:"vote_id"`
			Status string `json:"status"`
		}
		if err := json.Unmarshal(data, &ack); err != nil {
			return err
		}
		if ack.Type == "ack" && ack.VoteID == id {
			if ack.Status != "accepted" {
				return fmt.Errorf("vote %s answered %s: %s", id, ack.Status, data)
			}
			return nil
		}
	}
}
