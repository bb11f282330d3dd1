package transport

import (
	"cmp"
	"crypto/subtle"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/livevote/livevote/actors"
	"github.com/livevote/livevote/hub"
)

// Dashboard sampling. Rates and latency percentiles cover the time between the
// newest sample and the newest one at least dashboardWindow older, so each figure is
// an average over about that window.
const (
	dashboardWindow = 3 * time.Second
	// dashboardMinGap is the shortest time between two samples: requests closer
	// together share the newest sample, so many open dashboards cost one sample.
	dashboardMinGap = 200 * time.Millisecond
	// dashboardMaxEvents bounds the events listed, busiest first.
	dashboardMaxEvents = 50
)

// dashboardDoc is the body of GET /api/dashboard.
type dashboardDoc struct {
	At            time.Time `json:"at"`
	WindowSeconds float64   `json:"window_seconds"`
	Sockets       int       `json:"sockets"`

	// VotesPerSecond counts accepted votes; AnswersPerSecond counts answers of
	// any outcome, refusals included.
	VotesPerSecond   float64 `json:"votes_per_second"`
	AnswersPerSecond float64 `json:"answers_per_second"`
	VotesAccepted    uint64  `json:"votes_accepted_total"`
	// AckP50Ms and AckP99Ms estimate ack latency percentiles from the buckets of
	// livevote_ack_seconds as histogram_quantile does; null without answers.
	AckP50Ms *float64 `json:"ack_p50_ms"`
	AckP99Ms *float64 `json:"ack_p99_ms"`

	Events []dashboardEvent `json:"events"`
	Shards []dashboardShard `json:"shards"`
	Ring   dashboardRing    `json:"ring"`

	// Cluster is set in cluster mode, where Events, Sockets and Shards
	// describe this hub only.
	Cluster *dashboardCluster `json:"cluster,omitempty"`
}

// dashboardCluster is this hub's place in its cluster.
type dashboardCluster struct {
	Members     int `json:"members"`
	LocalShards int `json:"local_shards"`
	TotalShards int `json:"total_shards"`
}

type dashboardEvent struct {
	Code       string         `json:"code"`
	Title      string         `json:"title"`
	Audience   int            `json:"audience"`
	Presenters int            `json:"presenters"`
	Poll       *dashboardPoll `json:"poll,omitempty"`
}

// dashboardPoll is the event's current poll: the newest open one, else the newest.
type dashboardPoll struct {
	Question string `json:"question"`
	State    string `json:"state"`
	Voters   int64  `json:"voters"`
	// Participation is voters over connected audience sockets; null without audience.
	Participation *float64 `json:"participation"`
}

type dashboardShard struct {
	Shard          int     `json:"shard"`
	VotesApplied   uint64  `json:"votes_applied"`
	VotesPerSecond float64 `json:"votes_per_second"`
	QueueDepth     int     `json:"queue_depth"`
	InFlight       int     `json:"in_flight"`
	LastBatch      int     `json:"last_batch"`
	// AvgBatch is votes per append within the window, or the lifetime average when
	// the shard appended nothing in the window.
	AvgBatch float64 `json:"avg_batch"`
	// Share is the shard's part of all applied votes, 0 to 1.
	Share float64 `json:"share"`
}

// dashboardRing describes how evenly the ring spread the votes over the shards.
type dashboardRing struct {
	Shards int `json:"shards"`
	// BusiestOverMean is the busiest shard's applied votes over the mean; 1 is even.
	BusiestOverMean float64 `json:"busiest_over_mean"`
	MinShare        float64 `json:"min_share"`
	MaxShare        float64 `json:"max_share"`
}

// statsSample is one reading of the hub's and the shards' cumulative counters.
type statsSample struct {
	at      time.Time
	metrics hub.MetricsSnapshot
	shards  actors.Stats
}

// statsSampler keeps the recent samples the dashboard's rates are computed from.
// Samples are taken when the dashboard is requested, so nothing runs in the
// background and an unwatched server does no work for it.
type statsSampler struct {
	hub     *hub.Hub
	metrics *hub.Metrics
	now     func() time.Time

	mu      sync.Mutex
	samples []statsSample // oldest first; samples[0] is at most one sample beyond the window
}

