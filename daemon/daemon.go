// Package daemon runs provenanced: it opens the configured keys, builds the API, listens
// on the Unix socket and TCP, and shuts down cleanly on a signal.
package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ib1/provenanced/api/access"
	"github.com/ib1/provenanced/api/wire"
	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/conf"
)

// Options are what a daemon needs besides its config.
type Options struct {
	Logger  *slog.Logger
	Version string
	// Listening, when set, is called once every listener is ready, with the addresses.
	Listening func(socket, http string)
	// Load reads the configuration again for Reload (SIGHUP): the file, or the original
	// service's environment and .env. Without it Reload fails.
	Load func() (*conf.Config, error)
	// LogLevel, when set, is the Logger's level; a reload sets it from server.log_level.
	LogLevel *slog.LevelVar
}

// Daemon is a configured daemon whose keys are open.
type Daemon struct {
	cfg     *conf.Config // as at New: the listeners, which only a restart changes
	log     *slog.Logger
	metrics *Metrics
	health  *health
	api     http.Handler // the daemon's routes and the current generation's API
	handler http.Handler // the same with its metrics and request log
	opts    Options
	// refusals is the budget of refused requests, kept across reloads; conns counts the
	// connection limits' work.
	refusals *access.Refusals
	conns    *connMetrics

	cur      atomic.Pointer[generation]
	reloadMu sync.Mutex
	stopping bool // under reloadMu: Serve is shutting down, no reload may start
	// reloadOK and reloadTime are provenanced_config_last_reload_successful and
	// provenanced_config_last_reload_success_timestamp_seconds.
	reloadOK, reloadTime prometheus.Gauge
	// ready is set once READY=1 has been sent: a reload then ends with READY=1 again,
	// while one during startup must not claim readiness early.
	ready atomic.Bool
	// listening is set once Serve has its listeners: READY=1 waits for it.
	listening atomic.Bool
}

// New opens cfg's keys and builds the API. Nothing listens yet; every configuration
// error surfaces here.
func New(ctx context.Context, cfg *conf.Config, opts Options) (*Daemon, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.Logger = slog.New(redactingHandler{opts.Logger.Handler()})
	d := &Daemon{cfg: cfg, log: opts.Logger, metrics: NewMetrics(opts.Version), opts: opts}
	d.refusals = access.NewRefusals(cfg.Server.RefusalRate, cfg.Server.RefusalBurst, d.metrics.access)
	d.conns = newConnMetrics(d.metrics.Registry)
	d.health = newHealth(d.metrics, d.log, d.cur.Load)
	d.health.onReady = d.readyNow
	d.reloadOK = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "provenanced_config_last_reload_successful",
		Help: "1 when the last reload (SIGHUP) succeeded, or none was asked for; 0 when it failed and the previous configuration is still served.",
	})
	d.reloadTime = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "provenanced_config_last_reload_success_timestamp_seconds",
		Help: "When the configuration being served was loaded (at start or by the last successful reload), as a Unix timestamp.",
	})
	d.metrics.Registry.MustRegister(d.reloadOK, d.reloadTime)
	g, err := d.buildGeneration(ctx, cfg, nil)
	if err != nil {
		return nil, err
	}
	d.cur.Store(g)
	d.warnOpen(g.policy)
	d.warnClearTokens(cfg)
	d.warnRootClients(cfg)
	d.health.check(ctx) // backend_up, expiry warnings and /readyz are right from the start
	d.reloadOK.Set(1)
	d.reloadTime.SetToCurrentTime()
	d.api = d.routes()
	d.handler = newObserved(d.api, opts.Logger, d.metrics, d.refusals)
	return d, nil
}

// CheckReport is what Check found: each key, and what is only busy now (Notes).
type CheckReport struct {
	Keys  []CheckedKey
	Notes []string
}

// CheckedKey is a key that opened, made a test signature that verified with its public
// key, and whose certificate, if it has one, is valid now.
type CheckedKey struct {
	Name, Backend string
	Certificate   *x509.Certificate // nil for a key without one
}

