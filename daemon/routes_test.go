package daemon

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/testenv"
)

// Every route the OpenAPI document lists answers through the daemon's handler, the
// routes the daemon serves itself (/healthz, /readyz, /metrics) among them, and they
// refuse other methods in the /v1 error shape.
func TestDaemonServesEveryDocumentedRoute(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := devsetup.NewDevFiles(dir, time.Now()); err != nil {
		t.Fatal(err)
	}
	cfg := testenv.NewConfig().PEMKey("signing", "signing-key.pem", "").Load(t, dir)
	d, err := New(context.Background(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	do := func(method, path string) (int, string) {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	status, body := do("GET", "/openapi.json")
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if status != 200 || json.Unmarshal([]byte(body), &doc) != nil {
		t.Fatalf("/openapi.json: %d", status)
	}
	for path, ops := range doc.Paths {
		for m := range ops {
			p := strings.NewReplacer("{name}", "signing", "{file}", "viewer.js").Replace(path)
			if status, body := do(strings.ToUpper(m), p); status == 404 || status == 405 {
				t.Errorf("%s %s: %d %s: documented but not routed", m, path, status, body)
			}
		}
	}
	for want, path := range map[string]string{`{"status":"ok"}`: "/healthz", `{"status":"ready"}`: "/readyz", "provenanced_build_info": "/metrics"} {
		if status, body := do("GET", path); status != 200 || !strings.Contains(body, want) {
			t.Errorf("GET %s: %d %s", path, status, body)
		}
		if status, body := do("POST", path); status != 405 || !strings.Contains(body, `"code":"method_not_allowed"`) {
			t.Errorf("POST %s: %d %s", path, status, body)
		}
	}
}
