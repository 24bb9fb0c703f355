// Package daemon runs provenanced: it opens the configured keys, builds the API, listens
// on the Unix socket and TCP, and shuts down cleanly on a signal.
package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ib1/provenanced/api"
	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/conf"
)

// Options are what a daemon needs besides its config.
type Options struct {
	Logger  *slog.Logger
	Version string
	// Listening, when set, is called once every listener is ready, with the addresses.
	Listening func(socket, http string)
}

// Daemon is a configured daemon whose keys are open.
type Daemon struct {
	cfg     *conf.Config
	log     *slog.Logger
	metrics *Metrics
	keys    []*backends.Key
	health  *health
	api     http.Handler // the API alone
	handler http.Handler // the API with its metrics and request log
	tls     *tls.Config  // the TCP listener's, or nil
	opts    Options
	app     *api.API // for its access state (access.go)
}

// New opens cfg's keys and builds the API. Nothing listens yet; every configuration
// error surfaces here.
func New(ctx context.Context, cfg *conf.Config, opts Options) (*Daemon, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.Logger = slog.New(redactingHandler{opts.Logger.Handler()})
	m := NewMetrics(opts.Version)
	keys, err := backends.OpenAll(ctx, cfg, backends.Options{Observe: m.signObserver, SessionWait: m.sessionWait})
	if err != nil {
		return nil, err
	}
	prov, err := newProvenance(ctx, cfg, keys, m)
	if err != nil {
		backends.CloseAll(keys)
		return nil, err
	}
	h := newHealth(keys, m, opts.Logger)
	d := &Daemon{cfg: cfg, log: opts.Logger, metrics: m, keys: keys, health: h, opts: opts}
	a, err := api.New(api.Options{
		Provenance:      prov,
		Keys:            keys,
		MaxRequestBytes: cfg.Server.MaxRequestBytes,
		SignTimeout:     cfg.Server.SignTimeout.D(),
		MaxBatch:        cfg.Server.MaxBatch,
		Logger:          opts.Logger,
		Metrics:         promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}),
		Ready: func(ctx context.Context) []string {
			return append(h.reasons(ctx), d.auditProblem()...)
		},
		Version: opts.Version,
		PeerOf:  peerOf,
	})
	if err != nil {
		backends.CloseAll(keys)
		return nil, err
	}
	tc, err := loadTLS(cfg)
	if err != nil {
		backends.CloseAll(keys)
		return nil, err
	}
	d.app, d.tls = a, tc
	ac, err := d.BuildAccess(cfg, nil)
	if err != nil {
		backends.CloseAll(keys)
		return nil, err
	}
	d.SetAccess(ac)
	d.warnClearTokens(cfg)
	d.api, d.handler = a.Handler(), newObserved(a.Handler(), opts.Logger, m)
	return d, nil
}

// Metrics exposes the daemon's metrics, for tests and benchmarks.
func (d *Daemon) Metrics() *Metrics { return d.metrics }

// Handler is the daemon's HTTP handler with its metrics and request log.
func (d *Daemon) Handler() http.Handler { return d.handler }

// Serve listens and serves until ctx is done, then stops accepting, lets requests in
// flight finish (up to shutdown_timeout), closes the keys and removes the socket.
func (d *Daemon) Serve(ctx context.Context) error {
	defer backends.CloseAll(d.keys)
	s := &d.cfg.Server
	var servers []*http.Server
	var listeners []net.Listener
	closeAll := func() {
		for _, l := range listeners {
			l.Close()
		}
	}
	var socketAddr, httpAddr string
	if s.Socket != "" {
		l, err := listenUnix(s.Socket, os.FileMode(s.SocketMode))
		if err != nil {
			return err
		}
		listeners = append(listeners, l)
		h := d.handler
		if s.Pprof {
			h = withPprof(h)
		}
		servers = append(servers, d.server(h))
		socketAddr = s.Socket
	}
	if s.HTTP != "" {
		l, err := net.Listen("tcp", s.HTTP)
		if err != nil {
			closeAll()
			return fmt.Errorf("%s: server.http: cannot listen on %s: %w", d.cfg.File, s.HTTP, err)
		}
		h := d.handler
		if isLoopback(l.Addr()) {
			h = newObserved(hostGuard(d.api, s.AllowedHosts), d.log, d.metrics)
		}
		httpAddr = l.Addr().String()
		if d.tls != nil {
			l = tls.NewListener(l, d.tls)
		}
		listeners = append(listeners, l)
		servers = append(servers, d.server(h))
	}
	d.health.check(ctx) // sets backend_up and warns of expiry at once, not after the first interval
	d.health.start(ctx)
	errc := make(chan error, len(servers))
	for i, srv := range servers {
		go func() { errc <- srv.Serve(listeners[i]) }()
	}
	d.log.Info("serving", "socket", socketAddr, "http", httpAddr, "tls", d.tls != nil && httpAddr != "", "keys", d.cfg.KeyNames(), "version", d.opts.Version)
	if d.opts.Listening != nil {
		d.opts.Listening(socketAddr, httpAddr)
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	d.log.Info("shutting down", "timeout", s.ShutdownTimeout.D().String())
	sctx, cancel := context.WithTimeout(context.Background(), s.ShutdownTimeout.D())
	defer cancel()
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Shutdown(sctx); err != nil {
				d.log.Warn("requests still running at shutdown_timeout were cut off", "error", err.Error())
				srv.Close()
			}
		}()
	}
	wg.Wait()
	d.health.stop()
	if ac := d.app.Access(); ac != nil && ac.Audit() != nil {
		seq, head := ac.Audit().Head()
		d.log.Info("audit log closed", "file", ac.Audit().Path(), "seq", seq, "head", head)
		ac.Audit().Close()
	}
	closeAll() // Shutdown closed them; this removes nothing twice but makes sure of the socket file
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	d.log.Info("stopped")
	return nil
}

// server is the one net/http configuration of both listeners.
func (d *Daemon) server(h http.Handler) *http.Server {
	sign := d.cfg.Server.SignTimeout.D()
	return &http.Server{
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
		WriteTimeout:   sign + 15*time.Second,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		ConnContext:    connContext,
		ErrorLog:       slog.NewLogLogger(d.log.Handler(), slog.LevelWarn),
	}
}

// withPprof adds /debug/pprof/ in front of h; the daemon does this for the Unix socket
// only, whose file mode limits who may profile it.
func withPprof(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.Handle("/", h)
	return mux
}
