package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/ib1/provenanced/api/wire"
	"github.com/ib1/provenanced/conf"
)

// Reload reads the configuration again (Options.Load) and, if all of it opens and checks
// (keys, certificate bundles, root CA), serves it from the next request on. Requests in
// flight finish with the configuration they started with. On any error the running
// configuration stays, the error is logged and returned, and
// provenanced_config_last_reload_successful is 0 until a reload succeeds.
//
// systemd (Type=notify-reload) is told RELOADING=1 before and READY=1 after, whatever
// the outcome: the daemon is serving either way.
func (d *Daemon) Reload(ctx context.Context) error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	if d.stopping {
		return errors.New("reload: the daemon is shutting down")
	}
	if d.ready.Load() {
		d.notify(fmt.Sprintf("RELOADING=1\nSTATUS=reloading\nMONOTONIC_USEC=%d", monotonicUsec()))
	}
	start := time.Now()
	err := d.reload(ctx)
	if err != nil {
		d.reloadOK.Set(0)
		d.log.Error("reload failed: still serving the previous configuration", "error", err.Error())
	} else {
		d.reloadOK.Set(1)
		d.reloadTime.SetToCurrentTime()
	}
	if d.ready.Load() {
		status := "serving"
		if err != nil {
			status = "serving the previous configuration: the last reload failed (see the log)"
		}
		d.notify("READY=1\nSTATUS=" + status)
	}
	if err == nil {
		d.log.Info("reloaded", "took", time.Since(start).Round(time.Millisecond).String())
	}
	return err
}

func (d *Daemon) reload(ctx context.Context) error {
	if d.opts.Load == nil {
		return errors.New("this daemon was started without a way to read its configuration again")
	}
	cfg, err := d.opts.Load()
	if err != nil {
		return err
	}
	d.warnRestartNeeded(cfg)
	old := d.cur.Load()
	g, err := d.buildGeneration(ctx, cfg, old)
	if err != nil {
		return err
	}
	// Readiness of the keys about to be served, so that /readyz and backend_up are about
	// them from the first request on; bounded like a background check.
	pctx, cancel := context.WithTimeout(ctx, healthInterval)
	errs := probe(pctx, g.keys)
	cancel()
	d.cur.Store(g)
	d.refusals.SetLimits(cfg.Server.RefusalRate, cfg.Server.RefusalBurst)
	d.health.store(g, errs)
	closed := old.notSharedBy(g)
	if al := old.auditNotSharedBy(g); al != nil {
		old.closers = append(old.closers, auditCloser{al, d.log})
	}
	old.retire(closed)
	d.warnOpen(g.policy)
	d.warnClearTokens(cfg)
	d.warnRootClients(cfg)
	if d.opts.LogLevel != nil {
		var lv slog.Level
		lv.UnmarshalText([]byte(cfg.Server.LogLevel)) // conf has checked it
		d.opts.LogLevel.Set(lv)
	}
	d.logChanges(old, g, len(closed))
	return nil
}

// logChanges says what the reload changed about the keys: which were added, removed or
// reopened, and which certificates were replaced.
func (d *Daemon) logChanges(old, g *generation, closed int) {
	var added, removed, reopened, kept []string
	for _, k := range g.keys {
		ok := old.key(k.Name())
		switch {
		case ok == nil:
			added = append(added, k.Name())
		case ok.SharesBackend(k):
			kept = append(kept, k.Name())
		default:
			reopened = append(reopened, k.Name())
		}
		if ok != nil && ok.Leaf() != nil && k.Leaf() != nil && !ok.Leaf().Equal(k.Leaf()) {
			d.log.Info("certificate replaced", "key", k.Name(), "old_serial", ok.Leaf().SerialNumber.String(), "serial", k.Leaf().SerialNumber.String(),
				"not_after", k.Leaf().NotAfter.UTC().Format(time.RFC3339))
		}
	}
	for _, k := range old.keys {
		if g.key(k.Name()) == nil {
			removed = append(removed, k.Name())
		}
	}
	d.log.Info("configuration reloaded", "config", g.cfg.File, "keys", g.cfg.KeyNames(), "kept_open", kept, "reopened", reopened, "added", added, "removed", removed,
		"backends_to_close_after_requests_in_flight", closed)
}

// warnRestartNeeded logs each listener setting that differs from the running one: the
// listeners stay as they are until a restart.
func (d *Daemon) warnRestartNeeded(cfg *conf.Config) {
	was, now := &d.cfg.Server, &cfg.Server
	for _, f := range []struct {
		key, was, now string
	}{
		{"server.socket", was.Socket, now.Socket},
		{"server.socket_mode", fmt.Sprintf("%04o", uint32(was.SocketMode)), fmt.Sprintf("%04o", uint32(now.SocketMode))},
		{"server.http", was.HTTP, now.HTTP},
		{"server.metrics_http", was.MetricsHTTP, now.MetricsHTTP},
		{"server.pprof", fmt.Sprint(was.Pprof), fmt.Sprint(now.Pprof)},
		{"server.allowed_hosts", strings.Join(was.AllowedHosts, ","), strings.Join(now.AllowedHosts, ",")},
		{"server.max_connections", fmt.Sprint(was.MaxConnections), fmt.Sprint(now.MaxConnections)},
		{"server.max_connections_per_peer", fmt.Sprint(was.MaxConnectionsPerPeer), fmt.Sprint(now.MaxConnectionsPerPeer)},
		{"server.metrics_max_connections", fmt.Sprint(was.MetricsMaxConnections), fmt.Sprint(now.MetricsMaxConnections)},
		{"server.idle_timeout", was.IdleTimeout.D().String(), now.IdleTimeout.D().String()},
		// A new certificate, key or client CA applies from the reload; TLS on or off does not.
		{"server.tls_cert (TLS on or off)", fmt.Sprint(was.TLSCert != ""), fmt.Sprint(now.TLSCert != "")},
	} {
		if f.was != f.now {
			d.log.Warn("a listener setting changed: it takes effect only at a restart; the running listener is kept", "key", f.key, "running", f.was, "configured", f.now)
		}
	}
}

// metricsOnly serves /metrics, /healthz and /readyz and nothing else: the metrics
// listener (server.metrics_http) that a scraper or a kubelet probe reaches, where no
// route signs.
func metricsOnly(next http.Handler) http.Handler {
	mux := http.NewServeMux()
	for _, p := range []string{"GET /metrics", "GET /healthz", "GET /readyz"} {
		mux.Handle(p, next)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		wire.Error(w, http.StatusNotFound, "not_found", "this listener serves only GET /metrics, /healthz and /readyz", "")
	})
	return mux
}
