package persistence

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestEncodeDecodeMessageRoundTrip(t *testing.T) {
	t.Parallel()

	tests := [][]Batch{
		{testBatch("alone", 0, 1)},
		{testBatch("a", 0, 2), testBatch("b", 63, 1), testBatch("c", MaxShards-1, 30)},
		{testBatch("same-shard-1", 5, 1), testBatch("same-shard-2", 5, 4)},
	}
	for _, want := range tests {
		data, err := EncodeMessage(want)
		if err != nil {
			t.Fatalf("EncodeMessage(%d batches): %v", len(want), err)
		}

		got, err := DecodeMessage(data)
		if err != nil {
			t.Fatalf("DecodeMessage(EncodeMessage(%d batches)): %v", len(want), err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("round trip = %+v, want %+v", got, want)
		}
	}
}

func TestDecodeMessageReadsSingleBatch(t *testing.T) {
	t.Parallel()

	want := testBatch("version-1", 9, 3)
	data, err := EncodeBatch(want)
	if err != nil {
		t.Fatal(err)
	}

	got, err := DecodeMessage(data)
	if err != nil {
		t.Fatalf("DecodeMessage of a version 1 batch: %v", err)
	}
	if !reflect.DeepEqual(got, []Batch{want}) {
		t.Errorf("DecodeMessage = %+v, want [%+v]", got, want)
	}
}

func TestEncodeMessageRejectsInvalid(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name     string
		batches  []Batch
		wantText string
	}{
		{name: "no batches", batches: nil, wantText: "at least one batch"},
		{name: "second batch without votes", batches: []Batch{testBatch("ok", 0, 1), {ID: "empty"}},
			wantText: `batch 1 ("empty"): no votes`},
		{name: "bad shard", batches: []Batch{testBatch("neg", -1, 1)}, wantText: "shard -1"},
	}
	for _, tt := range tests {
		_, err := EncodeMessage(tt.batches)
		if !errors.Is(err, ErrInvalidBatch) {
			t.Errorf("%s: EncodeMessage error = %v, want ErrInvalidBatch", tt.name, err)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantText) {
			t.Errorf("%s: EncodeMessage error %q does not contain %q", tt.name, err, tt.wantText)
		}
	}
}

func TestDecodeMessageRejectsCorruptData(t *testing.T) {
	t.Parallel()

	valid, err := EncodeMessage([]Batch{testBatch("b", 1, 2), testBatch("c", 2, 1)})
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
		{name: "JSON", data: []byte(`[{"id":"b"}]`), wantText: "header"},
		{name: "version 3", data: edit(func(d []byte) []byte { d[3] = 3; return d }), wantText: "version 3"},
		{name: "no batches", data: []byte("LVB\x02\x00"), wantText: "contains no batch"},
		{name: "truncated", data: valid[:len(valid)-3], wantText: "truncated"},
		{name: "trailing byte", data: append(bytes.Clone(valid), 0), wantText: "trailing"},
		{name: "huge batch count", data: edit(func(d []byte) []byte {
			return append(binary.AppendUvarint(d[:4:4], 1<<40), d[5:]...)
		}), wantText: "batch count"},
		{name: "batch count above content", data: edit(func(d []byte) []byte { d[4] = 3; return d }), wantText: "batch 2"},
		{name: "invalid UTF-8 in second batch id", data: edit(func(d []byte) []byte {
			i := bytes.LastIndex(d, []byte("\x01c"))
			d[i+1] = 0xff
			return d
		}), wantText: "UTF-8"},
	}
	for _, tt := range tests {
		_, err := DecodeMessage(tt.data)
		if !errors.Is(err, ErrCorruptBatch) {
			t.Errorf("%s: DecodeMessage error = %v, want ErrCorruptBatch", tt.name, err)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantText) {
			t.Errorf("%s: DecodeMessage error %q does not contain %q", tt.name, err, tt.wantText)
		}
	}
}

// FuzzDecodeMessage checks that DecodeMessage never panics, that its errors
// wrap ErrCorruptBatch, and that every input it accepts re-encodes to
// itself: version 1 with EncodeBatch, version 2 with EncodeMessage.
func FuzzDecodeMessage(f *testing.F) {
	for _, batches := range [][]Batch{
		{testBatch("seed", 0, 1)},
		{testBatch("seed-a", 0, 2), testBatch("seed-b", 63, 1)},
	} {
		data, err := EncodeMessage(batches)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	single, err := EncodeBatch(testBatch("seed-v1", 7, 2))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(single)
	f.Add([]byte{})
	f.Add([]byte("LVB\x02\x00"))

	f.Fuzz(func(t *testing.T, data []byte) {
		batches, err := DecodeMessage(data)
		if err != nil {
			if !errors.Is(err, ErrCorruptBatch) {
				t.Fatalf("DecodeMessage error %v does not wrap ErrCorruptBatch", err)
			}
			return
		}

		var again []byte
		if data[3] == batchMagic[3] {
			again, err = EncodeBatch(batches[0])
		} else {
			again, err = EncodeMessage(batches)
		}
		if err != nil {
			t.Fatalf("encoding decoded batches: %v", err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("re-encoding differs:\n input %x\noutput %x", data, again)
		}
	})
}

func BenchmarkDecodeMessage(b *testing.B) {
	batches := make([]Batch, 64)
	for i := range batches {
		batches[i] = testBatch("bench", i, 16)
	}
	data, err := EncodeMessage(batches)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()

	for b.Loop() {
		_, err := DecodeMessage(data)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*64*16)/b.Elapsed().Seconds(), "votes/s")
}
