package hub

import (
	"bytes"
	"encoding/binary"
	"errors"
	"sync"
	"testing"

	"github.com/google/uuid"
)

// Ring quality figures, measured over ringSessions session ids.
const (
	ringSessions = 1_000_000
	ringShards   = 64
)

func testSalt(seed byte) []byte {
	return bytes.Repeat([]byte{seed}, RingSaltBytes)
}

func mustRing(t testing.TB, salt []byte, shards int) *Ring {
	t.Helper()

	ring, err := NewRing(salt, shards)
	if err != nil {
		t.Fatalf("NewRing(%d shards): %v", shards, err)
	}

	return ring
}

// sessionID returns a deterministic UUID-shaped session id for i, so ring
// figures repeat from run to run. The keyed hash hides the sequence.
func sessionID(i uint64) string {
	var raw uuid.UUID
	binary.LittleEndian.PutUint64(raw[:8], i)
	raw[6] = raw[6]&0x0f | 0x40
	raw[8] = raw[8]&0x3f | 0x80

	return raw.String()
}

// ringFigures returns the busiest shard's count over the mean for sessions ids
// over shards shards, and the fraction of ids that move when one shard is added.
func ringFigures(t testing.TB, sessions, shards int) (maxOverMean, moved float64) {
	t.Helper()

	salt := testSalt(7)
	ring := mustRing(t, salt, shards)
	grown := mustRing(t, salt, shards+1)
	counts := make([]int, shards)
	movedCount := 0

	for i := range sessions {
		id := sessionID(uint64(i))
		shard := ring.Shard(id)
		counts[shard]++

		if grown.Shard(id) != shard {
			movedCount++
		}
	}

	busiest := 0
	for _, count := range counts {
		busiest = max(busiest, count)
	}
	mean := float64(sessions) / float64(shards)

	return float64(busiest) / mean, float64(movedCount) / float64(sessions)
}

func TestSipHashReferenceVectors(t *testing.T) {
	t.Parallel()

	// Key 00 01 .. 0f and messages 00 01 .. (n-1), from the SipHash reference
	// implementation's test vectors.
	want := map[int]uint64{
		0:  0x726fdb47dd0e0e31,
		1:  0x74f839c593dc67fd,
		2:  0x0d6c8009d9a94f5a,
		7:  0xab0200f58b01d137,
		8:  0x93f5f5799a932462,
		9:  0x9e0082df0ba9e4b0,
		15: 0xa129ca6149be45e5,
		16: 0x3f2acc7f57c29bdb,
		17: 0x699ae9f52cbe4794,
		63: 0x958a324ceb064572,
	}
	k0 := uint64(0x0706050403020100)
	k1 := uint64(0x0f0e0d0c0b0a0908)

	for length, expected := range want {
		message := make([]byte, length)
		for i := range message {
			message[i] = byte(i)
		}

		got := sipHash24(k0, k1, string(message))
		if got != expected {
			t.Errorf("sipHash24(%d-byte message) = %#016x, want %#016x", length, got, expected)
		}
	}
}

func TestJumpHashSingleBucket(t *testing.T) {
	t.Parallel()

	for key := range uint64(1000) {
		if got := jumpHash(key*0x9e3779b97f4a7c15, 1); got != 0 {
			t.Fatalf("jumpHash(key %d, 1 bucket) = %d, want 0", key, got)
		}
	}
}

func TestNewRingRejectsBadArguments(t *testing.T) {
	t.Parallel()

	cases := []struct {
		name   string
		salt   []byte
		shards int
	}{
		{"zero shards", testSalt(1), 0},
		{"negative shards", testSalt(1), -3},
		{"too many shards", testSalt(1), MaxShards + 1},
		{"nil salt", nil, 8},
		{"short salt", make([]byte, MinRingSaltBytes-1), 8},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			ring, err := NewRing(tc.salt, tc.shards)
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("NewRing error = %v, want ErrInvalidConfig", err)
			}
			if ring != nil {
				t.Errorf("NewRing returned a ring with error %v", err)
			}
		})
	}
}

func TestNewRingAcceptsLimits(t *testing.T) {
	t.Parallel()

	for _, shards := range []int{1, MaxShards} {
		ring := mustRing(t, make([]byte, MinRingSaltBytes), shards)
		if ring.Shards() != shards {
			t.Errorf("Shards() = %d, want %d", ring.Shards(), shards)
		}
	}
}

func TestRingDeterministic(t *testing.T) {
	t.Parallel()

	first := mustRing(t, testSalt(1), 64)
	second := mustRing(t, testSalt(1), 64)

	for i := range uint64(10_000) {
		id := sessionID(i)
		a, b := first.Shard(id), first.Shard(id)
		if a != b {
			t.Fatalf("Shard(%s) = %d then %d on one ring", id, a, b)
		}
		if c := second.Shard(id); c != a {
			t.Fatalf("Shard(%s) = %d on one ring, %d on another with the same salt", id, a, c)
		}
	}
}

