package persistence

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"unicode/utf8"
)

// Limits of a vote batch, checked by EncodeBatch, DecodeBatch and AppendBatch.
const (
	// MaxBatchBytes is the largest encoded batch that AppendBatch stores:
	// 512 KiB, half of the 1 MiB default max_payload of a NATS server. A
	// batch of typical votes (about 100 bytes each) fits about 5,000 votes.
	MaxBatchBytes = 512 << 10

	// MaxShards bounds a batch's shard number: shards are 0 to MaxShards-1.
	MaxShards = 4096

	// MaxFieldBytes is the longest batch id, vote id, poll id, voter id or
	// option id, in bytes of UTF-8.
	MaxFieldBytes = 256

	// MaxOptionsPerVote is the most options one vote can select.
	MaxOptionsPerVote = 256
)

// batchMagic starts every encoded batch: "LVB" and the format version.
var batchMagic = [4]byte{'L', 'V', 'B', 1}

// VoteRecord is one accepted vote as stored in the vote stream.
type VoteRecord struct {
	VoteID  string   `json:"vote_id"` // client UUID string
	Poll    string   `json:"poll"`
	Voter   string   `json:"voter"` // session id
	Options []string `json:"options"`
	At      int64    `json:"at"` // unix milliseconds
}

// Batch is the votes of one append to one shard's subject.
type Batch struct {
	ID    string       `json:"id"` // unique; the JetStream Msg-Id that makes a retried append idempotent
	Shard int          `json:"shard"`
	Votes []VoteRecord `json:"votes"`
}

// EncodeBatch encodes b in LiveVote's binary batch format, version 1:
//
//	"LVB" 0x01, id, uvarint shard, uvarint vote count, then per vote:
//	vote id, poll, voter, uvarint option count, options, zigzag varint at
//
// where each string is a uvarint byte length and the bytes. EncodeBatch
// returns an error wrapping ErrInvalidBatch unless:
//
//   - b has a non-empty id, a shard in [0, MaxShards) and at least one vote;
//   - each vote has a vote id, poll and voter, and 1 to MaxOptionsPerVote
//     options;
//   - every string is non-empty valid UTF-8 of at most MaxFieldBytes.
//
// AppendBatch, not EncodeBatch, checks MaxBatchBytes.
func EncodeBatch(b Batch) ([]byte, error) {
	err := validateBatch(b)
	if err != nil {
		return nil, fmt.Errorf("%w: batch %q: %v", ErrInvalidBatch, b.ID, err)
	}

	out := make([]byte, 0, encodedSize(b))
	out = append(out, batchMagic[:]...)

	return appendBatchBody(out, b), nil
}

// appendBatchBody appends the encoding of b without a header: the part of
// EncodeBatch after "LVB" 0x01, which is also how EncodeMessage writes each
// batch. The caller has validated b.
func appendBatchBody(out []byte, b Batch) []byte {
	out = appendString(out, b.ID)
	out = binary.AppendUvarint(out, uint64(b.Shard))
	out = binary.AppendUvarint(out, uint64(len(b.Votes)))

	for _, v := range b.Votes {
		out = appendString(out, v.VoteID)
		out = appendString(out, v.Poll)
		out = appendString(out, v.Voter)
		out = binary.AppendUvarint(out, uint64(len(v.Options)))
		for _, option := range v.Options {
			out = appendString(out, option)
		}
		out = binary.AppendVarint(out, v.At)
	}

	return out
}

// encodedSize returns an upper bound of the encoded size of b, so that
// EncodeBatch allocates once.
func encodedSize(b Batch) int {
	n := len(batchMagic) + 3*binary.MaxVarintLen64 + len(b.ID)
	for _, v := range b.Votes {
		n += len(v.VoteID) + len(v.Poll) + len(v.Voter) + 5*binary.MaxVarintLen64
		for _, option := range v.Options {
			n += len(option) + binary.MaxVarintLen64
		}
	}

	return n
}

