package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram ranges. Latencies are recorded in microseconds from 1 µs to 60 s; a value
// above is recorded as 60 s. The run histograms keep 3 significant digits, the
// per-second ones 2, which keeps 600 of them small.
const (
	histMaxMicros  = int64(60 * time.Second / time.Microsecond)
	histDigits     = 3
	secondDigits   = 2
	maxRunSeconds  = 3600
	broadcastFloor = 0
)

func newHist(digits int) *hdrhistogram.Histogram {
	return hdrhistogram.New(1, histMaxMicros, digits)
}

func record(h *hdrhistogram.Histogram, d time.Duration) {
	us := max(int64(d/time.Microsecond), 1)
	_ = h.RecordValue(min(us, histMaxMicros))
}

// hist is a histogram that travels as the compressed HdrHistogram V2 encoding.
type hist struct{ *hdrhistogram.Histogram }

// MarshalJSON encodes the histogram as base64 of its compressed V2 encoding.
func (h hist) MarshalJSON() ([]byte, error) {
	if h.Histogram == nil {
		return []byte("null"), nil
	}
	data, err := h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err != nil {
		return nil, fmt.Errorf("encode histogram: %w", err)
	}
	return json.Marshal(data)
}

// UnmarshalJSON decodes what MarshalJSON wrote.
func (h *hist) UnmarshalJSON(b []byte) error {
	var data []byte
	if err := json.Unmarshal(b, &data); err != nil {
		return err
	}
	if data == nil {
		h.Histogram = nil
		return nil
	}
	decoded, err := hdrhistogram.Decode(data)
	if err != nil {
		return fmt.Errorf("decode histogram: %w", err)
	}
	h.Histogram = decoded
	return nil
}

// mergeHist merges from into *into, creating *into when it is nil. It returns the
// number of values that fell outside into's range.
func mergeHist(into *hist, from hist) int64 {
	if from.Histogram == nil {
		return 0
	}
	if into.Histogram == nil {
		into.Histogram = hdrhistogram.New(from.LowestTrackableValue(), from.HighestTrackableValue(), int(from.SignificantFigures()))
	}
	return into.Merge(from.Histogram)
}

// counters are a worker's running totals, read by the progress line.
type counters struct {
	Open        atomic.Int64
	Connected   atomic.Int64
	Sent        atomic.Int64
	Acked       atomic.Int64
	Accepted    atomic.Int64
	Duplicates  atomic.Int64
	Rejected    atomic.Int64
	Retries     atomic.Int64
	Changes     atomic.Int64
	Resends     atomic.Int64
	Reconnects  atomic.Int64
	Unexpected  atomic.Int64
	Broadcasts  atomic.Int64
	ConnectFail atomic.Int64
	Missed      atomic.Int64
}

// progress is a snapshot of counters.
type progress struct {
	// Open is the number of sockets (or HTTP voters) open now; Connected counts the
	// voters that ever got a session.
	Open        int64 `json:"open"`
	Connected   int64 `json:"connected"`
	Sent        int64 `json:"sent"`
	Acked       int64 `json:"acked"`
	Accepted    int64 `json:"accepted"`
	Duplicates  int64 `json:"duplicates"`
	Rejected    int64 `json:"rejected"`
	Retries     int64 `json:"retries"`
	Changes     int64 `json:"changes"`
	Resends     int64 `json:"resends"`
	Reconnects  int64 `json:"reconnects"`
	Unexpected  int64 `json:"unexpected_answers"`
	Broadcasts  int64 `json:"broadcasts_received"`
	ConnectFail int64 `json:"connect_failures"`
	// Missed counts the votes that the -rate target asked for but that found no
	// voter free to send them.
	Missed int64 `json:"missed_rate_tokens"`
}

func (c *counters) snapshot() progress {
	return progress{
		Open: c.Open.Load(), Connected: c.Connected.Load(), Sent: c.Sent.Load(), Acked: c.Acked.Load(),
		Accepted: c.Accepted.Load(), Duplicates: c.Duplicates.Load(), Rejected: c.Rejected.Load(),
		Retries: c.Retries.Load(), Changes: c.Changes.Load(), Resends: c.Resends.Load(),
		Reconnects: c.Reconnects.Load(), Unexpected: c.Unexpected.Load(),
		Broadcasts: c.Broadcasts.Load(), ConnectFail: c.ConnectFail.Load(), Missed: c.Missed.Load(),
	}
}

func (p *progress) add(o progress) {
	p.Open += o.Open
	p.Connected += o.Connected
	p.Sent += o.Sent
	p.Acked += o.Acked
	p.Accepted += o.Accepted
	p.Duplicates += o.Duplicates
	p.Rejected += o.Rejected
	p.Retries += o.Retries
	p.Changes += o.Changes
	p.Resends += o.Resends
	p.Reconnects += o.Reconnects
	p.Unexpected += o.Unexpected
	p.Broadcasts += o.Broadcasts
	p.ConnectFail += o.ConnectFail
	p.Missed += o.Missed
}

// second holds the acks received in one second of the run, counted by receipt time.
type second struct {
	Acks int64 `json:"acks"`
	Hist hist  `json:"hist"`
}

// tickKey names one broadcast: a results document version of a poll.
type tickKey struct {
	Poll    string
	Version uint64
}

