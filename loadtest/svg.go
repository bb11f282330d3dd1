package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"
)

// Plot geometry in SVG user units.
const (
	plotWidth  = 900
	panelH     = 220
	marginL    = 70
	marginR    = 70
	marginT    = 72
	panelGap   = 60
	plotBottom = marginT + 2*panelH + panelGap + 50
)

// plotFromJSON reads a report written by -json and writes its plot to svgPath.
func plotFromJSON(jsonPath, svgPath string) error {
	data, err := os.ReadFile(jsonPath)
	if err != nil {
		return fmt.Errorf("read -plot %s: %w", jsonPath, err)
	}
	var r report
	if err := json.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("decode -plot %s: %w", jsonPath, err)
	}
	if len(r.PerSecond) == 0 {
		return fmt.Errorf("-plot %s has no per_second figures: write it with loadtest -json", jsonPath)
	}
	if err := os.WriteFile(svgPath, []byte(plotSVG(&r)), 0o644); err != nil {
		return fmt.Errorf("write -svg %s: %w", svgPath, err)
	}
	return nil
}

// plotSVG draws two panels over the seconds of the run: acks per second with the
// open sockets, and ack latency p50, p99 and p99.9 on a log scale.
func plotSVG(r *report) string {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", plotWidth, plotBottom)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15">%s</text>`+"\n", marginL, escape(fmt.Sprintf(
		"LiveVote loadtest: %s, %s profile, %d voters, target %s", r.Mode, r.Profile, r.Sockets, rateText(r.TargetRate))))
	fmt.Fprintf(&b, `<text x="%d" y="38" fill="#555">%s</text>`+"\n", marginL, escape(fmt.Sprintf(
		"%s, %d CPUs, %s; acked %d, lost %d, double counted %d", r.Machine.CPUModel, r.Machine.CPUs, r.StartedAt.Format("2006-01-02"), r.Acked, r.Lost, r.DoubleCounted)))

	n := len(r.PerSecond)
	x := func(t float64) float64 { return marginL + t/math.Max(1, float64(n-1))*(plotWidth-marginL-marginR) }

	top := float64(marginT)
	var maxAcks, maxOpen float64 = 1, 1
	for _, s := range r.PerSecond {
		maxAcks = math.Max(maxAcks, float64(s.Acks))
		maxOpen = math.Max(maxOpen, float64(s.Open))
	}
	frame(&b, top, "acks per second", "open sockets")
	yAcks := func(v float64) float64 { return top + panelH - v/maxAcks*panelH }
	yOpen := func(v float64) float64 { return top + panelH - v/maxOpen*panelH }
	polyline(&b, n, x, func(i int) float64 { return yAcks(float64(r.PerSecond[i].Acks)) }, "#1f77b4")
	polyline(&b, n, x, func(i int) float64 { return yOpen(float64(r.PerSecond[i].Open)) }, "#999")
	axisLabels(&b, top, fmt.Sprintf("%.0f", maxAcks), fmt.Sprintf("%.0f", maxOpen))

	top2 := top + panelH + panelGap
	lo, hi := latencyRange(r.PerSecond)
	frame(&b, top2, "ack latency, ms (log)", "")
	yLat := func(v float64) float64 {
		v = math.Max(v, lo)
		return top2 + panelH - (math.Log10(v)-math.Log10(lo))/(math.Log10(hi)-math.Log10(lo))*panelH
	}
	series := []struct {
		name  string
		color string
		value func(secondReport) float64
	}{
		{"p50", "#2ca02c", func(s secondReport) float64 { return s.P50Ms }},
		{"p99", "#ff7f0e", func(s secondReport) float64 { return s.P99Ms }},
		{"p99.9", "#d62728", func(s secondReport) float64 { return s.P999Ms }},
	}
	for k, s := range series {
		polyline(&b, n, x, func(i int) float64 {
			if r.PerSecond[i].Acks == 0 {
				return math.NaN()
			}
			return yLat(s.value(r.PerSecond[i]))
		}, s.color)
		fmt.Fprintf(&b, `<text x="%d" y="%.0f" fill="%s">%s</text>`+"\n", plotWidth-marginR+8, top2+14+float64(k)*16, s.color, s.name)
	}
	for v := lo; v <= hi*1.0001; v *= 10 {
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%g</text>`+"\n", marginL-6, yLat(v)+4, v)
	}
	for t := 0; t < n; t += max(1, n/10) {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%ds</text>`+"\n", x(float64(t)), top2+panelH+16, t)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func latencyRange(ss []secondReport) (lo, hi float64) {
	lo, hi = math.Inf(1), 0
	for _, s := range ss {
		if s.Acks == 0 {
			continue
		}
		lo = math.Min(lo, s.P50Ms)
		hi = math.Max(hi, s.P999Ms)
	}
	if math.IsInf(lo, 1) || hi <= 0 {
		return 0.1, 1000
	}
	lo = math.Pow(10, math.Floor(math.Log10(math.Max(lo, 0.01))))
	hi = math.Pow(10, math.Ceil(math.Log10(math.Max(hi, lo*10))))
	return lo, hi
}

func frame(b *strings.Builder, top float64, left, right string) {
	fmt.Fprintf(b, `<rect x="%d" y="%.0f" width="%d" height="%d" fill="none" stroke="#ccc"/>`+"\n", marginL, top, plotWidth-marginL-marginR, panelH)
	fmt.Fprintf(b, `<text x="%d" y="%.0f">%s</text>`+"\n", marginL, top-6, escape(left))
	if right != "" {
		fmt.Fprintf(b, `<text x="%d" y="%.0f" text-anchor="end" fill="#999">%s</text>`+"\n", plotWidth-marginR, top-6, escape(right))
	}
}

func axisLabels(b *strings.Builder, top float64, left, right string) {
	fmt.Fprintf(b, `<text x="%d" y="%.0f" text-anchor="end">%s</text>`+"\n", marginL-6, top+10, left)
	fmt.Fprintf(b, `<text x="%d" y="%.0f" text-anchor="end">0</text>`+"\n", marginL-6, top+panelH)
	fmt.Fprintf(b, `<text x="%d" y="%.0f" fill="#999">%s</text>`+"\n", plotWidth-marginR+6, top+10, right)
}

// polyline draws y(i) over x(i), breaking the line where y is NaN.
func polyline(b *strings.Builder, n int, x func(float64) float64, y func(int) float64, color string) {
	var pts []string
	flush := func() {
		if len(pts) > 0 {
			fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n", color, strings.Join(pts, " "))
		}
		pts = pts[:0]
	}
	for i := range n {
		v := y(i)
		if math.IsNaN(v) {
			flush()
			continue
		}
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(float64(i)), v))
	}
	flush()
}

func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}
