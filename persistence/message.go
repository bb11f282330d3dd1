package persistence

import (
	"encoding/binary"
	"fmt"
)

// Limits of a vote stream message, checked by AppendBatch and DecodeMessage.
const (
	// MaxMessageBytes is the largest encoded vote stream message that the
	// group commit builds: 960 KiB, which leaves 64 KiB of the 1 MiB default
	// max_payload of a NATS server for headers. A message holds as many
	// waiting batches as fit, so a single batch of MaxBatchBytes always fits.
	MaxMessageBytes = 960 << 10

	// messageHeaderRoom is the room left in a stream message for its NATS
	// headers (Nats-Msg-Id and Nats-Expected-Stream).
	messageHeaderRoom = 4096
)

// messageMagic starts every encoded multi-batch message: "LVB" and the
// format version 2. Version 1 is a single batch as written by EncodeBatch.
var messageMagic = [4]byte{'L', 'V', 'B', 2}

// minBatchBytes is the smallest encoding of one batch inside a message: a
// one-byte id (2 bytes), a one-byte shard, a vote count and one vote.
const minBatchBytes = 2 + 1 + 1 + minVoteBytes

// EncodeMessage encodes batches as one vote stream message in LiveVote's
// binary message format, version 2:
//
//	"LVB" 0x02, uvarint batch count, then per batch the EncodeBatch
//	encoding without its 4-byte header
//
// It returns an error wrapping ErrInvalidBatch when batches is empty or when
// EncodeBatch would reject one of them. AppendBatch, not EncodeMessage,
// checks MaxBatchBytes and MaxMessageBytes.
func EncodeMessage(batches []Batch) ([]byte, error) {
	if len(batches) == 0 {
		return nil, fmt.Errorf("%w: a message needs at least one batch", ErrInvalidBatch)
	}

	size := len(messageMagic) + binary.MaxVarintLen64
	for i, b := range batches {
		err := validateBatch(b)
		if err != nil {
			return nil, fmt.Errorf("%w: batch %d (%q): %v", ErrInvalidBatch, i, b.ID, err)
		}
		size += encodedSize(b)
	}

	out := make([]byte, 0, size)
	out = append(out, messageMagic[:]...)
	out = binary.AppendUvarint(out, uint64(len(batches)))
	for _, b := range batches {
		out = appendBatchBody(out, b)
	}

	return out, nil
}

// DecodeMessage decodes a vote stream message: the version 2 output of
// EncodeMessage, a single batch in version 1 as written by EncodeBatch, by
// AppendFenced and by LiveVote releases that stored one batch per message,
// or a shard claim of ClaimShard, which holds no batch. It returns an
// error wrapping ErrCorruptBatch for any other version, a message without
// batches, truncated or trailing bytes, non-minimal varints and any batch
// that EncodeBatch would reject, so every accepted version 2 input
// re-encodes to the same bytes. All strings of the returned batches share
// one allocation of len(data) bytes.
func DecodeMessage(data []byte) ([]Batch, error) {
	_, isClaim, err := decodeClaim(data)
	if isClaim {
		return nil, err
	}
	if len(data) >= len(batchMagic) && data[3] == batchMagic[3] {
		b, err := DecodeBatch(data)
		if err != nil {
			return nil, err
		}
		return []Batch{b}, nil
	}

	d := decoder{data: string(data)}

	batches, err := d.message()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorruptBatch, err)
	}

	for i, b := range batches {
		err = validateBatch(b)
		if err != nil {
			return nil, fmt.Errorf("%w: batch %d (%q): %v", ErrCorruptBatch, i, b.ID, err)
		}
	}

	return batches, nil
}

func (d *decoder) message() ([]Batch, error) {
	version, err := d.header()
	if err != nil {
		return nil, err
	}
	if version != messageMagic[3] {
		return nil, fmt.Errorf("format version %d, want %d or %d", version, batchMagic[3], messageMagic[3])
	}

	n, err := d.count("batch count", (len(d.data)-d.off)/minBatchBytes)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, fmt.Errorf("message contains no batch")
	}

	batches := make([]Batch, n)
	for i := range batches {
		batches[i], err = d.batchBody()
		if err != nil {
			return nil, fmt.Errorf("batch %d: %w", i, err)
		}
	}

	if d.off != len(d.data) {
		return nil, fmt.Errorf("%d trailing bytes", len(d.data)-d.off)
	}

	return batches, nil
}