// newStatsSampler takes a first sample at once, so the first request for the
// dashboard already has a window: the time since the server was built.
func newStatsSampler(h *hub.Hub, m *hub.Metrics, now func() time.Time) *statsSampler {
	s := &statsSampler{hub: h, metrics: m, now: now}
	shards, _ := h.ShardStats()
	s.samples = append(s.samples, statsSample{at: now(), metrics: m.Snapshot(), shards: shards})
	return s
}

// window returns the newest sample and the base sample that rates are measured from.
func (s *statsSampler) window() (base, current statsSample) {
	s.mu.Lock()
	defer s.mu.Unlock()

	now := s.now()
	if n := len(s.samples); n < 2 || now.Sub(s.samples[n-1].at) >= dashboardMinGap {
		shards, _ := s.hub.ShardStats()
		s.samples = append(s.samples, statsSample{at: now, metrics: s.metrics.Snapshot(), shards: shards})
	}
	for len(s.samples) > 1 && !s.samples[1].at.After(now.Add(-dashboardWindow)) {
		s.samples = s.samples[1:]
	}
	// Shard counters sampled before recovery ended would count replayed votes as new
	// ones. Such samples keep their hub figures but take the shard counters of the
	// first sample after recovery, so shard rates start from there.
	newest := s.samples[len(s.samples)-1]
	if allShardsReady(newest.shards) {
		for i := range s.samples {
			if !allShardsReady(s.samples[i].shards) {
				s.samples[i].shards = newest.shards
			}
		}
	}
	return s.samples[0], newest
}

func allShardsReady(stats actors.Stats) bool {
	for _, shard := range stats.Shards {
		if !shard.Ready {
			return false
		}
	}
	return true
}

// getDashboard serves GET /api/dashboard: the operator's live figures, the same
// counters as /metrics turned into rates over the last few seconds.
func (s *Server) getDashboard(w http.ResponseWriter, r *http.Request) {
	if err := s.checkOperatorKey(r); err != nil {
		writeError(w, err)
		return
	}
	base, current := s.sampler.window()
	doc := buildDashboard(base, current)
	doc.Sockets = s.openSockets()
	doc.Events = s.dashboardEvents()
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, doc)
}

// checkOperatorKey requires the operator key as a bearer token when one is set.
func (s *Server) checkOperatorKey(r *http.Request) *hub.Error {
	if s.cfg.OperatorKey == "" {
		return nil
	}
	given := bearerToken(r)
	if given == "" {
		return hub.Errorf(hub.CodeUnauthorized, "operator key is missing: send the -operator-key value as Authorization: Bearer <key>")
	}
	if subtle.ConstantTimeCompare([]byte(given), []byte(s.cfg.OperatorKey)) != 1 {
		return hub.Errorf(hub.CodeUnauthorized, "operator key is invalid: send the -operator-key value this server was started with")
	}
	return nil
}

func buildDashboard(base, current statsSample) dashboardDoc {
	doc := dashboardDoc{At: current.at, VotesAccepted: current.metrics.Accepted}
	seconds := current.at.Sub(base.at).Seconds()
	doc.WindowSeconds = seconds
	if seconds > 0 {
		doc.VotesPerSecond = float64(current.metrics.Accepted-base.metrics.Accepted) / seconds
		doc.AnswersPerSecond = float64(current.metrics.Answered-base.metrics.Answered) / seconds
	}
	doc.AckP50Ms = ackQuantileMs(base.metrics, current.metrics, 0.50)
	doc.AckP99Ms = ackQuantileMs(base.metrics, current.metrics, 0.99)
	doc.Shards, doc.Ring = dashboardShards(base.shards, current.shards, seconds)
	if current.shards.ClusterMembers > 0 {
		doc.Cluster = &dashboardCluster{Members: current.shards.ClusterMembers, LocalShards: len(current.shards.Shards),
			TotalShards: current.shards.TotalShards}
	}
	return doc
}

