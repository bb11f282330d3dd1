package persistence

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	t.Parallel()

	tests := []Batch{
		testBatch("one", 0, 1),
		testBatch("many", MaxShards-1, 300),
		{ID: "multi", Shard: 7, Votes: []VoteRecord{
			{VoteID: "0b7e6f4e-5a0c-4c59-9d0e-3f0f8d0b1a11", Poll: "p", Voter: "s", Options: []string{"a", "b", "c"}, At: -1},
			{VoteID: "v2", Poll: "p", Voter: "s2", Options: []string{"ü"}, At: 1<<63 - 1},
			{VoteID: "v3", Poll: "p", Voter: "s3", Options: []string{strings.Repeat("o", MaxFieldBytes)}, At: -1 << 63},
		}},
	}
	for _, want := range tests {
		data, err := EncodeBatch(want)
		if err != nil {
			t.Fatalf("EncodeBatch(%q): %v", want.ID, err)
		}

		got, err := DecodeBatch(data)
		if err != nil {
			t.Fatalf("DecodeBatch(EncodeBatch(%q)): %v", want.ID, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("round trip of %q = %+v, want %+v", want.ID, got, want)
		}
	}
}

func TestEncodeRejectsInvalidBatch(t *testing.T) {
	t.Parallel()

	vote := func(edit func(v *VoteRecord)) Batch {
		b := testBatch("b", 0, 1)
		edit(&b.Votes[0])
		return b
	}
	tests := []struct {
		name     string
		batch    Batch
		wantText string
	}{
		{name: "empty id", batch: testBatch("", 0, 1), wantText: "empty id"},
		{name: "long id", batch: testBatch(strings.Repeat("i", MaxFieldBytes+1), 0, 1), wantText: "exceeds"},
		{name: "negative shard", batch: testBatch("b", -1, 1), wantText: "shard -1"},
		{name: "shard too high", batch: testBatch("b", MaxShards, 1), wantText: "shard 4096"},
		{name: "no votes", batch: Batch{ID: "b"}, wantText: "no votes"},
		{name: "empty vote id", batch: vote(func(v *VoteRecord) { v.VoteID = "" }), wantText: "empty vote_id"},
		{name: "empty poll", batch: vote(func(v *VoteRecord) { v.Poll = "" }), wantText: "empty poll"},
		{name: "empty voter", batch: vote(func(v *VoteRecord) { v.Voter = "" }), wantText: "empty voter"},
		{name: "no options", batch: vote(func(v *VoteRecord) { v.Options = nil }), wantText: "0 options"},
		{name: "empty option", batch: vote(func(v *VoteRecord) { v.Options = []string{"a", ""} }), wantText: "empty option"},
		{name: "too many options", batch: vote(func(v *VoteRecord) { v.Options = make([]string, MaxOptionsPerVote+1) }),
			wantText: "257 options"},
		{name: "invalid UTF-8", batch: vote(func(v *VoteRecord) { v.Poll = "p\xff" }), wantText: "UTF-8"},
	}
	for _, tt := range tests {
		_, err := EncodeBatch(tt.batch)
		if !errors.Is(err, ErrInvalidBatch) {
			t.Errorf("%s: EncodeBatch error = %v, want ErrInvalidBatch", tt.name, err)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantText) {
			t.Errorf("%s: EncodeBatch error %q does not contain %q", tt.name, err, tt.wantText)
		}
	}
}

func TestDecodeRejectsCorruptData(t *testing.T) {
	t.Parallel()

	valid, err := EncodeBatch(testBatch("b", 1, 2))
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(d []byte) []byte) []byte {
		return f(bytes.Clone(valid))
	}

	tests := []struct {
		name     string
		data     []byte
		wantText string
	}{
		{name: "empty", data: nil, wantText: "header"},
		{name: "JSON", data: []byte(`{"id":"b","shard":1,"votes":[]}`), wantText: "header"},
		{name: "version 2", data: edit(func(d []byte) []byte { d[3] = 2; return d }), wantText: "version 2"},
		{name: "truncated", data: valid[:len(valid)-3], wantText: "truncated"},
		{name: "trailing byte", data: append(bytes.Clone(valid), 0), wantText: "trailing"},
		{name: "non-minimal varint", data: edit(func(d []byte) []byte {
			// The id length 1 written as two bytes.
			return append(append(d[:4:4], 0x81, 0x00), d[5:]...)
		}), wantText: "non-minimal"},
		{name: "shard too high", data: edit(func(d []byte) []byte {
			// Header, id "b", then shard 4096 in place of shard 1.
			return append(binary.AppendUvarint(d[:6:6], MaxShards), d[7:]...)
		}), wantText: "shard 4096"},
		{name: "huge vote count", data: edit(func(d []byte) []byte {
			return append(binary.AppendUvarint(d[:7:7], 1<<40), d[8:]...)
		}), wantText: "vote count"},
		{name: "varint overflow", data: append(bytes.Clone(valid[:4]), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f),
			wantText: "overflows"},
		{name: "invalid UTF-8", data: edit(func(d []byte) []byte { d[5] = 0xff; return d }), wantText: "UTF-8"},
	}
	for _, tt := range tests {
		_, err := DecodeBatch(tt.data)
		if !errors.Is(err, ErrCorruptBatch) {
			t.Errorf("%s: DecodeBatch error = %v, want ErrCorruptBatch", tt.name, err)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantText) {
			t.Errorf("%s: DecodeBatch error %q does not contain %q", tt.name, err, tt.wantText)
		}
	}
}

// FuzzDecodeBatch checks that DecodeBatch never panics, that its errors wrap
// ErrCorruptBatch, and that every input it accepts re-encodes to itself.
func FuzzDecodeBatch(f *testing.F) {
	for _, b := range []Batch{testBatch("seed", 0, 1), testBatch("seed-2", 63, 3)} {
		data, err := EncodeBatch(b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte{})
	f.Add([]byte("LVB\x01"))

	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := DecodeBatch(data)
		if err != nil {
			if !errors.Is(err, ErrCorruptBatch) {
				t.Fatalf("DecodeBatch error %v does not wrap ErrCorruptBatch", err)
			}
			return
		}

		again, err := EncodeBatch(b)
		if err != nil {
			t.Fatalf("EncodeBatch of a decoded batch: %v", err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("re-encoding differs:\n input %x\noutput %x", data, again)
		}
	})
}

func BenchmarkDecodeBatch(b *testing.B) {
	data, err := EncodeBatch(testBatch("bench", 0, 100))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()

	for b.Loop() {
		_, err := DecodeBatch(data)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "votes/s")
}
