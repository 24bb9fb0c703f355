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
		Help: "Provenance records signed or verified, by operation and outcome: sign (ok, timeout, unavailable, denied, invalid: the signature did not verify, error), verify (ok, invalid).",
	}, []string{"operation", "outcome"})}
	for _, outcome := range backends.Outcomes {
		m.records.WithLabelValues("sign", outcome)
	}
	for _, outcome := range VerifyOutcomes {
		m.records.WithLabelValues("verify", outcome)
	}
	m.recordsDenied = m.records.WithLabelValues("sign", "denied")
	reg.MustRegister(m.records)
	return m
}

// VerifyOutcomes are those of a record verified: it verifies, or it does not.
var VerifyOutcomes = []string{"ok", "invalid"}

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
