package awskms_test

import (
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/testenv"
)

// identity is testenv.KMSIdentity with its credentials set in the environment, where the
// backend's SDK reads them.
func identity(t *testing.T, e testenv.KMSEmulator, name string, badCreds bool, allow ...string) (string, *testenv.KMSProxy) {
	t.Helper()
	endpoint, env, proxy := testenv.KMSIdentity(t, e, name, badCreds, allow...)
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return endpoint, proxy
}

// Credentials AWS refuses, and an identity without kms:GetPublicKey or without kms:Sign,
// stop the start with a config error (exit status 2: under systemd, no restart loop)
// that has AWS's code and message and says what to change, on each emulator. On moto the
// refusals are its IAM's own, in AWS's query XML, which the SDK alone reads as "HTTP
// status 403" and nothing more.
func TestRefusalsAtStart(t *testing.T) {
	cases := []struct {
		name     string
		badCreds bool
		allow    []string
		want     map[string][]string // by emulator
	}{
		{"credentials refused", true, nil, map[string][]string{
			"local-kms": {"GetPublicKey: UnrecognizedClientException: The security token included in the request is invalid."},
			"moto":      {"GetPublicKey: InvalidClientTokenId: The security token included in the request is invalid."},
			"":          {"AWS refused the credentials the SDK's chain found, which came from EnvConfigCredentials", "AWS_ACCESS_KEY_ID"},
		}},
		{"no kms:GetPublicKey", false, []string{"kms:Sign"}, map[string][]string{
			"local-kms": {"GetPublicKey: AccessDeniedException: User: arn:aws:sts::111122223333:assumed-role/provenanced/pod is not authorized to perform: kms:GetPublicKey"},
			"moto":      {"GetPublicKey: AccessDenied: User: arn:aws:iam::111122223333:user/no-kms-GetPublicKey is not authorized to perform: kms:GetPublicKey"},
			"":          {"the daemon's identity needs kms:GetPublicKey on this key"},
		}},
		{"no kms:Sign", false, []string{"kms:GetPublicKey"}, map[string][]string{
			"local-kms": {"Sign: AccessDeniedException: User: arn:aws:sts::111122223333:assumed-role/provenanced/pod is not authorized to perform: kms:Sign"},
			"moto":      {"Sign: AccessDenied: User: arn:aws:iam::111122223333:user/no-kms-Sign is not authorized to perform: kms:Sign"},
			"":          {"the daemon's identity needs kms:Sign on this key"},
		}},
	}
	eachEmulator(t, func(t *testing.T, e testenv.KMSEmulator) {
		key := e.NewSigningKey(t, newPKI(t), "alias/provenance")
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				endpoint, _ := identity(t, e, strings.NewReplacer(" ", "-", ":", "-").Replace(tc.name), tc.badCreds, tc.allow...)
				cfg := writeConfig(t, t.TempDir(), key.Bundle, "alias/provenance", endpoint)
				k, err := backends.Open(ctxT(t), cfg.Keys[0], backends.Options{})
				if err == nil {
					k.Close()
					t.Fatal("opened")
				}
				t.Log(err)
				var ce *conf.Error
				if !errors.As(err, &ce) || ce.Key != "keys.signing.key_id" {
					t.Errorf("want a config error about keys.signing.key_id (exit status 2), got %T", err)
				}
				for _, w := range append(tc.want[e.Name()], tc.want[""]...) {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("the error does not contain %q", w)
					}
				}
				if strings.Contains(err.Error(), "HTTP status") || strings.Contains(err.Error(), "never-issued") {
					t.Errorf("the error lost AWS's code or shows a secret: %v", err)
				}
			})
		}
	})
}

