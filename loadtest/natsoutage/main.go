// Command natsoutage checks that LiveVote with an external NATS server neither
// acknowledges a vote it did not store nor loses or double counts one when that server
// stops again and again during a surge. It builds the livevote and nats-server
// binaries, runs nats-server with JetStream on a temporary directory and livevote with
// -nats-url, both on 127.0.0.1. HTTP voters start at a steady rate for the whole run
// and each retries an unanswered vote with the same vote id. Every -up it stops NATS
// for -outage: with -mode kill it SIGKILLs nats-server and restarts it on the same
// directory and port, with -mode pause it sends SIGSTOP and later SIGCONT.
// At the end it replays every acknowledged vote id (each must answer duplicate),
// closes the poll and compares the final counts with the acknowledgements.
//
//	go run ./loadtest/natsoutage -outages 5 -outage 10s -voters 6000
//
// It prints one JSON line with the figures and exits with status 1 when a vote was
// lost or counted twice.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/livevote/livevote/loadtest/internal/faultapi"
)

// options are the command-line settings of a run.
type options struct {
	outages  int
	outage   time.Duration
	up       time.Duration
	voters   int
	options  int
	mode     string
	deadline time.Duration
	src      string
	keep     bool
}

// summary is the JSON line that natsoutage prints.
type summary struct {
	Mode           string    `json:"mode"`
	Outages        int       `json:"outages"`
	OutageS        float64   `json:"outage_s"`
	Voters         int       `json:"voters"`
	Acked          int       `json:"acked"`
	Attempts       int64     `json:"attempts"`
	Overloaded     int64     `json:"overloaded_503"`
	ConnErrors     int64     `json:"connection_errors"`
	AckedInOutage  int64     `json:"acked_during_outage"`
	Unsettled      int       `json:"unsettled"`
	Lost           int64     `json:"lost"`
	DoubleCounted  int64     `json:"double_counted"`
	ReplayMismatch int       `json:"replay_mismatch"`
	UnknownExtra   int64     `json:"unknown_counted"`
	RecoveryMs     []float64 `json:"recovery_ms"`
	RecoveryMaxMs  float64   `json:"recovery_max_ms"`
	DurationS      float64   `json:"duration_s"`
}

func main() {
	o := parseFlags()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := o.validate(); err != nil {
		logger.Error("invalid flags", "error", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.deadline)
	defer cancel()

	sum, err := run(ctx, o, logger)
	if err != nil {
		logger.Error("run failed", "error", err)
		os.Exit(1)
	}
	line, _ := json.Marshal(sum)
	fmt.Println(string(line))
	if sum.Lost > 0 || sum.DoubleCounted > 0 || sum.ReplayMismatch > 0 || sum.Unsettled > 0 {
		os.Exit(1)
	}
}

func parseFlags() options {
	var o options
	flag.IntVar(&o.outages, "outages", 5, "NATS outages during the run (1 to 50)")
	flag.DurationVar(&o.outage, "outage", 10*time.Second, "length of each outage")
	flag.DurationVar(&o.up, "up", 5*time.Second, "time NATS runs before each outage and after the last one")
	flag.IntVar(&o.voters, "voters", 6000, "voters, started at a steady rate over the run; each votes once")
	flag.IntVar(&o.options, "options", 4, "options of the poll (2 to 10)")
	flag.StringVar(&o.mode, "mode", "kill", "how NATS stops: kill (SIGKILL, then a restart on the same directory and port) or pause (SIGSTOP, then SIGCONT)")
	flag.DurationVar(&o.deadline, "deadline", 5*time.Minute, "bound of the whole run")
	flag.StringVar(&o.src, "src", ".", "directory of the livevote module to build")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (binaries, data, logs)")
	flag.Parse()

	return o
}

func (o *options) validate() error {
	switch {
	case o.outages < 1 || o.outages > 50:
		return fmt.Errorf("-outages %d is out of range: use 1 to 50", o.outages)
	case o.outage < time.Second || o.up < time.Second:
		return fmt.Errorf("-outage %s or -up %s is too short: use at least 1s", o.outage, o.up)
	case o.voters < 1:
		return fmt.Errorf("-voters %d is out of range: use at least 1", o.voters)
	case o.options < 2 || o.options > 10:
		return fmt.Errorf("-options %d is out of range: use 2 to 10", o.options)
	case o.mode != "kill" && o.mode != "pause":
		return fmt.Errorf("-mode %q is unknown: use kill or pause", o.mode)
	}

	return nil
}

// run builds and starts both servers, drives the voters and outages, and checks the tally.
func run(ctx context.Context, o options, logger *slog.Logger) (summary, error) {
	began := time.Now()
	dir, err := os.MkdirTemp("", "livevote-natsoutage-")
	if err != nil {
		return summary{}, err
	}
	if o.keep {
		logger.Info("keeping the run directory", "dir", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	ns, lv, err := startBoth(ctx, o.src, dir)
	if err != nil {
		return summary{}, err
	}
	defer ns.stop()
	defer lv.stop()

	client := faultapi.New(lv.base())
	poll, err := client.Setup(ctx, "NATS outage run", o.options)
	if err != nil {
		return summary{}, err
	}
	voters, windows, recoveries, err := surge(ctx, o, ns, client, poll, logger)
	if err != nil {
		return summary{}, err
	}

	sum, err := verify(ctx, client, poll, voters, windows)
	if err != nil {
		return sum, err
	}
	sum.Mode, sum.Outages, sum.OutageS = o.mode, len(windows), o.outage.Seconds()
	for _, r := range recoveries {
		sum.RecoveryMs = append(sum.RecoveryMs, float64(r.Microseconds())/1000)
	}
	sum.RecoveryMaxMs = slices.Max(sum.RecoveryMs)
	sum.DurationS = time.Since(began).Seconds()

	return sum, nil
}
