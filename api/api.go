// Package api is provenanced's HTTP API: the same handler serves the Unix socket and TCP.
//
// Handlers see keys only as *backends.Key; they never know which backend holds one.
// Errors on /v1 have the shape {"error": {"code": "...", "message": "..."}}; the original
// service's routes (/api/v1/...) keep its shape, {"detail": ...}.
package api

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

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
	// Metrics serves /metrics.
	Metrics http.Handler
	// Ready reports why the daemon cannot serve signatures now; none means ready.
	Ready func(ctx context.Context) []string
	// Version is shown by the index.
	Version string
	// Provenance configures the record routes; nil answers them with 503.
	Provenance *Provenance
	// Access is who may sign what, and the audit log (access.go); nil leaves every
	// operation open, unaudited. API.SetAccess replaces it.
	Access *Access
	// PeerOf returns the Unix socket peer of a request, if it came over the socket.
	PeerOf func(*http.Request) (Peer, bool)
}

// API holds the handlers' shared state.
type API struct {
	opts   Options
	keys   map[string]*keyEntry
	order  []*keyEntry
	log    *slog.Logger
	mux    *http.ServeMux
	routes []Route
	access atomic.Pointer[Access]
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
	a := &API{opts: opts, keys: map[string]*keyEntry{}, log: opts.Logger, mux: http.NewServeMux()}
	a.access.Store(opts.Access)
	for _, k := range opts.Keys {
		e, err := newKeyEntry(k)
		if err != nil {
			return nil, err
		}
		a.keys[k.Name()] = e
		a.order = append(a.order, e)
	}
	a.handle("GET", "/{$}", a.index)
	a.handle("GET", "/openapi.json", a.openAPI)
	a.handle("GET", "/api-docs", a.docs)
	a.handle("GET", "/docs", a.page)
	a.handle("GET", "/viewer", a.page)
	a.handle("GET", "/assets/{file}", a.asset)
	a.handle("GET", "/healthz", a.healthz)
	a.handle("GET", "/readyz", a.readyz)
	if opts.Metrics != nil {
		a.handle("GET", "/metrics", opts.Metrics.ServeHTTP)
	}
	a.handle("GET", "/v1/keys", a.listKeys)
	a.handle("GET", "/v1/keys/{name}", a.getKey)
	pathKey := func(r *http.Request) string { return r.PathValue("name") }
	recordKey := func(*http.Request) string {
		if p := opts.Provenance; p != nil && p.Key != nil {
			return p.Key.Name()
		}
		return ""
	}
	a.handle("POST", "/v1/keys/{name}/sign", a.guard(conf.OpSign, false, pathKey, a.sign))
	a.handle("POST", "/v1/keys/{name}/csr", a.guard(conf.OpCSR, false, pathKey, a.csr))
	a.handle("POST", "/v1/records", a.guard(conf.OpRecords, false, nil, a.signRecord))
	a.handle("POST", "/v1/records/verify", a.verifyRecord)
	a.handle("POST", "/v1/records/graph", a.graphRecord)
	a.handle("POST", "/api/v1/sign/edp", a.guard(conf.OpRecords, true, recordKey, a.signEDP))
	a.handle("POST", "/api/v1/sign/cap", a.guard(conf.OpRecords, true, recordKey, a.signCAP))
	a.handle("POST", "/api/v1/decode", a.decode)
	a.methodNotAllowed()
	a.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		wire.Error(w, http.StatusNotFound, "not_found", "no route "+r.Method+" "+r.URL.Path+"; GET /openapi.json lists the routes", "")
	})
	return a, nil
}

func (a *API) handle(method, path string, h http.HandlerFunc) {
	if method == "POST" {
		refuse := wire.Error
		if strings.HasPrefix(path, "/api/v1/") {
			refuse = detailError
		}
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
