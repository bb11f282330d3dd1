// Command killrun checks that LiveVote neither loses nor double counts an acknowledged
// vote when it is killed with SIGKILL again and again during a surge. It builds the
// livevote binary and runs it on a temporary data directory on 127.0.0.1. It sends
// waves of HTTP voters, each starting at a random moment of its wave, and every voter
// retries an unanswered vote with the same vote id. At a random moment of each wave it
// SIGKILLs the server and restarts it on the same directory and port.
// At the end it replays every acknowledged vote id (each must answer duplicate), closes
// the poll and compares the final counts with the acknowledgements.
//
//	go run ./loadtest/killrun -kills 25 -voters 5000
//
// It prints one JSON line with the figures and exits with status 1 when a vote was lost
// or counted twice.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/livevote/livevote/loadtest/internal/faultapi"
)

// options are the command-line settings of a run.
type options struct {
	kills    int
	voters   int
	options  int
	maxGap   time.Duration
	deadline time.Duration
	src      string
	seed     uint64
	keep     bool
}

// summary is the JSON line that killrun prints.
type summary struct {
	Kills          int     `json:"kills"`
	Voters         int     `json:"voters"`
	Acked          int     `json:"acked"`
	Retried        int     `json:"retried"`
	Attempts       int64   `json:"attempts"`
	Unsettled      int     `json:"unsettled"`
	Lost           int64   `json:"lost"`
	DoubleCounted  int64   `json:"double_counted"`
	ReplayMismatch int     `json:"replay_mismatch"`
	UnknownExtra   int64   `json:"unknown_counted"`
	RestartP50Ms   float64 `json:"restart_p50_ms"`
	RestartMaxMs   float64 `json:"restart_max_ms"`
	DurationS      float64 `json:"duration_s"`
	Seed           uint64  `json:"seed"`
}

func main() {
	var o options
	flag.IntVar(&o.kills, "kills", 25, "SIGKILLs during the run (1 to 200)")
	flag.IntVar(&o.voters, "voters", 5000, "voters, split into one wave per kill; each votes once")
	flag.IntVar(&o.options, "options", 4, "options of the poll (2 to 10)")
	flag.DurationVar(&o.maxGap, "max-gap", 800*time.Millisecond, "longest wait from the start of a wave to its kill; each wait is random in [20ms, max-gap]")
	flag.DurationVar(&o.deadline, "deadline", 10*time.Minute, "bound of the whole run")
	flag.StringVar(&o.src, "src", ".", "directory of the livevote module to build")
	flag.Uint64Var(&o.seed, "seed", 0, "random seed of the kill moments; 0 picks one from the clock")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (binary, data, server logs)")
	flag.Parse()

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
	if sum.Lost > 0 || sum.DoubleCounted > 0 || sum.ReplayMismatch > 0 {
		os.Exit(1)
	}
}

func (o *options) validate() error {
	switch {
	case o.kills < 1 || o.kills > 200:
		return fmt.Errorf("-kills %d is out of range: use 1 to 200", o.kills)
	case o.voters < o.kills:
		return fmt.Errorf("-voters %d is fewer than -kills %d: each wave needs a voter", o.voters, o.kills)
	case o.options < 2 || o.options > 10:
		return fmt.Errorf("-options %d is out of range: use 2 to 10", o.options)
	case o.maxGap < 20*time.Millisecond:
		return fmt.Errorf("-max-gap %s is too short: use at least 20ms", o.maxGap)
	}
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano())
	}
	return nil
}

