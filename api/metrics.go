package api

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ib1/provenanced/backends"
)

// Metrics are the API's own: provenanced_records_total. They outlive any one API, so
// that a reload counts on the same series.
type Metrics struct {
	records       *prometheus.CounterVec
	recordsDenied prometheus.Counter
}

// NewMetrics registers the API's metrics on reg, every agreed outcome exported from the
// start so that rate() has a series to work on.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{records: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "provenanced_records_total",
		Help: "Provenance records signed or verified, by operation (sign, verify) and outcome (ok, timeout, unavailable, denied, invalid, error).",
	}, []string{"operation", "outcome"})}
	for _, op := range []string{"sign", "verify"} {
		for _, outcome := range backends.Outcomes {
			m.records.WithLabelValues(op, outcome)
		}
	}
	m.recordsDenied = m.records.WithLabelValues("sign", "denied")
	reg.MustRegister(m.records)
	return m
}

// verified counts a verification of a received record: ok, or invalid (the input's
// fault).
func (m *Metrics) verified(ok bool) {
	outcome := "ok"
	if !ok {
		outcome = "invalid"
	}
	m.records.WithLabelValues("verify", outcome).Inc()
}

// signed counts a record signed, or not signed for the reason err gives.
func (m *Metrics) signed(err error) {
	m.records.WithLabelValues("sign", backends.Outcome(err)).Inc()
}
