// Package api is provenanced's HTTP API: the same handler serves the Unix socket and TCP.
//
// Handlers see keys only as *backends.Key; they never know which backend holds one.
// Errors on /v1 have the shape {"error": {"code": "...", "message": "..."}} (api/wire);
// the original service's routes (api/original) keep its shape, {"detail": ...}. Who may
// sign is api/access's job, in front of every signing route. The daemon serves /healthz,
// /readyz and /metrics itself, beside this handler.
package api

import (
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ib1/provenanced/api/access"
	"github.com/ib1/provenanced/api/original"
	"github.com/ib1/provenanced/api/wire"
	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/conf"
)

// Options configure the API.
type Options struct {
	Keys            []*backends.Key
	MaxRequestBytes int64
	// SignTimeout bounds a request's wait for its backend.
	SignTimeout time.Duration
	MaxBatch    int
	Logger      *slog.Logger
	// Metrics are the API's, from NewMetrics on the daemon's registry (they outlive one
	// API: a reload builds a new API on the same metrics); nil for a private set.
	Metrics *Metrics
	// Version is shown by the index.
	Version string
	// Provenance configures the record routes; nil answers them with 503.
	Provenance *Provenance
	// Access is who may sign what, and the audit log; nil leaves every operation open,
	// unaudited.
	Access *access.Policy
	// VerifyConcurrency bounds the verifications of the routes that verify for anyone
	// (verifySlots); 0 = GOMAXPROCS-1, at least one.
	VerifyConcurrency int
}

// API holds the handlers' shared state.
type API struct {
	opts   Options
	keys   map[string]*keyEntry
	order  []*keyEntry
	log    *slog.Logger
	mux    *http.ServeMux
	routes []Route
	guard  *access.Guard
	// verifying bounds the verifications that need no client.
	verifying verifySlots
}

// Route is one route the API serves, as it is registered.
type Route struct {
	Method string
	Path   string
}

// New builds the API over opts.Keys.
func New(opts Options) (*API, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 1000
	}
	if opts.SignTimeout <= 0 {
		opts.SignTimeout = 10 * time.Second
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	a := &API{opts: opts, keys: map[string]*keyEntry{}, log: opts.Logger, mux: http.NewServeMux(),
		guard: &access.Guard{Policy: opts.Access, Log: opts.Logger}, verifying: newVerifySlots(opts.VerifyConcurrency)}
	for _, k := range opts.Keys {
		e, err := newKeyEntry(k)
		if err != nil {
			return nil, err
		}
		a.keys[k.Name()] = e
		a.order = append(a.order, e)
	}
	a.handle("GET", "/{$}", a.index, nil)
	a.handle("GET", "/openapi.json", a.openAPI, nil)
	a.handle("GET", "/api-docs", a.docs, nil)
	a.handle("GET", "/docs", a.page, nil)
	a.handle("GET", "/viewer", a.page, nil)
	a.handle("GET", "/assets/{file}", a.asset, nil)
	a.handle("GET", "/v1/keys", a.listKeys, nil)
	a.handle("GET", "/v1/keys/{name}", a.getKey, nil)
	pathKey := func(r *http.Request) string { return r.PathValue("name") }
	guarded := func(op string, keyOf func(*http.Request) string, denied prometheus.Counter) access.Route {
		return access.Route{Op: op, KeyOf: keyOf, Refuse: wire.Error, Denied: denied}
	}
	signRoute := guarded(conf.OpSign, pathKey, nil)
	signRoute.Charged = true // a batch of N costs N signatures of the client's rate
	a.handle("POST", "/v1/keys/{name}/sign", a.guard.Wrap(signRoute, a.sign), wire.Error)
	a.handle("POST", "/v1/keys/{name}/csr", a.guard.Wrap(guarded(conf.OpCSR, pathKey, nil), a.csr), wire.Error)
	a.handle("POST", "/v1/records", a.guard.Wrap(guarded(conf.OpRecords, nil, opts.Metrics.recordsDenied), a.signRecord), wire.Error)
	a.handle("POST", "/v1/records/verify", a.takingTurns(a.verifyRecord, wire.Error), wire.Error)
	a.handle("POST", "/v1/records/graph", a.takingTurns(a.graphRecord, wire.Error), wire.Error)
	for _, rt := range original.Routes(a.originalOptions(), a.guard) {
		if rt.Verifies {
			rt.Handler = a.takingTurns(rt.Handler, original.Error)
		}
		a.handle(rt.Method, rt.Path, rt.Handler, original.Error)
	}
	a.methodNotAllowed()
	a.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		wire.Error(w, http.StatusNotFound, "not_found", "no route "+r.Method+" "+r.URL.Path+"; GET /openapi.json lists the routes", "")
	})
	return a, nil
}

// handle registers h; a POST route takes only JSON, and refuses anything else in its
// error shape.
func (a *API) handle(method, path string, h http.HandlerFunc, refuse wire.ErrorWriter) {
	if method == "POST" {
		h = wire.JSONOnly(h, refuse)
	}
	a.mux.HandleFunc(method+" "+path, h)
	a.routes = append(a.routes, Route{Method: method, Path: path})
}

// methodNotAllowed registers, for every path, a method-less pattern that answers 405 in
// the API's error shape; the method-specific patterns are more specific and win.
func (a *API) methodNotAllowed() {
	allowed := map[string][]string{}
	var paths []string
	for _, r := range a.routes {
		if _, ok := allowed[r.Path]; !ok {
			paths = append(paths, r.Path)
		}
		allowed[r.Path] = append(allowed[r.Path], r.Method)
	}
	for _, p := range paths {
		if p == "/{$}" {
			continue // "/" is the catch-all 404 below
		}
		methods := strings.Join(allowed[p], ", ")
		a.mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", methods)
			wire.Error(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed here; allowed: "+methods, "")
		})
	}
}

// Handler is the API's http.Handler.
func (a *API) Handler() http.Handler { return a.mux }

// Routes lists the routes served, for the OpenAPI document's test.
func (a *API) Routes() []Route { return append([]Route(nil), a.routes...) }
