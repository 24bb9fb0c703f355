package daemon

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ib1/provenanced/api/wire"
)

// routes is what every listener serves: the daemon's own health and metrics, and the
// current generation's API for everything else.
func (d *Daemon) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		wire.Bytes(w, http.StatusOK, []byte("{\"status\":\"ok\"}\n"))
	})
	mux.HandleFunc("GET /readyz", d.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.metrics.Registry, promhttp.HandlerOpts{}))
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", "GET")
			wire.Error(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed here; allowed: GET", "")
		})
	}
	mux.HandleFunc("/", d.serveGeneration)
	return mux
}

// readyz answers 200 when every key can sign and the audit log can be written, and 503
// with the reasons otherwise.
func (d *Daemon) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	reasons := append(d.health.reasons(ctx), d.auditProblem()...)
	cancel()
	if len(reasons) > 0 {
		wire.JSON(w, http.StatusServiceUnavailable, &readiness{"unavailable", reasons})
		return
	}
	wire.JSON(w, http.StatusOK, &readiness{Status: "ready"})
}

type readiness struct {
	Status  string   `json:"status"`
	Reasons []string `json:"reasons,omitzero"`
}