// tick is the deliveries of one broadcast: how many sockets got it and the delay of
// the last one.
type tick struct {
	Poll       string `json:"poll"`
	Version    uint64 `json:"version"`
	Deliveries int64  `json:"deliveries"`
	LastMicros int64  `json:"last_us"`
	Final      bool   `json:"final"`
}

// figures are the measurements of one worker, or of all workers merged.
type figures struct {
	Progress  progress         `json:"progress"`
	Errors    map[string]int64 `json:"errors"`
	Ack       hist             `json:"ack"`
	Broadcast hist             `json:"broadcast"`
	Seconds   []second         `json:"seconds"`
	Ticks     []tick           `json:"ticks"`
	Expect    expectation      `json:"expect"`
}

// merge adds o into f.
func (f *figures) merge(o figures) {
	f.Progress.add(o.Progress)
	if f.Errors == nil {
		f.Errors = map[string]int64{}
	}
	for code, n := range o.Errors {
		f.Errors[code] += n
	}
	mergeHist(&f.Ack, o.Ack)
	mergeHist(&f.Broadcast, o.Broadcast)
	for len(f.Seconds) < len(o.Seconds) {
		f.Seconds = append(f.Seconds, second{})
	}
	for i, s := range o.Seconds {
		f.Seconds[i].Acks += s.Acks
		mergeHist(&f.Seconds[i].Hist, s.Hist)
	}
	f.Ticks = mergeTicks(f.Ticks, o.Ticks)
	if f.Expect == nil {
		f.Expect = expectation{}
	}
	f.Expect.merge(o.Expect)
}

func mergeTicks(a, b []tick) []tick {
	byKey := make(map[tickKey]int, len(a))
	for i, t := range a {
		byKey[tickKey{t.Poll, t.Version}] = i
	}
	for _, t := range b {
		i, ok := byKey[tickKey{t.Poll, t.Version}]
		if !ok {
			byKey[tickKey{t.Poll, t.Version}] = len(a)
			a = append(a, t)
			continue
		}
		a[i].Deliveries += t.Deliveries
		a[i].LastMicros = max(a[i].LastMicros, t.LastMicros)
		a[i].Final = a[i].Final || t.Final
	}
	return a
}

// recorder collects one worker's latencies, errors and broadcasts. It is safe for
// concurrent use.
type recorder struct {
	start time.Time
	c     counters

	mu        sync.Mutex
	ack       *hdrhistogram.Histogram
	broadcast *hdrhistogram.Histogram
	seconds   []second
	errors    map[string]int64
	ticks     map[tickKey]*tick
}

func newRecorder(start time.Time) *recorder {
	return &recorder{
		start:     start,
		ack:       newHist(histDigits),
		broadcast: newHist(histDigits),
		errors:    map[string]int64{},
		ticks:     map[tickKey]*tick{},
	}
}

// ackAt records an acknowledged vote: sent at sent, acked at at.
func (r *recorder) ackAt(sent, at time.Time) {
	d := at.Sub(sent)
	sec := int(at.Sub(r.start) / time.Second)

	r.mu.Lock()
	defer r.mu.Unlock()
	record(r.ack, d)
	if sec < 0 || sec >= maxRunSeconds {
		return
	}
	for len(r.seconds) <= sec {
		r.seconds = append(r.seconds, second{Hist: hist{newHist(secondDigits)}})
	}
	r.seconds[sec].Acks++
	record(r.seconds[sec].Hist.Histogram, d)
}

// fail counts an error by its code.
func (r *recorder) fail(code string) {
	r.mu.Lock()
	r.errors[code]++
	r.mu.Unlock()
}

// broadcastAt records a results document received at at.
func (r *recorder) broadcastAt(doc resultsDoc, at time.Time) {
	r.c.Broadcasts.Add(1)
	if doc.UpdatedAt.IsZero() {
		return
	}
	d := max(at.Sub(doc.UpdatedAt), broadcastFloor)
	us := int64(d / time.Microsecond)
	key := tickKey{doc.Poll, doc.Version}

	r.mu.Lock()
	defer r.mu.Unlock()
	record(r.broadcast, d)
	t := r.ticks[key]
	if t == nil {
		t = &tick{Poll: doc.Poll, Version: doc.Version}
		r.ticks[key] = t
	}
	t.Deliveries++
	t.LastMicros = max(t.LastMicros, us)
	t.Final = t.Final || doc.Final
}

// figures returns a copy of everything recorded, with expect as the voters' ledger.
func (r *recorder) figures(expect expectation) figures {
	r.mu.Lock()
	defer r.mu.Unlock()

	f := figures{
		Progress:  r.c.snapshot(),
		Errors:    maps.Clone(r.errors),
		Ack:       hist{hdrhistogram.Import(r.ack.Export())},
		Broadcast: hist{hdrhistogram.Import(r.broadcast.Export())},
		Expect:    expect,
	}
	for _, s := range r.seconds {
		f.Seconds = append(f.Seconds, second{Acks: s.Acks, Hist: hist{hdrhistogram.Import(s.Hist.Export())}})
	}
	for _, t := range r.ticks {
		f.Ticks = append(f.Ticks, *t)
	}
	return f
}