// readyKey opens the key "alias/provenance" at endpoint with a short ready_check_interval
// and down_after, so that Ready makes a test signature at each call and an outage counts
// within a second.
func readyKey(t *testing.T, key testenv.KMSKey, endpoint string) *backends.Key {
	t.Helper()
	cfg := writeConfig(t, t.TempDir(), key.Bundle, "alias/provenance", endpoint, "ready_check_interval", "100ms", "down_after", "1s")
	k, err := backends.Open(ctxT(t), cfg.Keys[0], backends.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

// Readiness is a signature: an identity that may read the public key but not sign is not
// ready, from its first check after kms:Sign is taken away, and ready again once it is
// given back, on each emulator. (moto's signatures never verify, so there it is not
// ready before either, for that reason: the refusal is what Ready names once it comes.)
func TestReadyProvesSign(t *testing.T) {
	eachEmulator(t, func(t *testing.T, e testenv.KMSEmulator) {
		key := e.NewSigningKey(t, newPKI(t), "alias/provenance")
		endpoint, proxy := identity(t, e, "signer", false, "kms:GetPublicKey", "kms:Sign")
		m, onMoto := e.(*testenv.Moto)
		k := readyKey(t, key, endpoint)
		ctx := ctxT(t)
		readyAsBefore := func(when string) {
			t.Helper()
			time.Sleep(150 * time.Millisecond)
			err := k.Ready(ctx)
			if e.Quirks().DigestHashedAgain {
				if !errors.Is(err, backends.ErrBadSignature) {
					t.Errorf("%s: Ready = %v, want the test signature refused", when, err)
				}
			} else if err != nil {
				t.Errorf("%s: Ready = %v", when, err)
			}
		}
		readyAsBefore("with kms:Sign")

		if onMoto {
			m.SetPolicy(t, "signer", "kms:GetPublicKey")
		} else {
			testenv.RefuseAs(proxy, false, "kms:GetPublicKey")
		}
		time.Sleep(150 * time.Millisecond)
		err := k.Ready(ctx)
		t.Log(err)
		if err == nil || errors.Is(err, backends.ErrTransient) || !strings.Contains(err.Error(), "Sign: AccessDenied") ||
			!strings.Contains(err.Error(), "is not authorized to perform: kms:Sign") || !strings.Contains(err.Error(), "the daemon's identity needs kms:Sign") {
			t.Errorf("Ready without kms:Sign = %v", err)
		}

		if onMoto {
			m.SetPolicy(t, "signer", "kms:GetPublicKey", "kms:Sign")
		} else {
			proxy.Reset()
		}
		readyAsBefore("with kms:Sign again")
	})
}

// Throttling never makes the key not ready: a throttled answer comes from a KMS that is
// there and lets the identity use the key, and a quota all replicas share would otherwise
// take every one of them out at once. Calls that go unanswered (here 500s) do, once they
// have lasted down_after (1s here); a refusal does at once. Each failed signature is still
// an error, marked passing (backends.ErrTransient) while it does not show the key down.
// The emulators cannot throttle or fail on demand: the fault proxy answers for local-kms.
func TestReadyWaitsForSustainedFailure(t *testing.T) {
	lk := testenv.StartLocalKMS(t)
	key, proxy, _ := testenv.BehindProxy(t, lk)
	k := readyKey(t, key, proxy.URL)
	ctx := ctxT(t)
	sum := sha256.Sum256([]byte("sustained"))
	digest := sum[:]
	signErr := func() error {
		t.Helper()
		_, err := k.SignContext(ctx, digest, nil)
		if err == nil {
			t.Fatal("signed through the fault")
		}
		return err
	}

	proxy.Inject("Sign", testenv.KMSFault{Status: 400, Code: "ThrottlingException", Msg: "Rate exceeded", Times: -1})
	start := time.Now()
	if err := signErr(); !errors.Is(err, backends.ErrTransient) || !errors.Is(err, backends.ErrUnavailable) {
		t.Errorf("a throttled signature: %v, want a passing ErrUnavailable", err)
	}
	for time.Since(start) < 1500*time.Millisecond {
		if err := k.Ready(ctx); err != nil {
			t.Fatalf("Ready while throttled for %v: %v", time.Since(start).Round(time.Millisecond), err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	proxy.Inject("Sign", testenv.KMSFault{Status: 500, Code: "KMSInternalException", Msg: "internal", Times: -1})
	start = time.Now()
	if err := signErr(); !errors.Is(err, backends.ErrTransient) {
		t.Errorf("the first unanswered signature: %v, want a passing one", err)
	}
	if err := k.Ready(ctx); err != nil {
		t.Errorf("Ready after %v of 500s: %v", time.Since(start).Round(time.Millisecond), err)
	}
	time.Sleep(time.Second)
	err := k.Ready(ctx)
	t.Log(err)
	if err == nil || !strings.Contains(err.Error(), "KMSInternalException: internal") || !strings.Contains(err.Error(), "KMS has answered no call since") || !strings.Contains(err.Error(), "down_after = 1s") {
		t.Errorf("Ready after a second of 500s: %v", err)
	}
	if err := signErr(); errors.Is(err, backends.ErrTransient) {
		t.Errorf("a signature after down_after of 500s is still passing: %v", err)
	}

	proxy.Reset()
	if err := k.Ready(ctx); err != nil {
		t.Errorf("Ready once KMS answers again: %v", err)
	}
	proxy.Inject("Sign", testenv.KMSFault{Status: 400, Code: "DisabledException", Msg: "the key is disabled", Times: -1})
	if err := signErr(); errors.Is(err, backends.ErrTransient) {
		t.Errorf("a refused signature is passing: %v", err)
	}
	if err := k.Ready(ctx); err == nil || !strings.Contains(err.Error(), "DisabledException") || !strings.Contains(err.Error(), "enable-key") {
		t.Errorf("Ready with the key refused: %v", err)
	}
}

// Error answers in forms other than KMS's JSON are read into AWS's code and message, and
// one that is no AWS answer at all (a proxy's page) says so without repeating it. A code
// that the SDK models becomes that type, as from KMS's JSON: NotFoundException is a key
// that does not exist. (moto's own XML refusals are in TestRefusalsAtStart.)
func TestErrorBodies(t *testing.T) {
	lk := testenv.StartLocalKMS(t)
	key, proxy, _ := testenv.BehindProxy(t, lk)
	cases := []struct {
		name  string
		fault testenv.KMSFault
		want  string
	}{
		{"query XML", testenv.KMSFault{Status: 403, XML: true, Code: "AccessDenied", Msg: "User: arn:aws:iam::111122223333:user/x is not authorized to perform: kms:GetPublicKey"},
			"GetPublicKey: AccessDenied: User: arn:aws:iam::111122223333:user/x is not authorized to perform: kms:GetPublicKey (the daemon's identity needs kms:GetPublicKey"},
		{"query XML, a modelled code", testenv.KMSFault{Status: 400, XML: true, Code: "NotFoundException", Msg: "Key 'alias/provenance' does not exist"},
			"has no key alias/provenance: NotFoundException: Key 'alias/provenance' does not exist"},
		{"moto's XML", testenv.KMSFault{Status: 403, ContentType: "application/xml", Body: `<?xml version="1.0" encoding="utf-8"?>
<ErrorResponse><Errors><Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match the signature you provided.</Message><Type>Sender</Type></Error></Errors></ErrorResponse>`},
			"GetPublicKey: SignatureDoesNotMatch: The request signature we calculated does not match the signature you provided. (AWS refused the credentials"},
		{"JSON with an Error object", testenv.KMSFault{Status: 403, ContentType: "application/json", Body: `{"Error":{"Code":"ExpiredToken","Message":"The security token included in the request is expired"},"RequestId":"x"}`},
			"GetPublicKey: ExpiredToken: The security token included in the request is expired (AWS refused the credentials"},
		{"KMS's JSON", testenv.KMSFault{Status: 400, Code: "AccessDeniedException", Msg: "no"},
			"GetPublicKey: AccessDeniedException: no (the daemon's identity needs kms:GetPublicKey"},
		{"a proxy's page", testenv.KMSFault{Status: 403, ContentType: "text/html", Body: "<html><body><h1>403 Forbidden</h1>Authorization: AWS4-HMAC-SHA256 echoed</body></html>"},
			"HTTP status 403 from AWS KMS, with a text/html answer that is not KMS's"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.fault.Times = -1
			proxy.Reset()
			proxy.Inject("GetPublicKey", tc.fault)
			cfg := writeConfig(t, t.TempDir(), key.Bundle, "alias/provenance", proxy.URL)
			_, err := backends.Open(ctxT(t), cfg.Keys[0], backends.Options{})
			t.Log(err)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "echoed") {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}
