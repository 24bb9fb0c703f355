package daemon

import (
	"log/slog"
	"net"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ib1/provenanced/api"
	"github.com/ib1/provenanced/audit"
	"github.com/ib1/provenanced/conf"
)

// accessMetrics are the metrics of clients.
type accessMetrics struct {
	RateLimited *prometheus.CounterVec
}

func newAccessMetrics(reg *prometheus.Registry) *accessMetrics {
	m := &accessMetrics{
		RateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "provenanced_rate_limited_total",
			Help: "Requests refused with 429 because the client was over its rate, by client.",
		}, []string{"client"}),
	}
	reg.MustRegister(m.RateLimited)
	return m
}

// BuildAccess builds the access state of cfg: its clients and policies (checked by conf
// when it loaded cfg, token files read then) and its audit log. The audit log of the
// running state, when it has the same path, is reopened rather than opened again, so
// that the chain continues across logrotate's move; a new path starts a new log. It
// changes nothing else in the running daemon: SetAccess swaps the result in. A new path
// whose file is empty continues the running log's chain.
//
// running is the access state being served (nil at start): its audit log is the one
// continued.
func (d *Daemon) BuildAccess(cfg *conf.Config, running *api.Access) (*api.Access, error) {
	var al, cur *audit.Log
	if running != nil {
		cur = running.Audit()
	}
	switch path := cfg.Audit.File; {
	case path == "":
	case cur != nil && cur.Path() == path:
		if err := cur.Reopen(); err != nil {
			return nil, cfg.Errorf("audit.file", "%v", err)
		}
		al = cur
	default:
		l, err := audit.Open(path, audit.Options{Metrics: d.metrics.audit, SyncEach: cfg.Audit.FSync, After: cur})
		if err != nil {
			return nil, cfg.Errorf("audit.file", "%v", err)
		}
		al = l
	}
	rl := map[string]prometheus.Counter{}
	for _, c := range cfg.Clients {
		rl[c.Name] = d.metrics.access.RateLimited.WithLabelValues(c.Name)
	}
	return api.NewAccess(cfg.Clients, al, api.AccessHooks{RateLimited: func(name string) {
		if c := rl[name]; c != nil {
			c.Inc()
		}
	}}), nil
}

// SetAccess swaps in access state from BuildAccess and closes the audit log it replaces,
// if that one is not reused. Requests in flight finish with the state they started with.
// A reload does this as part of the whole generation (buildGeneration); this swaps the
// access state alone, into the generation being served.
func (d *Daemon) SetAccess(ac *api.Access) {
	app := d.cur.Load().app
	old := app.Access()
	app.SetAccess(ac)
	d.warnOpen(ac)
	if old != nil && old.Audit() != nil && old.Audit() != ac.Audit() {
		seq, head := old.Audit().Head()
		d.log.Info("audit log closed", "file", old.Audit().Path(), "seq", seq, "head", head)
		old.Audit().Close()
	}
}

func (d *Daemon) warnOpen(ac *api.Access) {
	if ac.Open() {
		d.log.Warn("no [clients.NAME] in the config: whoever reaches a listener may sign with every key; add clients to say who may sign what (README: Security)")
	}
}

// auditCloser closes a retired generation's audit log, saying where its chain ended.
type auditCloser struct {
	l   *audit.Log
	log *slog.Logger
}

func (c auditCloser) Close() error {
	seq, head := c.l.Head()
	c.log.Info("audit log closed", "file", c.l.Path(), "seq", seq, "head", head)
	return c.l.Close()
}

// warnClearTokens warns when bearer tokens would cross a network in clear: clients with
// tokens and a TCP listener off loopback without TLS.
func (d *Daemon) warnClearTokens(cfg *conf.Config) {
	s := &cfg.Server
	if s.HTTP == "" || s.TLSCert != "" {
		return
	}
	host, _, err := net.SplitHostPort(s.HTTP)
	if ip := net.ParseIP(host); err != nil || host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return
	}
	for _, c := range cfg.Clients {
		if c.TokenDigest != nil {
			d.log.Warn("clients send bearer tokens, and the TCP listener is off loopback without TLS: anyone on the path can read a token; set server.tls_cert and tls_key", "http", s.HTTP, "client", c.Name)
			return
		}
	}
}

// auditProblem is /readyz's reason when the audit log cannot be written.
func (d *Daemon) auditProblem() []string {
	if g := d.cur.Load(); g == nil || g.app == nil {
		return nil
	}
	if ac := d.cur.Load().app.Access(); ac != nil && ac.Audit() != nil {
		if p := ac.Audit().Problem(); p != "" {
			return []string{p}
		}
	}
	return nil
}

// peerOf gives the API the Unix socket peer recorded by connContext.
func peerOf(r *http.Request) (api.Peer, bool) {
	p, _ := r.Context().Value(peerKey{}).(*peer)
	if p == nil || !p.unix {
		return api.Peer{}, false
	}
	return api.Peer{UID: p.uid, GID: p.gid, PID: p.pid}, true
}