// run builds and starts the server, drives the waves and kills, and checks the tally.
func run(ctx context.Context, o options, logger *slog.Logger) (summary, error) {
	began := time.Now()
	dir, err := os.MkdirTemp("", "livevote-killrun-")
	if err != nil {
		return summary{}, err
	}
	if o.keep {
		logger.Info("keeping the run directory", "dir", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	srv, err := newServer(ctx, o.src, dir)
	if err != nil {
		return summary{}, err
	}
	defer srv.stop()
	if err := srv.start(ctx); err != nil {
		return summary{}, err
	}

	api := faultapi.New(srv.base())
	poll, err := api.Setup(ctx, "Kill run", o.options)
	if err != nil {
		return summary{}, err
	}
	voters, restarts, err := surge(ctx, o, srv, api, poll, logger)
	if err != nil {
		return summary{}, err
	}

	sum, err := verify(ctx, api, poll, voters)
	if err != nil {
		return summary{}, err
	}
	sum.Kills = len(restarts)
	sum.Seed = o.seed
	slices.Sort(restarts)
	sum.RestartP50Ms = float64(restarts[len(restarts)/2].Microseconds()) / 1000
	sum.RestartMaxMs = float64(restarts[len(restarts)-1].Microseconds()) / 1000
	sum.DurationS = time.Since(began).Seconds()
	return sum, nil
}

// surge starts one wave of voters per kill, each voter at a random moment within
// max-gap, SIGKILLs the server a random moment after the wave started and restarts it, then waits until every voter has settled or ctx
// ends. It returns the voters and the time each restart took until ready.
func surge(ctx context.Context, o options, srv *server, api *faultapi.Client, poll faultapi.Poll, logger *slog.Logger) ([]*voter, []time.Duration, error) {
	rng := rand.New(rand.NewPCG(o.seed, o.seed>>1|1))
	voters := make([]*voter, o.voters)
	for i := range voters {
		voters[i] = &voter{option: poll.Options[i%len(poll.Options)]}
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	perWave := o.voters / o.kills
	restarts := make([]time.Duration, 0, o.kills)
	for k := range o.kills {
		end := (k + 1) * perWave
		if k == o.kills-1 {
			end = o.voters
		}
		for _, v := range voters[k*perWave : end] {
			delay := time.Duration(rng.Int64N(int64(o.maxGap)))
			wg.Go(func() {
				if faultapi.Sleep(ctx, delay) {
					v.run(ctx, api, poll.ID)
				}
			})
		}

		gap := 20*time.Millisecond + time.Duration(rng.Int64N(int64(o.maxGap-20*time.Millisecond)))
		if !faultapi.Sleep(ctx, gap) {
			return nil, nil, fmt.Errorf("run deadline passed after %d kills", k)
		}
		srv.kill()
		restarted := time.Now()
		if err := srv.start(ctx); err != nil {
			return nil, nil, fmt.Errorf("restart after kill %d: %w", k+1, err)
		}
		restarts = append(restarts, time.Since(restarted))
		logger.Info("killed and restarted", "kill", k+1, "after", gap, "restart", time.Since(restarted).Round(time.Millisecond))
	}
	wg.Wait()
	return voters, restarts, nil
}

// verify replays every acknowledged vote id, closes the poll, and compares the final
// counts with the acknowledgements per option.
func verify(ctx context.Context, api *faultapi.Client, poll faultapi.Poll, voters []*voter) (summary, error) {
	sum := summary{Voters: len(voters)}
	acked := make(map[string]int64)
	unsettled := make(map[string]int64)
	for _, v := range voters {
		sum.Attempts += int64(v.attempts)
		if v.attempts > 1 {
			sum.Retried++
		}
		if !v.settled {
			sum.Unsettled++
			unsettled[v.option]++
			continue
		}
		sum.Acked++
		acked[v.option]++
		status, err := api.Replay(ctx, poll.ID, v.session, v.voteID, v.option)
		if err != nil {
			return sum, err
		}
		if status != "duplicate" {
			sum.ReplayMismatch++
		}
	}

	counts, err := api.ClosePoll(ctx, poll)
	if err != nil {
		return sum, err
	}
	for _, option := range poll.Options {
		got, want := counts[option], acked[option]
		switch {
		case got < want:
			sum.Lost += want - got
		case got > want+unsettled[option]:
			sum.DoubleCounted += got - want - unsettled[option]
			sum.UnknownExtra += unsettled[option]
		default:
			sum.UnknownExtra += got - want
		}
	}
	return sum, nil
}

// freePort returns a loopback address whose port was free a moment ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// build compiles the livevote command in src into dir.
func build(ctx context.Context, src, dir string) (string, error) {
	bin := filepath.Join(dir, "livevote")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build in %s: %w\n%s", src, err, out)
	}
	return bin, nil
}

var errNotReady = errors.New("server not ready")
