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

// The daemon with keys in AWS KMS (the local-kms emulator), served in this process on a
// Unix socket: daemon.New and Serve, as the serve command runs them. A fault proxy in front
// of the emulator (testenv.KMSProxy) throttles, denies, drops and hangs where the emulator
// cannot. `make race` runs these under the race detector (-run '^TestAWSKMS').

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
// public key the daemon lists, which is the certificate's.
func TestAWSKMSDaemonSigns(t *testing.T) {
	lk := testenv.StartLocalKMS(t)
	key := lk.NewSigningKey(t, newPKI(t), "alias/provenance")
	d := startInProcess(t, kmsConfig(t, key.Bundle, "alias/provenance", lk.Endpoint()))
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

	for i := range 5 {
		msg := fmt.Appendf(nil, "provenance record %d", i)
		digest := sha256.Sum256(msg)
		var sig []byte
		if i%2 == 0 {
			sig, err = d.SignDigest(ctx, "signing", digest[:])
		} else {
			sig, err = d.SignMessage(ctx, "signing", msg)
		}
		if err != nil {
			t.Fatal(err)
		}
		opensslVerify(t, keys[0].PublicKey, msg, sig)
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
		if r.Err != nil || !ecdsa.VerifyASN1(key.Public, digests[i], r.Signature) {
			t.Fatalf("batch item %d: %v", i, r.Err)
		}
	}
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

// KMS goes away: signing answers 503, /readyz says why and backend_up drops to 0. KMS
// comes back: the same daemon signs again, without a restart.
func TestAWSKMSDaemonFollowsOutage(t *testing.T) {
	lk := testenv.StartLocalKMS(t)
	key := lk.NewSigningKey(t, newPKI(t), "alias/provenance")
	d := startInProcess(t, kmsConfig(t, key.Bundle, "alias/provenance", lk.Endpoint()))
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
	d.wantStatus(t, err, http.StatusServiceUnavailable, "alias/provenance", "cannot reach AWS KMS", "connection refused")
	if up := d.backendUp(t); up != "0" {
		t.Errorf("backend_up = %s after a failed sign, want 0", up)
	}
	if n := d.signCount(t, "unavailable"); n != "1" {
		t.Errorf("sign_duration_seconds_count{outcome=unavailable} = %s after one failed sign, want 1", n)
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
}

// /readyz answers from what the background check (and the last signatures) found: a
// probe costs no KMS call, so a kubelet probing every second, or anyone flooding the
// route, does not become a stream of KMS requests.
func TestAWSKMSReadyzAsksNothing(t *testing.T) {
	_, _, proxy, cfg := testenv.KMSBehindProxy(t)
	d := startInProcess(t, cfg)
	before := proxy.Count("GetPublicKey")
	for range 50 {
		if status, body := d.get(t, "/readyz"); status != http.StatusOK {
			t.Fatalf("/readyz = %d %s", status, body)
		}
	}
	// At most one background check (every 5 s) may fall within the loop.
	if n := proxy.Count("GetPublicKey") - before; n > 1 {
		t.Errorf("50 probes of /readyz made %d KMS calls", n)
	}
}

// The emulator cannot throttle on demand, so a proxy in front of it answers
// ThrottlingException (as KMS does: HTTP 400) to the first Sign calls. The SDK backs off
// and retries; the signature arrives.
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
	if up := d.backendUp(t); up != "0" {
		t.Errorf("backend_up = %s while throttled, want 0", up)
	}
}

// A connection that closes with the request sent and no answer (KMS restarting, a load
// balancer letting a kept-alive connection go) is sent again; a KMS that drops every
// request gives 503 saying so, after a bounded number of attempts.
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
	if up := d.backendUp(t); up != "0" {
		t.Errorf("backend_up = %s while KMS drops every request, want 0", up)
	}
}

// Refusals that no retry can change answer 503 with KMS's reason at once: one Sign call
// each, counted at the proxy.
func TestAWSKMSDaemonDoesNotRetryRefusals(t *testing.T) {
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
	d.wantStatus(t, err, http.StatusServiceUnavailable, "DisabledException", "is disabled")
	if n := proxy.Count("Sign"); n != 1 {
		t.Errorf("disabled key: KMS saw %d Sign calls, want 1", n)
	}
	status, body := d.get(t, "/readyz")
	if status != http.StatusServiceUnavailable || strings.Contains(body, "DisabledException") || strings.Contains(body, key.ARN) || !strings.Contains(body, "request id") {
		t.Errorf("/readyz with the key disabled = %d %s", status, body)
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
	d.wantStatus(t, err, http.StatusServiceUnavailable, "KMSInvalidStateException", "pending deletion")
	if n := proxy.Count("Sign"); n != 1 {
		t.Errorf("key pending deletion: KMS saw %d Sign calls, want 1", n)
	}
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
// second GetPublicKey for opening it (only the readiness probe of the keys about to be
// served). A changed key table opens the key again, and KMS sees that.
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

	before := proxy.Count("GetPublicKey")
	// The same bundle written again: a reload reads it whether or not it changed.
	if err := os.WriteFile(filepath.Join(filepath.Dir(path), "bundle.pem"), key.Bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if n := proxy.Count("GetPublicKey") - before; n != 1 {
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
	before = proxy.Count("GetPublicKey")
	if err := d.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if n := proxy.Count("GetPublicKey") - before; n < 2 {
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