func TestRingSaltChangesMapping(t *testing.T) {
	t.Parallel()

	first := mustRing(t, testSalt(1), 64)
	second := mustRing(t, testSalt(2), 64)
	const ids = 10_000
	same := 0

	for i := range uint64(ids) {
		id := sessionID(i)
		if first.Shard(id) == second.Shard(id) {
			same++
		}
	}

	// Independent mappings agree on 1/64 of the ids (about 156); 400 is more
	// than 19 standard deviations above that.
	if same > 400 {
		t.Errorf("%d of %d ids map to the same shard under two salts, want about %d", same, ids, ids/64)
	}
}

func TestRingShardInRange(t *testing.T) {
	t.Parallel()

	for _, shards := range []int{1, 2, 3, 7, 64, 1000, MaxShards} {
		ring := mustRing(t, testSalt(3), shards)
		for i := range uint64(2000) {
			id := sessionID(i)
			if got := ring.Shard(id); got < 0 || got >= shards {
				t.Fatalf("Shard(%s) = %d with %d shards", id, got, shards)
			}
		}
	}

	// Ids of any length and content stay in range too.
	ring := mustRing(t, testSalt(3), 5)
	for _, id := range []string{"", "x", "\x00\xff", string(make([]byte, 1000))} {
		if got := ring.Shard(id); got < 0 || got >= 5 {
			t.Errorf("Shard(%q) = %d with 5 shards", id, got)
		}
	}
}

func TestRingEvenAndStable(t *testing.T) {
	t.Parallel()

	maxOverMean, moved := ringFigures(t, ringSessions, ringShards)
	t.Logf("%d sessions over %d shards: max/mean %.4f, moved %.4f when shard %d is added",
		ringSessions, ringShards, maxOverMean, moved, ringShards+1)

	if maxOverMean > 1.05 {
		t.Errorf("busiest shard / mean = %.4f, want <= 1.05", maxOverMean)
	}

	limit := 1.0/float64(ringShards+1) + 0.01
	if moved > limit {
		t.Errorf("adding shard %d moved %.4f of sessions, want <= %.4f", ringShards+1, moved, limit)
	}

	// Jump hashing moves keys only to the new shard, so about 1/65 move; far
	// fewer would mean the new shard receives nothing.
	if moved < 0.5/float64(ringShards+1) {
		t.Errorf("adding shard %d moved %.4f of sessions, want about %.4f", ringShards+1, moved, 1.0/float64(ringShards+1))
	}
}

func TestRingMovesOnlyToNewShard(t *testing.T) {
	t.Parallel()

	salt := testSalt(4)
	ring := mustRing(t, salt, 10)
	grown := mustRing(t, salt, 11)

	for i := range uint64(50_000) {
		id := sessionID(i)
		before, after := ring.Shard(id), grown.Shard(id)
		if before != after && after != 10 {
			t.Fatalf("Shard(%s) moved from %d to %d, want moves only to new shard 10", id, before, after)
		}
	}
}

func TestRingShardDoesNotAllocate(t *testing.T) {
	ring := mustRing(t, testSalt(5), 64)
	id := uuid.NewString()

	allocs := testing.AllocsPerRun(1000, func() {
		_ = ring.Shard(id)
	})
	if allocs != 0 {
		t.Errorf("Shard allocates %.1f times per call, want 0", allocs)
	}
}

var (
	ringFiguresOnce          sync.Once
	ringMaxOverMean, ringMov float64
)

// BenchmarkRing measures Shard (ns/op) over UUID session ids and reports the
// ring's evenness (max/mean, 1,000,000 sessions over 64 shards) and stability
// (moved, the fraction of those sessions that change shard when a 65th shard
// is added).
func BenchmarkRing(b *testing.B) {
	ringFiguresOnce.Do(func() {
		ringMaxOverMean, ringMov = ringFigures(b, ringSessions, ringShards)
	})

	ring := mustRing(b, testSalt(7), ringShards)
	ids := make([]string, 4096)
	for i := range ids {
		ids[i] = uuid.NewString()
	}

	b.ReportAllocs()
	b.ResetTimer()

	sink := 0
	for i := 0; b.Loop(); i++ {
		sink += ring.Shard(ids[i&(len(ids)-1)])
	}

	b.ReportMetric(ringMaxOverMean, "max/mean")
	b.ReportMetric(ringMov, "moved")
	if sink < 0 {
		b.Fatal("negative shard")
	}
}
