//go:build cgo

package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ib1/provenanced/client"
	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/provenance"
	"github.com/ib1/provenanced/testenv"
)

// The daemon with keys in PKCS#11 tokens: the real binary, as a subprocess with a token of
// its own (SoftHSM, a TPM through tpm2-pkcs11 on swtpm and tpm2-abrmd, or SoftHSM through
// p11-kit-proxy: testenv.NewHSM), talked to over its Unix socket as a client would. The
// tests of the backend's own code, in process, are backends/pkcs11's.

// tokenDaemon is the daemon run as a subprocess on a token, with a client of its socket.
type tokenDaemon struct {
	*testenv.Process
	c  *client.Client
	hc *http.Client
}

func daemonEnv(h *testenv.HSM, env ...string) []string {
	return append(append(h.Env(), "PROVENANCED_HTTP=off"), env...)
}

// startOnToken runs the daemon on config, in the environment h's token needs, and waits
// until it answers /healthz.
func startOnToken(t *testing.T, h *testenv.HSM, config string, env ...string) *tokenDaemon {
	t.Helper()
	p := testenv.StartDaemon(t, daemonBin, h.Socket, "", daemonEnv(h, env...), "serve", "-config", config)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon log:\n%s", p.Output())
		}
	})
	c, err := client.New(client.Options{Socket: h.Socket})
	if err != nil {
		t.Fatal(err)
	}
	return &tokenDaemon{Process: p, c: c, hc: p.Client()}
}

// get returns the status and body of a GET.
func (d *tokenDaemon) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := d.hc.Get(d.URL(path))
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var backendUp = regexp.MustCompile(`(?m)^provenanced_backend_up\{backend="pkcs11",key="signing"\} (\d)$`)

func (d *tokenDaemon) backendUp(t *testing.T) string {
	t.Helper()
	_, body := d.get(t, "/metrics")
	m := backendUp.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no provenanced_backend_up for the key in /metrics")
	}
	return m[1]
}

// runFailing runs the daemon on config, expects it to exit by itself, and returns its
// exit status and output.
func runFailing(t *testing.T, h *testenv.HSM, config string, env ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, daemonBin, "serve", "-config", config)
	cmd.Env = append(os.Environ(), daemonEnv(h, env...)...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if ctx.Err() != nil || !errors.As(err, &ee) {
		t.Fatalf("the daemon did not fail by itself (%v):\n%s", err, out)
	}
	return ee.ExitCode(), string(out)
}

