package audit

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the audit log's: lines written or not, whether it can be written now, and
// how far the chain is written and sealed. They outlive any one file: a reload that opens
// another file counts on the same series.
type Metrics struct {
	ok, failed   prometheus.Counter
	up           prometheus.Gauge
	seq, sealed  prometheus.Gauge
	lastSeal     prometheus.Gauge
	sealFailures prometheus.Counter
}

// NewMetrics registers the audit log's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	writes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "provenanced_audit_writes_total",
		Help: "Audit log lines written (ok) or that could not be written (error); an error fails the operation.",
	}, []string{"outcome"})
	m := &Metrics{
		ok: writes.WithLabelValues("ok"), failed: writes.WithLabelValues("error"),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "provenanced_audit_up",
			Help: "1 when the audit log can be written (or none is configured), 0 after a write failed.",
		}),
		seq: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "provenanced_audit_seq",
			Help: "The seq of the last audit line written: the chain's head.",
		}),
		sealed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "provenanced_audit_sealed_seq",
			Help: "The seq of the last audit line a signed checkpoint seals; a copy of the head outside the file, for whoever keeps the metrics.",
		}),
		lastSeal: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "provenanced_audit_last_checkpoint_timestamp_seconds",
			Help: "When the last audit checkpoint was written, as a Unix timestamp (0: none yet).",
		}),
		sealFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "provenanced_audit_seal_failures_total",
			Help: "Audit checkpoints that could not be signed or written; lines stay unsealed until one succeeds.",
		}),
	}
	m.up.Set(1)
	reg.MustRegister(writes, m.up, m.seq, m.sealed, m.lastSeal, m.sealFailures)
	return m
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

func (m *Metrics) wroteUpTo(seq uint64) {
	if m != nil {
		m.seq.Set(float64(seq))
	}
}

func (m *Metrics) sealedUpTo(seq uint64, at time.Time) {
	if m != nil {
		m.sealed.Set(float64(seq))
		m.lastSeal.Set(float64(at.UnixNano()) / 1e9)
	}
}

func (m *Metrics) sealFailed() {
	if m != nil {
		m.sealFailures.Inc()
	}
}

// reopened says the log can be written again: a reopen cleared its problem.
func (m *Metrics) reopened() {
	if m != nil {
		m.up.Set(1)
	}
}
