package hub

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestRateLimiterBurstThenReject(t *testing.T) {
	t.Parallel()

	limiter := NewRateLimiter(2, 5, 100)
	now := time.Now()

	for i := range 5 {
		ok, retry := limiter.Allow("voter", now)
		if !ok {
			t.Fatalf("request %d of a burst of 5 rejected, retry %v", i+1, retry)
		}
		if retry != 0 {
			t.Errorf("request %d allowed with retry hint %v, want 0", i+1, retry)
		}
	}

	ok, retry := limiter.Allow("voter", now)
	if ok {
		t.Fatal("request 6 allowed with a burst of 5 and no time passed")
	}

	// At 2 tokens per second the next token is 500 ms away.
	if retry != 500*time.Millisecond {
		t.Errorf("retry hint = %v, want 500ms", retry)
	}
}

func TestRateLimiterRefills(t *testing.T) {
	t.Parallel()

	limiter := NewRateLimiter(10, 3, 100)
	now := time.Now()

	for range 3 {
		limiter.Allow("voter", now)
	}
	if ok, _ := limiter.Allow("voter", now); ok {
		t.Fatal("request allowed after the burst was spent")
	}

	// 99 ms earns 0.99 tokens: still rejected, with 1 ms left.
	ok, retry := limiter.Allow("voter", now.Add(99*time.Millisecond))
	if ok {
		t.Fatal("request allowed 99ms after the burst at 10 per second")
	}
	if retry != time.Millisecond {
		t.Errorf("retry hint at 99ms = %v, want 1ms", retry)
	}

	if ok, _ := limiter.Allow("voter", now.Add(100*time.Millisecond)); !ok {
		t.Fatal("request rejected 100ms after the burst at 10 per second")
	}

	// A long idle time refills to burst, not beyond.
	later := now.Add(time.Hour)
	allowed := 0
	for range 10 {
		if ok, _ := limiter.Allow("voter", later); ok {
			allowed++
		}
	}
	if allowed != 3 {
		t.Errorf("after an hour idle, %d requests allowed at once, want the burst of 3", allowed)
	}
}

func TestRateLimiterClockGoingBackwards(t *testing.T) {
	t.Parallel()

	limiter := NewRateLimiter(1, 1, 10)
	now := time.Now()

	if ok, _ := limiter.Allow("voter", now); !ok {
		t.Fatal("first request rejected")
	}
	if ok, _ := limiter.Allow("voter", now.Add(-time.Hour)); ok {
		t.Error("request allowed at an earlier time with an empty bucket")
	}
	if ok, _ := limiter.Allow("voter", now.Add(time.Second)); !ok {
		t.Error("request rejected one token-time after the first")
	}
}

// TestRateLimiterLateCallerWithRoomLeft covers a caller that read the clock,
// then waited for the lock while a later call of the same key went first: with
// tokens to spare it is allowed, as if it arrived at the later time.
func TestRateLimiterLateCallerWithRoomLeft(t *testing.T) {
	t.Parallel()

	limiter := NewRateLimiter(1e9, 1_000_000_000, 10)
	now := time.Now()

	if ok, _ := limiter.Allow("voter", now.Add(3*time.Second)); !ok {
		t.Fatal("first request rejected")
	}
	if ok, retry := limiter.Allow("voter", now); !ok {
		t.Errorf("request read 3s before the previous one was refused (retry in %s) with a burst of 1e9", retry)
	}
}

func TestRateLimiterIndependentKeys(t *testing.T) {
	t.Parallel()

	limiter := NewRateLimiter(1, 2, 100)
	now := time.Now()

	for range 2 {
		limiter.Allow("a", now)
	}
	if ok, _ := limiter.Allow("a", now); ok {
		t.Fatal("key a allowed beyond its burst")
	}

	for i := range 2 {
		if ok, retry := limiter.Allow("b", now); !ok {
			t.Errorf("key b request %d rejected (retry %v) because key a spent its burst", i+1, retry)
		}
	}
}

