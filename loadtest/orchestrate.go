package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"
)

// startDelay is the time between the end of set-up and second 0 of the run, so that
// every worker process is up before its first voter is due.
const (
	startDelayLocal   = 200 * time.Millisecond
	startDelayProcess = 2 * time.Second
	finalizeTimeout   = time.Minute
)

// session is one run: its target, API client and workers.
type session struct {
	cfg     config
	api     *apiClient
	code    string
	polls   []planPoll
	sources []netip.Addr
	workers []worker
	series  []int64 // open sockets at each second of the run
}

// run creates the event and polls, runs the workers, closes the polls, verifies the
// final results and writes the report.
func run(ctx context.Context, cfg config, stdout, stderr io.Writer) (*report, error) {
	u, target, err := checkTarget(ctx, cfg.URL, cfg.AllowRemote, net.DefaultResolver)
	if err != nil {
		return nil, err
	}
	if _, err := raiseFileLimit(); err != nil {
		return nil, err
	}
	s := &session{cfg: cfg, api: &apiClient{base: u, client: &http.Client{}}}
	s.sources = sourceAddrs(target, cfg.Sockets)
	if err := checkSourceAddrs(s.sources); err != nil {
		return nil, err
	}

	startedAt := time.Now()
	if err := s.setUp(ctx); err != nil {
		return nil, err
	}
	plans := s.plans(time.Now())
	if err := s.startWorkers(ctx, plans); err != nil {
		s.closePolls(stderr)
		return nil, err
	}

	s.watch(ctx, plans[0].Start, stderr)
	final, closeErr := s.closePolls(stderr)
	for _, w := range s.workers {
		w.finish()
	}
	figs, err := s.collect()
	if err != nil {
		return nil, errors.Join(err, closeErr)
	}

	// A poll that could not be closed has no final document and counts as lost.
	rep := buildReport(cfg, s, startedAt, plans[0].Start, figs, verify(figs.Expect, final))
	printSummary(stdout, rep)
	return rep, errors.Join(closeErr, writeOutputs(cfg, rep))
}

// setUp creates the event and polls and opens the polls.
func (s *session) setUp(ctx context.Context) error {
	code, err := s.api.createEvent(ctx, "loadtest "+time.Now().UTC().Format(time.RFC3339))
	if err != nil {
		return fmt.Errorf("create the load test event: %w", err)
	}
	s.code = code

	allowChange := s.cfg.ChangeShare > 0
	for i := range s.cfg.Polls {
		id, err := s.api.createPoll(ctx, code, fmt.Sprintf("loadtest poll %d", i+1), s.cfg.Options, allowChange)
		if err != nil {
			return fmt.Errorf("create load test poll %d: %w", i+1, err)
		}
		if err := s.api.openPoll(ctx, id); err != nil {
			return fmt.Errorf("open load test poll %s: %w", id, err)
		}
		s.polls = append(s.polls, planPoll{ID: id, Options: s.cfg.Options, AllowChange: allowChange})
	}
	return nil
}

// plans splits the voters and the rate evenly over the workers.
func (s *session) plans(now time.Time) []plan {
	delay := startDelayLocal
	if s.cfg.Workers > 1 {
		delay = startDelayProcess
	}
	start := now.Add(delay)
	deadline := now.Add(s.cfg.MaxDuration)

	out := make([]plan, 0, s.cfg.Workers)
	first := 0
	for i := range s.cfg.Workers {
		count := s.cfg.Sockets / s.cfg.Workers
		if i < s.cfg.Sockets%s.cfg.Workers {
			count++
		}
		out = append(out, plan{
			URL: s.cfg.URL, EventCode: s.code, Polls: s.polls, HTTP: s.cfg.HTTP, Idle: s.cfg.Idle,
			First: first, Count: count, TotalSockets: s.cfg.Sockets, SourceAddrs: s.sources,
			Start: start, Ramp: s.cfg.Ramp, Duration: s.cfg.Duration, Drain: s.cfg.Drain, Deadline: deadline,
			Rate:    s.cfg.Rate * float64(count) / float64(s.cfg.Sockets),
			Profile: s.cfg.Profile, RetryShare: s.cfg.RetryShare, ChangeShare: s.cfg.ChangeShare, Seed: s.cfg.Seed,
		})
		first += count
	}
	return out
}