func appendString(out []byte, s string) []byte {
	out = binary.AppendUvarint(out, uint64(len(s)))
	return append(out, s...)
}

// validateBatch checks the rules that EncodeBatch documents.
func validateBatch(b Batch) error {
	err := validateField("id", b.ID)
	if err != nil {
		return err
	}
	if b.Shard < 0 || b.Shard >= MaxShards {
		return fmt.Errorf("shard %d is outside [0, %d)", b.Shard, MaxShards)
	}
	if len(b.Votes) == 0 {
		return fmt.Errorf("no votes")
	}

	for i, v := range b.Votes {
		err = validateVote(v)
		if err != nil {
			return fmt.Errorf("vote %d: %w", i, err)
		}
	}

	return nil
}

func validateVote(v VoteRecord) error {
	for _, field := range [...]struct{ name, value string }{
		{"vote_id", v.VoteID}, {"poll", v.Poll}, {"voter", v.Voter},
	} {
		err := validateField(field.name, field.value)
		if err != nil {
			return err
		}
	}

	if len(v.Options) == 0 || len(v.Options) > MaxOptionsPerVote {
		return fmt.Errorf("%d options, want 1 to %d", len(v.Options), MaxOptionsPerVote)
	}
	for _, option := range v.Options {
		err := validateField("option", option)
		if err != nil {
			return err
		}
	}

	return nil
}

func validateField(name, value string) error {
	if value == "" {
		return fmt.Errorf("empty %s", name)
	}
	if len(value) > MaxFieldBytes {
		return fmt.Errorf("%s of %d bytes exceeds %d", name, len(value), MaxFieldBytes)
	}
	if !utf8.ValidString(value) {
		return fmt.Errorf("%s %q is not valid UTF-8", name, value)
	}

	return nil
}

// DecodeBatch decodes the output of EncodeBatch. It returns an error wrapping
// ErrCorruptBatch for another format version, truncated or trailing bytes,
// non-minimal varints and any batch that EncodeBatch would reject, so every
// accepted input re-encodes to the same bytes. All strings of the returned
// Batch share one allocation of len(data) bytes, which stays alive while any
// of them is referenced.
func DecodeBatch(data []byte) (Batch, error) {
	d := decoder{data: string(data)}

	b, err := d.batch()
	if err != nil {
		return Batch{}, fmt.Errorf("%w: %v", ErrCorruptBatch, err)
	}

	err = validateBatch(b)
	if err != nil {
		return Batch{}, fmt.Errorf("%w: batch %q: %v", ErrCorruptBatch, b.ID, err)
	}

	return b, nil
}

// minVoteBytes is the smallest encoding of one vote: three one-byte strings
// (2 bytes each), an option count, one one-byte option and a one-byte at.
const minVoteBytes = 3*2 + 1 + 2 + 1

// decoder reads the batch format from a string, so that decoded fields are
// substrings of one allocation.
type decoder struct {
	data string
	off  int
}

func (d *decoder) batch() (Batch, error) {
	version, err := d.header()
	if err != nil {
		return Batch{}, err
	}
	if version != batchMagic[3] {
		return Batch{}, fmt.Errorf("format version %d, want %d", version, batchMagic[3])
	}

	b, err := d.batchBody()
	if err != nil {
		return Batch{}, err
	}

	if d.off != len(d.data) {
		return Batch{}, fmt.Errorf("%d trailing bytes", len(d.data)-d.off)
	}

	return b, nil
}

// header reads the "LVB" magic and returns the format version byte.
func (d *decoder) header() (byte, error) {
	if len(d.data) < len(batchMagic) || d.data[:3] != string(batchMagic[:3]) {
		return 0, fmt.Errorf("missing LVB header")
	}
	d.off = len(batchMagic)

	return d.data[3], nil
}