func pubPEM(t *testing.T, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// The daemon on each kind of token: SoftHSM, a TPM through tpm2-pkcs11, and SoftHSM
// through p11-kit-proxy.
func TestPKCS11DaemonSigns(t *testing.T) {
	for _, kind := range testenv.Kinds {
		t.Run(kind, func(t *testing.T) { testPKCS11DaemonSigns(t, kind) })
	}
}

func testPKCS11DaemonSigns(t *testing.T, kind string) {
	h := testenv.NewHSM(t, testenv.HSMOptions{Kind: kind, MaxSessions: 4})
	d := startOnToken(t, h, h.Config)
	ctx := context.Background()

	keys, err := d.c.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0].Name != "signing" || keys[0].Backend != "pkcs11" || keys[0].Serial != h.Leaf.SerialNumber.String() {
		t.Fatalf("keys: %+v", keys)
	}
	if keys[0].PublicKey != string(pubPEM(t, h.Public)) {
		t.Fatalf("the daemon's public key is not the token's:\n%s", keys[0].PublicKey)
	}
	// Verify against the public key the API returned, as a client would.
	block, _ := pem.Decode([]byte(keys[0].PublicKey))
	apiPub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}

	messages := [][]byte{[]byte("hello"), {}, bytes.Repeat([]byte{0xff}, 4096)}
	for range 9 {
		m := make([]byte, 1+len(messages))
		rand.Read(m)
		messages = append(messages, m)
	}
	for _, m := range messages {
		sig, err := d.c.SignMessage(ctx, "signing", m)
		if err != nil {
			t.Fatal(err)
		}
		opensslVerify(t, keys[0].PublicKey, m, sig)
	}

	// Many clients at once, more than max_sessions: every signature good.
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			digests := make([][]byte, 50)
			for i := range digests {
				d := sha256.Sum256(fmt.Appendf(nil, "%d/%d", g, i))
				digests[i] = d[:]
			}
			res, err := d.c.SignDigests(ctx, "signing", digests)
			if err != nil {
				errs <- err
				return
			}
			for i, r := range res {
				if r.Err != nil || !ecdsa.VerifyASN1(apiPub.(*ecdsa.PublicKey), digests[i], r.Signature) {
					errs <- fmt.Errorf("batch %d item %d: %v", g, i, r.Err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// A digest that is not 32 bytes is refused, not signed in part.
	var apiErr *client.Error
	if _, err := d.c.SignDigest(ctx, "signing", make([]byte, 48)); !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadRequest {
		t.Errorf("a 48-byte digest: %v, want 400", err)
	}

	// The PIN is nowhere to be seen: not in the log, the metrics or the command line.
	_, metrics := d.get(t, "/metrics")
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", d.Cmd.Process.Pid))
	for what, text := range map[string]string{"log": d.Output(), "metrics": metrics, "command line": string(cmdline)} {
		if strings.Contains(text, h.PIN) {
			t.Errorf("the PIN appears in the %s", what)
		}
	}
	if code, body := d.get(t, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz: %d %s", code, body)
	}
	if !regexp.MustCompile(`(?m)^provenanced_pkcs11_session_wait_seconds_count\{key="signing"\} [1-9]`).MatchString(metrics) {
		t.Errorf("no session waits for the key in /metrics")
	}
	jsonLog(t, d.Output())
}

// logSays reports whether the daemon's log says s, within 2 s: this process reads the
// daemon's stderr through a pipe, which may lag behind its answers.
func (d *tokenDaemon) logSays(s string) bool {
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if strings.Contains(d.Output(), s) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// jsonLog checks that every line of the daemon's output is a JSON object: nothing a
// module prints on its own (tpm2-tss, p11-kit) is mixed into the log.
func jsonLog(t *testing.T, out string) {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Errorf("a log line that is not JSON: %q", line)
		}
	}
}

// remoteKey is a crypto.Signer whose signatures come from the daemon.
type remoteKey struct {
	c   *client.Client
	pub crypto.PublicKey
}

func (k remoteKey) Public() crypto.PublicKey { return k.pub }

func (k remoteKey) Sign(_ io.Reader, digest []byte, _ crypto.SignerOpts) ([]byte, error) {
	return k.c.SignDigest(context.Background(), "signing", digest)
}

// A provenance record signed with the daemon's signatures verifies with provenanced's
// verifier and with the independent Python checker.
// An IB1 record signed by the daemon on each kind of token.
func TestPKCS11DaemonSignsARecord(t *testing.T) {
	for _, kind := range testenv.Kinds {
		t.Run(kind, func(t *testing.T) { testPKCS11DaemonSignsARecord(t, kind) })
	}
}

func testPKCS11DaemonSignsARecord(t *testing.T, kind string) {
	h := testenv.NewHSM(t, testenv.HSMOptions{Kind: kind})
	d := startOnToken(t, h, h.Config)
	now := time.Now()
	b := provenance.NewBuilder(devsetup.SandboxTrustFramework, now, nil)
	origin, err := b.AddStep(provenance.NewStep("origin", provenance.Member{Key: "scheme", Value: devsetup.SandboxScheme}, provenance.Member{Key: "sourceType", Value: "https://registry.core.sandbox.trust.ib1.org/scheme/perseus/source-type/Meter"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.AddStep(provenance.NewStep("transfer", provenance.Member{Key: "of", Value: origin}, provenance.Member{Key: "to", Value: "https://member.core.sandbox.trust.ib1.org/a/cap"})); err != nil {
		t.Fatal(err)
	}
	rec, err := b.Sign(context.Background(), remoteKey{d.c, h.Public}, []*x509.Certificate{h.Leaf, h.PKI.Issuer.Cert})
	if err != nil {
		t.Fatal(err)
	}
	data, err := rec.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	v, err := provenance.NewVerifier([]*x509.Certificate{h.PKI.Root.Cert}, devsetup.SandboxTrustFramework)
	if err != nil {
		t.Fatal(err)
	}
	if _, steps, err := v.VerifyJSON(data); err != nil || len(steps) != 2 {
		t.Fatalf("provenanced's verifier: %v (%d steps)", err, len(steps))
	}
	recFile := filepath.Join(t.TempDir(), "record.json")
	if err := os.WriteFile(recFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("python3", "../../provenance/testdata/ib1check.py", "verify", "--root", h.Files.RootCA, "--framework", devsetup.SandboxTrustFramework, recFile).CombinedOutput()
	if err != nil {
		t.Fatalf("ib1check.py verify (needs python3 and python3-cryptography: see .ci/run): %v\n%s", err, out)
	}
	var decoded []map[string]any
	if err := json.Unmarshal(out, &decoded); err != nil || len(decoded) != 2 {
		t.Fatalf("ib1check.py printed %s", out)
	}
}

// Faults at start are config errors (exit status 2) that say which thing is wrong, once.
func TestPKCS11DaemonStartupFaults(t *testing.T) {
	t.Run("wrong PIN", func(t *testing.T) {
		h := testenv.NewHSM(t, testenv.HSMOptions{})
		start := time.Now()
		code, stderr := runFailing(t, h, writeVariant(t, h, "pin", "env:HSM_PIN"), "HSM_PIN=wrong-pin-1234")
		expectExit(t, code, stderr, "keys.signing.pin", `token "provenance" rejected the PIN from env:HSM_PIN`, "will not try that PIN again")
		for _, secret := range []string{"wrong-pin-1234", h.PIN} {
			if strings.Contains(stderr, secret) {
				t.Errorf("stderr contains a PIN: %s", stderr)
			}
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("took %v to give up", took)
		}
		// Restarted, as a service manager would: no PIN is offered now, so a restart loop
		// cannot lock the token.
		code, stderr = runFailing(t, h, writeVariant(t, h, "pin", "env:HSM_PIN"), "HSM_PIN=wrong-pin-1234")
		expectExit(t, code, stderr, "keys.signing.pin", "has seen a wrong user PIN since its last good login")
		// One wrong PIN did not lock the token: the right one still works.
		if _, err := h.Run("pkcs11-tool", "--token-label", h.Token, "--login", "--pin", h.PIN, "--list-objects"); err != nil {
			t.Errorf("the right PIN after the wrong one: %v", err)
		}
	})
	t.Run("missing token", func(t *testing.T) {
		h := testenv.NewHSM(t, testenv.HSMOptions{})
		code, stderr := runFailing(t, h, writeVariant(t, h, "token_label", "absent"))
		expectExit(t, code, stderr, "keys.signing.token_label", `no token with label "absent"`, `"provenance" (serial`)
	})
	t.Run("missing key", func(t *testing.T) {
		h := testenv.NewHSM(t, testenv.HSMOptions{})
		code, stderr := runFailing(t, h, writeVariant(t, h, "key_label", nil, "key_id", "42"))
		expectExit(t, code, stderr, "keys.signing.key_id", `no private key with id 42 on token "provenance"`)
	})
	t.Run("RSA key", func(t *testing.T) {
		h := testenv.NewHSM(t, testenv.HSMOptions{KeyType: "rsa:2048"})
		code, stderr := runFailing(t, h, h.Config)
		expectExit(t, code, stderr, "keys.signing.key_label", "is an RSA key", "EC P-256 only")
	})
	t.Run("P-384 key", func(t *testing.T) {
		h := testenv.NewHSM(t, testenv.HSMOptions{KeyType: "EC:secp384r1"})
		code, stderr := runFailing(t, h, h.Config)
		expectExit(t, code, stderr, "keys.signing.key_label", "P-384", "EC P-256 only")
	})
	t.Run("certificate of another key", func(t *testing.T) {
		h := testenv.NewHSM(t, testenv.HSMOptions{})
		other, err := devsetup.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := h.PKI.Issue(&other.PublicKey, devsetup.DevMember(time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(h.Files.Bundle, h.PKI.Bundle(leaf), 0o644); err != nil {
			t.Fatal(err)
		}
		code, stderr := runFailing(t, h, h.Config)
		expectExit(t, code, stderr, "keys.signing.certificates", "is not for the key in PKCS#11 token \"provenance\" key label \"signing\"")
	})
}

// writeVariant writes the fixture's config with keys of [keys.signing] changed (key,
// value pairs; a nil value removes the key) beside the fixture's own, and returns its path.
func writeVariant(t *testing.T, h *testenv.HSM, kv ...any) string {
	t.Helper()
	return h.NewConfig().Table("keys.signing", kv...).WriteFile(t, filepath.Join(filepath.Dir(h.Config), "variant.toml"))
}

func expectExit(t *testing.T, code int, stderr, key string, says ...string) {
	t.Helper()
	if code != 2 {
		t.Errorf("exit status %d, want 2 (a config error)", code)
	}
	if !strings.Contains(stderr, ": "+key+": ") {
		t.Errorf("the message does not name %s:\n%s", key, stderr)
	}
	for _, s := range says {
		if !strings.Contains(stderr, s) {
			t.Errorf("the message does not say %q:\n%s", s, stderr)
		}
	}
}

// unavailable checks that the daemon says the key cannot sign, everywhere it should: the
// answer names the key and a request id, the log says why (the token's label and the
// module stay out of answers).
func (d *tokenDaemon) unavailable(t *testing.T, says string) {
	t.Helper()
	_, err := d.c.SignDigest(context.Background(), "signing", make([]byte, 32))
	var apiErr *client.Error
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusServiceUnavailable || apiErr.Code != "unavailable" {
		t.Fatalf("signing while the token is away: %v, want 503 unavailable", err)
	}
	_, id, _ := strings.Cut(apiErr.Message, "request id ")
	if !strings.Contains(apiErr.Message, `key "signing" cannot sign now`) || id == "" || strings.Contains(apiErr.Message, says) {
		t.Errorf("the 503 should name the key and a request id, and not say %q: %s", says, apiErr.Message)
	}
	// The daemon writes the line before it answers, but this process reads its stderr
	// through a pipe, which may lag behind the answer.
	var logged bool
	for deadline := time.Now().Add(2 * time.Second); !logged && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, line := range strings.Split(d.Output(), "\n") {
			logged = logged || strings.Contains(line, id) && strings.Contains(line, strings.ReplaceAll(says, `"`, `\"`))
		}
	}
	if !logged {
		t.Errorf("the log has no line with request id %s saying %q:\n%s", id, says, d.Output())
	}
	if up := d.backendUp(t); up != "0" {
		t.Errorf("provenanced_backend_up = %s, want 0", up)
	}
	if code, body := d.get(t, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, `key \"signing\" (pkcs11)`) {
		t.Errorf("/readyz: %d %s, want 503 naming the key", code, body)
	}
}

// recovers waits for the daemon to find the key again by itself, and checks that it signs.
func (d *tokenDaemon) recovers(t *testing.T, pid int, pub crypto.PublicKey) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := d.get(t, "/readyz")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not recover: /readyz %d %s", code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	digest := sha256.Sum256([]byte("back"))
	sig, err := d.c.SignDigest(context.Background(), "signing", digest[:])
	if err != nil || !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest[:], sig) {
		t.Fatalf("signing after recovery: %v", err)
	}
	if up := d.backendUp(t); up != "1" {
		t.Errorf("provenanced_backend_up = %s after recovery, want 1", up)
	}
	if d.Cmd.Process.Pid != pid || d.Cmd.Process.Signal(syscall.Signal(0)) != nil {
		t.Fatal("the daemon exited or was restarted")
	}
}

func TestPKCS11DaemonRecoversWhenTheTokenComesBack(t *testing.T) {
	h := testenv.NewHSM(t, testenv.HSMOptions{})
	d := startOnToken(t, h, h.Config)
	pid := d.Cmd.Process.Pid
	if _, err := d.c.SignDigest(context.Background(), "signing", make([]byte, 32)); err != nil {
		t.Fatal(err)
	}
	putBack, err := h.RemoveToken(h.Token)
	if err != nil {
		t.Fatal(err)
	}
	d.unavailable(t, `no token with label "provenance"`)
	if err := putBack(); err != nil {
		t.Fatal(err)
	}
	d.recovers(t, pid, h.Public)
}

func TestPKCS11DaemonRecoversWhenTheTokenIsRestored(t *testing.T) {
	h := testenv.NewHSM(t, testenv.HSMOptions{})
	d := startOnToken(t, h, h.Config)
	pid := d.Cmd.Process.Pid
	if _, err := d.c.SignDigest(context.Background(), "signing", make([]byte, 32)); err != nil {
		t.Fatal(err)
	}
	restore, err := h.SnapshotToken(h.Token)
	if err != nil {
		t.Fatal(err)
	}
	// Initialised again behind the daemon's back: the key is gone.
	if err := h.InitToken(h.Token, h.SOPIN, h.PIN); err != nil {
		t.Fatal(err)
	}
	d.unavailable(t, `no private key with label "signing" on token "provenance"`)
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	d.recovers(t, pid, h.Public)
}

// requestID finds the request id that an answer names for its log line.
var requestID = regexp.MustCompile(`request id ([0-9a-f]+)`)

// A key that is down (its TPM died) and whose reconnection then hangs in the module
// (tpm2-abrmd stopped with SIGSTOP, so every call through it waits): the readiness
// check's reconnection is given up at its own bound and counted as stuck; Ready says
// so, and a new signature fails at once, rather than queueing for sign_timeout behind
// the reconnection that holds the key.
func TestPKCS11DaemonOnAKeyWhoseReconnectHangs(t *testing.T) {
	const signTimeout = 20 * time.Second
	h := testenv.NewHSM(t, testenv.HSMOptions{Kind: testenv.KindTPM, MaxSessions: 3})
	// A 1s readiness interval bounds each background reconnection at 1s: it is that
	// check, not a request, that meets the hang first.
	config := h.NewConfig().Table("server", "sign_timeout", signTimeout.String()).Table("keys.signing", "ready_check_interval", "1s").
		WriteFile(t, filepath.Join(filepath.Dir(h.Config), "hang.toml"))
	d := startOnToken(t, h, config)
	// A request that waited out sign_timeout fails here within a few seconds of it, not
	// at the test binary's timeout.
	sign := func() (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), signTimeout+10*time.Second)
		defer cancel()
		start := time.Now()
		_, err := d.c.SignDigest(ctx, "signing", make([]byte, 32))
		return time.Since(start), err
	}
	if _, err := sign(); err != nil {
		t.Fatal(err)
	}

	// Down: swtpm gone, abrmd still answering, so the failures are quick and the key
	// gives up its connection.
	h.TPM.KillSWTPM()
	var apiErr *client.Error
	if _, err := sign(); !errors.As(err, &apiErr) || apiErr.Status != http.StatusServiceUnavailable {
		t.Fatalf("signing with the TPM dead: %v, want 503", err)
	}
	// Hung: from here every reconnection waits inside the module.
	if err := h.TPM.PauseABRMD(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.TPM.ResumeABRMD() })

	// /readyz names the key and a request id; the log line of that id has Ready's error.
	var reason string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		code, body := d.get(t, "/readyz")
		if m := requestID.FindStringSubmatch(body); code == http.StatusServiceUnavailable && m != nil {
			if line := d.logLine(m[1]); line != "" {
				reason = line
			}
			if strings.Contains(reason, "have not returned") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("Ready never said the reconnection is stuck: /readyz %d %s; last reason logged: %s", code, body, reason)
		}
	}

	took, err := sign()
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusServiceUnavailable {
		t.Fatalf("signing while the reconnection hangs: %v, want 503", err)
	}
	// Not a measure of speed: a signature that queued behind the reconnection would take
	// all of sign_timeout.
	if took > signTimeout/4 {
		t.Errorf("the signature was refused after %v (sign_timeout %v): it waited for the hung reconnection", took, signTimeout)
	}
	if m := requestID.FindStringSubmatch(apiErr.Message); m == nil {
		t.Errorf("the refusal names no request id: %s", apiErr.Message)
	} else {
		var line string
		for deadline := time.Now().Add(5 * time.Second); line == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			line = d.logLine(m[1])
		}
		if !strings.Contains(line, "have not returned") {
			t.Errorf("the refusal's log line does not say calls are stuck: %q", line)
		}
	}
	jsonLog(t, d.Output())
}

