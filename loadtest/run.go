package main

import (
	"context"
	"math"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// maxInFlightPerSocket is the number of votes one socket keeps waiting for acks. The
// server reads at most 32 unanswered votes per socket and stops reading past that.
const maxInFlightPerSocket = 32

// profileStep is how often the load factor of the profile is recomputed.
const profileStep = 200 * time.Millisecond

// pacerStep is how often the rate pacer hands out send tokens.
const pacerStep = 10 * time.Millisecond

// workerRun is one worker's share of a run: its voters, pacer and recorder.
type workerRun struct {
	plan    plan
	rec     *recorder
	gate    gate
	tokens  chan struct{} // nil unless plan.Rate > 0
	clients []*http.Client

	votingDone chan struct{} // closed at plan.Start + plan.Duration
	finish     <-chan struct{}
	drained    sync.WaitGroup

	mu     sync.Mutex
	expect expectation
}

// gate publishes the load factor and wakes the voters waiting for it to change.
type gate struct {
	mu     sync.Mutex
	factor float64
	wake   chan struct{}
}

func (g *gate) state() (float64, <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.factor, g.wake
}

func (g *gate) set(f float64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f == g.factor && g.wake != nil {
		return
	}
	g.factor = f
	if g.wake != nil {
		close(g.wake)
	}
	g.wake = make(chan struct{})
}

// runWorker runs the voters of p until the run is over: it calls drained once every
// voter has stopped sending and has its acks (or gave up waiting), then keeps the
// sockets open until finish is closed, closes them and returns the figures.
func runWorker(ctx context.Context, p plan, rec *recorder, finish <-chan struct{}, drained func()) figures {
	w := &workerRun{
		plan:       p,
		rec:        rec,
		votingDone: make(chan struct{}),
		finish:     finish,
		expect:     expectation{},
	}
	for _, poll := range p.Polls {
		w.expect.poll(poll.ID, poll.Options)
	}
	w.clients = newClients(p.SourceAddrs, p.Count)
	w.gate.set(loadFactor(p.Profile, 0, p.Duration))
	if p.Rate > 0 {
		w.tokens = make(chan struct{}, max(1, int(p.Rate/20)))
	}

	ctx, cancel := context.WithDeadline(ctx, p.Deadline)
	defer cancel()
	var helpers sync.WaitGroup
	helpers.Go(func() { w.runClock(ctx) })

	var voters sync.WaitGroup
	w.drained.Add(p.Count)
	for i := range p.Count {
		index := p.First + i
		voters.Go(func() {
			if p.HTTP {
				w.runHTTPVoter(ctx, index)
			} else {
				w.runSocket(ctx, index)
			}
		})
	}

	w.drained.Wait()
	drained()
	voters.Wait()
	cancel()
	helpers.Wait()
	for _, c := range w.clients {
		c.CloseIdleConnections()
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rec.figures(w.expect)
}

// runClock updates the load factor, hands out rate tokens and closes votingDone at
// the end of the voting window.
func (w *workerRun) runClock(ctx context.Context) {
	end := w.plan.Start.Add(w.plan.Duration)
	step := profileStep
	if w.tokens != nil {
		step = pacerStep
	}
	ticker := time.NewTicker(step)
	defer ticker.Stop()

	var owed float64
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-ticker.C:
			if !now.Before(end) {
				close(w.votingDone)
				return
			}
			f := loadFactor(w.plan.Profile, now.Sub(w.plan.Start), w.plan.Duration)
			w.gate.set(f)
			if w.tokens == nil || now.Before(w.plan.Start) {
				last = now
				continue
			}
			owed += w.plan.Rate * f * now.Sub(last).Seconds()
			last = now
			owed = w.handOut(owed)
		}
	}
}

// handOut puts whole tokens of owed into the token channel and returns the rest.
// Tokens that find the channel full are counted as missed: no voter was free.
func (w *workerRun) handOut(owed float64) float64 {
	whole := math.Floor(owed)
	for range int(whole) {
		select {
		case w.tokens <- struct{}{}:
		default:
			w.rec.c.Missed.Add(1)
		}
	}
	return owed - whole
}

// addLedger adds a voter's final state to the worker's expectation.
func (w *workerRun) addLedger(v *voter) {
	w.mu.Lock()
	defer w.mu.Unlock()
	v.addTo(w.expect, w.plan.Polls)
}

// client returns the HTTP client of voter index, spreading voters over the source
// addresses.
func (w *workerRun) client(index int) *http.Client {
	return w.clients[index%len(w.clients)]
}

// newClients returns one HTTP client per source address (one client without a fixed
// source address when addrs is empty), each keeping up to conns idle connections.
func newClients(addrs []netip.Addr, conns int) []*http.Client {
	if len(addrs) == 0 {
		return []*http.Client{newClient(netip.Addr{}, conns)}
	}
	out := make([]*http.Client, len(addrs))
	for i, a := range addrs {
		out[i] = newClient(a, conns/len(addrs)+1)
	}
	return out
}

func newClient(src netip.Addr, idle int) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	if src.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
	}
	tr := &http.Transport{
		DialContext:         d.DialContext,
		MaxIdleConns:        idle,
		MaxIdleConnsPerHost: idle,
		IdleConnTimeout:     90 * time.Second,
	}
	return &http.Client{Transport: tr}
}

// sleepUntil waits until t, ctx ends or stop is closed, and reports whether t came.
func sleepUntil(ctx context.Context, t time.Time, stop <-chan struct{}) bool {
	d := time.Until(t)
	if d <= 0 {
		return true
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	case <-stop:
		return false
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
