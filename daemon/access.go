package daemon

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"

	"github.com/ib1/provenanced/api/access"
	"github.com/ib1/provenanced/audit"
	"github.com/ib1/provenanced/conf"
)

// buildPolicy builds the access policy of cfg: its clients (checked by conf when it
// loaded cfg, token files read then) and its audit log. The running audit log is
// reopened (at the same path or another), not opened again, so that its chain goes on
// across logrotate's move and a new path, with no seq repeated by requests still running
// on the old generation.
//
// running is the policy being served (nil at start).
func (d *Daemon) buildPolicy(cfg *conf.Config, running *access.Policy, clientCAs *x509.CertPool) (*access.Policy, error) {
	var al *audit.Log
	if running != nil {
		al = running.Audit()
	}
	policy := access.Options{Metrics: d.metrics.access, ClientCAs: clientCAs, Refusals: d.refusals}
	if cfg.Audit.File == "" {
		return access.NewPolicy(cfg.Clients, policy), nil
	}
	opts := d.auditOptions(cfg)
	var err error
	if al != nil {
		err = al.Reopen(cfg.Audit.File, opts)
	} else {
		al, err = audit.Open(cfg.Audit.File, opts)
	}
	var mismatch *audit.HeadMismatchError
	if errors.As(err, &mismatch) {
		return nil, cfg.Errorf("audit.file", "%v. If this break is known (a restored backup, a lost disk), record it in the log and start again: provenanced audit acknowledge -config %s -reason TEXT", err, cfg.File)
	}
	if err != nil {
		return nil, cfg.Errorf("audit.file", "%v", err)
	}
	policy.Audit = al
	return access.NewPolicy(cfg.Clients, policy), nil
}

// auditOptions are the audit log's options from cfg's [audit].
func (d *Daemon) auditOptions(cfg *conf.Config) audit.Options {
	a := &cfg.Audit
	o := audit.Options{Metrics: d.metrics.audit, Log: d.log, SyncEach: a.FSync, HeadFile: a.HeadFilePath(os.Getenv("STATE_DIRECTORY"))}
	if a.SealKey != "" {
		o.Seal = &audit.Seal{Signer: d.sealer(a.SealKey), Key: a.SealKey, Origin: a.OriginName(), Interval: a.SealInterval.D()}
	}
	return o
}

// sealer signs audit checkpoints with the key name of the generation being served when
// the checkpoint is made, counted in it like a request, so that a reload that reopens the
// key never leaves the log a closed one.
func (d *Daemon) sealer(name string) audit.Signer {
	return audit.SignerFunc(func(ctx context.Context, digest []byte) ([]byte, error) {
		if d.cur.Load() == nil {
			return nil, errors.New("the daemon is not serving yet")
		}
		g := d.acquire()
		defer g.done()
		k := g.key(name)
		if k == nil {
			return nil, fmt.Errorf("no key %q is open", name)
		}
		return k.SignContext(ctx, digest, crypto.SHA256)
	})
}

func (d *Daemon) warnOpen(ac *access.Policy) {
	if ac.Open() {
		d.log.Warn("no [clients.NAME] in the config: whoever reaches a listener may sign with every key; add clients to say who may sign what (docs/security.md)")
	}
}

// auditCloser closes a retired generation's audit log, saying where its chain ended.
type auditCloser struct {
	l   *audit.Log
	log *slog.Logger
}

func (c auditCloser) Close() error {
	err := c.l.Close()
	h := c.l.Head()
	c.log.Info("audit log closed", "file", c.l.Path(), "seq", h.Seq, "head", h.Hash)
	return err
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