// logLine is the daemon's log line with request_id id, or "" (so far).
func (d *tokenDaemon) logLine(id string) string {
	for _, line := range strings.Split(d.Output(), "\n") {
		if strings.Contains(line, `"request_id":"`+id+`"`) {
			return line
		}
	}
	return ""
}

// provenanced keygen makes the key in the token, refuses to make it twice, and the daemon
// serves it once it has a certificate.
// keygen, a CSR signed in the token, and serving the new key, on each kind of token.
func TestPKCS11KeygenThenServe(t *testing.T) {
	for _, kind := range testenv.Kinds {
		t.Run(kind, func(t *testing.T) { testPKCS11KeygenThenServe(t, kind) })
	}
}

func testPKCS11KeygenThenServe(t *testing.T, kind string) {
	h := testenv.NewHSM(t, testenv.HSMOptions{Kind: kind, NoKey: true})
	env := daemonEnv(h)
	out, code := testenv.Run(daemonBin, env, "keygen", "-config", h.Config, "-key", "signing")
	if code != 0 {
		t.Fatalf("keygen: exit %d: %s", code, out)
	}
	block, _ := pem.Decode([]byte(out[strings.Index(out, "-----BEGIN"):]))
	if block == nil {
		t.Fatalf("keygen printed no PEM public key: %s", out)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	inToken, err := h.PublicKey(h.Token, testenv.KeySpec{Label: h.KeyLabel})
	if err != nil || !pub.(*ecdsa.PublicKey).Equal(inToken) {
		t.Fatalf("keygen printed a key that is not the token's (%v)", err)
	}
	// A CSR for the new key, signed in the token: openssl accepts it, and it is for the
	// token's key.
	csrFile := filepath.Join(filepath.Dir(h.Config), "signing.csr")
	if out, code := testenv.Run(daemonBin, env, "csr", "-config", h.Config, "-key", "signing",
		"-subject", "/C=GB/O=HSM Member Ltd/CN=https://member.example/a/7", "-uri", "https://member.example/a/7", "-out", csrFile); code != 0 {
		t.Fatalf("csr: exit %d: %s", code, out)
	}
	csrPEM, err := os.ReadFile(csrFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.CheckCSR(csrPEM, inToken); err != nil {
		t.Fatal(err)
	}
	out, code = testenv.Run(daemonBin, env, "keygen", "-config", h.Config, "-key", "signing")
	if code != 2 || !strings.Contains(out, "never overwrites") {
		t.Fatalf("a second keygen: exit %d: %s", code, out)
	}
	again, err := h.PublicKey(h.Token, testenv.KeySpec{Label: h.KeyLabel})
	if err != nil || !pub.(*ecdsa.PublicKey).Equal(again) {
		t.Fatalf("the key changed after the second keygen (%v)", err)
	}

	leaf, err := h.PKI.Issue(pub, devsetup.DevMember(time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(filepath.Dir(h.Config), "generated-bundle.pem")
	if err := os.WriteFile(bundle, h.PKI.Bundle(leaf), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startOnToken(t, h, writeVariant(t, h, "certificates", "generated-bundle.pem"))
	digest := sha256.Sum256([]byte("generated"))
	sig, err := d.c.SignDigest(context.Background(), "signing", digest[:])
	if err != nil || !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest[:], sig) {
		t.Fatalf("signing with the generated key: %v", err)
	}
}

// A TPM that hangs (swtpm stopped with SIGSTOP), then comes back, then dies, with the
// daemon serving it. While it hangs a request gets 503 at sign_timeout, /readyz answers
// at once and says 503, and the key is back when the TPM is; when it dies /readyz turns
// 503 within 15 s with no traffic at all (the periodic test signature finds it), refused
// requests are counted rather than logged one by one, and when the TPM is started again
// the key comes back without a restart. The log stays JSON throughout.
func TestPKCS11DaemonOnAHungThenDeadTPM(t *testing.T) {
	h := testenv.NewHSM(t, testenv.HSMOptions{Kind: testenv.KindTPM, MaxSessions: 3})
	// ready_check_interval is left at its default (5s): that is what must find a dead TPM
	// within 15 s.
	config := h.NewConfig().Table("server", "sign_timeout", "1s").WriteFile(t, filepath.Join(filepath.Dir(h.Config), "outage.toml"))
	d := startOnToken(t, h, config)
	pid := d.Cmd.Process.Pid
	if _, err := d.c.SignDigest(context.Background(), "signing", make([]byte, 32)); err != nil {
		t.Fatal(err)
	}

	if err := h.TPM.Pause(); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			h.TPM.Resume()
		}
	}()
	start := time.Now()
	_, err := d.c.SignDigest(context.Background(), "signing", make([]byte, 32))
	var apiErr *client.Error
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusServiceUnavailable {
		t.Fatalf("signing on a hung TPM: %v, want 503", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the request on a hung TPM took %v; sign_timeout is 1s", took)
	}
	start = time.Now()
	code, body := d.get(t, "/readyz")
	if took := time.Since(start); took > time.Second {
		t.Errorf("/readyz took %v on a hung TPM", took)
	}
	// /readyz answers at once from what the failed signature showed; the background
	// check (every 5 s, itself bounded by 5 s) then logs the token's own reason.
	if code != http.StatusServiceUnavailable {
		t.Errorf("/readyz on a hung TPM: %d %s", code, body)
	}
	for wait := time.Now(); !d.logSays("have not returned"); time.Sleep(100 * time.Millisecond) {
		if time.Since(wait) > 12*time.Second {
			t.Errorf("the log does not say the sessions have not returned")
			break
		}
	}
	if up := d.backendUp(t); up != "0" {
		t.Errorf("provenanced_backend_up = %s on a hung TPM, want 0", up)
	}
	if err := h.TPM.Resume(); err != nil {
		t.Fatal(err)
	}
	resumed = true
	d.recovers(t, pid, h.Public)

	h.TPM.KillSWTPM()
	start = time.Now()
	for {
		code, body := d.get(t, "/readyz")
		if code == http.StatusServiceUnavailable {
			break
		}
		if time.Since(start) > 15*time.Second {
			t.Fatalf("/readyz still %d %s 15s after the TPM died", code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("/readyz said 503 %v after the TPM died", time.Since(start).Round(100*time.Millisecond))
	// A client looping on a dead key: its refusals are counted, not logged one by one.
	for range 50 {
		if _, err := d.c.SignDigest(context.Background(), "signing", make([]byte, 32)); err == nil {
			t.Fatal("signed on a dead TPM")
		}
	}
	out := d.Output()
	if n := strings.Count(out, `"status":503`); n > 0 {
		t.Errorf("%d request lines for refused signatures in the log", n)
	}
	if !d.logSays(`"msg":"key cannot sign"`) {
		t.Errorf("no line in the log says the key cannot sign")
	}
	jsonLog(t, out)

	// The TPM back, with its state: the key comes back by itself.
	if err := h.TPM.RestartSWTPM(); err != nil {
		t.Fatal(err)
	}
	d.recovers(t, pid, h.Public)
}

// signs: twenty digests signed by key "signing", each verified with pub.
func (d *tokenDaemon) signs(t *testing.T, pub *ecdsa.PublicKey, when string) {
	t.Helper()
	for i := range 20 {
		digest := sha256.Sum256([]byte{byte(i)})
		sig, err := d.c.SignDigest(t.Context(), "signing", digest[:])
		if err != nil || !ecdsa.VerifyASN1(pub, digest[:], sig) {
			t.Fatalf("signing %s: %v", when, err)
		}
	}
}

// A reload with a renewed bundle keeps the key's open token (sessions, login); one that
// changes the key's table opens the token afresh and closes the old one — which must
// not take the token's login or the module away from the new one: it signs on after.
func TestPKCS11ReloadKeepsTheTokenOpen(t *testing.T) {
	h := testenv.NewHSM(t, testenv.HSMOptions{})
	d := startOnToken(t, h, h.Config)
	ctx := t.Context()
	pub := h.Public.(*ecdsa.PublicKey)
	d.signs(t, pub, "before any reload")
	m := devsetup.DevMember(time.Now())
	m.Serial = big.NewInt(time.Now().UnixNano())
	leaf, err := h.PKI.Issue(h.Public, m)
	if err != nil {
		t.Fatal(err)
	}
	if err := devsetup.WriteFileAtomic(h.Files.Bundle, h.PKI.Bundle(leaf), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Signal(syscall.SIGHUP)
	waitFor(t, "the renewed bundle", func() bool {
		k, err := d.c.Key(ctx, "signing")
		return err == nil && k.Serial == leaf.SerialNumber.String()
	})
	// The log is written in batches: wait for the reload's line.
	waitFor(t, "the reload's log line", func() bool { return strings.Contains(d.Output(), "configuration reloaded") })
	if !strings.Contains(d.Output(), `"kept_open":["signing"]`) {
		t.Errorf("a renewed bundle reopened the token:\n%s", d.Output())
	}
	d.signs(t, pub, "after a reload that kept the token open")

	h.NewConfig().Table("keys.signing", "max_sessions", 3).WriteFile(t, h.Config)
	d.Signal(syscall.SIGHUP)
	waitFor(t, "the reload of the changed key", func() bool { return strings.Contains(d.Output(), `"reopened":["signing"]`) })
	d.signs(t, pub, "after the old token was closed")
	if strings.Contains(d.Output(), "reload failed") {
		t.Errorf("a reload failed:\n%s", d.Output())
	}
}

// A reload that fails on one key (a new table naming a token that is not there) leaves
// the running configuration as it was, and with it the unchanged key that the failed
// build had taken over before it failed: that key stays open and signs. A PKCS#11 key,
// because closing one shows (it signs no more); a PEM key signs on after Close.
func TestPKCS11FailedReloadKeepsTheReusedKeyOpen(t *testing.T) {
	h := testenv.NewHSM(t, testenv.HSMOptions{})
	d := startOnToken(t, h, h.Config)
	pub := h.Public.(*ecdsa.PublicKey)
	d.signs(t, pub, "before the reload")

	// After [keys.signing], so that the build has taken that key over when this one fails.
	h.NewConfig().Table("keys.broken", "backend", "pkcs11", "module", h.Module, "token_label", "no-such-token", "key_label", "signing",
		"pin", "file:"+filepath.Base(h.PINFile)).WriteFile(t, h.Config)
	d.Signal(syscall.SIGHUP)
	waitFor(t, "the failed reload's log line", func() bool { return strings.Contains(d.Output(), "reload failed") })
	// The failure must be the broken key's, met while opening it: one found when reading
	// the config would come before any key is taken over.
	for _, line := range strings.Split(d.Output(), "\n") {
		if strings.Contains(line, "reload failed") && !(strings.Contains(line, "keys.broken") && strings.Contains(line, "no-such-token")) {
			t.Fatalf("the reload failed for another reason than the broken key's token:\n%s", line)
		}
	}
	d.signs(t, pub, "after the failed reload")
	if code, body := d.get(t, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz after the failed reload: %d %s", code, body)
	}
}