func (s *session) startWorkers(ctx context.Context, plans []plan) error {
	if len(plans) == 1 {
		s.workers = append(s.workers, startLocalWorker(ctx, plans[0]))
		return nil
	}
	for _, p := range plans {
		w, err := startProcessWorker(ctx, p)
		if err != nil {
			for _, started := range s.workers {
				started.finish()
				_, _ = started.result()
			}
			return err
		}
		s.workers = append(s.workers, w)
	}
	return nil
}

// watch prints progress until every worker has drained or ctx ends, and samples the
// open sockets once a second.
func (s *session) watch(ctx context.Context, start time.Time, stderr io.Writer) {
	pl := newProgressLine(stderr, s.cfg)
	ticker := time.NewTicker(250 * time.Millisecond)
	defer ticker.Stop()

	for i := 0; i < len(s.workers); {
		select {
		case <-s.workers[i].drained():
			i++
			continue
		case <-ctx.Done():
			pl.done()
			return
		case now := <-ticker.C:
			p := s.progress()
			if sec := int(now.Sub(start) / time.Second); sec >= 0 && sec < maxRunSeconds {
				for len(s.series) <= sec {
					s.series = append(s.series, p.Open)
				}
				s.series[sec] = max(s.series[sec], p.Open)
			}
			pl.update(now.Sub(start), p)
		}
	}
	pl.done()
}

func (s *session) progress() progress {
	var p progress
	for _, w := range s.workers {
		p.add(w.progress())
	}
	return p
}

// closePolls closes every poll (after which the final results are exact) and fetches
// the final results. It uses its own time limit so that it runs even when the run's
// context has ended.
func (s *session) closePolls(stderr io.Writer) (map[string]resultsDoc, error) {
	ctx, cancel := context.WithTimeout(context.Background(), finalizeTimeout)
	defer cancel()

	final := make(map[string]resultsDoc, len(s.polls))
	var errs []error
	for _, p := range s.polls {
		if err := s.closePoll(ctx, p.ID); err != nil {
			errs = append(errs, fmt.Errorf("close poll %s: %w", p.ID, err))
			continue
		}
		doc, err := s.api.results(ctx, p.ID)
		if err != nil {
			errs = append(errs, fmt.Errorf("final results of poll %s: %w", p.ID, err))
			continue
		}
		if !doc.Final {
			fmt.Fprintf(stderr, "loadtest: poll %s is closed but its results document is not final (version %d)\n", p.ID, doc.Version)
		}
		final[p.ID] = doc
	}
	return final, errors.Join(errs...)
}

func (s *session) collect() (figures, error) {
	var all figures
	var errs []error
	for _, w := range s.workers {
		f, err := w.result()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		all.merge(f)
	}
	if all.Expect == nil {
		all.Expect = expectation{}
	}
	return all, errors.Join(errs...)
}

// closeAttempts bounds the close requests per poll. The server returns 503 overloaded
// when the poll is closed but its final results are not ready yet, and a repeated
// close then completes the barrier.
const closeAttempts = 10

func (s *session) closePoll(ctx context.Context, poll string) error {
	var err error
	for range closeAttempts {
		err = s.api.closePoll(ctx, poll)
		var se *apiStatusError
		if err == nil || !errors.As(err, &se) || se.Status != http.StatusServiceUnavailable {
			return err
		}
		if !sleepUntil(ctx, time.Now().Add(max(se.RetryAfter, time.Second)), nil) {
			return err
		}
	}
	return err
}
