package hub

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Metrics holds the Prometheus instruments of the hub and its sockets. A nil *Metrics
// records nothing.
type Metrics struct {
	votes          *prometheus.CounterVec
	ackSeconds     prometheus.Histogram
	sockets        prometheus.Gauge
	broadcasts     prometheus.Counter
	deliveries     prometheus.Counter
	slowConsumers  prometheus.Counter
	sessionsIssued prometheus.Counter
}

// NewMetrics creates the hub's instruments and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		votes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livevote_votes_total",
			Help: "Votes answered, by outcome: accepted, duplicate or the error code.",
		}, []string{"outcome"}),
		ackSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "livevote_ack_seconds",
			Help:    "Time from a vote reaching the hub to its answer, in seconds.",
			Buckets: []float64{.0005, .001, .002, .004, .008, .015, .03, .06, .125, .25, .5, 1, 2, 5, 10},
		}),
		sockets: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "livevote_sockets",
			Help: "Open WebSocket connections.",
		}),
		broadcasts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livevote_broadcasts_total",
			Help: "Frames fanned out to an event's subscribers.",
		}),
		deliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livevote_broadcast_deliveries_total",
			Help: "Broadcast frames queued to individual sockets.",
		}),
		slowConsumers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livevote_slow_consumers_total",
			Help: "Sockets closed with 1013 because their send queue was full.",
		}),
		sessionsIssued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livevote_sessions_issued_total",
			Help: "Voter sessions created.",
		}),
	}
	reg.MustRegister(m.votes, m.ackSeconds, m.sockets, m.broadcasts, m.deliveries, m.slowConsumers, m.sessionsIssued)
	return m
}

func (m *Metrics) observeVote(result VoteResult, err error, took time.Duration) {
	if m == nil {
		return
	}
	outcome := result.Status
	var e *Error
	if errors.As(err, &e) {
		outcome = string(e.Code)
	} else if err != nil {
		outcome = "error"
	}
	m.votes.WithLabelValues(outcome).Inc()
	m.ackSeconds.Observe(took.Seconds())
}

func (m *Metrics) observeBroadcast(subscribers, dropped int) {
	if m == nil {
		return
	}
	m.broadcasts.Inc()
	m.deliveries.Add(float64(subscribers - dropped))
}

// SocketOpened counts a new WebSocket connection.
func (m *Metrics) SocketOpened() {
	if m != nil {
		m.sockets.Inc()
	}
}

// SocketClosed counts a closed WebSocket connection.
func (m *Metrics) SocketClosed() {
	if m != nil {
		m.sockets.Dec()
	}
}

// SlowConsumer counts a socket dropped because it could not keep up.
func (m *Metrics) SlowConsumer() {
	if m != nil {
		m.slowConsumers.Inc()
	}
}

// SessionIssued counts a new voter session.
func (m *Metrics) SessionIssued() {
	if m != nil {
		m.sessionsIssued.Inc()
	}
}

// MetricsSnapshot is a point-in-time copy of the hub's cumulative counters, from
// which the operator dashboard computes rates and latency percentiles over a window.
type MetricsSnapshot struct {
	// Answered counts votes answered with any outcome; Accepted counts those
	// answered accepted.
	Answered uint64
	Accepted uint64
	// Sockets is the number of open WebSocket connections.
	Sockets int
	// AckBuckets holds the upper bounds of the ack-latency histogram in seconds, and
	// AckCounts the cumulative count of answers at or below each bound, as in
	// /metrics (livevote_ack_seconds). AckTotal counts every answer, +Inf included.
	AckBuckets []float64
	AckCounts  []uint64
	AckTotal   uint64
}

// Snapshot returns the current counters. A nil *Metrics returns a zero snapshot.
func (m *Metrics) Snapshot() MetricsSnapshot {
	var snap MetricsSnapshot
	if m == nil {
		return snap
	}

	votes := make(chan prometheus.Metric, 32)
	go func() {
		m.votes.Collect(votes)
		close(votes)
	}()
	for metric := range votes {
		var out dto.Metric
		if metric.Write(&out) != nil || out.Counter == nil {
			continue
		}
		n := uint64(out.Counter.GetValue())
		snap.Answered += n
		for _, label := range out.Label {
			if label.GetName() == "outcome" && label.GetValue() == "accepted" {
				snap.Accepted += n
			}
		}
	}

	var hist dto.Metric
	if err := m.ackSeconds.(prometheus.Metric).Write(&hist); err == nil && hist.Histogram != nil {
		snap.AckTotal = hist.Histogram.GetSampleCount()
		for _, b := range hist.Histogram.Bucket {
			snap.AckBuckets = append(snap.AckBuckets, b.GetUpperBound())
			snap.AckCounts = append(snap.AckCounts, b.GetCumulativeCount())
		}
	}

	var sockets dto.Metric
	if err := m.sockets.Write(&sockets); err == nil && sockets.Gauge != nil {
		snap.Sockets = int(sockets.Gauge.GetValue())
	}
	return snap
}
