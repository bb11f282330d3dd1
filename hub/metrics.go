package hub

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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
