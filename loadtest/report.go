package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// clockNote states how broadcast delays are measured.
const clockNote = "broadcast delay is the receipt time minus the results document's updated_at; the server and the load tester run on the same machine and read the same clock"

// report is every figure of a run; -json writes it.
type report struct {
	StartedAt   time.Time `json:"started_at"`
	Command     string    `json:"command"`
	URL         string    `json:"url"`
	Mode        string    `json:"mode"`
	Profile     string    `json:"profile"`
	Machine     machine   `json:"machine"`
	Sockets     int       `json:"sockets"`
	Workers     int       `json:"workers"`
	SourceAddrs []string  `json:"source_addrs"`
	DurationS   float64   `json:"duration_s"`
	RampS       float64   `json:"ramp_s"`
	TargetRate  float64   `json:"target_rate"`
	Polls       int       `json:"polls"`
	Options     int       `json:"options"`
	RetryShare  float64   `json:"retry_share"`
	ChangeShare float64   `json:"change_share"`

	PeakOpen int64 `json:"peak_open"`
	progress

	Acked              int64   `json:"acked"`
	AckedPerSecond     float64 `json:"acked_per_second"`
	PeakAckedPerSecond int64   `json:"peak_acked_per_second"`
	AckP50Ms           float64 `json:"ack_p50_ms"`
	AckP90Ms           float64 `json:"ack_p90_ms"`
	AckP99Ms           float64 `json:"ack_p99_ms"`
	AckP999Ms          float64 `json:"ack_p999_ms"`
	AckMaxMs           float64 `json:"ack_max_ms"`
	AckMeanMs          float64 `json:"ack_mean_ms"`

	Lost          int64            `json:"lost"`
	DoubleCounted int64            `json:"double_counted"`
	Unconfirmed   int64            `json:"unconfirmed"`
	Errors        map[string]int64 `json:"errors"`

	BroadcastP50Ms      float64 `json:"broadcast_p50_ms"`
	BroadcastP99Ms      float64 `json:"broadcast_p99_ms"`
	BroadcastMaxMs      float64 `json:"broadcast_max_ms"`
	FanoutTicks         int     `json:"fanout_ticks"`
	FanoutCompleteTicks int     `json:"fanout_complete_ticks"`
	FanoutLastP50Ms     float64 `json:"fanout_last_p50_ms"`
	FanoutLastP99Ms     float64 `json:"fanout_last_p99_ms"`
	FanoutLastMaxMs     float64 `json:"fanout_last_max_ms"`
	ClockNote           string  `json:"clock_note"`

	PerSecond []secondReport `json:"per_second"`
	Ticks     []tick         `json:"ticks"`
	Verify    []pollVerdict  `json:"verify"`
}

// machine describes where the run happened.
type machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
}

// secondReport is one second of the run, by ack receipt time.
type secondReport struct {
	T      int     `json:"t"`
	Acks   int64   `json:"acks"`
	Open   int64   `json:"open"`
	P50Ms  float64 `json:"p50_ms"`
	P99Ms  float64 `json:"p99_ms"`
	P999Ms float64 `json:"p999_ms"`
	MaxMs  float64 `json:"max_ms"`
}

func ms(us int64) float64 { return float64(us) / 1000 }

