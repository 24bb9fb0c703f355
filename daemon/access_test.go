package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ib1/provenanced/audit"
	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/testenv"

	"github.com/ib1/provenanced/conf"
)

// What a SIGHUP reload does with the access state. The audit chain continues across
// logrotate's move and across a new path, and the new clients apply to the next request.
func TestReloadSwapsClientsAndContinuesTheChain(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := devsetup.NewDevFiles(dir, time.Now()); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("tok"))
	write := func(clientKeys, auditFile string) *conf.Config {
		cfg := testenv.NewConfig().
			Table("server", "socket", "p.sock").
			DevKey().
			Table("clients.a", "token_sha256", hex.EncodeToString(sum[:]), "keys", []string{clientKeys}, "allow", []string{"sign"}).
			Table("audit", "file", auditFile).
			Load(t, dir)
		return cfg
	}
	cfg := write("signing", "audit.jsonl")
	next := cfg // what Reload reads
	d, err := New(context.Background(), cfg, Options{Load: func() (*conf.Config, error) { return next, nil }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	sign := func() int {
		dg := sha256.Sum256([]byte("x"))
		req, _ := http.NewRequest("POST", srv.URL+"/v1/keys/signing/sign", strings.NewReader(`{"digest":"`+base64.StdEncoding.EncodeToString(dg[:])+`"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := sign(); c != 200 {
		t.Fatalf("before reload: %d", c)
	}
	auditFile := filepath.Join(dir, "audit.jsonl")
	os.Rename(auditFile, auditFile+".1") // logrotate
	reload := func(cfg *conf.Config) {
		t.Helper()
		next = cfg
		if err := d.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	reload(write("*", "audit.jsonl"))
	sign()
	// A new path: the chain goes on in the new file.
	reload(write("*", "audit2.jsonl"))
	sign()
	res, err := audit.Verify([]string{auditFile + ".1", auditFile, filepath.Join(dir, "audit2.jsonl")}, audit.VerifyOptions{})
	if err != nil || res.Entries != 3 || !res.Anchored {
		t.Fatalf("chain across three files: %+v %v", res, err)
	}
	// A policy that no longer allows the key applies at once.
	reload(testenv.NewConfig().
		Table("server", "socket", "p.sock").
		DevKey().
		PEMKey("other", "signing-key.pem", "").
		Table("clients.a", "token_sha256", hex.EncodeToString(sum[:]), "keys", []string{"other"}, "allow", []string{"sign"}).
		Load(t, dir))
	if c := sign(); c != 403 {
		t.Fatalf("after the policy changed: %d, want 403", c)
	}
}

func TestWarnsOfTokensInClear(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := devsetup.NewDevFiles(dir, time.Now()); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("tok"))
	for _, tc := range []struct {
		http string
		warn bool
	}{{"0.0.0.0:8080", true}, {"127.0.0.1:8080", false}} {
		cfg := testenv.NewConfig().
			Table("server", "http", tc.http).
			PEMKey("signing", "signing-key.pem", "").
			Table("clients.a", "token_sha256", hex.EncodeToString(sum[:]), "keys", []string{"*"}, "allow", []string{"sign"}).
			Load(t, dir)
		var log strings.Builder
		if _, err := New(context.Background(), cfg, Options{Logger: slog.New(slog.NewTextHandler(&log, nil))}); err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(log.String(), "anyone on the path can read a token"); got != tc.warn {
			t.Errorf("http %s: warned %v, want %v:\n%s", tc.http, got, tc.warn, log.String())
		}
		if strings.Contains(log.String(), "no [clients.NAME]") {
			t.Errorf("the no-clients warning with clients configured:\n%s", log.String())
		}
	}
}
