package daemon

import (
	"crypto/x509"
	"log/slog"
	"net"
	"slices"

	"github.com/ib1/provenanced/api/access"
	"github.com/ib1/provenanced/audit"
	"github.com/ib1/provenanced/conf"
)

// buildPolicy builds the access policy of cfg: its clients (checked by conf when it
// loaded cfg, token files read then) and its audit log. The running audit log, when cfg
// names the same path, is reopened rather than opened again, so that the chain continues
// across logrotate's move; a new path starts a new log, whose chain continues the running
// one's when its file is empty.
//
// running is the policy being served (nil at start).
func (d *Daemon) buildPolicy(cfg *conf.Config, running *access.Policy, clientCAs *x509.CertPool) (*access.Policy, error) {
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
	return access.NewPolicy(cfg.Clients, access.Options{Audit: al, Metrics: d.metrics.access, ClientCAs: clientCAs, Refusals: d.refusals}), nil
}

func (d *Daemon) warnOpen(ac *access.Policy) {
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

// warnRootClients warns of a client identified by uid 0: root can be any client anyway,
// and a root process is rarely the application a policy means.
func (d *Daemon) warnRootClients(cfg *conf.Config) {
	for _, c := range cfg.Clients {
		if slices.Contains(c.UIDs, 0) {
			d.log.Warn("a client is identified by uid 0 (root): every process running as root is this client; give the application a user of its own", "client", c.Name)
		}
	}
}

// auditProblem is /readyz's reason when the audit log cannot be written.
func (d *Daemon) auditProblem() []string {
	if al := d.cur.Load().audit(); al != nil {
		if p := al.Problem(); p != "" {
			return []string{p}
		}
	}
	return nil
}
