package daemon

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ib1/provenanced/backends"
	pembackend "github.com/ib1/provenanced/backends/pem"
	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/testenv"
)

// keyWithCertificate opens a PEM key whose certificate is valid from notBefore to notAfter.
func keyWithCertificate(t *testing.T, notBefore, notAfter time.Time) *backends.Key {
	t.Helper()
	dir := t.TempDir()
	pki, err := testenv.NewPKI(notBefore)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := testenv.NewKey()
	m := testenv.DevMember(notBefore)
	m.NotBefore, m.NotAfter = notBefore, notAfter
	leaf, err := pki.Issue(&key.PublicKey, m)
	if err != nil {
		t.Fatal(err)
	}
	files, err := pki.WriteFiles(dir, key, leaf)
	if err != nil {
		t.Fatal(err)
	}
	k, err := backends.Open(context.Background(), conf.NewKey("signing", "pem", files.Bundle, "test", &pembackend.Options{PrivateKey: files.PrivateKey}), backends.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

func TestExpiryWarnsOnceADayAndFailsReadiness(t *testing.T) {
	now := time.Now()
	k := keyWithCertificate(t, now.Add(-time.Hour), now.Add(10*24*time.Hour))
	var logs bytes.Buffer
	g := &generation{keys: []*backends.Key{k}}
	h := newHealth(NewMetrics("test"), slog.New(slog.NewJSONHandler(&logs, nil)), func() *generation { return g })
	clock := now
	h.now = func() time.Time { return clock }
	if r := h.reasons(context.Background()); len(r) != 1 || !strings.Contains(r[0], "not been checked") {
		t.Errorf("reasons before the first check: %v", r)
	}
	h.check(context.Background())
	if r := h.reasons(context.Background()); len(r) != 0 {
		t.Errorf("ready key has reasons: %v", r)
	}
	if n := strings.Count(logs.String(), "certificate expires soon"); n != 1 {
		t.Errorf("%d expiry warnings in one day, want 1:\n%s", n, logs.String())
	}
	clock = clock.Add(25 * time.Hour)
	h.check(context.Background())
	if n := strings.Count(logs.String(), "certificate expires soon"); n != 2 {
		t.Errorf("%d expiry warnings after a day, want 2", n)
	}
	if !strings.Contains(logs.String(), `"days_left":8`) {
		t.Errorf("no days_left in %s", logs.String())
	}
	clock = now.Add(11 * 24 * time.Hour)
	h.check(context.Background())
	r := h.reasons(context.Background())
	if len(r) != 1 || !strings.Contains(r[0], "expired") {
		t.Errorf("expired certificate: reasons %v", r)
	}
	if !strings.Contains(logs.String(), "certificate expired") {
		t.Errorf("no error logged for the expired certificate")
	}
}

func TestReadyzOfADaemon(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := testenv.NewDevFiles(dir, time.Now()); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "p.toml")
	os.WriteFile(cfgPath, []byte("[server]\nsocket = \"p.sock\"\nhttp = \"\"\n[provenance]\nroot_ca = \"root-ca.pem\"\n[keys.signing]\nbackend = \"pem\"\nprivate_key = \"signing-key.pem\"\ncertificates = \"signing-bundle.pem\"\n"), 0o644)
	cfg, err := conf.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(context.Background(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r := d.health.reasons(context.Background()); len(r) != 0 {
		t.Errorf("reasons: %v", r)
	}
	if d.Metrics() == nil || d.Handler() == nil {
		t.Fatal("daemon without metrics or handler")
	}
}

// pprof, when turned on, is served on the Unix socket and never on TCP.
func TestPprofOnTheSocketOnly(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := testenv.NewDevFiles(dir, time.Now()); err != nil {
		t.Fatal(err)
	}
	addr, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "p.toml")
	os.WriteFile(cfgPath, []byte("[server]\nsocket = \"p.sock\"\nhttp = \""+addr+"\"\npprof = true\n[keys.signing]\nbackend = \"pem\"\nprivate_key = \"signing-key.pem\"\ncertificates = \"signing-bundle.pem\"\n"), 0o644)
	cfg, err := conf.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	d, err := New(context.Background(), cfg, Options{Listening: func(string, string) { close(ready) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	<-ready
	get := func(c *http.Client, url string) int {
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(testenv.UnixClient(cfg.Server.Socket), "http://provenanced/debug/pprof/"); code != 200 {
		t.Errorf("pprof on the socket: %d", code)
	}
	if code := get(http.DefaultClient, "http://"+addr+"/debug/pprof/"); code != 404 {
		t.Errorf("pprof on TCP: %d, want 404", code)
	}
	if code := get(http.DefaultClient, "http://"+addr+"/healthz"); code != 200 {
		t.Errorf("healthz on TCP: %d", code)
	}
}