// batchBody reads what appendBatchBody writes.
func (d *decoder) batchBody() (Batch, error) {
	var b Batch
	var err error
	b.ID, err = d.string("id")
	if err != nil {
		return Batch{}, err
	}

	shard, err := d.count("shard", MaxShards-1)
	if err != nil {
		return Batch{}, err
	}
	b.Shard = shard

	b.Votes, err = d.votes()
	if err != nil {
		return Batch{}, err
	}

	return b, nil
}

func (d *decoder) votes() ([]VoteRecord, error) {
	n, err := d.count("vote count", (len(d.data)-d.off)/minVoteBytes)
	if err != nil {
		return nil, err
	}

	votes := make([]VoteRecord, n)
	pool := make([]string, 0, n)

	for i := range votes {
		pool, err = d.vote(&votes[i], pool, n-i)
		if err != nil {
			return nil, fmt.Errorf("vote %d: %w", i, err)
		}
	}

	return votes, nil
}

// vote decodes one vote into v. Its options are appended to pool, which
// backs the options of many votes. When pool is full, vote starts a new pool
// with room for one option per remaining vote.
func (d *decoder) vote(v *VoteRecord, pool []string, remaining int) ([]string, error) {
	var err error
	v.VoteID, err = d.string("vote_id")
	if err == nil {
		v.Poll, err = d.string("poll")
	}
	if err == nil {
		v.Voter, err = d.string("voter")
	}
	if err != nil {
		return pool, err
	}

	k, err := d.count("option count", min(MaxOptionsPerVote, (len(d.data)-d.off)/2))
	if err != nil {
		return pool, err
	}
	if cap(pool)-len(pool) < k {
		pool = make([]string, 0, max(k, remaining))
	}

	start := len(pool)
	for range k {
		option, err := d.string("option")
		if err != nil {
			return pool, err
		}
		pool = append(pool, option)
	}
	v.Options = pool[start:len(pool):len(pool)]

	v.At, err = d.varint("at")

	return pool, err
}

// string reads a uvarint length and that many bytes.
func (d *decoder) string(field string) (string, error) {
	x, err := d.uvarint(field)
	if err != nil {
		return "", err
	}
	if x > MaxFieldBytes {
		return "", fmt.Errorf("%s length %d exceeds %d", field, x, MaxFieldBytes)
	}

	n := int(x)
	if n > len(d.data)-d.off {
		return "", fmt.Errorf("%s of %d bytes is truncated at offset %d", field, n, d.off)
	}

	value := d.data[d.off : d.off+n]
	d.off += n

	return value, nil
}

// count reads a uvarint in [0, limit].
func (d *decoder) count(field string, limit int) (int, error) {
	x, err := d.uvarint(field)
	if err != nil {
		return 0, err
	}
	if x > uint64(limit) {
		return 0, fmt.Errorf("%s %d is out of range, at most %d fits", field, x, limit)
	}

	return int(x), nil
}

// varint reads a zigzag varint as written by binary.AppendVarint.
func (d *decoder) varint(field string) (int64, error) {
	x, err := d.uvarint(field)
	if err != nil {
		return 0, err
	}

	v := int64(x >> 1)
	if x&1 != 0 {
		v = ^v
	}

	return v, nil
}

// uvarint reads a minimally encoded uvarint, so that every value has exactly
// one encoding.
func (d *decoder) uvarint(field string) (uint64, error) {
	start := d.off
	var x uint64

	for shift := 0; ; shift += 7 {
		if d.off >= len(d.data) {
			return 0, fmt.Errorf("%s is truncated at offset %d", field, start)
		}
		c := d.data[d.off]
		d.off++

		if shift == 63 && c > 1 {
			return 0, fmt.Errorf("%s overflows 64 bits at offset %d", field, start)
		}
		x |= uint64(c&0x7f) << shift
		if c < 0x80 {
			break
		}
	}

	if d.off-start != uvarintLen(x) {
		return 0, fmt.Errorf("%s has a non-minimal varint at offset %d", field, start)
	}

	return x, nil
}

// uvarintLen returns the length of the minimal uvarint encoding of x.
func uvarintLen(x uint64) int {
	return (bits.Len64(x|1) + 6) / 7
}
