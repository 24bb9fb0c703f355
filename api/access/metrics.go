package access

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are access control's: requests refused for a client's rate, and refusals
// past the refusal budget. They outlive any one Policy, so that a reload counts on the
// same series.
type Metrics struct {
	limited *prometheus.CounterVec
	quiet   prometheus.Counter
	mu      sync.Mutex
	byName  map[string]prometheus.Counter
}

// NewMetrics registers provenanced_rate_limited_total and
// provenanced_refusals_unlogged_total on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "provenanced_rate_limited_total",
			Help: "Requests refused with 429 because the client was over its rate (in signatures), by client.",
		}, []string{"client"}),
		quiet: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "provenanced_refusals_unlogged_total",
			Help: "Refused requests past refusal_rate: answered without an audit or request-log line of their own (a summary line per peer every 10 s counts them).",
		}),
		byName: map[string]prometheus.Counter{},
	}
	reg.MustRegister(m.limited, m.quiet)
	return m
}

func (m *Metrics) unlogged() {
	if m != nil {
		m.quiet.Inc()
	}
}

// rateLimited counts a 429 for a configured client (whose names bound the label's values).
func (m *Metrics) rateLimited(client string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	c := m.byName[client]
	if c == nil {
		c = m.limited.WithLabelValues(client)
		m.byName[client] = c
	}
	m.mu.Unlock()
	c.Inc()
}
