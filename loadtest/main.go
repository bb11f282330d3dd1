// Command loadtest drives a swarm of LiveVote voters over WebSocket or HTTP against one
// server on this machine, measures ack latency, throughput and broadcast delay, and
// checks that the final results count every acknowledged vote exactly once.
//
// It creates its own event and polls, opens them, votes for -duration, waits for the
// answers still owed, closes the polls (after which the final results are exact) and
// compares them vote for vote with the acks it saw. It exits with status 1 when a vote
// was lost or counted twice.
//
//	go run ./loadtest -url http://127.0.0.1:8080 -sockets 1000 -duration 30s -profile surge
//
// Past maxSocketsPerProcess sockets it runs several worker processes of itself and
// merges their figures. It refuses targets that do not resolve to loopback addresses
// unless -allow-remote is set.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Flag limits.
const (
	maxSockets     = 200000
	maxWorkers     = 64
	maxPolls       = 100 // the server's limit of polls per event
	maxOptions     = 10
	maxRate        = 10_000_000
	maxMaxDuration = time.Hour
)

// config is the load tester's configuration, one field per flag.
type config struct {
	URL         string
	Sockets     int
	Duration    time.Duration
	Ramp        time.Duration
	Drain       time.Duration
	MaxDuration time.Duration
	Rate        float64
	HTTP        bool
	Idle        bool
	JSON        string
	SVG         string
	Plot        string
	Polls       int
	Options     int
	RetryShare  float64
	ChangeShare float64
	Profile     string
	Workers     int
	AllowRemote bool
	Seed        uint64
	Args        []string
}

func main() {
	if len(os.Args) == 2 && os.Args[1] == workerFlag {
		if err := workerMain(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "loadtest worker:", err)
			os.Exit(1)
		}
		return
	}

	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(2)
	}
	if cfg.Plot != "" {
		if err := plotFromJSON(cfg.Plot, cfg.SVG); err != nil {
			fmt.Fprintln(os.Stderr, "loadtest:", err)
			os.Exit(1)
		}
		return
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, cfg.MaxDuration)
	defer cancel()

	rep, err := run(ctx, cfg, os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
	if rep.Lost != 0 || rep.DoubleCounted != 0 {
		os.Exit(1)
	}
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	cfg := config{Args: args}
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.URL, "url", "http://127.0.0.1:8080", "base URL of the LiveVote server; its host must resolve to loopback addresses unless -allow-remote is set")
	fs.IntVar(&cfg.Sockets, "sockets", 100, fmt.Sprintf("number of voters: WebSocket connections, or concurrent HTTP voters with -http (1 to %d)", maxSockets))
	fs.DurationVar(&cfg.Duration, "duration", 30*time.Second, "length of the voting window, ramp included")
	fs.DurationVar(&cfg.Ramp, "ramp", 5*time.Second, "time over which the voters connect, evenly spread; at most -duration")
	fs.DurationVar(&cfg.Drain, "drain", 15*time.Second, "how long to wait after the voting window for the answers still owed")
	fs.DurationVar(&cfg.MaxDuration, "max-duration", 10*time.Minute, "hard cap on the whole run, set-up and drain included (at most 1h)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "target votes per second over all voters at the profile's peak; 0 sends as fast as acks allow")
	fs.BoolVar(&cfg.HTTP, "http", false, "vote with HTTP POST /api/polls/{poll}/votes over keep-alive connections instead of WebSocket")
	fs.BoolVar(&cfg.Idle, "idle", false, "connect the voters and hold them open without voting (for fan-out and memory figures)")
	fs.StringVar(&cfg.JSON, "json", "", "write every figure as JSON to this file")
	fs.StringVar(&cfg.SVG, "svg", "", "write a latency and throughput over time plot as SVG to this file")
	fs.StringVar(&cfg.Plot, "plot", "", "read a report written by -json and write its plot to -svg, without running load")
	fs.IntVar(&cfg.Polls, "polls", 4, fmt.Sprintf("number of polls to create (1 to %d)", maxPolls))
	fs.IntVar(&cfg.Options, "options", 4, fmt.Sprintf("options per poll (2 to %d)", maxOptions))
	fs.Float64Var(&cfg.RetryShare, "retry-share", 0.05, "share of votes, 0 to 1, that resend an accepted vote_id and must be answered duplicate")
	fs.Float64Var(&cfg.ChangeShare, "change-share", 0.2, "share of votes, 0 to 1, that change an accepted vote; above 0 the polls allow changes, so voters can vote for the whole run")
	fs.StringVar(&cfg.Profile, "profile", profileSteady, "load profile: steady, or surge (rise from 10% to the peak over the first quarter, hold, fall back over the last quarter)")
	fs.IntVar(&cfg.Workers, "workers", 0, fmt.Sprintf("worker processes; 0 picks one per %d sockets and runs a single worker in this process", maxSocketsPerProcess))
	fs.BoolVar(&cfg.AllowRemote, "allow-remote", false, "allow a -url host that resolves to a non-loopback address")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed of the voters' random choices")

	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("%w: unexpected argument %q: loadtest takes only flags (see -help)", errInvalidFlag, fs.Arg(0))
	}
	if cfg.Plot != "" {
		if cfg.SVG == "" {
			return config{}, fmt.Errorf("%w: -plot %s needs -svg FILE to write the plot to", errInvalidFlag, cfg.Plot)
		}
		return cfg, nil
	}
	return cfg, cfg.validate()
}

