package awskms_test

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/daemon"
)

// A reload that only brings a renewed bundle keeps the key's KMS client: KMS sees no
// second GetPublicKey for opening it (only the readiness probe of the keys about to be
// served). A changed key table opens the key again, and KMS sees that.
func TestReloadKeepsTheKMSClient(t *testing.T) {
	_, key, proxy, cfg := behindProxy(t)
	path := cfg.File
	ctx := ctxT(t)
	d, err := daemon.New(ctx, cfg, daemon.Options{Load: func() (*conf.Config, error) { return conf.Load(path) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	srv := httpDaemon(d)
	digest := sha256.Sum256([]byte("kms reload"))
	if code := srv.sign(t, digest[:]); code != 200 {
		t.Fatalf("sign: %d", code)
	}

	before := proxy.count("GetPublicKey")
	// The same bundle written again: a reload reads it whether or not it changed.
	if err := os.WriteFile(filepath.Join(filepath.Dir(path), "bundle.pem"), key.Bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if n := proxy.count("GetPublicKey") - before; n != 1 {
		t.Errorf("a reload of an unchanged key made %d GetPublicKey calls, want 1 (the readiness probe)", n)
	}
	if code := srv.sign(t, digest[:]); code != 200 {
		t.Fatalf("sign after the reload: %d", code)
	}

	text, _ := os.ReadFile(path)
	changed := strings.Replace(string(text), `key_id = "alias/provenance"`, `key_id = "`+key.ARN+`"`, 1)
	if changed == string(text) {
		t.Fatalf("no key_id line in\n%s", text)
	}
	os.WriteFile(path, []byte(changed), 0o644)
	before = proxy.count("GetPublicKey")
	if err := d.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if n := proxy.count("GetPublicKey") - before; n < 2 {
		t.Errorf("a reload of a changed key made %d GetPublicKey calls; opening it should make one more than the probe", n)
	}
	if code := srv.sign(t, digest[:]); code != 200 {
		t.Fatalf("sign after reopening: %d", code)
	}
}

// handlerDaemon serves requests straight through the daemon's handler, without a listener.
type handlerDaemon struct{ h http.Handler }

func httpDaemon(d *daemon.Daemon) handlerDaemon { return handlerDaemon{d.Handler()} }

func (s handlerDaemon) sign(t *testing.T, digest []byte) int {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/v1/keys/signing/sign", strings.NewReader(`{"digest":"`+base64.StdEncoding.EncodeToString(digest)+`"}`))
	req.Header.Set("Content-Type", "application/json")
	s.h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Logf("sign: %d %s", rec.Code, rec.Body)
	}
	return rec.Code
}