// ackQuantileMs estimates the q-quantile of the acks answered between two samples,
// in milliseconds, by linear interpolation inside the histogram bucket that holds it.
// Answers above the largest bucket bound count as that bound.
func ackQuantileMs(base, current hub.MetricsSnapshot, q float64) *float64 {
	total := current.AckTotal - base.AckTotal
	if total == 0 || len(current.AckCounts) == 0 {
		return nil
	}
	rank := q * float64(total)

	lowerBound, lowerCount := 0.0, 0.0
	for i, bound := range current.AckBuckets {
		count := float64(current.AckCounts[i])
		if i < len(base.AckCounts) {
			count -= float64(base.AckCounts[i])
		}
		if count >= rank {
			inBucket := count - lowerCount
			value := bound
			if inBucket > 0 {
				value = lowerBound + (bound-lowerBound)*(rank-lowerCount)/inBucket
			}
			ms := value * 1000
			return &ms
		}
		lowerBound, lowerCount = bound, count
	}
	ms := lowerBound * 1000
	return &ms
}

func dashboardShards(base, current actors.Stats, seconds float64) ([]dashboardShard, dashboardRing) {
	out := make([]dashboardShard, len(current.Shards))
	ring := dashboardRing{Shards: len(current.Shards)}
	if len(current.Shards) == 0 {
		return out, ring
	}

	var total uint64
	for _, st := range current.Shards {
		total += st.VotesApplied
	}
	// In cluster mode the shards held here change over time, so samples
	// are matched by shard number.
	baseByShard := make(map[int]actors.ShardStats, len(base.Shards))
	for _, st := range base.Shards {
		baseByShard[st.Shard] = st
	}
	ring.MinShare = math.Inf(1)
	for i, st := range current.Shards {
		shard := dashboardShard{
			Shard: st.Shard, VotesApplied: st.VotesApplied, QueueDepth: st.QueueDepth,
			InFlight: st.InFlight, LastBatch: st.LastBatchSize, AvgBatch: st.AvgBatch,
		}
		if prev, ok := baseByShard[st.Shard]; ok {
			if seconds > 0 {
				shard.VotesPerSecond = float64(st.VotesApplied-prev.VotesApplied) / seconds
			}
			if batches := st.Batches - prev.Batches; batches > 0 {
				shard.AvgBatch = (st.AvgBatch*float64(st.Batches) - prev.AvgBatch*float64(prev.Batches)) / float64(batches)
			}
		}
		if total > 0 {
			shard.Share = float64(st.VotesApplied) / float64(total)
		}
		ring.MinShare = min(ring.MinShare, shard.Share)
		ring.MaxShare = max(ring.MaxShare, shard.Share)
		out[i] = shard
	}
	if total > 0 {
		ring.BusiestOverMean = ring.MaxShare * float64(len(current.Shards))
	} else {
		ring.MinShare = 0
	}
	return out, ring
}

// dashboardEvents lists the events with open sockets, busiest first, each with its
// current poll and the poll's participation.
func (s *Server) dashboardEvents() []dashboardEvent {
	presence := s.hub.AllPresence()
	slices.SortFunc(presence, func(a, b hub.Presence) int {
		return cmp.Or(cmp.Compare(b.Audience, a.Audience), cmp.Compare(a.EventID, b.EventID))
	})
	if len(presence) > dashboardMaxEvents {
		presence = presence[:dashboardMaxEvents]
	}

	out := make([]dashboardEvent, 0, len(presence))
	for _, p := range presence {
		ev, err := s.hub.Registry().EventByID(p.EventID)
		if err != nil {
			continue
		}
		entry := dashboardEvent{Code: ev.Code, Title: ev.Title, Audience: p.Audience, Presenters: p.Presenters}
		if poll, ok := currentPoll(ev); ok {
			entry.Poll = s.dashboardPoll(poll, p.Audience)
		}
		out = append(out, entry)
	}
	return out
}

func (s *Server) dashboardPoll(poll hub.Poll, audience int) *dashboardPoll {
	out := &dashboardPoll{Question: poll.Question, State: string(poll.State)}
	if doc, err := s.hub.Results(poll.ID); err == nil {
		out.Voters = doc.Voters
	}
	if audience > 0 {
		share := float64(out.Voters) / float64(audience)
		out.Participation = &share
	}
	return out
}

// currentPoll returns the newest open poll of the event, or else its newest poll.
func currentPoll(ev hub.Event) (hub.Poll, bool) {
	for i := len(ev.Polls) - 1; i >= 0; i-- {
		if ev.Polls[i].State == hub.PollOpen {
			return ev.Polls[i], true
		}
	}
	if len(ev.Polls) == 0 {
		return hub.Poll{}, false
	}
	return ev.Polls[len(ev.Polls)-1], true
}
