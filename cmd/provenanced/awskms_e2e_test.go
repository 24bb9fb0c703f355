package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/client"
	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/daemon"
	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/testenv"
	"github.com/ib1/provenanced/testenv/fakes3"
)

// The daemon with keys in AWS KMS, served in this process on a Unix socket: daemon.New and
// Serve, as the serve command runs them. What the KMS API does is tested on two emulators,
// local-kms and moto (eachEmulator), each subtest named by its emulator; where moto cannot
// do what a test needs (testenv.KMSQuirks), the test says so and runs on local-kms only. A
// fault proxy in front of an emulator (testenv.KMSProxy) throttles, denies, drops and
// hangs where the emulators cannot. `make race` runs these under the race detector (-run
// '^TestAWSKMS').

// eachEmulator runs f as a subtest per KMS emulator, named by it, with the emulator
// started for it.
func eachEmulator(t *testing.T, f func(t *testing.T, e testenv.KMSEmulator)) {
	for _, em := range testenv.KMSEmulators {
		t.Run(em.Name, func(t *testing.T) { f(t, em.Start(t)) })
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newPKI(t testing.TB) *devsetup.PKI {
	t.Helper()
	pki, err := devsetup.NewPKI(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return pki
}

// kmsConfig loads a config with one key, the KMS key keyID at endpoint with its bundle, in
// a folder of the test's own.
func kmsConfig(t testing.TB, bundle []byte, keyID, endpoint string) *conf.Config {
	t.Helper()
	dir := t.TempDir()
	return testenv.KMSConfig(t, dir, bundle, keyID, endpoint).Load(t, dir)
}

// inProcess is the daemon served in this process on a Unix socket.
type inProcess struct {
	*client.Client
	socket string
	hc     *http.Client
	log    *testenv.SyncBuffer // the daemon's JSON log
}

// startInProcess serves cfg until the test's cleanup, and returns once it listens.
func startInProcess(t testing.TB, cfg *conf.Config) *inProcess {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	listening := make(chan struct{})
	log := &testenv.SyncBuffer{}
	d, err := daemon.New(ctx, cfg, daemon.Options{Logger: slog.New(slog.NewJSONHandler(log, nil)), Listening: func(string, string) { close(listening) }})
	if err != nil {
		cancel()
		t.Fatalf("daemon.New: %v", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- d.Serve(ctx) }()
	select {
	case <-listening:
	case err := <-errc:
		cancel()
		t.Fatalf("the daemon stopped at start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	c, err := client.New(client.Options{Socket: cfg.Server.Socket})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	sock := cfg.Server.Socket
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	return &inProcess{Client: c, socket: sock, hc: hc, log: log}
}

// get returns a route's status and body.
func (d *inProcess) get(t testing.TB, path string) (int, string) {
	t.Helper()
	resp, err := d.hc.Get("http://provenanced" + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// backendUp is provenanced_backend_up of key "signing", as /metrics shows it.
func (d *inProcess) backendUp(t testing.TB) string {
	t.Helper()
	return d.series(t, `provenanced_backend_up{backend="awskms",key="signing"}`)
}

// signCount is the number of signatures of key "signing" timed with outcome.
func (d *inProcess) signCount(t testing.TB, outcome string) string {
	t.Helper()
	return d.series(t, `provenanced_sign_duration_seconds_count{backend="awskms",key="signing",outcome="`+outcome+`"}`)
}

// series is the value of one series (its name and labels as /metrics prints them).
func (d *inProcess) series(t testing.TB, name string) string {
	t.Helper()
	_, body := d.get(t, "/metrics")
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, name+" ") {
			return strings.TrimSpace(line[len(name):])
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return ""
}

// Signatures made through the daemon with a KMS key verify with openssl against the
// public key the daemon lists, which is the certificate's; so do its records. On moto,
// which hashes a DIGEST message again before it signs, none of its signatures verifies:
// there every one is refused (refusesEverySignature).
func TestAWSKMSDaemonSigns(t *testing.T) {
	eachEmulator(t, func(t *testing.T, e testenv.KMSEmulator) {
		pki := newPKI(t)
		key := e.NewSigningKey(t, pki, "alias/provenance")
		d := startInProcess(t, recordsConfig(t, pki, key.Bundle, e.Endpoint()))
		ctx := ctxT(t)

		keys, err := d.Keys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != 1 || keys[0].Backend != "awskms" || keys[0].Serial != key.Cert.SerialNumber.String() {
			t.Fatalf("keys: %+v", keys)
		}
		b, _ := pem.Decode([]byte(keys[0].PublicKey))
		listed, err := x509.ParsePKIXPublicKey(b.Bytes)
		if err != nil || !key.Public.Equal(listed) {
			t.Fatalf("the daemon lists another public key than the KMS key's: %v", err)
		}
		if e.Quirks().DigestHashedAgain {
			d.refusesEverySignature(t)
			return
		}
		d.signsAndVerifies(t, keys[0].PublicKey, key.Public)
	})
}

// signsAndVerifies signs digests, messages, a batch and a record, and checks each.
func (d *inProcess) signsAndVerifies(t *testing.T, pubPEM string, pub *ecdsa.PublicKey) {
	t.Helper()
	ctx := ctxT(t)
	for i := range 5 {
		msg := fmt.Appendf(nil, "provenance record %d", i)
		digest := sha256.Sum256(msg)
		var sig []byte
		var err error
		if i%2 == 0 {
			sig, err = d.SignDigest(ctx, "signing", digest[:])
		} else {
			sig, err = d.SignMessage(ctx, "signing", msg)
		}
		if err != nil {
			t.Fatal(err)
		}
		opensslVerify(t, pubPEM, msg, sig)
	}
	// A batch is signed in parallel, one KMS call per item.
	digests := make([][]byte, 50)
	for i := range digests {
		sum := sha256.Sum256([]byte{byte(i)})
		digests[i] = sum[:]
	}
	results, err := d.SignDigests(ctx, "signing", digests)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range results {
		if r.Err != nil || !ecdsa.VerifyASN1(pub, digests[i], r.Signature) {
			t.Fatalf("batch item %d: %v", i, r.Err)
		}
	}
	if status, body := d.post(t, "/v1/records", recordBody); status != http.StatusOK {
		t.Errorf("a record: %d %s", status, body)
	}
}

// recordBody asks for a record of one origin step.
var recordBody = `{"steps":[{"type":"origin","scheme":"` + devsetup.SandboxScheme + `","sourceType":"` + devsetup.SandboxScheme + `/source-type/Meter"}]}`

// refusesEverySignature: moto's signatures of a digest never verify (it hashes the
// digest again), and none leaves the daemon: a raw signature, a message's, each item of a
// batch and a record are answered 503 (the batch 200 with each item's error), counted as
// outcome="invalid"; /readyz and backend_up are down, from the test signature the daemon
// made at start, and the log says why.
func (d *inProcess) refusesEverySignature(t *testing.T) {
	t.Helper()
	ctx := ctxT(t)
	if status, _ := d.get(t, "/readyz"); status != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d before any client signed, want 503 from the test signature at start", status)
	}
	digest := sha256.Sum256([]byte("moto"))
	_, err := d.SignDigest(ctx, "signing", digest[:])
	d.wantStatus(t, err, http.StatusServiceUnavailable, "does not verify with the key's public key")
	_, err = d.SignMessage(ctx, "signing", []byte("moto"))
	d.wantStatus(t, err, http.StatusServiceUnavailable, "does not verify with the key's public key")
	results, err := d.SignDigests(ctx, "signing", [][]byte{digest[:], digest[:]})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range results {
		if r.Err == nil || r.Signature != nil {
			t.Errorf("batch item %d: a signature left: %x %v", i, r.Signature, r.Err)
		}
	}
	if status, body := d.post(t, "/v1/records", recordBody); status != http.StatusServiceUnavailable || strings.Contains(body, "signature\"") {
		t.Errorf("a record: %d %s", status, body)
	}
	if n := d.signCount(t, "invalid"); n != "5" {
		t.Errorf(`sign_duration_seconds_count{outcome="invalid"} = %s, want 5 (a digest, a message, two batch items, a record)`, n)
	}
	if n := d.signCount(t, "ok"); n != "0" {
		t.Errorf(`sign_duration_seconds_count{outcome="ok"} = %s, want 0`, n)
	}
	if up := d.backendUp(t); up != "0" {
		t.Errorf("backend_up = %s, want 0", up)
	}
	if status, _ := d.get(t, "/readyz"); status != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d, want 503", status)
	}
	if !strings.Contains(d.log.String(), "a test signature that KMS made does not verify with the key's public key") {
		t.Errorf("the log does not say the start's test signature failed:\n%s", d.log)
	}
}

// post sends a JSON body to a route and returns the status and body.
func (d *inProcess) post(t testing.TB, path, body string) (int, string) {
	t.Helper()
	resp, err := d.hc.Post("http://provenanced"+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// recordsConfig is kmsConfig with [provenance]: the sandbox trust framework, pki's root
// and the key "signing", so that the daemon makes records.
func recordsConfig(t testing.TB, pki *devsetup.PKI, bundle []byte, endpoint string) *conf.Config {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "root.pem"), devsetup.CertPEM(pki.Root.Cert), 0o644); err != nil {
		t.Fatal(err)
	}
	return testenv.KMSConfig(t, dir, bundle, "alias/provenance", endpoint).
		Table("provenance", "trust_framework", devsetup.SandboxTrustFramework, "scheme", devsetup.SandboxScheme, "root_ca", "root.pem", "key", "signing").
		Load(t, dir)
}

// wantStatus checks a failed sign: the answer has status and names the key and a
// request id, and nothing of the backend's detail; the log has the detail under that id.
func (d *inProcess) wantStatus(t *testing.T, err error, status int, detail ...string) {
	t.Helper()
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != status {
		t.Fatalf("want HTTP %d, got %v", status, err)
	}
	_, id, ok := strings.Cut(ce.Message, "request id ")
	if !ok || !strings.Contains(ce.Message, `key "signing"`) {
		t.Errorf("message %q names no key and no request id", ce.Message)
	}
	var line string
	for _, l := range strings.Split(d.log.String(), "\n") {
		if id != "" && strings.Contains(l, `"request_id":"`+id+`"`) {
			line = l
		}
	}
	for _, c := range detail {
		if strings.Contains(ce.Message, c) {
			t.Errorf("message %q shows the backend's detail %q", ce.Message, c)
		}
		if !strings.Contains(line, c) {
			t.Errorf("the log line of request %s does not contain %q: %s", id, c, line)
		}
	}
	for _, secret := range []string{testenv.DummySecretKey, testenv.DummyAccessKeyID, "account", "111122223333", "alias/provenance", "arn:aws"} {
		if strings.Contains(ce.Message, secret) {
			t.Errorf("the message shows %q: %s", secret, ce.Message)
		}
	}
	if strings.Contains(d.log.String(), testenv.DummySecretKey) {
		t.Errorf("the log shows the secret key")
	}
}

// KMS goes away: signing answers 503 at once, but the key counts as down only once KMS
// has answered nothing for down_after (1s here; a minute by default): then /readyz says
// why and backend_up drops to 0. KMS comes back: the same daemon signs again, without a
// restart.
func TestAWSKMSDaemonFollowsOutage(t *testing.T) {
	localKMSOnly(t, "moto keeps its keys in memory, so it cannot come back from an outage with them", followsOutage)
}

// localKMSOnly runs f as the subtest "local-kms" for a test of the KMS API that moto
// cannot serve, saying why.
func localKMSOnly(t *testing.T, why string, f func(t *testing.T)) {
	t.Run("local-kms", func(t *testing.T) {
		t.Logf("on local-kms only: %s", why)
		f(t)
	})
}

func followsOutage(t *testing.T) {
	lk := testenv.StartLocalKMS(t)
	key := lk.NewSigningKey(t, newPKI(t), "alias/provenance")
	dir := t.TempDir()
	d := startInProcess(t, testenv.KMSConfig(t, dir, key.Bundle, "alias/provenance", lk.Endpoint()).Table("keys.signing", "down_after", "1s").Load(t, dir))
	ctx := ctxT(t)
	digest := sha256.Sum256([]byte("outage"))

	if _, err := d.SignDigest(ctx, "signing", digest[:]); err != nil {
		t.Fatal(err)
	}
	if status, body := d.get(t, "/readyz"); status != http.StatusOK {
		t.Fatalf("/readyz = %d %s", status, body)
	}
	if up := d.backendUp(t); up != "1" {
		t.Fatalf("backend_up = %s before the outage", up)
	}

	lk.Stop()
	_, err := d.SignDigest(ctx, "signing", digest[:])
	down := time.Now()
	d.wantStatus(t, err, http.StatusServiceUnavailable, "alias/provenance", "cannot reach AWS KMS", "connection refused")
	if n := d.signCount(t, "unavailable"); n != "1" {
		t.Errorf("sign_duration_seconds_count{outcome=unavailable} = %s after one failed sign, want 1", n)
	}
	if status, _ := d.get(t, "/readyz"); status != http.StatusOK || d.backendUp(t) != "1" {
		t.Errorf("/readyz = %d, backend_up = %s after one failed sign, within down_after; want 200 and 1", status, d.backendUp(t))
	}

	time.Sleep(1100*time.Millisecond - time.Since(down))
	_, err = d.SignDigest(ctx, "signing", digest[:])
	d.wantStatus(t, err, http.StatusServiceUnavailable, "cannot reach AWS KMS", "connection refused")
	if up := d.backendUp(t); up != "0" {
		t.Errorf("backend_up = %s after down_after of failed signs, want 0", up)
	}
	status, body := d.get(t, "/readyz")
	if status != http.StatusServiceUnavailable || !strings.Contains(body, `key \"signing\" (awskms) cannot sign now`) || strings.Contains(body, "connection refused") || strings.Contains(body, "127.0.0.1") {
		t.Errorf("/readyz during the outage = %d %s, want the key named and no detail", status, body)
	}
	// The failed signature told the daemon already; the log has KMS's words.
	if !strings.Contains(d.log.String(), "not ready: key cannot sign") || !strings.Contains(d.log.String(), "cannot reach AWS KMS") {
		t.Errorf("the log does not say why the daemon is not ready:\n%s", d.log.String())
	}

	lk.Restart(t)
	sig, err := d.SignDigest(ctx, "signing", digest[:])
	if err != nil {
		t.Fatalf("after KMS came back: %v", err)
	}
	if !ecdsa.VerifyASN1(key.Public, digest[:], sig) {
		t.Fatal("signature after the outage does not verify")
	}
	if status, body := d.get(t, "/readyz"); status != http.StatusOK {
		t.Errorf("/readyz after the outage = %d %s", status, body)
	}
	if up := d.backendUp(t); up != "1" {
		t.Errorf("backend_up = %s after the outage, want 1", up)
	}
	if n := d.signCount(t, "ok"); n != "2" {
		t.Errorf("sign_duration_seconds_count{outcome=ok} = %s, want 2", n)
	}
	if !strings.Contains(d.log.String(), "KMS has answered no call since") {
		t.Errorf("the log does not say for how long KMS has not answered:\n%s", d.log)
	}
}

// /readyz answers from what the background check (and the last signatures) found: a
// probe costs no KMS call, so a kubelet probing every second, or anyone flooding the
// route, does not become a stream of KMS requests.
// (The daemon's own pace, not the KMS API: local-kms only.)
func TestAWSKMSReadyzAsksNothing(t *testing.T) {
	_, _, proxy, cfg := testenv.KMSBehindProxy(t)
	d := startInProcess(t, cfg)
	before := proxy.Count("GetPublicKey") + proxy.Count("Sign")
	for range 50 {
		if status, body := d.get(t, "/readyz"); status != http.StatusOK {
			t.Fatalf("/readyz = %d %s", status, body)
		}
	}
	// At most one background check (every 5 s), and its test signature, may fall
	// within the loop.
	if n := proxy.Count("GetPublicKey") + proxy.Count("Sign") - before; n > 1 {
		t.Errorf("50 probes of /readyz made %d KMS calls", n)
	}
}

// The emulator cannot throttle on demand, so a proxy in front of it answers
// ThrottlingException (as KMS does: HTTP 400) to the first Sign calls. The SDK backs off
// and retries; the signature arrives. Throttled for good, each signature is a 503, but
// the key is not down: neither a client's throttled signature nor the readiness check's
// takes /readyz or backend_up down, since a KMS quota that all replicas share would
// otherwise take every one of them out of service at once.
func TestAWSKMSDaemonRetriesThrottling(t *testing.T) {
	_, key, proxy, cfg := testenv.KMSBehindProxy(t)
	d := startInProcess(t, cfg)
	ctx := ctxT(t)
	digest := sha256.Sum256([]byte("throttled"))

	throttle := testenv.KMSFault{Status: 400, Code: "ThrottlingException", Msg: "Rate exceeded"}
	throttle.Times = 2
	proxy.Reset()
	proxy.Inject("Sign", throttle)
	sig, err := d.SignDigest(ctx, "signing", digest[:])
	if err != nil {
		t.Fatalf("throttled twice: %v", err)
	}
	if !ecdsa.VerifyASN1(key.Public, digest[:], sig) {
		t.Fatal("signature does not verify")
	}
	if n := proxy.Count("Sign"); n != 3 {
		t.Errorf("KMS saw %d Sign calls, want 3 (two throttled, one signed)", n)
	}

	// Throttled for good: 503 after a bounded number of attempts, with KMS's reason.
	throttle.Times = -1
	proxy.Reset()
	proxy.Inject("Sign", throttle)
	start := time.Now()
	_, err = d.SignDigest(ctx, "signing", digest[:])
	d.wantStatus(t, err, http.StatusServiceUnavailable, "ThrottlingException: Rate exceeded", "after 3 attempts")
	if n := proxy.Count("Sign"); n != 3 {
		t.Errorf("KMS saw %d Sign calls, want 3", n)
	}
	t.Logf("gave up after %v", time.Since(start).Round(time.Millisecond))
	// Past the next background check whose test signature is throttled too.
	for probes := proxy.Count("Sign"); proxy.Count("Sign") == probes; time.Sleep(200 * time.Millisecond) {
		if status, body := d.get(t, "/readyz"); status != http.StatusOK {
			t.Fatalf("/readyz while throttled = %d %s", status, body)
		}
		if up := d.backendUp(t); up != "1" {
			t.Fatalf("backend_up = %s while throttled, want 1", up)
		}
		if time.Since(start) > 15*time.Second {
			t.Fatal("no readiness check signed within 15 s")
		}
	}
	time.Sleep(100 * time.Millisecond) // the check's outcome stored
	if status, body := d.get(t, "/readyz"); status != http.StatusOK || d.backendUp(t) != "1" {
		t.Errorf("/readyz = %d %s, backend_up = %s after a throttled readiness check", status, body, d.backendUp(t))
	}
}

// A connection that closes with the request sent and no answer (KMS restarting, a load
// balancer letting a kept-alive connection go) is sent again; a KMS that drops every
// request gives 503 saying so, after a bounded number of attempts, and the key is down
// once that has lasted down_after (a minute: not within this test).
func TestAWSKMSDaemonResendsOnDroppedConnection(t *testing.T) {
	_, key, proxy, cfg := testenv.KMSBehindProxy(t)
	d := startInProcess(t, cfg)
	ctx := ctxT(t)
	digest := sha256.Sum256([]byte("dropped"))

	proxy.Reset()
	proxy.Inject("Sign", testenv.KMSFault{Drop: true, Times: 1})
	sig, err := d.SignDigest(ctx, "signing", digest[:])
	if err != nil {
		t.Fatalf("one dropped connection: %v", err)
	}
	if !ecdsa.VerifyASN1(key.Public, digest[:], sig) {
		t.Fatal("signature does not verify")
	}
	if n := proxy.Count("Sign"); n != 2 {
		t.Errorf("KMS saw %d Sign calls, want 2 (one dropped, one signed)", n)
	}

	proxy.Reset()
	proxy.Inject("Sign", testenv.KMSFault{Drop: true, Times: -1})
	_, err = d.SignDigest(ctx, "signing", digest[:])
	d.wantStatus(t, err, http.StatusServiceUnavailable, "cannot reach AWS KMS: it closed the connection without answering", "after 3 attempts")
	// Each of the retryer's attempts may be sent twice by net/http, when it went out on a
	// kept-alive connection.
	if n := proxy.Count("Sign"); n < 3 || n > 6 {
		t.Errorf("KMS saw %d Sign calls, want 3 to 6", n)
	}
	if up := d.backendUp(t); up != "1" {
		t.Errorf("backend_up = %s after KMS dropped the requests of one signature, want 1", up)
	}
}

// Refusals that no retry can change answer 503 with KMS's reason at once: one Sign call
// each, counted at the proxy; the log says how to mend a disabled key or one pending
// deletion. (An identity's refusal, on each emulator: TestAWSKMSDaemonWithoutSign.)
func TestAWSKMSDaemonDoesNotRetryRefusals(t *testing.T) {
	localKMSOnly(t, "moto signs with a disabled key or one pending deletion as with any other", doesNotRetryRefusals)
}

func doesNotRetryRefusals(t *testing.T) {
	lk, key, proxy, cfg := testenv.KMSBehindProxy(t)
	d := startInProcess(t, cfg)
	ctx := ctxT(t)
	digest := sha256.Sum256([]byte("refused"))

	denied := "User: arn:aws:sts::111122223333:assumed-role/provenanced/pod is not authorized to perform: kms:Sign on resource: " + key.ARN + " because no identity-based policy allows the kms:Sign action"
	proxy.Reset()
	proxy.Inject("Sign", testenv.KMSFault{Status: 400, Code: "AccessDeniedException", Msg: denied, Times: -1})
	_, err := d.SignDigest(ctx, "signing", digest[:])
	d.wantStatus(t, err, http.StatusServiceUnavailable, "AccessDeniedException: "+denied)
	if n := proxy.Count("Sign"); n != 1 {
		t.Errorf("access denied: KMS saw %d Sign calls, want 1", n)
	}

	// A real refusal from the emulator: the key disabled behind the daemon's back.
	proxy.Reset()
	if _, err := lk.Client().DisableKey(ctx, &kms.DisableKeyInput{KeyId: &key.ARN}); err != nil {
		t.Fatal(err)
	}
	_, err = d.SignDigest(ctx, "signing", digest[:])
	d.wantStatus(t, err, http.StatusServiceUnavailable, "DisabledException", "is disabled", "aws kms enable-key")
	if n := proxy.Count("Sign"); n != 1 {
		t.Errorf("disabled key: KMS saw %d Sign calls, want 1", n)
	}
	status, body := d.get(t, "/readyz")
	if status != http.StatusServiceUnavailable || strings.Contains(body, "DisabledException") || strings.Contains(body, key.ARN) || !strings.Contains(body, "request id") {
		t.Errorf("/readyz with the key disabled = %d %s", status, body)
	}
	if !logHas(d.log.String(), "not ready: key cannot sign", "DisabledException", "aws kms enable-key") {
		t.Errorf("the log does not say why the key is not ready:\n%s", d.log)
	}
	if up := d.backendUp(t); up != "0" {
		t.Errorf("backend_up = %s with the key disabled, want 0", up)
	}

	if _, err := lk.Client().EnableKey(ctx, &kms.EnableKeyInput{KeyId: &key.ARN}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.SignDigest(ctx, "signing", digest[:]); err != nil {
		t.Fatalf("after enabling the key again: %v", err)
	}

	// The key deleted (as KMS answers once it is gone), then scheduled for deletion.
	proxy.Reset()
	proxy.Inject("Sign", testenv.KMSFault{Status: 400, Code: "NotFoundException", Msg: "Key '" + key.ARN + "' does not exist", Times: 1})
	_, err = d.SignDigest(ctx, "signing", digest[:])
	d.wantStatus(t, err, http.StatusServiceUnavailable, "NotFoundException", "does not exist")
	if n := proxy.Count("Sign"); n != 1 {
		t.Errorf("missing key: KMS saw %d Sign calls, want 1", n)
	}
	proxy.Reset()
	if _, err := lk.Client().ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: &key.ARN, PendingWindowInDays: aws.Int32(7)}); err != nil {
		t.Fatal(err)
	}
	_, err = d.SignDigest(ctx, "signing", digest[:])
	d.wantStatus(t, err, http.StatusServiceUnavailable, "KMSInvalidStateException", "pending deletion", "aws kms cancel-key-deletion")
	if n := proxy.Count("Sign"); n != 1 {
		t.Errorf("key pending deletion: KMS saw %d Sign calls, want 1", n)
	}
}

// logHas reports whether one line of log has every one of parts.
func logHas(log string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

// An identity that loses kms:Sign while the daemon runs, but may still read the public
// key: each signature is a 503 with AWS's refusal, and the key is down at once and stays
// down, across the background checks, whose test signature is refused too. (Before,
// backend_up went back to 1 at each check, whose GetPublicKey succeeded, so that
// ProvenancedBackendDown, which wants two minutes of 0, could never fire.) Given kms:Sign
// back, the key is up again without a restart. On moto the refusal is its IAM's; local-kms
// checks nothing, so the fault proxy refuses as KMS does. (On moto the key is not ready
// before either, since its signatures never verify: there the log must name the refusal.)
func TestAWSKMSDaemonWithoutSign(t *testing.T) {
	eachEmulator(t, func(t *testing.T, e testenv.KMSEmulator) {
		key, proxy, cfg := testenv.BehindProxy(t, e)
		m, onMoto := e.(*testenv.Moto)
		if onMoto {
			m.EnforceIAM(t)
			c := m.NewIdentity(t, "signer", "kms:GetPublicKey", "kms:Sign")
			t.Setenv("AWS_ACCESS_KEY_ID", c.AccessKeyID)
			t.Setenv("AWS_SECRET_ACCESS_KEY", c.SecretAccessKey)
		}
		d := startInProcess(t, cfg)
		ctx := ctxT(t)
		digest := sha256.Sum256([]byte("no kms:Sign"))

		if onMoto {
			m.SetPolicy(t, "signer", "kms:GetPublicKey")
		} else {
			proxy.Inject("Sign", testenv.KMSFault{Status: 400, Code: "AccessDeniedException", Times: -1,
				Msg: "User: arn:aws:sts::111122223333:assumed-role/provenanced/pod is not authorized to perform: kms:Sign on resource: " + key.ARN})
		}
		before := proxy.Count("Sign")
		_, err := d.SignDigest(ctx, "signing", digest[:])
		d.wantStatus(t, err, http.StatusServiceUnavailable, "Sign: AccessDenied", "is not authorized to perform: kms:Sign", "the daemon's identity needs kms:Sign")
		if n := proxy.Count("Sign") - before; n != 1 {
			t.Errorf("KMS saw %d Sign calls for one refused signature, want 1", n)
		}
		// Two background checks (every 5 s): backend_up never 1 meanwhile.
		for start := time.Now(); time.Since(start) < 11*time.Second; time.Sleep(500 * time.Millisecond) {
			if up := d.backendUp(t); up != "0" {
				t.Fatalf("backend_up = %s %v after kms:Sign was taken away", up, time.Since(start).Round(time.Millisecond))
			}
		}
		if status, _ := d.get(t, "/readyz"); status != http.StatusServiceUnavailable {
			t.Errorf("/readyz = %d without kms:Sign", status)
		}
		if !logHas(d.log.String(), "not ready: key cannot sign", "is not authorized to perform: kms:Sign") {
			t.Errorf("the log does not say the key may not sign:\n%s", d.log)
		}

		if onMoto {
			m.SetPolicy(t, "signer", "kms:GetPublicKey", "kms:Sign")
		} else {
			proxy.Reset()
		}
		if e.Quirks().DigestHashedAgain {
			return
		}
		for deadline := time.Now().Add(12 * time.Second); d.backendUp(t) != "1"; time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("backend_up still 0 12 s after kms:Sign was given back")
			}
		}
		if _, err := d.SignDigest(ctx, "signing", digest[:]); err != nil {
			t.Errorf("with kms:Sign again: %v", err)
		}
	})
}

// sign_timeout bounds a call to a KMS that accepts and never answers.
func TestAWSKMSDaemonSignTimeout(t *testing.T) {
	const signTimeout = 300 * time.Millisecond
	_, _, proxy, cfg := testenv.KMSBehindProxy(t)
	cfg.Server.SignTimeout = conf.Duration(signTimeout)
	d := startInProcess(t, cfg)
	proxy.Inject("Sign", testenv.KMSFault{Hang: true, Times: -1})

	// The proxy never answers: a daemon that did not apply sign_timeout would hold this
	// request for as long as the client waits. The client's own deadline, well past
	// sign_timeout, makes that a failure here in seconds rather than at the test binary's
	// timeout; its giving up also ends the daemon's call, so the cleanup does not hang.
	ctx, cancel := context.WithTimeout(context.Background(), 10*signTimeout)
	defer cancel()
	digest := sha256.Sum256([]byte("slow"))
	start := time.Now()
	_, err := d.SignDigest(ctx, "signing", digest[:])
	d.wantStatus(t, err, http.StatusServiceUnavailable, "Sign: no answer before the deadline")
	if !strings.Contains(err.Error(), "did not sign within sign_timeout") {
		t.Errorf("the answer does not say sign_timeout: %v", err)
	}
	if took := time.Since(start); took > 10*signTimeout {
		t.Errorf("took %v with a %v sign_timeout", took, signTimeout)
	}
	if n := d.signCount(t, "timeout"); n != "1" {
		t.Errorf("sign_duration_seconds_count{outcome=timeout} = %s after one timed-out sign, want 1", n)
	}
}

// The original service's KMS setup, from its variables through conf.FromEnvironment:
// KMS_KEY_ID, SIGNING_BUNDLE and ROOT_CA_CERTIFICATE in S3, AWS_DEFAULT_REGION, and a
// SIGNING_KEY that must never be used. The daemon serves it and signs with KMS; with KMS
// down it does not start, and says why.
func TestAWSKMSDaemonOriginalSetup(t *testing.T) {
	lk := testenv.StartLocalKMS(t)
	pki := newPKI(t)
	key := lk.NewSigningKey(t, pki, "alias/provenance-signing-key")
	s3 := fakes3.Start(t)
	s3.Put(t, "provenance-certs", "signing-issued-intermediate-bundle-kms.pem", key.Bundle)
	s3.Put(t, "provenance-certs", "root-ca.pem", devsetup.CertPEM(pki.Root.Cert))
	// The SDK reads the AWS_* variables from the process environment, as the original's
	// boto3 did (the serve command exports those of a .env file).
	t.Setenv("AWS_DEFAULT_REGION", testenv.LocalKMSRegion)
	t.Setenv("AWS_ENDPOINT_URL_S3", s3.URL)
	t.Setenv("AWS_ENDPOINT_URL_KMS", lk.Endpoint())
	env := map[string]string{
		"KMS_KEY_ID":          "alias/provenance-signing-key",
		"SIGNING_BUNDLE":      "s3://provenance-certs/signing-issued-intermediate-bundle-kms.pem",
		"ROOT_CA_CERTIFICATE": "s3://provenance-certs/root-ca.pem",
		"SIGNING_KEY":         "./certs/never-used-key.pem",
	}
	getenv := func(k string) string {
		if v, ok := env[k]; ok {
			return v
		}
		return os.Getenv(k)
	}
	load := func() *conf.Config {
		t.Helper()
		cfg, _, err := conf.FromEnvironment(conf.EnvSource{Getenv: getenv, Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Server.HTTP = ""
		cfg.Server.Socket = filepath.Join(t.TempDir(), "p.sock")
		return cfg
	}
	d := startInProcess(t, load())
	digest := sha256.Sum256([]byte("original"))
	sig, err := d.SignDigest(ctxT(t), "signing", digest[:])
	if err != nil || !ecdsa.VerifyASN1(key.Public, digest[:], sig) {
		t.Fatalf("sign: %v", err)
	}

	lk.Stop()
	_, err = daemon.New(ctxT(t), load(), daemon.Options{})
	if err == nil || !errors.Is(err, backends.ErrUnavailable) || !strings.Contains(err.Error(), "keys.signing") ||
		!strings.Contains(err.Error(), "alias/provenance-signing-key") || !strings.Contains(err.Error(), "cannot reach AWS KMS") {
		t.Fatalf("start with KMS down: %v", err)
	}
	t.Log(err)
}

// An endpoint that echoes the request's credentials into its error (a misconfigured
// endpoint, a proxy, an attacker's server): neither the answer nor /readyz nor the log
// shows them. The answers name the key and a request id; the log has the rest.
func TestAWSKMSUpstreamEchoReachesNoAnswerAndNoLog(t *testing.T) {
	token := "IQoJb3JpZ2luX2VjE" + strings.Repeat("Xy9+/Q", 70) + "=="
	t.Setenv("AWS_SESSION_TOKEN", token) // so that the SDK sends X-Amz-Security-Token
	_, _, proxy, cfg := testenv.KMSBehindProxy(t)
	d := startInProcess(t, cfg)
	proxy.Inject("Sign", testenv.KMSFault{Status: 400, Code: "AccessDeniedException", Msg: "not authorized.", Echo: true, Times: -1})
	proxy.Inject("GetPublicKey", testenv.KMSFault{Status: 400, Code: "AccessDeniedException", Msg: "not authorized.", Echo: true, Times: -1})

	digest := sha256.Sum256([]byte("echo"))
	_, err := d.SignDigest(ctxT(t), "signing", digest[:])
	d.wantStatus(t, err, http.StatusServiceUnavailable, "AccessDeniedException", "not authorized.", "Authorization:", "X-Amz-Security-Token:")
	status, body := d.get(t, "/readyz")
	if status != http.StatusServiceUnavailable || !strings.Contains(body, `key \"signing\" (awskms) cannot sign now`) {
		t.Errorf("/readyz = %d %s", status, body)
	}
	// /readyz answers from what the failed Sign showed (it calls no KMS operation itself);
	// the log has that answer, the echo redacted by the same handler every line goes through.
	log := d.log.String()
	if !strings.Contains(log, "AccessDeniedException") || !strings.Contains(log, "X-Amz-Security-Token:") {
		t.Errorf("the log lacks the upstream's answer:\n%s", log)
	}
	for _, secret := range []string{token, token[:40], testenv.DummyAccessKeyID, "AWS4-HMAC-SHA256", "Signature=", "Credential="} {
		if strings.Contains(body, secret) {
			t.Errorf("/readyz shows %q: %s", secret, body)
		}
		if strings.Contains(log, secret) {
			t.Errorf("the log shows %q:\n%s", secret, log)
		}
	}
}

// The daemon's /metrics carries both series for a KMS key from the start.
func TestAWSKMSMetricsExported(t *testing.T) {
	_, _, _, cfg := testenv.KMSBehindProxy(t)
	d := startInProcess(t, cfg)
	_, body := d.get(t, "/metrics")
	for _, s := range []string{`provenanced_kms_retries_total{key="signing"}`, `provenanced_kms_throttled_total{key="signing"}`} {
		if !strings.Contains(body, s) {
			t.Errorf("/metrics has no %s", s)
		}
	}
}

// A reload that only brings a renewed bundle keeps the key's KMS client: KMS sees no
// GetPublicKey or test signature for opening it (the readiness probe of the keys about to
// be served makes no call either: the key has just signed). A changed key table opens the
// key again, and KMS sees that: GetPublicKey and the start's test signature.
func TestAWSKMSReloadKeepsTheClient(t *testing.T) {
	_, key, proxy, cfg := testenv.KMSBehindProxy(t)
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

	calls := func() [2]int { return [2]int{proxy.Count("GetPublicKey"), proxy.Count("Sign")} }
	before := calls()
	// The same bundle written again: a reload reads it whether or not it changed.
	if err := os.WriteFile(filepath.Join(filepath.Dir(path), "bundle.pem"), key.Bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if n := calls(); n != before {
		t.Errorf("a reload of an unchanged key made KMS calls: GetPublicKey and Sign %v before, %v after", before, n)
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
	before = calls()
	if err := d.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if n := calls(); n[0]-before[0] != 1 || n[1]-before[1] != 1 {
		t.Errorf("a reload of a changed key made %d GetPublicKey and %d Sign calls; opening it makes one of each", n[0]-before[0], n[1]-before[1])
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

// Credentials that AWS refuses, and an identity without kms:Sign, are configuration
// errors: serve and serve -check exit with status 2, which the systemd unit's
// RestartPreventExitStatus=2 keeps from a restart loop, saying AWS's code and message and
// what to change. On moto the refusals are its IAM's, in AWS's query XML (which the SDK
// alone reads as "HTTP status 403" and nothing more); local-kms checks nothing, so the
// fault proxy refuses as KMS does, in its JSON. The real binary, for its exit status.
func TestAWSKMSServeRefusalsExit2(t *testing.T) {
	cases := []struct {
		name     string
		badCreds bool
		allow    []string
		want     []string
	}{
		{"credentials refused", true, nil, []string{"GetPublicKey: ", "The security token included in the request is invalid.", "AWS refused the credentials the SDK's chain found, which came from EnvConfigCredentials"}},
		{"no kms:Sign", false, []string{"kms:GetPublicKey"}, []string{"Sign: AccessDenied", "is not authorized to perform: kms:Sign", "the daemon's identity needs kms:Sign on this key"}},
	}
	eachEmulator(t, func(t *testing.T, e testenv.KMSEmulator) {
		key := e.NewSigningKey(t, newPKI(t), "alias/provenance")
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				endpoint, env, _ := testenv.KMSIdentity(t, e, strings.ReplaceAll(strings.ReplaceAll(tc.name, " ", "-"), ":", "-"), tc.badCreds, tc.allow...)
				dir := t.TempDir()
				path := testenv.KMSConfig(t, dir, key.Bundle, "alias/provenance", endpoint).Write(t, dir)
				for _, args := range [][]string{{"serve", "-config", path}, {"serve", "-check", "-config", path}} {
					out, code := testenv.Run(daemonBin, env, args...)
					if code != 2 {
						t.Errorf("%s: exit status %d, want 2:\n%s", strings.Join(args, " "), code, out)
					}
					for _, w := range append(tc.want, "keys.signing.key_id") {
						if !strings.Contains(out, w) {
							t.Errorf("%s: the output does not contain %q:\n%s", strings.Join(args, " "), w, out)
						}
					}
				}
			})
		}
	})
}

// keygen creates the key and its alias on each emulator (stock moto gives only the older
// CustomerMasterKeySpec, which keygen and the start read when KeySpec is absent), and a
// CSR signed by the new key follows. On moto the CSR's signature does not verify (moto
// hashes a DIGEST message again): csr refuses to write it, saying so.
func TestAWSKMSKeygen(t *testing.T) {
	eachEmulator(t, func(t *testing.T, e testenv.KMSEmulator) {
		dir := t.TempDir()
		path := testenv.KMSConfig(t, dir, nil, "alias/made-by-keygen", e.Endpoint()).Write(t, dir)
		out, code := testenv.Run(daemonBin, nil, "keygen", "-config", path)
		if code != 0 || !strings.Contains(out, "-----BEGIN PUBLIC KEY-----") {
			t.Fatalf("keygen: exit %d:\n%s", code, out)
		}
		b, _ := pem.Decode([]byte(out[strings.Index(out, "-----BEGIN"):]))
		made, err := x509.ParsePKIXPublicKey(b.Bytes)
		if err != nil || !made.(*ecdsa.PublicKey).Equal(e.PublicKey(t, "alias/made-by-keygen")) {
			t.Fatalf("keygen printed another key than alias/made-by-keygen names: %v", err)
		}
		if out, code := testenv.Run(daemonBin, nil, "keygen", "-config", path); code != 2 || !strings.Contains(out, "exists already") {
			t.Errorf("keygen again: exit %d:\n%s", code, out)
		}
		csr := filepath.Join(dir, "signing.csr")
		out, code = testenv.Run(daemonBin, nil, "csr", "-config", path, "-subject", "/C=GB/O=Example Ltd/CN=https://member.example/a/1", "-out", csr)
		if e.Quirks().DigestHashedAgain {
			if _, err := os.Stat(csr); code == 0 || err == nil || !strings.Contains(out, "does not verify") {
				t.Errorf("csr against a KMS that signs wrongly: exit %d, file: %v:\n%s", code, err, out)
			}
			return
		}
		data, err := os.ReadFile(csr)
		if code != 0 || err != nil {
			t.Fatalf("csr: exit %d: %v:\n%s", code, err, out)
		}
		if err := testenv.CheckCSR(data, made); err != nil {
			t.Error(err)
		}
	})
}
