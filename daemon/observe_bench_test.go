package daemon

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
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
	o := newObserved(mux, log, NewMetrics("bench"))
	req := httptest.NewRequest("POST", "/v1/keys/signing/sign", nil)
	req = req.WithContext(context.WithValue(req.Context(), peerKey{}, &peer{unix: true, uid: 1000, gid: 1000, pid: 4242}))
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		o.ServeHTTP(w, req)
	}
}
