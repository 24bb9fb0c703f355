package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ib1/provenanced/client"
	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/testenv"
)

// reloadSetup is a PKI, the member key "signing" with its bundle, a second PEM key
// "other" without a certificate, and a config that serves both.
type reloadSetup struct {
	dir, config string
	pki         *devsetup.PKI
	key         *ecdsa.PrivateKey
	files       devsetup.Files
}

func newReloadSetup(t *testing.T) *reloadSetup {
	t.Helper()
	dir := t.TempDir()
	now := time.Now()
	pki, err := devsetup.NewPKI(now)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := devsetup.NewKey()
	leaf, err := pki.Issue(&key.PublicKey, devsetup.DevMember(now))
	if err != nil {
		t.Fatal(err)
	}
	files, err := pki.WriteFiles(dir, key, leaf)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := devsetup.NewKey()
	otherPEM, _ := devsetup.KeyPEM(other)
	if err := devsetup.WriteFileAtomic(filepath.Join(dir, "other-key.pem"), otherPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return &reloadSetup{dir: dir, config: filepath.Join(dir, "provenanced.toml"), pki: pki, key: key, files: files}
}

// newConfig is the config: [server] with the keys and values of server, [provenance],
// then the keys, "other" too when withOther.
func (s *reloadSetup) newConfig(withOther bool, server ...any) *testenv.Config {
	c := testenv.NewConfig().
		Table("server", append([]any{"socket", "provenanced.sock", "socket_mode", "0600"}, server...)...).
		Table("provenance", "root_ca", "root-ca.pem", "key", "signing").
		DevKey()
	if withOther {
		c.PEMKey("other", "other-key.pem", "")
	}
	return c
}

// writeConfig writes newConfig(withOther, server...) to the setup's config file.
func (s *reloadSetup) writeConfig(t *testing.T, withOther bool, server ...any) {
	t.Helper()
	s.newConfig(withOther, server...).WriteFile(t, s.config)
}

// renew issues a new certificate for the same key and installs its bundle; it returns
// the new serial.
func (s *reloadSetup) renew(t *testing.T) string {
	t.Helper()
	m := devsetup.DevMember(time.Now())
	m.Serial = big.NewInt(time.Now().UnixNano())
	leaf, err := s.pki.Issue(&s.key.PublicKey, m)
	if err != nil {
		t.Fatal(err)
	}
	if err := devsetup.WriteFileAtomic(s.files.Bundle, s.pki.Bundle(leaf), 0o644); err != nil {
		t.Fatal(err)
	}
	return leaf.SerialNumber.String()
}

// serve starts the daemon on the setup's config and returns it, a client on its socket
// (closed at cleanup) and key "signing" as it is served before any reload.
func (s *reloadSetup) serve(t *testing.T) (*testenv.Process, *client.Client, *client.Key) {
	t.Helper()
	p := testenv.StartDaemon(t, daemonBin, s.socket(), "", nil, "serve", "-config", s.config)
	c, err := client.New(client.Options{Socket: s.socket()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	before, err := c.Key(context.Background(), "signing")
	if err != nil {
		t.Fatal(err)
	}
	return p, c, before
}

func (s *reloadSetup) socket() string { return filepath.Join(s.dir, "provenanced.sock") }

// metricOf reads one series from /metrics as a float (timestamps do not fit metricValue).
func metricOf(t *testing.T, c *http.Client, url, series string) float64 {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err != nil {
				t.Fatalf("%s: %v", series, err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics", series)
	return 0
}

// waitFor polls cond every 20 ms for up to 15 s (a PKCS#11 token reopened on a loaded
// machine takes a while).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A renewed bundle and a key removed from the config, picked up on SIGHUP by the same
// process while clients sign without pause: no request fails, the new serial is served,
// the removed key answers 404, and the reload metrics say it worked.
func TestReloadUnderLoad(t *testing.T) {
	s := newReloadSetup(t)
	s.writeConfig(t, true, "http", "")
	p, c, before := s.serve(t)
	hc := p.Client()
	ctx := context.Background()
	if _, err := c.Key(ctx, "other"); err != nil {
		t.Fatalf("key other before the reload: %v", err)
	}
	started := metricOf(t, hc, p.URL("/metrics"), "provenanced_config_last_reload_success_timestamp_seconds")
	if ok := metricOf(t, hc, p.URL("/metrics"), "provenanced_config_last_reload_successful"); ok != 1 {
		t.Fatalf("reload_successful = %v at start", ok)
	}

	// Clients sign without pause from before the reload until after it.
	var stop atomic.Bool
	var signed, failed atomic.Int64
	var firstErr sync.Once
	var failure error
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; !stop.Load(); n++ {
				d := sha256.Sum256(fmt.Appendf(nil, "load %d %d", i, n))
				sig, err := c.SignDigest(ctx, "signing", d[:])
				if err == nil && !ecdsa.VerifyASN1(&s.key.PublicKey, d[:], sig) {
					err = errors.New("a signature does not verify")
				}
				if err != nil {
					failed.Add(1)
					firstErr.Do(func() { failure = err })
					continue
				}
				signed.Add(1)
			}
		}()
	}
	waitFor(t, "the load to start", func() bool { return signed.Load() > 100 })

	serial := s.renew(t)
	if serial == before.Serial {
		t.Fatal("the renewed certificate has the old serial")
	}
	s.writeConfig(t, false, "http", "")
	atReload := signed.Load()
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new serial", func() bool {
		k, err := c.Key(ctx, "signing")
		return err == nil && k.Serial == serial
	})
	afterReload := signed.Load()
	waitFor(t, "signatures after the reload", func() bool { return signed.Load() > afterReload+100 })
	stop.Store(true)
	wg.Wait()
	if failed.Load() != 0 {
		t.Errorf("%d of %d requests failed around the reload; first: %v", failed.Load(), failed.Load()+signed.Load(), failure)
	}
	t.Logf("%d signatures, %d of them between SIGHUP and the new serial being served", signed.Load(), afterReload-atReload)

	if err := p.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the process that served before the reload is gone: %v", err)
	}
	_, err := c.Key(ctx, "other")
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusNotFound {
		t.Errorf("key other after it left the config: %v, want 404", err)
	}
	if ok := metricOf(t, hc, p.URL("/metrics"), "provenanced_config_last_reload_successful"); ok != 1 {
		t.Errorf("reload_successful = %v after a good reload", ok)
	}
	if ts := metricOf(t, hc, p.URL("/metrics"), "provenanced_config_last_reload_success_timestamp_seconds"); ts <= started {
		t.Errorf("success timestamp %v did not move past %v", ts, started)
	}
	if _, ok := metricValue(t, hc, p.URL("/metrics"), `provenanced_backend_up{backend="pem",key="other"}`); ok {
		t.Error("backend_up of the removed key is still exported")
	}
	// Info lines are written in batches: wait for the reload's.
	waitFor(t, "the reload's log line", func() bool { return strings.Contains(p.Output(), "configuration reloaded") })
	out := p.Output()
	for _, want := range []string{"certificate replaced", serial, `"removed":["other"]`, `"kept_open":["signing"]`} {
		if !strings.Contains(out, want) {
			t.Errorf("the log does not say %q:\n%s", want, out)
		}
	}
}

