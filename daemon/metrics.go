package daemon

import (
	"context"
	"errors"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ib1/provenanced/api"
	"github.com/ib1/provenanced/api/access"
	"github.com/ib1/provenanced/audit"
	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/backends/awskms"
)

// Metrics are the daemon's Prometheus metrics (the contract's names), on a registry of
// its own so that tests and embedders can run several daemons in one process.
type Metrics struct {
	Registry     *prometheus.Registry
	SignDuration *prometheus.HistogramVec
	Requests     *prometheus.CounterVec
	RequestTime  *prometheus.HistogramVec
	api          *api.Metrics
	BackendUp    *prometheus.GaugeVec
	CertExpiry   *prometheus.GaugeVec
	access       *access.Metrics
	audit        *audit.Metrics
	SessionWait  *prometheus.HistogramVec

	refusedMu sync.Mutex
	refused   map[string]*atomic.Int64 // by key: signatures refused (unavailable, timed out) since the health log said so
}

// SignBuckets span a key in memory (tens of µs) to a KMS call on a bad day (seconds).
var SignBuckets = []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5, 10}

// NewMetrics registers the daemon's metrics, the Go and process collectors and
// provenanced_build_info.
func NewMetrics(version string) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		SignDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "provenanced_sign_duration_seconds",
			Help:    "Time a backend took to sign, by key, backend and outcome (ok, timeout, unavailable, invalid: the signature did not verify, error).",
			Buckets: SignBuckets,
		}, []string{"key", "backend", "outcome"}),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "provenanced_http_requests_total",
			Help: "HTTP requests by route pattern, status code and client (a configured client's name, \"\" when none was recognised).",
		}, []string{"route", "code", "client"}),
		RequestTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "provenanced_http_request_duration_seconds",
			Help:    "HTTP request duration by route pattern.",
			Buckets: SignBuckets,
		}, []string{"route"}),
		BackendUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "provenanced_backend_up",
			Help: "1 when the key's backend can sign, 0 when it cannot.",
		}, []string{"key", "backend"}),
		CertExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "provenanced_certificate_expiry_timestamp_seconds",
			Help: "The notAfter of each key's certificate, as a Unix timestamp.",
		}, []string{"key"}),
	}
	m.SessionWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "provenanced_pkcs11_session_wait_seconds",
		Help:    "Time a PKCS#11 key's signature waited for one of its sessions (max_sessions less the one that holds the login), by key.",
		Buckets: SignBuckets,
	}, []string{"key"})
	reg.MustRegister(m.SessionWait)
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "provenanced_build_info",
		Help:        "Always 1; the labels say which build is running.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version(), "revision": BuildRevision()},
	})
	m.access = access.NewMetrics(reg)
	m.audit = audit.NewMetrics(reg)
	m.api = api.NewMetrics(reg)
	build.Set(1)
	reg.MustRegister(m.SignDuration, m.Requests, m.RequestTime, m.BackendUp, m.CertExpiry, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(awskms.Collectors()...)
	return m
}

// signObserver returns the Observer that times key's signatures. The label lookups are
// done here, once, not on every signature; an error that says the backend is unavailable
// takes the key's backend_up down at once (the health check brings it back).
func (m *Metrics) signObserver(name, backend string) backends.Observer {
	by := make(map[string]prometheus.Observer, len(backends.SignOutcomes))
	for _, o := range backends.SignOutcomes {
		by[o] = m.SignDuration.WithLabelValues(name, backend, o)
	}
	ok := by["ok"]
	up := m.BackendUp.WithLabelValues(name, backend)
	refused := m.refusedCounter(name)
	return func(took time.Duration, err error) {
		if err == nil {
			ok.Observe(took.Seconds())
			return
		}
		o := backends.Outcome(err)
		h, known := by[o]
		if !known { // an Outcome() outside the agreed set is counted as an error
			h = by["error"]
		}
		h.Observe(took.Seconds())
		if errors.Is(err, backends.ErrUnavailable) && !errors.Is(err, backends.ErrTransient) {
			up.Set(0)
		}
		if errors.Is(err, backends.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
			refused.Add(1)
		}
	}
}

// refusedCounter is the count of key name's refused signatures, which the health check
// logs in an outage instead of a line per request.
func (m *Metrics) refusedCounter(name string) *atomic.Int64 {
	m.refusedMu.Lock()
	defer m.refusedMu.Unlock()
	if m.refused == nil {
		m.refused = map[string]*atomic.Int64{}
	}
	c, ok := m.refused[name]
	if !ok {
		c = new(atomic.Int64)
		m.refused[name] = c
	}
	return c
}

// sessionWait returns what times the session waits of key name.
func (m *Metrics) sessionWait(name string) func(time.Duration) {
	h := m.SessionWait.WithLabelValues(name)
	return func(d time.Duration) { h.Observe(d.Seconds()) }
}

// Revision is the source revision when the build stamps it (-ldflags "-X
// github.com/ib1/provenanced/daemon.Revision=..."): a build without the repository's .git,
// as in the container image, has no VCS information of its own.
var Revision = ""

// BuildRevision is the revision provenanced_build_info and `version` report: Revision,
// else the VCS revision Go recorded at build time (with "-dirty" for uncommitted
// changes), else "unknown".
func BuildRevision() string {
	if Revision != "" {
		return Revision
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	return vcsRevision(bi.Settings)
}

func vcsRevision(settings []debug.BuildSetting) string {
	rev, dirty := "", false
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "unknown"
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}