// Check runs what serve checks before it listens, and no more: the listeners' paths and
// addresses (CheckListeners), then everything New opens, every key's readiness and
// certificate as /readyz sees them, and a test signature of every key, verified, so that
// "can sign" is a signature made rather than a backend that answered; then it closes it
// all. It is `provenanced serve -check`: nothing is served.
func Check(ctx context.Context, cfg *conf.Config, opts Options) (*CheckReport, error) {
	notes, err := CheckListeners(cfg)
	if err != nil {
		return nil, err
	}
	d, err := New(ctx, cfg, opts)
	if err != nil {
		return nil, err
	}
	defer d.close()
	d.health.check(ctx)
	if r := d.health.reasons(ctx); len(r) > 0 {
		return nil, errors.New(strings.Join(r, "; "))
	}
	report := &CheckReport{Notes: notes}
	for _, k := range d.cur.Load().keys {
		if err := k.CheckSigns(ctx); err != nil {
			return nil, fmt.Errorf("key %q: a test signature failed: %w", k.Name(), err)
		}
		report.Keys = append(report.Keys, CheckedKey{Name: k.Name(), Backend: k.Backend(), Certificate: k.Leaf()})
	}
	return report, nil
}

// close closes the backends of the generation being served.
func (d *Daemon) close() {
	if g := d.cur.Load(); g != nil {
		// The audit log first: its last checkpoint signs with a key that is still open.
		if al := g.audit(); al != nil {
			auditCloser{al, d.log}.Close()
		}
		backends.CloseAll(g.keys)
		g.closeOwn()
	}
}

// Close closes the keys of a daemon that was built (New) but will not Serve, which
// closes them itself.
func (d *Daemon) Close() { d.close() }

// readyNow sends READY=1, once, when the daemon listens and a check found it ready.
func (d *Daemon) readyNow() {
	if d.listening.Load() && d.ready.CompareAndSwap(false, true) {
		d.notify("READY=1\nSTATUS=serving")
	}
}

// Metrics exposes the daemon's metrics, for tests and benchmarks.
func (d *Daemon) Metrics() *Metrics { return d.metrics }

// Handler is the daemon's HTTP handler with its metrics and request log.
func (d *Daemon) Handler() http.Handler { return d.handler }

// notify tells systemd about the daemon's state (sd_notify); a failure is logged, never
// fatal: the daemon serves all the same.
func (d *Daemon) notify(state string) {
	if err := sdNotify(state); err != nil {
		d.log.Warn("cannot notify the service manager", "state", strings.ReplaceAll(state, "\n", " "), "error", err.Error())
	}
}

// Serve listens and serves until ctx is done, then stops accepting, lets requests in
// flight finish (up to shutdown_timeout), closes the keys and removes the socket.
// Listeners passed by systemd (socket activation) take the place of those the config
// names; the daemon then neither creates nor removes the socket file.
func (d *Daemon) Serve(ctx context.Context) error {
	defer d.close()
	in, err := systemdListeners()
	if err != nil {
		return err
	}
	ls, err := d.listen(in)
	if err != nil {
		in.close()
		return err
	}
	d.listening.Store(true)
	if len(d.health.reasons(ctx)) == 0 { // as New's check found; otherwise the first background check that finds it ready
		d.readyNow()
	} else {
		// Visible to every local user (systemctl status): the reasons stay in /readyz and the log.
		d.notify("STATUS=listening, but not ready: GET /readyz says why")
	}
	d.health.start(ctx)
	stopFlush := d.flushRefusals()
	defer stopFlush()
	errc := make(chan error, len(ls.all))
	for _, s := range ls.all {
		go func() { errc <- s.srv.Serve(s.l) }()
	}
	d.log.Info("serving", "socket", ls.socket, "http", ls.http, "tls", ls.tls, "metrics_http", ls.metrics, "systemd_sockets", in != (inherited{}), "keys", d.cfg.KeyNames(), "version", d.opts.Version)
	if d.opts.Listening != nil {
		d.opts.Listening(ls.socket, ls.http)
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	d.shutdown(ls)
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	d.log.Info("stopped")
	return nil
}

// shutdown stops accepting and lets requests in flight finish, up to shutdown_timeout;
// no reload starts any more.
func (d *Daemon) shutdown(ls *listeners) {
	d.notify("STOPPING=1")
	timeout := d.cur.Load().cfg.Server.ShutdownTimeout.D()
	d.log.Info("shutting down", "timeout", timeout.String())
	d.reloadMu.Lock() // a reload running now finishes first; none starts after
	d.stopping = true
	d.reloadMu.Unlock()
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range ls.all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.srv.Shutdown(sctx); err != nil {
				d.log.Warn("requests still running at shutdown_timeout were cut off", "error", err.Error())
				s.srv.Close()
			}
		}()
	}
	wg.Wait()
	d.health.stop()
	ls.close() // Shutdown closed them; this removes nothing twice but makes sure of the socket file
}