// A config broken on disk and a SIGHUP: the daemon keeps serving what it had, the metric
// says the reload failed and the log says why; fixed, the next SIGHUP succeeds, and a
// changed listener is reported as needing a restart. Also: the metrics listener serves
// the three read-only routes and nothing that signs.
func TestReloadBrokenConfigKeepsServing(t *testing.T) {
	s := newReloadSetup(t)
	metricsAddr, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	server := []any{"http", "", "metrics_http", metricsAddr}
	s.writeConfig(t, false, server...)
	p, c, before := s.serve(t)
	hc := p.Client()
	ctx := context.Background()

	// The metrics listener.
	mc := &http.Client{Timeout: 10 * time.Second}
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		resp, err := mc.Get("http://" + metricsAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET %s on the metrics listener: %d", path, resp.StatusCode)
		}
	}
	for _, r := range []struct{ method, path string }{
		{"POST", "/v1/keys/signing/sign"}, {"POST", "/v1/records"}, {"POST", "/api/v1/sign/edp"},
		{"POST", "/v1/keys/signing/csr"}, {"GET", "/v1/keys"}, {"GET", "/v1/keys/signing"}, {"POST", "/metrics"},
	} {
		req, _ := http.NewRequest(r.method, "http://"+metricsAddr+r.path, strings.NewReader(`{"message":"aGVsbG8="}`))
		req.Header.Set("Content-Type", "application/json")
		resp, err := mc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s %s on the metrics listener: %d, want 404", r.method, r.path, resp.StatusCode)
		}
	}

	for _, broken := range []struct {
		name string
		do   func()
	}{
		{"not TOML", func() { os.WriteFile(s.config, []byte("[server\n"), 0o644) }},
		{"bundle of another key", func() {
			s.writeConfig(t, false, server...)
			other, _ := devsetup.NewKey()
			leaf, _ := s.pki.Issue(&other.PublicKey, devsetup.DevMember(time.Now()))
			devsetup.WriteFileAtomic(s.files.Bundle, s.pki.Bundle(leaf), 0o644)
		}},
	} {
		broken.do()
		failures := strings.Count(p.Output(), "reload failed")
		if err := p.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the failed reload ("+broken.name+")", func() bool { return strings.Count(p.Output(), "reload failed") > failures })
		if ok := metricOf(t, hc, p.URL("/metrics"), "provenanced_config_last_reload_successful"); ok != 0 {
			t.Errorf("reload_successful = %v after a failed reload (%s)", ok, broken.name)
		}
		d := sha256.Sum256([]byte(broken.name))
		sig, err := c.SignDigest(ctx, "signing", d[:])
		if err != nil || !ecdsa.VerifyASN1(&s.key.PublicKey, d[:], sig) {
			t.Fatalf("signing after a failed reload (%s): %v", broken.name, err)
		}
		if k, err := c.Key(ctx, "signing"); err != nil || k.Serial != before.Serial {
			t.Errorf("after a failed reload (%s) the key is %+v, %v; want serial %s", broken.name, k, err, before.Serial)
		}
	}
	out := p.Output()
	for _, want := range []string{"not valid TOML", "public key differs", "still serving the previous configuration"} {
		if !strings.Contains(out, want) {
			t.Errorf("the log does not say %q:\n%s", want, out)
		}
	}

	// Fixed, with a new serial and a listener change.
	serial := s.renew(t)
	s.writeConfig(t, false, append(server, "pprof", true)...)
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the good reload", func() bool {
		return metricOf(t, hc, p.URL("/metrics"), "provenanced_config_last_reload_successful") == 1
	})
	if k, err := c.Key(ctx, "signing"); err != nil || k.Serial != serial {
		t.Errorf("after the good reload: %+v %v, want serial %s", k, err, serial)
	}
	if !strings.Contains(p.Output(), "takes effect only at a restart") || !strings.Contains(p.Output(), "server.pprof") {
		t.Errorf("the log does not say the pprof change needs a restart:\n%s", p.Output())
	}
}

