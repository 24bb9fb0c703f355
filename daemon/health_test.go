package daemon

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/ib1/provenanced/backends"
	pembackend "github.com/ib1/provenanced/backends/pem"
	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/testenv"
)

// keyWithCertificate opens a PEM key whose certificate is valid from notBefore to notAfter.
func keyWithCertificate(t *testing.T, notBefore, notAfter time.Time) *backends.Key {
	t.Helper()
	dir := t.TempDir()
	pki, err := devsetup.NewPKI(notBefore)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := devsetup.NewKey()
	m := devsetup.DevMember(notBefore)
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
	if _, _, err := devsetup.NewDevFiles(dir, time.Now()); err != nil {
		t.Fatal(err)
	}
	cfg := testenv.NewConfig().
		Table("server", "socket", "p.sock", "http", "").
		Table("provenance", "root_ca", "root-ca.pem").
		DevKey().
		Load(t, dir)
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
	if _, _, err := devsetup.NewDevFiles(dir, time.Now()); err != nil {
		t.Fatal(err)
	}
	addr, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg := testenv.NewConfig().Table("server", "socket", "p.sock", "http", addr, "pprof", true).DevKey().Load(t, dir)
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

// With clients configured, pprof answers only a client allowed the operation debug: a
// profile shows what the daemon holds and does, and any uid that may open the socket
// could read it before.
func TestPprofNeedsDebug(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := devsetup.NewDevFiles(dir, time.Now()); err != nil {
		t.Fatal(err)
	}
	base := func(allow ...string) *testenv.Config {
		return testenv.NewConfig().Table("server", "socket", "p.sock", "pprof", true).
			PEMKey("signing", "signing-key.pem", "signing-bundle.pem").
			Table("audit", "file", "audit.jsonl").
			Table("clients.me", "gids", []int{os.Getgid()}, "keys", []string{"signing"}, "allow", allow)
	}
	cfgPath := base("sign").WriteFile(t, filepath.Join(dir, "p.toml"))
	cfg, err := conf.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	d, err := New(context.Background(), cfg, Options{Listening: func(string, string) { close(ready) }, Load: func() (*conf.Config, error) { return conf.Load(cfgPath) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	<-ready
	c := testenv.UnixClient(cfg.Server.Socket)
	get := func() (int, string) {
		resp, err := c.Get("http://provenanced/debug/pprof/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(); code != 403 || !strings.Contains(body, `client \"me\" may not read the debug profiles`) {
		t.Errorf("without debug: %d %s", code, body)
	}
	base("sign", "debug").WriteFile(t, cfgPath)
	if err := d.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(); code != 200 {
		t.Errorf("with debug: %d", code)
	}
	audit, _ := os.ReadFile(filepath.Join(dir, "audit.jsonl"))
	if n := strings.Count(string(audit), `"op":"debug"`); n != 2 {
		t.Errorf("%d audit lines of op debug, want 2:\n%s", n, audit)
	}
}

// flakySigner is a key in memory whose backend can be switched to "cannot sign": an
// outage on demand, which no real in-memory key has.
type flakySigner struct {
	*ecdsa.PrivateKey
	down atomic.Bool
	// passing: signatures fail as a throttled KMS call does, while Ready says the key
	// can sign (backends.ErrTransient).
	passing atomic.Bool
}

func (f *flakySigner) SignContext(_ context.Context, digest []byte) ([]byte, error) {
	if f.down.Load() {
		return nil, fmt.Errorf("%w: the test says so", backends.ErrUnavailable)
	}
	if f.passing.Load() {
		return nil, fmt.Errorf("%w: %w: throttled, the test says", backends.ErrUnavailable, backends.ErrTransient)
	}
	return ecdsa.SignASN1(rand.Reader, f.PrivateKey, digest)
}
func (f *flakySigner) Ready(context.Context) error {
	if f.down.Load() {
		return fmt.Errorf("%w: the test says so", backends.ErrUnavailable)
	}
	return nil
}
func (f *flakySigner) Location() string { return "memory" }
func (f *flakySigner) Close() error     { return nil }

var flaky = &flakySigner{}

func init() {
	flaky.PrivateKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	backends.Register("flaky-test", backends.Backend{Open: func(context.Context, *conf.Key) (backends.Signer, error) { return flaky, nil }})
}

// In an outage the log has a line when the key goes down, one a minute while it stays
// down with the number of signatures refused meanwhile, and one when it is back: not a
// line per refused request.
func TestOutageIsLoggedByStateAndCount(t *testing.T) {
	m := NewMetrics("test")
	k, err := backends.Open(context.Background(), conf.NewKey("signing", "flaky-test", "", "test", nil), backends.Options{Observe: m.signObserver, WithoutCertificates: true})
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	g := &generation{keys: []*backends.Key{k}, byName: map[string]*backends.Key{k.Name(): k}}
	h := newHealth(m, slog.New(slog.NewJSONHandler(&logs, nil)), func() *generation { return g })
	clock := time.Now()
	h.now = func() time.Time { return clock }
	h.check(context.Background())
	flaky.down.Store(true)
	defer flaky.down.Store(false)
	digest := make([]byte, 32)
	for range 500 {
		if _, err := k.SignContext(context.Background(), digest, nil); !errors.Is(err, backends.ErrUnavailable) {
			t.Fatalf("sign while down: %v", err)
		}
	}
	h.check(context.Background())
	for range 10 {
		clock = clock.Add(10 * time.Second)
		for range 100 {
			k.SignContext(context.Background(), digest, nil)
		}
		h.check(context.Background())
	}
	flaky.down.Store(false)
	clock = clock.Add(5 * time.Second)
	h.check(context.Background())
	text := logs.String()
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d log lines for an outage of 105s with 1500 refused signatures, want 3 (down, still down after a minute, back):\n%s", len(lines), text)
	}
	for i, want := range []string{`"msg":"key cannot sign".*"refused":500`, `"msg":"key still cannot sign".*"down_for":"1m0s".*"refused":600`, `"msg":"key can sign again".*"down_for":"1m45s".*"refused":400`} {
		if !regexp.MustCompile(want).MatchString(lines[i]) {
			t.Errorf("line %d: %s\nwant %s", i, lines[i], want)
		}
	}
}

// /readyz asked again and again while a key is down (a probe every few seconds): the
// reason is logged once, and every answer's request id finds it; a new reason, or the key
// down again after it came back, is logged anew.
func TestReadyzLogsAReasonOnce(t *testing.T) {
	m := NewMetrics("test")
	k, err := backends.Open(context.Background(), conf.NewKey("signing", "flaky-test", "", "test", nil), backends.Options{Observe: m.signObserver, WithoutCertificates: true})
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	g := &generation{keys: []*backends.Key{k}, byName: map[string]*backends.Key{k.Name(): k}}
	h := newHealth(m, slog.New(slog.NewJSONHandler(&logs, nil)), func() *generation { return g })
	flaky.down.Store(true)
	defer flaky.down.Store(false)
	h.check(context.Background()) // /readyz answers from the last check
	ids := map[string]bool{}
	for range 20 {
		r := h.reasons(context.Background())
		if len(r) != 1 {
			t.Fatalf("reasons: %v", r)
		}
		_, id, _ := strings.Cut(r[0], "request id ")
		ids[id] = true
	}
	if n := strings.Count(logs.String(), "not ready: key cannot sign"); n != 1 || len(ids) != 1 {
		t.Errorf("%d lines and %d request ids for 20 /readyz answers with one reason:\n%s", n, len(ids), logs.String())
	}
	for id := range ids {
		if !strings.Contains(logs.String(), `"request_id":"`+id+`"`) {
			t.Errorf("request id %s is not in the log", id)
		}
	}
	flaky.down.Store(false)
	h.check(context.Background())
	if r := h.reasons(context.Background()); len(r) != 0 {
		t.Fatalf("reasons after recovery: %v", r)
	}
	flaky.down.Store(true)
	h.check(context.Background())
	h.reasons(context.Background())
	if n := strings.Count(logs.String(), "not ready: key cannot sign"); n != 2 {
		t.Errorf("%d lines after the key went down a second time, want 2", n)
	}
}

// A signature that fails for a passing reason (backends.ErrTransient: KMS throttled it)
// is refused but leaves the key up: backend_up 1, /readyz ready. The
// backend's Ready decides when such failures have lasted. A signature refused for any
// other reason takes the key down at once.
func TestPassingFailureLeavesTheKeyUp(t *testing.T) {
	m := NewMetrics("test")
	var h *health
	observe := func(name, backend string) backends.Observer {
		metric := m.signObserver(name, backend)
		return func(took time.Duration, err error) { metric(took, err); h.observe(name, err) }
	}
	k, err := backends.Open(context.Background(), conf.NewKey("signing", "flaky-test", "", "test", nil), backends.Options{Observe: observe, WithoutCertificates: true})
	if err != nil {
		t.Fatal(err)
	}
	g := &generation{keys: []*backends.Key{k}, byName: map[string]*backends.Key{k.Name(): k}}
	h = newHealth(m, slog.New(slog.DiscardHandler), func() *generation { return g })
	h.check(context.Background())
	up := func() float64 {
		var v dto.Metric
		m.BackendUp.WithLabelValues("signing", "flaky-test").Write(&v)
		return v.GetGauge().GetValue()
	}
	digest := make([]byte, 32)

	flaky.passing.Store(true)
	defer flaky.passing.Store(false)
	for range 10 {
		if _, err := k.SignContext(context.Background(), digest, nil); !errors.Is(err, backends.ErrUnavailable) {
			t.Fatalf("a throttled signature: %v", err)
		}
	}
	if r := h.reasons(context.Background()); len(r) != 0 || up() != 1 {
		t.Errorf("after 10 passing failures: /readyz reasons %v, backend_up %v; want none and 1", r, up())
	}

	flaky.passing.Store(false)
	flaky.down.Store(true)
	defer flaky.down.Store(false)
	k.SignContext(context.Background(), digest, nil)
	if r := h.reasons(context.Background()); len(r) != 1 || up() != 0 {
		t.Errorf("after a failure that is not passing: /readyz reasons %v, backend_up %v; want the key and 0", r, up())
	}
}
