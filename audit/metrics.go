package audit

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the audit log's: lines written or not, and whether it can be written now.
// They outlive any one Log: a reload that opens a new file counts on the same series.
type Metrics struct {
	ok, failed prometheus.Counter
	up         prometheus.Gauge
}

// NewMetrics registers provenanced_audit_writes_total and provenanced_audit_up on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	writes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "provenanced_audit_writes_total",
		Help: "Audit log lines written (ok) or that could not be written (error); an error fails the operation.",
	}, []string{"outcome"})
	up := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "provenanced_audit_up",
		Help: "1 when the audit log can be written (or none is configured), 0 after a write failed.",
	})
	up.Set(1)
	reg.MustRegister(writes, up)
	return &Metrics{ok: writes.WithLabelValues("ok"), failed: writes.WithLabelValues("error"), up: up}
}

func (m *Metrics) wrote(err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.failed.Inc()
		m.up.Set(0)
		return
	}
	m.ok.Inc()
	m.up.Set(1)
}

// reopened says the log can be written again: a reopen cleared its problem.
func (m *Metrics) reopened() {
	if m != nil {
		m.up.Set(1)
	}
}
