package actors

import (
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ShardStats is a point-in-time view of one shard, read without stopping it.
type ShardStats struct {
	Shard          int     `json:"shard"`
	Ready          bool    `json:"ready"`
	VotesApplied   uint64  `json:"votes_applied"`   // votes that changed the counts, replayed ones included
	QueueDepth     int     `json:"queue_depth"`     // votes waiting for the next append
	InFlight       int     `json:"in_flight"`       // votes in the append under way
	LastBatchSize  int     `json:"last_batch_size"` // votes in the latest append
	Batches        uint64  `json:"batches"`         // appends started
	AvgBatch       float64 `json:"avg_batch"`       // votes per append started
	AppendFailures uint64  `json:"append_failures"` // appends that returned an error
}

// Stats is a point-in-time view of every shard and their sums.
type Stats struct {
	// Shards holds every shard in single-node mode and, in cluster mode,
	// the shards active in this process.
	Shards []ShardStats `json:"shards"`
	// ClusterMembers is the number of hub processes in the cluster, or 0 in
	// single-node mode; TotalShards is the shard count of the whole system.
	ClusterMembers int     `json:"cluster_members,omitempty"`
	TotalShards    int     `json:"total_shards"`
	VotesApplied   uint64  `json:"votes_applied"`
	QueueDepth     int     `json:"queue_depth"`
	InFlight       int     `json:"in_flight"`
	Batches        uint64  `json:"batches"`
	AvgBatch       float64 `json:"avg_batch"`
	AppendFailures uint64  `json:"append_failures"`
	Rounds         uint64  `json:"rounds"`           // aggregator rounds completed
	SlowShardSkips uint64  `json:"slow_shard_skips"` // shard replies that missed a round's timeout
}

// shardStats holds one shard's counters. The shard actor writes them and
// Stats reads them, so every field is atomic.
type shardStats struct {
	ready          atomic.Bool
	applied        atomic.Uint64
	queueDepth     atomic.Int64
	inFlight       atomic.Int64
	lastBatch      atomic.Int64
	batches        atomic.Uint64
	batchedVotes   atomic.Uint64
	appendFailures atomic.Uint64
}

func (s *shardStats) snapshot(shard int) ShardStats {
	out := ShardStats{
		Shard:          shard,
		Ready:          s.ready.Load(),
		VotesApplied:   s.applied.Load(),
		QueueDepth:     int(s.queueDepth.Load()),
		InFlight:       int(s.inFlight.Load()),
		LastBatchSize:  int(s.lastBatch.Load()),
		Batches:        s.batches.Load(),
		AppendFailures: s.appendFailures.Load(),
	}
	if out.Batches > 0 {
		out.AvgBatch = float64(s.batchedVotes.Load()) / float64(out.Batches)
	}

	return out
}

// metrics is the Prometheus instrumentation of the package. Every shard
// label value is a shard number, so label cardinality equals the shard count.
// A nil *metrics records nothing.
type metrics struct {
	batchSize      *prometheus.HistogramVec
	queueDepth     *prometheus.GaugeVec
	appendSeconds  prometheus.Histogram
	votesApplied   *prometheus.CounterVec
	appendFailures prometheus.Counter
}

// newMetrics registers the collectors with reg, or returns nil when reg is
// nil. Registering twice with one registry fails with the registry's error,
// and then none of the collectors stays registered.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}

	m := &metrics{
		batchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "livevote_shard_batch_size",
			Help:    "Votes per append to the vote stream, by shard.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 13),
		}, []string{"shard"}),
		queueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "livevote_shard_queue_depth",
			Help: "Votes waiting for the next append, by shard.",
		}, []string{"shard"}),
		appendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "livevote_append_seconds",
			Help:    "Duration of one append to the vote stream, until durable.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		votesApplied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livevote_shard_votes_applied_total",
			Help: "Votes applied to the counts, replayed ones included, by shard.",
		}, []string{"shard"}),
		appendFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livevote_append_failures_total",
			Help: "Appends to the vote stream that failed; their votes were answered overloaded.",
		}),
	}

	collectors := []prometheus.Collector{m.batchSize, m.queueDepth, m.appendSeconds, m.votesApplied, m.appendFailures}
	for i, c := range collectors {
		err := reg.Register(c)
		if err != nil {
			for _, registered := range collectors[:i] {
				reg.Unregister(registered)
			}
			return nil, fmt.Errorf("%w: register metrics: %w", ErrInvalidConfig, err)
		}
	}

	return m, nil
}

// shardMetrics is the instrumentation of one shard with its label bound once.
// A zero shardMetrics records nothing.
type shardMetrics struct {
	batchSize      prometheus.Observer
	queueDepth     prometheus.Gauge
	appendSeconds  prometheus.Observer
	votesApplied   prometheus.Counter
	appendFailures prometheus.Counter
}

func (m *metrics) forShard(shard int) shardMetrics {
	if m == nil {
		return shardMetrics{}
	}

	label := strconv.Itoa(shard)

	return shardMetrics{
		batchSize:      m.batchSize.WithLabelValues(label),
		queueDepth:     m.queueDepth.WithLabelValues(label),
		appendSeconds:  m.appendSeconds,
		votesApplied:   m.votesApplied.WithLabelValues(label),
		appendFailures: m.appendFailures,
	}
}

func (m shardMetrics) observeBatch(votes int) {
	if m.batchSize != nil {
		m.batchSize.Observe(float64(votes))
	}
}

func (m shardMetrics) setQueueDepth(votes int) {
	if m.queueDepth != nil {
		m.queueDepth.Set(float64(votes))
	}
}

func (m shardMetrics) observeAppend(elapsed time.Duration, err error) {
	if m.appendSeconds != nil {
		m.appendSeconds.Observe(elapsed.Seconds())
	}
	if err != nil && m.appendFailures != nil {
		m.appendFailures.Inc()
	}
}

func (m shardMetrics) addApplied(votes int) {
	if m.votesApplied != nil && votes > 0 {
		m.votesApplied.Add(float64(votes))
	}
}