// serve -check opens and checks everything, serves nothing, and exits 0 or 2.
func TestServeCheck(t *testing.T) {
	s := newReloadSetup(t)
	s.writeConfig(t, true, "http", "127.0.0.1:0")
	out, code := testenv.Run(daemonBin, nil, "serve", "-check", "-config", s.config)
	// Each key says what was checked: "other" has no certificate, and is not said to
	// have a valid one.
	if code != 0 || !strings.Contains(out, ": ok\n") || !strings.Contains(out, "key signing (pem): opened, a test signature verified, certificate serial") ||
		!strings.Contains(out, "key other (pem): opened, a test signature verified, no certificate") || strings.Contains(out, "valid certificates") {
		t.Errorf("a good config: exit %d: %s", code, out)
	}
	if _, err := os.Lstat(s.socket()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("serve -check created the socket: %v", err)
	}

	// A certificate that has expired: serve would start unready; -check says no.
	m := devsetup.DevMember(time.Now())
	m.NotBefore, m.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour)
	leaf, err := s.pki.Issue(&s.key.PublicKey, m)
	if err != nil {
		t.Fatal(err)
	}
	devsetup.WriteFileAtomic(s.files.Bundle, s.pki.Bundle(leaf), 0o644)
	out, code = testenv.Run(daemonBin, nil, "serve", "-check", "-config", s.config)
	if code != 2 || !strings.Contains(out, "expired") || !strings.Contains(out, s.config) {
		t.Errorf("an expired certificate: exit %d: %s", code, out)
	}

	os.Remove(filepath.Join(s.dir, "other-key.pem"))
	out, code = testenv.Run(daemonBin, nil, "serve", "-check", "-config", s.config)
	if code != 2 || !strings.Contains(out, "keys.other.private_key") {
		t.Errorf("a missing key file: exit %d: %s", code, out)
	}
}

// notifyListener is a NOTIFY_SOCKET: the datagram socket systemd listens on, each
// message a state the daemon sent.
type notifyListener struct {
	path string
	conn *net.UnixConn
	msgs chan string
}

