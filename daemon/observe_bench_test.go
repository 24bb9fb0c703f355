package daemon

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/ib1/provenanced/api/access"
)

// BenchmarkRequestLog is the cost observed adds to a request: metrics and the JSON log
// line, written to a file as journald would take it.
func BenchmarkRequestLog(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "log"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	log := slog.New(redactingHandler{slog.NewJSONHandler(f, nil)}) // as New sets it up
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/keys/{name}/sign", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	o := newObserved(mux, log, NewMetrics("bench"), nil)
	req := httptest.NewRequest("POST", "/v1/keys/signing/sign", nil)
	req = req.WithContext(access.WithPeer(req.Context(), access.Peer{UID: 1000, GID: 1000, PID: 4242}))
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		o.ServeHTTP(w, req)
	}
}