func buildReport(cfg config, s *session, startedAt, start time.Time, f figures, v verdict) *report {
	r := &report{
		StartedAt: startedAt.UTC(), Command: "go run ./loadtest " + strings.Join(cfg.Args, " "), URL: cfg.URL,
		Mode: "websocket", Profile: cfg.Profile, Machine: thisMachine(), Sockets: cfg.Sockets, Workers: cfg.Workers,
		DurationS: cfg.Duration.Seconds(), RampS: cfg.Ramp.Seconds(), TargetRate: cfg.Rate,
		Polls: cfg.Polls, Options: cfg.Options, RetryShare: cfg.RetryShare, ChangeShare: cfg.ChangeShare,
		progress: f.Progress, Acked: f.Progress.Acked, Errors: f.Errors,
		Lost: v.Lost, DoubleCounted: v.DoubleCounted, Unconfirmed: v.Unconfirmed, Verify: v.Polls,
		ClockNote: clockNote,
	}
	if cfg.HTTP {
		r.Mode = "http"
	}
	if r.Errors == nil {
		r.Errors = map[string]int64{}
	}
	for _, a := range s.sources {
		r.SourceAddrs = append(r.SourceAddrs, a.String())
	}
	r.AckedPerSecond = float64(r.Acked) / cfg.Duration.Seconds()

	if h := f.Ack.Histogram; h != nil && h.TotalCount() > 0 {
		r.AckP50Ms, r.AckP90Ms = ms(h.ValueAtQuantile(50)), ms(h.ValueAtQuantile(90))
		r.AckP99Ms, r.AckP999Ms = ms(h.ValueAtQuantile(99)), ms(h.ValueAtQuantile(99.9))
		r.AckMaxMs, r.AckMeanMs = ms(h.Max()), h.Mean()/1000
	}
	if h := f.Broadcast.Histogram; h != nil && h.TotalCount() > 0 {
		r.BroadcastP50Ms, r.BroadcastP99Ms, r.BroadcastMaxMs = ms(h.ValueAtQuantile(50)), ms(h.ValueAtQuantile(99)), ms(h.Max())
	}
	r.fanout(f.Ticks)
	r.perSecond(f.Seconds, s.series)
	return r
}

// fanout summarises the delay to the last socket of each broadcast that reached every
// connected socket.
func (r *report) fanout(ticks []tick) {
	slices.SortFunc(ticks, func(a, b tick) int {
		if c := strings.Compare(a.Poll, b.Poll); c != 0 {
			return c
		}
		return int(int64(a.Version) - int64(b.Version))
	})
	r.Ticks = ticks
	r.FanoutTicks = len(ticks)

	var last []int64
	for _, t := range ticks {
		if t.Deliveries >= r.Connected && r.Connected > 0 {
			last = append(last, t.LastMicros)
		}
	}
	r.FanoutCompleteTicks = len(last)
	if len(last) == 0 {
		return
	}
	slices.Sort(last)
	r.FanoutLastP50Ms = ms(nearestRank(last, 0.50))
	r.FanoutLastP99Ms = ms(nearestRank(last, 0.99))
	r.FanoutLastMaxMs = ms(last[len(last)-1])
}

// nearestRank returns the q quantile of sorted values by the nearest-rank method.
func nearestRank(sorted []int64, q float64) int64 {
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func (r *report) perSecond(seconds []second, open []int64) {
	n := max(len(seconds), len(open))
	for t := range n {
		sr := secondReport{T: t}
		if t < len(open) {
			sr.Open = open[t]
		}
		if t < len(seconds) {
			sr.Acks = seconds[t].Acks
			if h := seconds[t].Hist.Histogram; h != nil && h.TotalCount() > 0 {
				sr.P50Ms, sr.P99Ms = ms(h.ValueAtQuantile(50)), ms(h.ValueAtQuantile(99))
				sr.P999Ms, sr.MaxMs = ms(h.ValueAtQuantile(99.9)), ms(h.Max())
			}
			r.PeakAckedPerSecond = max(r.PeakAckedPerSecond, sr.Acks)
		}
		r.PerSecond = append(r.PerSecond, sr)
		r.PeakOpen = max(r.PeakOpen, sr.Open)
	}
}

func thisMachine() machine {
	m := machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			m.CPUModel = strings.TrimSpace(v)
			break
		}
	}
	return m
}