func listenNotify(t *testing.T) *notifyListener {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifyListener{path: path, conn: conn, msgs: make(chan string, 64)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				close(n.msgs)
				return
			}
			n.msgs <- string(buf[:k])
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return n
}

// next returns the next state sent, failing after 10 s.
func (n *notifyListener) next(t *testing.T) string {
	t.Helper()
	select {
	case m, ok := <-n.msgs:
		if !ok {
			t.Fatal("NOTIFY_SOCKET closed")
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("nothing sent to NOTIFY_SOCKET within 10 s")
	}
	return ""
}

// Socket activation through systemd-socket-activate (systemd's own tool, which passes
// the fds and LISTEN_* as systemd does), with a NOTIFY_SOCKET the test listens on: the
// daemon serves the passed Unix socket, TCP socket and metrics socket, says READY=1,
// RELOADING=1 and READY=1 around a reload, STOPPING=1, and leaves the socket file to
// systemd.
func TestSocketActivationAndNotify(t *testing.T) {
	activate, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Fatalf("systemd-socket-activate (Debian package systemd) is needed: %v", err)
	}
	s := newReloadSetup(t)
	httpAddr, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	// The config names the same socket; the daemon must take systemd's, not make its own.
	s.writeConfig(t, false, "http", "")
	notify := listenNotify(t)
	cmd := exec.Command(activate, "-l", s.socket(), "-l", httpAddr, "-l", metricsAddr, "--fdname=socket:http:metrics",
		"-E", "NOTIFY_SOCKET="+notify.path, "-E", "PATH",
		daemonBin, "serve", "-config", s.config)
	var out strings.Builder
	var outMu sync.Mutex
	cmd.Stdout = writerFunc(func(b []byte) (int, error) { outMu.Lock(); defer outMu.Unlock(); return out.Write(b) })
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // to kill whatever it started
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	output := func() string { outMu.Lock(); defer outMu.Unlock(); return out.String() }
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
			t.Logf("output:\n%s", output())
		}
	})
	waitFor(t, "systemd-socket-activate to listen", func() bool {
		_, err := os.Lstat(s.socket())
		return err == nil
	})
	sockInfo, _ := os.Lstat(s.socket())
	// The first connection starts the daemon (systemd-socket-activate execs it, same PID).
	c, err := client.New(client.Options{Socket: s.socket()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d := sha256.Sum256([]byte("activated"))
	sig, err := c.SignDigest(ctx, "signing", d[:])
	if err != nil || !ecdsa.VerifyASN1(&s.key.PublicKey, d[:], sig) {
		t.Fatalf("sign over the passed socket: %v\n%s", err, output())
	}
	if m := notify.next(t); !strings.Contains(m, "READY=1") {
		t.Errorf("first state %q, want READY=1", m)
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get("http://" + httpAddr + "/v1/keys/signing")
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("the passed TCP socket: %v %v", resp, err)
	}
	if resp != nil {
		resp.Body.Close()
	}
	resp, err = hc.Get("http://" + metricsAddr + "/v1/keys/signing")
	if err != nil || resp.StatusCode != 404 {
		t.Errorf("the passed metrics socket serves a key: %v %v", resp, err)
	}
	if resp != nil {
		resp.Body.Close()
	}
	resp, err = hc.Get("http://" + metricsAddr + "/metrics")
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("the passed metrics socket: %v %v", resp, err)
	}
	if resp != nil {
		resp.Body.Close()
	}

	cmd.Process.Signal(syscall.SIGHUP)
	if m := notify.next(t); !strings.Contains(m, "RELOADING=1") || !strings.Contains(m, "MONOTONIC_USEC=") {
		t.Errorf("state at reload %q, want RELOADING=1 and MONOTONIC_USEC", m)
	}
	if m := notify.next(t); !strings.Contains(m, "READY=1") {
		t.Errorf("state after the reload %q, want READY=1", m)
	}
	if _, err := c.SignDigest(ctx, "signing", d[:]); err != nil {
		t.Errorf("sign after the reload: %v", err)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	if m := notify.next(t); !strings.Contains(m, "STOPPING=1") {
		t.Errorf("state at SIGTERM %q, want STOPPING=1", m)
	}
	select {
	case <-done:
		if waitErr != nil {
			t.Errorf("exit: %v\n%s", waitErr, output())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the daemon did not stop")
	}
	// systemd owns the socket file: the daemon neither replaced nor removed it.
	if st, err := os.Lstat(s.socket()); err != nil || !os.SameFile(st, sockInfo) {
		t.Errorf("the socket file after the daemon stopped: %v %v", st, err)
	}
	if !strings.Contains(output(), "serving") {
		t.Errorf("no serving line:\n%s", output())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// Run as the original service ran (no config, a .env in the working directory), a
// SIGHUP reads the .env again: a new key, bundle and root CA named there are served.
func TestReloadOriginalEnvFile(t *testing.T) {
	dir := t.TempDir()
	copyVectorPKI(t, dir)
	env := func(prefix, key, bundle string) []byte {
		return []byte("ROOT_CA_CERTIFICATE=" + prefix + "root-ca.pem\nSIGNING_KEY=" + prefix + key + "\nSIGNING_BUNDLE=" + prefix + bundle + "\n")
	}
	os.WriteFile(filepath.Join(dir, ".env"), env("./certs/", "key.pem", "bundle.pem"), 0o600)
	addr, _ := testenv.FreePort()
	cmd := exec.Command(daemonBin, "serve")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PROVENANCED_HTTP="+addr)
	var out strings.Builder
	var mu sync.Mutex
	cmd.Stderr = writerFunc(func(b []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return out.Write(b) })
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	serial := func() string {
		resp, err := http.Get("http://" + addr + "/v1/keys")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		var keys struct{ Keys []client.Key }
		if err := json.NewDecoder(resp.Body).Decode(&keys); err != nil || len(keys.Keys) != 1 {
			return ""
		}
		return keys.Keys[0].Serial
	}
	var first string
	waitFor(t, "the daemon", func() bool { first = serial(); return first != "" })

	_, files, err := devsetup.NewDevFiles(filepath.Join(dir, "new"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, ".env"), env("./new/", "signing-key.pem", "signing-bundle.pem"), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "the .env's new key", func() bool { s := serial(); return s != "" && s != first })
	bundle, _ := os.ReadFile(files.Bundle)
	if leaf := parseLeaf(t, bundle); serial() != leaf.SerialNumber.String() {
		t.Errorf("serving serial %s, the new bundle's is %s", serial(), leaf.SerialNumber)
	}
	status, edp := postJSON(t, http.DefaultClient, "http://"+addr+"/api/v1/sign/edp", testClientEDP)
	if status != 200 {
		t.Fatalf("sign/edp after the reload: %d %s", status, edp)
	}
	if _, err := testenv.IB1Check(edp, files.RootCA, sandboxTF); err != nil {
		t.Errorf("the record signed after the reload does not verify against the new root CA: %v", err)
	}
}

func parseLeaf(t *testing.T, bundle []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(bundle)
	if b == nil {
		t.Fatal("no PEM in the bundle")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A reload brings a new server certificate and a new client CA to the next TLS
// handshake, on the listener the daemon already has: a certificate rotation needs no
// restart, and a client of the retired CA is refused from then on.
func TestReloadRenewsTLS(t *testing.T) {
	certDir := t.TempDir()
	oldClient, oldPool := tlsFiles(t, certDir)
	addr := freeAddr(t)
	p, _, _ := startConfig(t, tlsServer(certDir), addr)
	handshake := func(client tls.Certificate, pool *x509.CertPool) error {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{client}})
		if err != nil {
			return err
		}
		defer c.Close()
		// With TLS 1.3 a refused client certificate shows at the first read.
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"); err != nil {
			return err
		}
		_, err = io.ReadAll(c)
		return err
	}
	if err := handshake(oldClient, oldPool); err != nil {
		t.Fatalf("before the reload: %v", err)
	}
	newClient, newPool := tlsFiles(t, certDir) // a new CA, server and client certificate, same files
	if err := handshake(newClient, newPool); err == nil {
		t.Fatal("the new certificates are served before any reload")
	}
	p.Signal(syscall.SIGHUP)
	waitFor(t, "the new server certificate", func() bool { return handshake(newClient, newPool) == nil })
	if err := handshake(oldClient, oldPool); err == nil {
		t.Error("a client of the retired CA still gets through after the reload")
	}
	if !strings.Contains(p.Output(), "reloaded") || strings.Contains(p.Output(), "reload failed") {
		t.Errorf("the log:\n%s", p.Output())
	}
}

// log_level applies from the reload: request lines (info) appear once it says "info".
func TestReloadLogLevel(t *testing.T) {
	s := newReloadSetup(t)
	s.writeConfig(t, false, "http", "", "log_level", "warn")
	p := testenv.StartDaemon(t, daemonBin, s.socket(), "", nil, "serve", "-config", s.config)
	hc := p.Client()
	get := func() {
		resp, err := hc.Get(p.URL("/v1/keys"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	get()
	s.writeConfig(t, false, "http", "", "log_level", "info")
	p.Signal(syscall.SIGHUP)
	waitFor(t, "the reload", func() bool { return strings.Contains(p.Output(), "configuration reloaded") })
	if strings.Contains(p.Output(), `"route":"GET /v1/keys"`) {
		t.Fatalf("a request line at log_level warn:\n%s", p.Output())
	}
	get()
	waitFor(t, "a request line at info", func() bool { return strings.Contains(p.Output(), `"route":"GET /v1/keys"`) })
}

// A datagram socket passed by mistake (ListenDatagram= instead of ListenStream=) is
// refused at start with a message that says which to use, not at the first accept.
func TestSocketActivationRefusesDatagrams(t *testing.T) {
	activate, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Fatalf("systemd-socket-activate (Debian package systemd) is needed: %v", err)
	}
	s := newReloadSetup(t)
	s.writeConfig(t, false, "http", "")
	dgram := filepath.Join(s.dir, "dgram.sock")
	cmd := exec.Command(activate, "--datagram", "-l", dgram, daemonBin, "serve", "-config", s.config)
	var out strings.Builder
	var mu sync.Mutex
	cmd.Stdout = writerFunc(func(b []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return out.Write(b) })
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	defer func() {
		select {
		case <-done:
		default:
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}()
	waitFor(t, "the datagram socket", func() bool { _, err := os.Lstat(dgram); return err == nil })
	// A datagram starts the daemon.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: dgram, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("x"))
	c.Close()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the daemon did not exit")
	}
	mu.Lock()
	defer mu.Unlock()
	if cmd.ProcessState.ExitCode() == 0 || !strings.Contains(out.String(), "not a listening stream socket") || !strings.Contains(out.String(), "ListenStream=") {
		t.Errorf("exit %d:\n%s", cmd.ProcessState.ExitCode(), out.String())
	}
	if strings.Contains(out.String(), "serving") {
		t.Errorf("it served:\n%s", out.String())
	}
}

// A reload reads the clients and their token files again and reopens the audit file:
// after logrotate's move and a new token, the old token is refused, the new one signs,
// and the audit chain runs on unbroken across the two files.
func TestReloadClientsAndAudit(t *testing.T) {
	s := newReloadSetup(t)
	tokenFile := filepath.Join(s.dir, "app.token")
	if err := os.WriteFile(tokenFile, []byte("first-token-3JxQ9pLz2W\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.newConfig(false, "http", "").
		Table("clients.app", "token_file", "app.token", "keys", []string{"signing"}, "allow", []string{"sign"}).
		Table("audit", "file", "audit.jsonl").
		WriteFile(t, s.config)
	p := testenv.StartDaemon(t, daemonBin, s.socket(), "", nil, "serve", "-config", s.config)
	hc := p.Client()
	sign := func(token string) int {
		t.Helper()
		d := sha256.Sum256([]byte(token))
		req, _ := http.NewRequest("POST", p.URL("/v1/keys/signing/sign"), strings.NewReader(`{"digest":"`+base64Std(d[:])+`"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := sign("first-token-3JxQ9pLz2W"); code != 200 {
		t.Fatalf("first token before the reload: %d\n%s", code, p.Output())
	}
	audit := filepath.Join(s.dir, "audit.jsonl")
	if err := os.Rename(audit, audit+".1"); err != nil { // logrotate
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte("second-token-7MvR4kYb8T\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.Signal(syscall.SIGHUP)
	waitFor(t, "the reload", func() bool { return strings.Contains(p.Output(), "configuration reloaded") })
	if code := sign("first-token-3JxQ9pLz2W"); code != http.StatusUnauthorized {
		t.Errorf("the replaced token after the reload: %d, want 401", code)
	}
	if code := sign("second-token-7MvR4kYb8T"); code != 200 {
		t.Errorf("the new token after the reload: %d", code)
	}
	if _, err := os.Stat(audit); err != nil {
		t.Fatalf("no new audit file after the reload: %v", err)
	}
	out, code := testenv.Run(daemonBin, nil, "audit", "verify", audit+".1", audit)
	if code != 0 {
		t.Errorf("audit verify across the rotation: exit %d: %s", code, out)
	}
}

func base64Std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
