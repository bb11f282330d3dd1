package hub

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/bits"
)

// Ring limits.
const (
	// MaxShards is the largest shard count a Ring accepts.
	MaxShards = 4096
	// MinRingSaltBytes is the shortest ring salt accepted: 16 bytes, the size
	// of the SipHash key derived from it.
	MinRingSaltBytes = 16
	// RingSaltBytes is the size of a salt made by NewRingSalt.
	RingSaltBytes = 32
)

// Ring maps voter session ids to shards by jump consistent hashing of a keyed
// hash of the id. The key comes from a secret salt, so a client without the
// salt cannot choose session ids that all land on one shard.
//
// Every shard receives 1/N of the sessions in expectation, and growing the ring
// from N to N+1 shards moves only about 1/(N+1) of them. A Ring is immutable
// and safe for concurrent use. The salt and the shard count must stay the same
// for the life of a data directory, because the mapping depends on both.
type Ring struct {
	k0, k1 uint64
	shards int
}

// NewRing returns a ring of shards shards (1 to MaxShards) keyed by salt
// (at least MinRingSaltBytes bytes, from NewRingSalt or another secret random
// source). The error wraps ErrInvalidConfig and names the bad value.
func NewRing(salt []byte, shards int) (*Ring, error) {
	if shards < 1 || shards > MaxShards {
		return nil, fmt.Errorf("%w: shard count %d is out of range; use 1 to %d", ErrInvalidConfig, shards, MaxShards)
	}

	if len(salt) < MinRingSaltBytes {
		return nil, fmt.Errorf("%w: ring salt is %d bytes; use at least %d random bytes", ErrInvalidConfig, len(salt), MinRingSaltBytes)
	}

	// The whole salt feeds the 128-bit SipHash key, whatever its length.
	digest := sha256.Sum256(salt)
	ring := &Ring{
		k0:     binary.LittleEndian.Uint64(digest[0:8]),
		k1:     binary.LittleEndian.Uint64(digest[8:16]),
		shards: shards,
	}

	return ring, nil
}

// NewRingSalt returns RingSaltBytes bytes from crypto/rand, for NewRing.
func NewRingSalt() []byte {
	salt := make([]byte, RingSaltBytes)
	_, _ = rand.Read(salt) // crypto/rand.Read never returns an error since Go 1.24.

	return salt
}

// Shard returns the shard, 0 to Shards()-1, that owns sessionID. It does not
// allocate.
func (r *Ring) Shard(sessionID string) int {
	key := sipHash24(r.k0, r.k1, sessionID)

	return jumpHash(key, r.shards)
}

// Shards returns the number of shards.
func (r *Ring) Shards() int {
	return r.shards
}

// jumpHash returns the bucket, 0 to buckets-1, of key by jump consistent
// hashing (Lamping and Veach, "A Fast, Minimal Memory, Consistent Hash
// Algorithm", 2014).
//
// The key seeds a linear congruential generator. Starting at bucket 0, each
// step jumps forward to the next bucket at which the key would move if the
// ring grew to that size. The last jump below buckets is the result. A key
// moves from n to n+1 buckets with probability 1/(n+1), so the expected number
// of steps is ln(buckets).
func jumpHash(key uint64, buckets int) int {
	var bucket, next int64 = -1, 0
	for next < int64(buckets) {
		bucket = next
		key = key*2862933555777941757 + 1
		next = int64(float64(bucket+1) * (float64(int64(1)<<31) / float64((key>>33)+1)))
	}

	return int(bucket)
}

// sipHash24 returns the SipHash-2-4 value of s under the 128-bit key (k0, k1),
// as defined by Aumasson and Bernstein, "SipHash: a fast short-input PRF"
// (2012). SipHash is a keyed pseudorandom function built for hash-flooding
// resistance: without the key, outputs cannot be predicted or steered.
func sipHash24(k0, k1 uint64, s string) uint64 {
	v0 := k0 ^ 0x736f6d6570736575
	v1 := k1 ^ 0x646f72616e646f6d
	v2 := k0 ^ 0x6c7967656e657261
	v3 := k1 ^ 0x7465646279746573
	length := len(s)

	// Compression: two rounds per little-endian 8-byte word.
	for ; len(s) >= 8; s = s[8:] {
		m := uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
			uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
		v3 ^= m
		v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
		v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
		v0 ^= m
	}

	// The last word holds the 0 to 7 remaining bytes and the length mod 256 in
	// its top byte.
	last := uint64(length) << 56
	for i := len(s) - 1; i >= 0; i-- {
		last |= uint64(s[i]) << (8 * uint(i))
	}
	v3 ^= last
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0 ^= last

	// Finalization: four rounds.
	v2 ^= 0xff
	for range 4 {
		v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	}

	return v0 ^ v1 ^ v2 ^ v3
}

// sipRound is one SipRound of add, rotate and xor steps.
func sipRound(v0, v1, v2, v3 uint64) (uint64, uint64, uint64, uint64) {
	v0 += v1
	v1 = bits.RotateLeft64(v1, 13)
	v1 ^= v0
	v0 = bits.RotateLeft64(v0, 32)

	v2 += v3
	v3 = bits.RotateLeft64(v3, 16)
	v3 ^= v2

	v0 += v3
	v3 = bits.RotateLeft64(v3, 21)
	v3 ^= v0

	v2 += v1
	v1 = bits.RotateLeft64(v1, 17)
	v1 ^= v2
	v2 = bits.RotateLeft64(v2, 32)

	return v0, v1, v2, v3
}
