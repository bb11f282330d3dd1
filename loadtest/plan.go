package main

import (
	"net/netip"
	"time"
)

// plan is the slice of work given to one worker, in-process or as a child process
// (sent as one JSON line on its standard input).
type plan struct {
	URL       string     `json:"url"`
	EventCode string     `json:"event_code"`
	Polls     []planPoll `json:"polls"`
	HTTP      bool       `json:"http"`
	Idle      bool       `json:"idle"`

	// First and Count are the global indexes of this worker's voters: First,
	// First+1, …, First+Count-1 out of TotalSockets.
	First        int `json:"first"`
	Count        int `json:"count"`
	TotalSockets int `json:"total_sockets"`

	SourceAddrs []netip.Addr `json:"source_addrs"`

	// Start is the shared time base of every worker: second 0 of the per-second
	// figures and of the load profile. Workers run on the same machine, so the
	// clocks agree.
	Start    time.Time     `json:"start"`
	Ramp     time.Duration `json:"ramp"`
	Duration time.Duration `json:"duration"`
	Drain    time.Duration `json:"drain"`
	// Deadline is the hard end of the worker, from -max-duration.
	Deadline time.Time `json:"deadline"`

	// Rate is this worker's share of the target votes per second; 0 sends as fast
	// as acks allow.
	Rate        float64 `json:"rate"`
	Profile     string  `json:"profile"`
	RetryShare  float64 `json:"retry_share"`
	ChangeShare float64 `json:"change_share"`
	Seed        uint64  `json:"seed"`
}

// planPoll is one poll of the run.
type planPoll struct {
	ID          string `json:"id"`
	Options     int    `json:"options"`
	AllowChange bool   `json:"allow_change"`
}

// Load profiles.
const (
	profileSteady = "steady"
	profileSurge  = "surge"
)

// surgeBase is the share of the peak load at the start and end of the surge profile.
const surgeBase = 0.1

// loadFactor returns the share of the peak load, in (0, 1], at elapsed time t of a
// run of length d. steady is 1 throughout. surge rises linearly from surgeBase to 1
// over the first quarter, holds 1 for the middle half and falls back to surgeBase over
// the last quarter.
func loadFactor(profile string, t, d time.Duration) float64 {
	if profile != profileSurge || d <= 0 {
		return 1
	}
	x := float64(t) / float64(d)
	switch {
	case x <= 0:
		return surgeBase
	case x < 0.25:
		return surgeBase + (1-surgeBase)*x/0.25
	case x <= 0.75:
		return 1
	case x < 1:
		return surgeBase + (1-surgeBase)*(1-x)/0.25
	default:
		return surgeBase
	}
}

// activeShare places voter index i of n at a point in [0, 1) spread evenly and
// independently of worker boundaries, so that the voters with activeShare below the
// load factor are a fair sample of every worker. It uses Fibonacci hashing.
func activeShare(i int) float64 {
	const golden = 0.6180339887498949
	x := float64(i) * golden
	return x - float64(int64(x))
}

// connectAt returns when voter i of n opens its connection: spread evenly over ramp.
func connectAt(start time.Time, ramp time.Duration, i, n int) time.Time {
	if n <= 1 || ramp <= 0 {
		return start
	}
	return start.Add(time.Duration(float64(ramp) * float64(i) / float64(n)))
}
