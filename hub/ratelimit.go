package hub

import (
	"hash/maphash"
	"math"
	"sync"
	"time"
)

// Rate limiter defaults, used by NewRateLimiter for arguments out of range.
const (
	// DefaultRatePerSecond is the default steady rate per key, in requests per second.
	DefaultRatePerSecond = 5
	// DefaultRateBurst is the default number of requests a key may send at once.
	DefaultRateBurst = 20
	// DefaultRateMaxKeys is the default bound on tracked keys.
	DefaultRateMaxKeys = 1_000_000
)

const (
	// limiterStripes is the number of independently locked parts of a
	// RateLimiter. Keys are spread over them by a seeded hash.
	limiterStripes = 32

	// minSweepInterval is the shortest time between two eviction sweeps of one
	// full stripe. A sweep scans every bucket of the stripe, so this bounds the
	// scanning cost when new keys keep arriving at a full limiter. New keys that
	// arrive in between are rejected with the time left as the retry hint.
	minSweepInterval = 250 * time.Millisecond
)

// RateLimiter applies one token bucket per key, such as a voter session or a
// client address. Each bucket holds up to burst tokens, refills at perSecond
// tokens per second, and every allowed request takes one token. RateLimiter is
// safe for concurrent use.
//
// Each bucket is stored as one theoretical arrival time (the generic cell rate
// algorithm, which allows exactly what a token bucket allows), so all
// arithmetic is in integer nanoseconds. A request at time t is allowed when
// the arrival time is at most t + (burst-1) emission intervals, and each
// allowed request moves it one emission interval (1s / perSecond) later.
//
// Memory is bounded: at most maxKeys buckets exist. Each costs about 35 bytes
// of map space plus its key string (measured with 36-byte UUID keys, Go 1.26 on
// amd64), so a million keys take roughly 80 MB. A bucket whose arrival
// time has passed has refilled to burst and carries no state, so a full
// limiter evicts such buckets when a new key arrives. If none has refilled,
// the new key is rejected with a retry hint and the limiter does not grow.
// Keys already tracked are never rejected for lack of room.
type RateLimiter struct {
	interval  int64 // emission interval: nanoseconds per token
	tolerance int64 // (burst-1) * interval: how far the arrival time may run ahead
	epoch     time.Time
	seed      maphash.Seed
	stripes   []limiterStripe
}

type limiterStripe struct {
	mu        sync.Mutex
	arrivals  map[string]int64 // key -> theoretical arrival time, nanoseconds since epoch
	capacity  int
	nextSweep int64 // nanoseconds since epoch before which a full stripe skips sweeping
	latest    int64 // the latest call time seen, nanoseconds since epoch
}

// NewRateLimiter returns a limiter that allows each key burst requests at once
// and perSecond requests per second after that, tracking at most maxKeys keys.
// A perSecond that is not positive and finite, a burst below 1 or a maxKeys
// below 1 takes DefaultRatePerSecond, DefaultRateBurst or DefaultRateMaxKeys.
// The rate is kept as a whole number of nanoseconds per token (at least 1).
//
// The keys are spread over 32 stripes (fewer when maxKeys is below 32), each
// holding an equal share of maxKeys, so a stripe can fill while others still
// have room.
func NewRateLimiter(perSecond float64, burst int, maxKeys int) *RateLimiter {
	if !(perSecond > 0) || math.IsInf(perSecond, 1) {
		perSecond = DefaultRatePerSecond
	}
	if burst < 1 {
		burst = DefaultRateBurst
	}
	if maxKeys < 1 {
		maxKeys = DefaultRateMaxKeys
	}

	// Both values are capped so that tolerance and arrival times cannot overflow.
	interval := int64(min(math.Round(float64(time.Second)/perSecond), float64(time.Hour)))
	interval = max(interval, 1)
	tolerance := min(int64(burst-1), int64(time.Hour*24*365)/interval) * interval

	stripeCount := min(limiterStripes, maxKeys)
	limiter := &RateLimiter{
		interval:  interval,
		tolerance: tolerance,
		epoch:     time.Now(),
		seed:      maphash.MakeSeed(),
		stripes:   make([]limiterStripe, stripeCount),
	}

	// Share maxKeys exactly: the first maxKeys % stripeCount stripes take one more.
	for i := range limiter.stripes {
		capacity := maxKeys / stripeCount
		if i < maxKeys%stripeCount {
			capacity++
		}
		limiter.stripes[i].capacity = capacity
		limiter.stripes[i].arrivals = make(map[string]int64)
	}

	return limiter
}

// Allow takes one token from key's bucket at time now and reports whether the
// request may proceed. When it may not, retryAfter is the wait until a token
// is free, or, when the limiter is full, until a bucket can be evicted. Callers
// pass time.Now(); tests pass a fake clock. A now earlier than a previous call
// for the same key finds fewer tokens, never more.
func (l *RateLimiter) Allow(key string, now time.Time) (ok bool, retryAfter time.Duration) {
	at := int64(now.Sub(l.epoch))
	stripe := &l.stripes[maphash.String(l.seed, key)%uint64(len(l.stripes))]

	stripe.mu.Lock()
	defer stripe.mu.Unlock()

	// Callers read the clock before they wait for the lock, so a call may
	// bring an earlier time than one that got the lock first. Time within
	// a stripe only moves forward; otherwise a delayed call would find the
	// key's arrival time far ahead of its own and be refused.
	at = max(at, stripe.latest)
	stripe.latest = at

	arrival, found := stripe.arrivals[key]
	if !found {
		wait := l.makeRoom(stripe, at)
		if wait > 0 {
			return false, wait
		}
	}

	arrival = max(arrival, at)
	if ahead := arrival - at; ahead > l.tolerance {
		return false, time.Duration(ahead - l.tolerance)
	}
	stripe.arrivals[key] = arrival + l.interval

	return true, 0
}

// Len returns the number of keys tracked now.
func (l *RateLimiter) Len() int {
	total := 0
	for i := range l.stripes {
		stripe := &l.stripes[i]
		stripe.mu.Lock()
		total += len(stripe.arrivals)
		stripe.mu.Unlock()
	}

	return total
}

// makeRoom ensures the stripe has room for one more key at time at, evicting
// buckets that have refilled to burst. It returns 0 when there is room, or else
// the retry hint for the rejected key. The caller holds stripe.mu.
func (l *RateLimiter) makeRoom(stripe *limiterStripe, at int64) time.Duration {
	if len(stripe.arrivals) < stripe.capacity {
		return 0
	}

	if at < stripe.nextSweep {
		return time.Duration(stripe.nextSweep - at)
	}

	// Sweep: evict every full bucket and find the one closest to full.
	soonest := int64(math.MaxInt64)
	for key, arrival := range stripe.arrivals {
		if arrival <= at {
			delete(stripe.arrivals, key)
			continue
		}

		soonest = min(soonest, arrival-at)
	}

	if len(stripe.arrivals) < stripe.capacity {
		stripe.nextSweep = at + int64(minSweepInterval)

		return 0
	}

	// Nothing could be evicted. Existing buckets only move away from full until
	// the next sweep, because no new bucket enters a full stripe.
	wait := max(soonest, int64(minSweepInterval))
	stripe.nextSweep = at + wait

	return time.Duration(wait)
}