func TestRateLimiterBoundedKeys(t *testing.T) {
	t.Parallel()

	// 1000 keys over 32 stripes of 2 fill every stripe, except with a
	// probability below 1e-10.
	const (
		maxKeys = 64
		newKeys = 1000
	)
	limiter := NewRateLimiter(1, 4, maxKeys)
	now := time.Now()
	rejected := 0

	for i := range newKeys {
		ok, retry := limiter.Allow(fmt.Sprintf("key-%d", i), now)
		if !ok {
			rejected++
			if retry <= 0 {
				t.Fatalf("new key %d rejected without a retry hint", i)
			}
		}
		if n := limiter.Len(); n > maxKeys {
			t.Fatalf("limiter tracks %d keys, want at most %d", n, maxKeys)
		}
	}

	if rejected != newKeys-maxKeys {
		t.Errorf("%d of %d new keys rejected with room for %d, want %d", rejected, newKeys, maxKeys, newKeys-maxKeys)
	}

	// Each bucket spent 1 of 4 tokens at 1 per second, so after one second
	// every bucket is full again and gives way to a new key.
	later := now.Add(time.Second)
	admitted := 0
	for i := range newKeys {
		if ok, _ := limiter.Allow(fmt.Sprintf("late-%d", i), later); ok {
			admitted++
		}
	}
	if admitted != maxKeys {
		t.Errorf("%d new keys admitted after every bucket refilled, want %d", admitted, maxKeys)
	}
	if n := limiter.Len(); n != maxKeys {
		t.Errorf("limiter tracks %d keys, want %d", n, maxKeys)
	}
}

func TestRateLimiterFullKeepsKnownKeys(t *testing.T) {
	t.Parallel()

	// One key per stripe, so every stripe is full after the first key.
	limiter := NewRateLimiter(1, 3, 1)
	now := time.Now()

	if ok, _ := limiter.Allow("known", now); !ok {
		t.Fatal("first key rejected")
	}

	ok, retry := limiter.Allow("new", now)
	if ok {
		t.Fatal("new key allowed in a full limiter whose bucket has not refilled")
	}
	if retry != time.Second {
		t.Errorf("retry hint = %v, want 1s until the known bucket refills", retry)
	}

	if ok, _ := limiter.Allow("known", now); !ok {
		t.Error("known key rejected because the limiter is full")
	}
}

func TestRateLimiterSweepInterval(t *testing.T) {
	t.Parallel()

	limiter := NewRateLimiter(1000, 1, 1)
	now := time.Now()
	limiter.Allow("first", now)

	// The bucket is full again after 1 ms, but the sweep that found nothing
	// to evict holds off further sweeps for minSweepInterval.
	ok, retry := limiter.Allow("second", now)
	if ok {
		t.Fatal("second key allowed in a full limiter")
	}
	if retry != minSweepInterval {
		t.Errorf("retry hint = %v, want %v", retry, minSweepInterval)
	}

	if ok, _ := limiter.Allow("second", now.Add(minSweepInterval/2)); ok {
		t.Error("second key allowed before the next sweep")
	}
	if ok, retry := limiter.Allow("second", now.Add(minSweepInterval)); !ok {
		t.Errorf("second key rejected at the next sweep (retry %v)", retry)
	}
}

func TestRateLimiterDefaults(t *testing.T) {
	t.Parallel()

	limiter := NewRateLimiter(-1, 0, 0)
	if want := int64(time.Second / DefaultRatePerSecond); limiter.interval != want {
		t.Errorf("interval = %v, want %v", time.Duration(limiter.interval), time.Duration(want))
	}
	if want := (DefaultRateBurst - 1) * limiter.interval; limiter.tolerance != want {
		t.Errorf("tolerance = %v, want %v", time.Duration(limiter.tolerance), time.Duration(want))
	}

	capacity := 0
	for i := range limiter.stripes {
		capacity += limiter.stripes[i].capacity
	}
	if capacity != DefaultRateMaxKeys {
		t.Errorf("capacity = %d keys, want %d", capacity, DefaultRateMaxKeys)
	}
}

func TestRateLimiterConcurrent(t *testing.T) {
	t.Parallel()

	const (
		workers = 8
		keys    = 16
		burst   = 10
	)
	limiter := NewRateLimiter(1, burst, 1000)
	now := time.Now()
	var allowed atomic.Int64
	var wg sync.WaitGroup

	for w := range workers {
		wg.Go(func() {
			for i := range 200 {
				key := fmt.Sprintf("key-%d", (w+i)%keys)
				if ok, _ := limiter.Allow(key, now); ok {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()

	// At one instant each key allows exactly its burst, however the calls interleave.
	if got := allowed.Load(); got != keys*burst {
		t.Errorf("%d requests allowed over %d keys, want %d", got, keys, keys*burst)
	}
}

func BenchmarkRateLimiterAllow(b *testing.B) {
	limiter := NewRateLimiter(1e9, 1<<30, 1<<16)
	keys := make([]string, 4096)
	for i := range keys {
		keys[i] = fmt.Sprintf("session-%d", i)
	}
	now := time.Now()

	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			limiter.Allow(keys[i&(len(keys)-1)], now)
			i++
		}
	})
}
