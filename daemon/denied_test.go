package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/testenv"
)

// A records request the clients' policy refuses counts as records_total{operation="sign",
// outcome="denied"}, not as an error of the daemon's.
func TestRecordsDeniedByPolicyCountsDenied(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := devsetup.NewDevFiles(dir, time.Now()); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("tok"))
	cfg := testenv.NewConfig().
		Table("server", "socket", "p.sock").
		Table("provenance", "root_ca", "root-ca.pem", "key", "signing").
		DevKey().
		Table("clients.a", "token_sha256", hex.EncodeToString(sum[:]), "keys", []string{"signing"}, "allow", []string{"sign"}).
		Load(t, dir)
	d, err := New(context.Background(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	post := func(token string) int {
		req, _ := http.NewRequest("POST", srv.URL+"/v1/records", strings.NewReader(`{"steps":[{"type":"origin","a":1}]}`))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := post("tok"); c != http.StatusForbidden {
		t.Fatalf("records by a client allowed only sign: %d, want 403", c)
	}
	if c := post(""); c != http.StatusUnauthorized {
		t.Fatalf("records without identity: %d, want 401", c)
	}
	if v := gathered(t, d.metrics.Registry, "provenanced_records_total", "operation", "sign", "outcome", "denied"); v != 2 {
		t.Errorf("records_total{sign,denied} = %v, want 2", v)
	}
	if v := gathered(t, d.metrics.Registry, "provenanced_records_total", "operation", "sign", "outcome", "error"); v != 0 {
		t.Errorf("records_total{sign,error} = %v, want 0", v)
	}
}