func (c *config) validate() error {
	checks := []struct {
		bad bool
		msg string
	}{
		{c.Sockets < 1 || c.Sockets > maxSockets, fmt.Sprintf("-sockets %d is out of range: use 1 to %d", c.Sockets, maxSockets)},
		{c.Duration <= 0, fmt.Sprintf("-duration %s must be positive", c.Duration)},
		{c.Ramp < 0 || c.Ramp > c.Duration, fmt.Sprintf("-ramp %s is out of range: use 0 to -duration (%s)", c.Ramp, c.Duration)},
		{c.Drain < 0, fmt.Sprintf("-drain %s must not be negative", c.Drain)},
		{c.MaxDuration <= 0 || c.MaxDuration > maxMaxDuration, fmt.Sprintf("-max-duration %s is out of range: use up to %s", c.MaxDuration, maxMaxDuration)},
		{c.Duration+c.Drain >= c.MaxDuration, fmt.Sprintf("-duration %s plus -drain %s must be below -max-duration %s", c.Duration, c.Drain, c.MaxDuration)},
		{c.Rate < 0 || c.Rate > maxRate, fmt.Sprintf("-rate %g is out of range: use 0 (as fast as acks allow) to %d", c.Rate, maxRate)},
		{c.Polls < 1 || c.Polls > maxPolls, fmt.Sprintf("-polls %d is out of range: use 1 to %d", c.Polls, maxPolls)},
		{c.Options < 2 || c.Options > maxOptions, fmt.Sprintf("-options %d is out of range: use 2 to %d", c.Options, maxOptions)},
		{c.RetryShare < 0 || c.RetryShare > 1, fmt.Sprintf("-retry-share %g is out of range: use 0 to 1", c.RetryShare)},
		{c.ChangeShare < 0 || c.ChangeShare > 1, fmt.Sprintf("-change-share %g is out of range: use 0 to 1", c.ChangeShare)},
		{c.Profile != profileSteady && c.Profile != profileSurge, fmt.Sprintf("-profile %q is unknown: use steady or surge", c.Profile)},
		{c.Workers < 0 || c.Workers > maxWorkers, fmt.Sprintf("-workers %d is out of range: use 0 (auto) to %d", c.Workers, maxWorkers)},
	}
	for _, ch := range checks {
		if ch.bad {
			return fmt.Errorf("%w: %s", errInvalidFlag, ch.msg)
		}
	}
	if c.Workers == 0 {
		c.Workers = (c.Sockets + maxSocketsPerProcess - 1) / maxSocketsPerProcess
	}
	if per := (c.Sockets + c.Workers - 1) / c.Workers; per > maxSocketsPerProcess {
		return fmt.Errorf("%w: -workers %d gives %d sockets per process, over the %d one process may open; use -workers %d or more",
			errInvalidFlag, c.Workers, per, maxSocketsPerProcess, (c.Sockets+maxSocketsPerProcess-1)/maxSocketsPerProcess)
	}
	if c.Workers > c.Sockets {
		c.Workers = c.Sockets
	}
	return nil
}