// printSummary writes the human summary of a run.
func printSummary(w io.Writer, r *report) {
	fmt.Fprintf(w, "loadtest %s, %s profile, %d voters in %d worker(s), %.0fs window, target rate %s\n",
		r.Mode, r.Profile, r.Sockets, r.Workers, r.DurationS, rateText(r.TargetRate))
	fmt.Fprintf(w, "  voters      connected %d, peak open %d, connect failures %d, reconnects %d\n", r.Connected, r.PeakOpen, r.ConnectFail, r.Reconnects)
	fmt.Fprintf(w, "  votes       sent %d, acked %d (accepted %d, duplicate %d), rejected %d, changes %d, retries %d, resends %d\n",
		r.Sent, r.Acked, r.Accepted, r.Duplicates, r.Rejected, r.Changes, r.Retries, r.Resends)
	fmt.Fprintf(w, "  throughput  %.0f acks/s over the window, peak %d in one second\n", r.AckedPerSecond, r.PeakAckedPerSecond)
	fmt.Fprintf(w, "  ack latency p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms\n", r.AckP50Ms, r.AckP90Ms, r.AckP99Ms, r.AckP999Ms, r.AckMaxMs)
	if r.Mode == "websocket" {
		fmt.Fprintf(w, "  broadcast   %d received, delay p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", r.Broadcasts, r.BroadcastP50Ms, r.BroadcastP99Ms, r.BroadcastMaxMs)
		fmt.Fprintf(w, "  fan-out     %d of %d broadcasts reached every socket; tick to last delivery p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
			r.FanoutCompleteTicks, r.FanoutTicks, r.FanoutLastP50Ms, r.FanoutLastP99Ms, r.FanoutLastMaxMs)
	}
	if r.Missed > 0 {
		fmt.Fprintf(w, "  rate        %d votes of the target found no free voter\n", r.Missed)
	}
	fmt.Fprintf(w, "  errors      %s\n", errorsText(r.Errors))
	fmt.Fprintf(w, "  verify      lost %d, double_counted %d, unconfirmed %d (votes without an answer, allowed either way)\n", r.Lost, r.DoubleCounted, r.Unconfirmed)
}

func rateText(rate float64) string {
	if rate == 0 {
		return "as fast as acks allow"
	}
	return fmt.Sprintf("%.0f votes/s", rate)
}

func errorsText(errs map[string]int64) string {
	if len(errs) == 0 {
		return "none"
	}
	codes := make([]string, 0, len(errs))
	for c := range errs {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	parts := make([]string, len(codes))
	for i, c := range codes {
		parts[i] = fmt.Sprintf("%s %d", c, errs[c])
	}
	return strings.Join(parts, ", ")
}

func writeOutputs(cfg config, r *report) error {
	if cfg.JSON != "" {
		data, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return fmt.Errorf("encode report: %w", err)
		}
		if err := os.WriteFile(cfg.JSON, append(data, '\n'), 0o644); err != nil {
			return fmt.Errorf("write -json %s: %w", cfg.JSON, err)
		}
	}
	if cfg.SVG != "" {
		if err := os.WriteFile(cfg.SVG, []byte(plotSVG(r)), 0o644); err != nil {
			return fmt.Errorf("write -svg %s: %w", cfg.SVG, err)
		}
	}
	return nil
}

// progressLine prints progress on stderr: rewritten in place on a terminal, a plain
// line every 5 s otherwise.
type progressLine struct {
	w        io.Writer
	tty      bool
	sockets  int
	last     time.Time
	lastAck  int64
	lastTime time.Duration
	printed  bool
}

func newProgressLine(w io.Writer, cfg config) *progressLine {
	pl := &progressLine{w: w, sockets: cfg.Sockets}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			pl.tty = true
		}
	}
	return pl
}

func (pl *progressLine) update(elapsed time.Duration, p progress) {
	every := 5 * time.Second
	if pl.tty {
		every = time.Second
	}
	if time.Since(pl.last) < every {
		return
	}
	rate := 0.0
	if d := (elapsed - pl.lastTime).Seconds(); d > 0 && pl.printed {
		rate = float64(p.Acked-pl.lastAck) / d
	}
	pl.last, pl.lastAck, pl.lastTime, pl.printed = time.Now(), p.Acked, elapsed, true

	line := fmt.Sprintf("loadtest %5.0fs  open %d/%d  sent %d  acked %d (%.0f/s)  rejected %d  reconnects %d",
		elapsed.Seconds(), p.Open, pl.sockets, p.Sent, p.Acked, rate, p.Rejected, p.Reconnects)
	if pl.tty {
		fmt.Fprintf(pl.w, "\r\033[K%s", line)
		return
	}
	fmt.Fprintln(pl.w, line)
}

func (pl *progressLine) done() {
	if pl.tty && pl.printed {
		fmt.Fprintln(pl.w)
	}
}