// refusalInterval is how often the refusals past the budget are summed up in a line per
// peer.
const refusalInterval = 10 * time.Second

// flushRefusals writes, every refusalInterval until stopped (and once more then), the
// lines that count refusals past the budget, into the audit log being served.
func (d *Daemon) flushRefusals() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(refusalInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				d.flushRefusalsOnce()
				return
			case <-t.C:
				d.flushRefusalsOnce()
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func (d *Daemon) flushRefusalsOnce() {
	g := d.acquire() // its audit log stays open while the lines are written
	defer g.done()
	d.refusals.Flush(g.audit(), d.log)
}

// server is the one net/http configuration of every listener; lim bounds its
// connections (nil: unbounded).
func (d *Daemon) server(h http.Handler, lim *connLimit) *http.Server {
	sign := d.cfg.Server.SignTimeout.D()
	srv := &http.Server{
		Handler: h,
		// A connection that sends no complete head within this is closed, the first
		// request's as much as a later one's.
		ReadHeaderTimeout: 5 * time.Second,
		// The whole request, body included: max_request_bytes at a slow client's pace.
		ReadTimeout: 10 * time.Second,
		// From the end of each request's head (net/http sets it afresh per request, so an
		// idle connection never carries a stale one): the body, the backend's sign_timeout
		// and the answer. A client that never reads its answers frees its goroutine then,
		// and a shutdown does not wait for it.
		WriteTimeout: sign + 15*time.Second,
		// Short: an idle connection holds a slot of the connection limits, and a client
		// reconnects in a round trip.
		IdleTimeout:    d.cfg.Server.IdleTimeout.D(),
		MaxHeaderBytes: 64 << 10,
		ConnContext:    d.connContext(lim),
		ErrorLog:       serverErrorLog(d.log),
	}
	if lim != nil {
		srv.ConnState = lim.state
	}
	return srv
}

// tlsConfig is the TCP listener's TLS configuration: the current generation's, so that
// a reload brings a renewed server certificate or client CA to the next handshake.
func (d *Daemon) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return d.cur.Load().tls, nil
		},
	}
}

// withPprof adds /debug/pprof/ in front of h; the daemon does this for the Unix socket
// only, whose file mode limits who may profile it. With clients configured, only one
// allowed the operation debug may (a profile shows what the daemon holds and does), and
// each request has its audit line, under the configuration being served.
func (d *Daemon) withPprof(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	debug := func(f http.HandlerFunc) http.HandlerFunc {
		rt := access.Route{Op: conf.OpDebug, Refuse: wire.Error}
		return func(w http.ResponseWriter, r *http.Request) {
			g := d.acquire()
			defer g.done()
			(&access.Guard{Policy: g.policy, Log: d.log}).Wrap(rt, f)(w, r)
		}
	}
	mux.HandleFunc("/debug/pprof/", debug(pprof.Index))
	mux.HandleFunc("/debug/pprof/cmdline", debug(pprof.Cmdline))
	mux.HandleFunc("/debug/pprof/profile", debug(pprof.Profile))
	mux.HandleFunc("/debug/pprof/symbol", debug(pprof.Symbol))
	mux.HandleFunc("/debug/pprof/trace", debug(pprof.Trace))
	mux.Handle("/", h)
	return mux
}
