package main

import (
	"encoding/json"
	"testing"
	"time"
)

func TestHistogramMergeMatchesSingle(t *testing.T) {
	t.Parallel()
	start := time.Now()
	a, b, all := newRecorder(start), newRecorder(start), newRecorder(start)
	for i := range 1000 {
		d := time.Duration(i*37%5000+1) * time.Microsecond * 10
		at := start.Add(time.Duration(i%3) * time.Second)
		r := a
		if i%2 == 1 {
			r = b
		}
		r.ackAt(at.Add(-d), at)
		all.ackAt(at.Add(-d), at)
	}

	var merged figures
	for _, r := range []*recorder{a, b} {
		// Send each worker's figures through JSON, as worker processes do.
		data, err := json.Marshal(r.figures(expectation{}))
		if err != nil {
			t.Fatalf("encode figures: %v", err)
		}
		var f figures
		if err := json.Unmarshal(data, &f); err != nil {
			t.Fatalf("decode figures: %v", err)
		}
		merged.merge(f)
	}
	want := all.figures(expectation{})

	if got, w := merged.Ack.TotalCount(), want.Ack.TotalCount(); got != w {
		t.Errorf("merged count = %d, want %d", got, w)
	}
	for _, q := range []float64{50, 90, 99, 99.9, 100} {
		if got, w := merged.Ack.ValueAtQuantile(q), want.Ack.ValueAtQuantile(q); got != w {
			t.Errorf("merged p%g = %d µs, want %d µs", q, got, w)
		}
	}
	if len(merged.Seconds) != len(want.Seconds) {
		t.Fatalf("merged %d seconds, want %d", len(merged.Seconds), len(want.Seconds))
	}
	for i := range want.Seconds {
		if merged.Seconds[i].Acks != want.Seconds[i].Acks {
			t.Errorf("second %d: %d acks, want %d", i, merged.Seconds[i].Acks, want.Seconds[i].Acks)
		}
	}
}

func TestTicksMergeKeepsLastDelivery(t *testing.T) {
	t.Parallel()
	start := time.Now()
	a, b := newRecorder(start), newRecorder(start)
	doc := resultsDoc{Poll: "p", Version: 3, UpdatedAt: start}
	a.broadcastAt(doc, start.Add(5*time.Millisecond))
	a.broadcastAt(doc, start.Add(9*time.Millisecond))
	b.broadcastAt(doc, start.Add(40*time.Millisecond))
	b.broadcastAt(resultsDoc{Poll: "p", Version: 4, UpdatedAt: start}, start.Add(time.Millisecond))

	var merged figures
	merged.merge(a.figures(expectation{}))
	merged.merge(b.figures(expectation{}))
	if len(merged.Ticks) != 2 {
		t.Fatalf("merged %d ticks, want 2", len(merged.Ticks))
	}
	for _, tk := range merged.Ticks {
		if tk.Version == 3 && (tk.Deliveries != 3 || tk.LastMicros != 40000) {
			t.Errorf("version 3: %d deliveries, last %d µs; want 3 and 40000", tk.Deliveries, tk.LastMicros)
		}
	}
	if merged.Broadcast.TotalCount() != 4 {
		t.Errorf("broadcast histogram count = %d, want 4", merged.Broadcast.TotalCount())
	}
}

func TestLoadFactorSurge(t *testing.T) {
	t.Parallel()
	d := 100 * time.Second
	cases := []struct {
		at   time.Duration
		want float64
	}{
		{0, surgeBase}, {25 * time.Second, 1}, {50 * time.Second, 1}, {75 * time.Second, 1}, {100 * time.Second, surgeBase},
	}
	for _, tc := range cases {
		if got := loadFactor(profileSurge, tc.at, d); got < tc.want-1e-9 || got > tc.want+1e-9 {
			t.Errorf("surge at %s = %g, want %g", tc.at, got, tc.want)
		}
		if got := loadFactor(profileSteady, tc.at, d); got != 1 {
			t.Errorf("steady at %s = %g, want 1", tc.at, got)
		}
	}
}
