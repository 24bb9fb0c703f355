package awskms_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/backends/awskms"
	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/provenance"
	"github.com/ib1/provenanced/testenv"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// The key opens, its public key is the one KMS has, and its signatures of digests verify
// (for a CSR too), on each emulator. moto's do not (it hashes a DIGEST message again):
// there the test asks that none of them leaves the key, and that Ready says why.
func TestOpenSignsDigests(t *testing.T) {
	eachEmulator(t, func(t *testing.T, e testenv.KMSEmulator) {
		key := e.NewSigningKey(t, newPKI(t), "alias/provenance")
		cfg := writeConfig(t, t.TempDir(), key.Bundle, "alias/provenance", e.Endpoint())
		ctx := ctxT(t)
		k, err := backends.Open(ctx, cfg.Keys[0], backends.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		if want := "AWS KMS key alias/provenance in eu-west-2 at " + e.Endpoint(); k.Location() != want {
			t.Errorf("Location() = %q, want %q", k.Location(), want)
		}
		if !key.Public.Equal(k.Public()) {
			t.Fatal("the key's public key is not the KMS key's")
		}
		if e.Quirks().DigestHashedAgain {
			refusesEverySignature(t, ctx, k)
			return
		}
		if err := k.Ready(ctx); err != nil {
			t.Fatalf("Ready: %v", err)
		}
		signsCSRs(t, ctx, k, key.Public)
		for i := range 20 {
			digest := sha256.Sum256([]byte{byte(i)})
			sig, err := k.SignContext(ctx, digest[:], crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			if !ecdsa.VerifyASN1(key.Public, digest[:], sig) {
				t.Fatalf("signature %d does not verify", i)
			}
		}
	})
}

// signsCSRs: a CSR signed by the KMS key, as provenanced csr makes it, which openssl
// accepts and which is for the KMS key; and again from a CSR made with another key, as
// the original's sign-with-kms.py did.
func signsCSRs(t *testing.T, ctx context.Context, k *backends.Key, pub *ecdsa.PublicKey) {
	t.Helper()
	csrPEM, err := provenance.CreateCSR(rand.Reader, k.WithContext(ctx), provenance.CSRRequest{Subject: "/C=GB/O=KMS Member Ltd/CN=https://member.example/a/1", URIs: []string{"https://member.example/a/1"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.CheckCSR(csrPEM, pub); err != nil {
		t.Fatal(err)
	}
	other, _ := devsetup.NewKey()
	tmpDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "https://member.example/a/1"}}, other)
	if err != nil {
		t.Fatal(err)
	}
	resigned, err := provenance.CreateCSR(rand.Reader, k.WithContext(ctx), provenance.CSRRequest{From: tmpDER})
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.CheckCSR(resigned, pub); err != nil {
		t.Fatal(err)
	}
}

// refusesEverySignature: against a KMS whose signatures do not verify (moto's DIGEST
// bug), the key opens (its test signature at start was no refusal), Ready says the test
// signature does not verify, and no signature leaves the key, a CSR's neither.
func refusesEverySignature(t *testing.T, ctx context.Context, k *backends.Key) {
	t.Helper()
	err := k.Ready(ctx)
	if !errors.Is(err, backends.ErrBadSignature) || !errors.Is(err, backends.ErrUnavailable) || !strings.Contains(err.Error(), "a test signature that KMS made does not verify") {
		t.Errorf("Ready against a KMS that signs wrongly: %v", err)
	}
	digest := sha256.Sum256([]byte("moto"))
	sig, err := k.SignContext(ctx, digest[:], crypto.SHA256)
	if sig != nil || !errors.Is(err, backends.ErrBadSignature) || backends.Outcome(err) != "invalid" {
		t.Errorf("SignContext = %x, %v; want no signature and ErrBadSignature", sig, err)
	}
	if _, err := provenance.CreateCSR(rand.Reader, k.WithContext(ctx), provenance.CSRRequest{Subject: "/CN=x"}); !errors.Is(err, backends.ErrBadSignature) {
		t.Errorf("CreateCSR: %v, want ErrBadSignature", err)
	}
}

// The key opens by id and by ARN as well as by alias.
func TestOpenByIDAndARN(t *testing.T) {
	eachEmulator(t, func(t *testing.T, e testenv.KMSEmulator) {
		key := e.NewSigningKey(t, newPKI(t), "")
		id := key.ARN[strings.LastIndexByte(key.ARN, '/')+1:]
		for _, keyID := range []string{key.ARN, id} {
			cfg := writeConfig(t, t.TempDir(), key.Bundle, keyID, e.Endpoint())
			k, err := backends.Open(ctxT(t), cfg.Keys[0], backends.Options{})
			if err != nil {
				t.Fatalf("%s: %v", keyID, err)
			}
			k.Close()
		}
	})
}

// startupCase is a key's table that must not open, and what the error must say.
type startupCase struct {
	name          string
	bundle        []byte
	keyID, kmsURL string
	set           []any    // the key's table changed so
	text          string   // TOML lines for the key's table, written as text on purpose
	want          []string // in the error
	config        bool     // a *conf.Error (exit status 2)
}

// Every way a key can be unfit stops the start with an error that names the config
// file, the key and what KMS reported, on each emulator. moto answers for a disabled key
// and one pending deletion as for any other (Quirks().IgnoresKeyState): those cases run on
// local-kms only.
func TestStartupErrors(t *testing.T) {
	eachEmulator(t, func(t *testing.T, e testenv.KMSEmulator) {
		pki := newPKI(t)
		e.NewSigningKey(t, pki, "alias/good")
		other := e.NewSigningKey(t, pki, "alias/other")
		e.CreateKey(t, types.KeySpecRsa2048, types.KeyUsageTypeSignVerify, "alias/rsa")
		e.CreateKey(t, types.KeySpecEccNistP384, types.KeyUsageTypeSignVerify, "alias/p384")
		e.CreateKey(t, types.KeySpecRsa2048, types.KeyUsageTypeEncryptDecrypt, "alias/rsa-encrypt")
		e.CreateKey(t, types.KeySpecSymmetricDefault, "", "alias/aes")
		url := e.Endpoint()
		symmetric := []string{"alias/aes", "UnsupportedOperationException", "symmetric or HMAC key has no public key"}
		if e.Name() == "moto" {
			// moto gives a symmetric key's "public key" where KMS refuses; its spec is
			// what the daemon refuses then.
			symmetric = []string{"alias/aes", "key spec SYMMETRIC_DEFAULT"}
		}
		tests := []startupCase{
			{"RSA key", nil, "alias/rsa", url, nil, "", []string{"alias/rsa", "key spec RSA_2048 and key usage SIGN_VERIFY", "needs key spec ECC_NIST_P256 and key usage SIGN_VERIFY"}, true},
			{"P-384 key", nil, "alias/p384", url, nil, "", []string{"alias/p384", "key spec ECC_NIST_P384"}, true},
			{"encryption key", nil, "alias/rsa-encrypt", url, nil, "", []string{"alias/rsa-encrypt", "key usage ENCRYPT_DECRYPT"}, true},
			{"symmetric key", nil, "alias/aes", url, nil, "", symmetric, true},
			{"missing key", nil, "alias/nothing-here", url, nil, "", []string{"has no key alias/nothing-here", "NotFoundException"}, true},
			{"certificate of another key", other.Bundle, "alias/good", url, nil, "", []string{"keys.signing.certificates", "is not for the key in AWS KMS key alias/good", "public key differs"}, true},
			{"no key_id", nil, "", "", []any{"key_id", nil, "endpoint", nil}, "", []string{"keys.signing.key_id", "missing"}, true},
			{"bad endpoint", nil, "alias/good", "127.0.0.1:4599", nil, "", []string{"keys.signing.endpoint", "not an http:// or https:// URL"}, true},
			{"unknown field", nil, "alias/good", url, nil, "key_label = \"x\"\n", []string{"keys.signing.key_label", "accepts backend, certificates, down_after, endpoint, key_id, ready_check_interval, region"}, true},
			{"no region", nil, "alias/good", "", []any{"region", nil, "endpoint", nil}, "", []string{"keys.signing.region", "AWS_REGION"}, true},
			{"bad ready_check_interval", nil, "alias/good", url, []any{"ready_check_interval", "5"}, "", []string{"keys.signing.ready_check_interval", "from 100ms to 1h"}, true},
			{"bad down_after", nil, "alias/good", url, []any{"down_after", "-1s"}, "", []string{"keys.signing.down_after", "from 0s (at once) to 1h"}, true},
		}
		if !e.Quirks().IgnoresKeyState {
			tests = append(tests, keyStateCases(t, e, pki)...)
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) { startFails(t, tc) })
		}
	})
}

// keyStateCases are keys that KMS refuses to use: disabled, pending deletion.
func keyStateCases(t *testing.T, e testenv.KMSEmulator, pki *devsetup.PKI) []startupCase {
	ctx := ctxT(t)
	disabled := e.NewSigningKey(t, pki, "alias/disabled")
	if _, err := e.Client().DisableKey(ctx, &kms.DisableKeyInput{KeyId: &disabled.ARN}); err != nil {
		t.Fatal(err)
	}
	doomed := e.NewSigningKey(t, pki, "alias/doomed")
	if _, err := e.Client().ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: &doomed.ARN, PendingWindowInDays: aws.Int32(7)}); err != nil {
		t.Fatal(err)
	}
	return []startupCase{
		{"disabled key", disabled.Bundle, "alias/disabled", e.Endpoint(), nil, "", []string{"alias/disabled", "DisabledException", "enable-key"}, true},
		{"key pending deletion", doomed.Bundle, "alias/doomed", e.Endpoint(), nil, "", []string{"alias/doomed", "KMSInvalidStateException", "pending deletion", "cancel-key-deletion"}, true},
	}
}

// startFails writes tc's config, and checks that the key does not open and why.
func startFails(t *testing.T, tc startupCase) {
	t.Helper()
	dir := t.TempDir()
	// [keys.signing] is the config's last table: tc.text goes into it.
	path := filepath.Join(dir, "provenanced.toml")
	text := testenv.KMSConfig(t, dir, tc.bundle, tc.keyID, tc.kmsURL).Table("keys.signing", tc.set...).String() + tc.text
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := conf.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	k, err := backends.Open(ctxT(t), cfg.Keys[0], backends.Options{})
	if err == nil {
		k.Close()
		t.Fatal("opened")
	}
	msg := err.Error()
	t.Log(msg)
	for _, w := range append([]string{cfg.File, "keys.signing"}, tc.want...) {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q does not contain %q", msg, w)
		}
	}
	var ce *conf.Error
	if tc.config != errors.As(err, &ce) {
		t.Errorf("config error = %v, want %v: %v", !tc.config, tc.config, err)
	}
	if strings.Contains(msg, testenv.DummySecretKey) {
		t.Errorf("the error shows the secret key: %s", msg)
	}
}

// A readiness check that goes out on a kept-alive connection which KMS has just closed
// is sent again on a new one rather than reporting KMS down: the check has one attempt.
// (Our transport, not the KMS API: local-kms only.)
func TestReadyResendsOnClosedConnection(t *testing.T) {
	lk := testenv.StartLocalKMS(t)
	key, proxy, _ := testenv.BehindProxy(t, lk)
	cfg := writeConfig(t, t.TempDir(), key.Bundle, "alias/provenance", proxy.URL, "ready_check_interval", "100ms")
	ctx := ctxT(t)
	k, err := backends.Open(ctx, cfg.Keys[0], backends.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	time.Sleep(150 * time.Millisecond)   // past ready_check_interval: Ready signs
	if err := k.Ready(ctx); err != nil { // leaves a kept-alive connection
		t.Fatal(err)
	}
	proxy.Reset()
	proxy.Inject("Sign", testenv.KMSFault{Drop: true, Times: 1})
	time.Sleep(150 * time.Millisecond)
	if err := k.Ready(ctx); err != nil {
		t.Fatalf("Ready after one dropped connection: %v", err)
	}
	if n := proxy.Count("Sign"); n != 2 {
		t.Errorf("KMS saw %d Sign calls, want 2 (one dropped, one answered)", n)
	}
}

// KMS unreachable at start: an error naming the key, which says KMS is unavailable
// rather than that the config is wrong.
func TestStartWithKMSDown(t *testing.T) {
	lk := testenv.StartLocalKMS(t)
	endpoint := lk.Endpoint()
	lk.Stop()
	cfg := writeConfig(t, t.TempDir(), nil, "alias/provenance", endpoint)
	_, err := backends.Open(ctxT(t), cfg.Keys[0], backends.Options{})
	if err == nil {
		t.Fatal("opened")
	}
	t.Log(err)
	var ce *conf.Error
	if errors.As(err, &ce) || !errors.Is(err, backends.ErrUnavailable) {
		t.Errorf("want an ErrUnavailable that is not a config error, got %T %v", err, err)
	}
	for _, w := range []string{cfg.File, "keys.signing", "alias/provenance", "cannot reach AWS KMS", "connection refused", "after 3 attempts"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

// Without credentials the start fails saying so, not blaming KMS. (Instance metadata is
// off in the tests' environment, so the chain ends without a network call.)
func TestStartWithoutCredentials(t *testing.T) {
	lk := testenv.StartLocalKMS(t)
	lk.NewSigningKey(t, newPKI(t), "alias/provenance")
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	cfg := writeConfig(t, t.TempDir(), nil, "alias/provenance", lk.Endpoint())
	_, err := backends.Open(ctxT(t), cfg.Keys[0], backends.Options{})
	t.Log(err)
	if err == nil || !strings.Contains(err.Error(), "keys.signing") || !strings.Contains(err.Error(), "no AWS credentials") || strings.Contains(err.Error(), "cannot reach") {
		t.Errorf("start without credentials: %v", err)
	}
}

// With no region in the config, the SDK's chain supplies it: AWS_DEFAULT_REGION is what
// the original service's .env sets.
func TestRegionFromEnvironment(t *testing.T) {
	lk := testenv.StartLocalKMS(t)
	key := lk.NewSigningKey(t, newPKI(t), "alias/provenance")
	t.Setenv("AWS_DEFAULT_REGION", testenv.LocalKMSRegion)
	// And the endpoint from AWS_ENDPOINT_URL_KMS, as for any SDK client.
	t.Setenv("AWS_ENDPOINT_URL_KMS", lk.Endpoint())
	cfg := writeConfig(t, t.TempDir(), key.Bundle, "alias/provenance", "", "region", nil, "endpoint", nil)
	k, err := backends.Open(ctxT(t), cfg.Keys[0], backends.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if want := "AWS KMS key alias/provenance in eu-west-2 at " + lk.Endpoint(); k.Location() != want {
		t.Errorf("Location() = %q, want %q", k.Location(), want)
	}
}

// What conf/env.go builds from the original service's KMS_KEY_ID, SIGNING_BUNDLE and
// AWS_DEFAULT_REGION opens like a key from a config file; when KMS fails, the error says
// so and names the key. (There is nothing to fall back to here: the backend has no PEM
// key, and the env code must not add one.)
func TestEnvironmentKey(t *testing.T) {
	lk := testenv.StartLocalKMS(t)
	key := lk.NewSigningKey(t, newPKI(t), "alias/provenance-signing-key")
	bundle := filepath.Join(t.TempDir(), "signing-bundle.pem")
	if err := os.WriteFile(bundle, key.Bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	spec := func(keyID string) *conf.Key {
		return conf.NewKey("signing", awskms.Name, bundle, "environment", &awskms.Options{KeyID: keyID, Region: testenv.LocalKMSRegion, Endpoint: lk.Endpoint()})
	}
	k, err := backends.Open(ctxT(t), spec("alias/provenance-signing-key"), backends.Options{})
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("environment"))
	sig, err := k.SignContext(ctxT(t), digest[:], crypto.SHA256)
	if err != nil || !ecdsa.VerifyASN1(key.Public, digest[:], sig) {
		t.Fatalf("sign: %v", err)
	}
	k.Close()

	_, err = backends.Open(ctxT(t), spec("alias/missing"), backends.Options{})
	if err == nil || !strings.HasPrefix(err.Error(), "environment: keys.signing.key_id: ") || !strings.Contains(err.Error(), "has no key alias/missing") {
		t.Errorf("missing key: %v", err)
	}
	lk.Stop()
	_, err = backends.Open(ctxT(t), spec("alias/provenance-signing-key"), backends.Options{})
	if err == nil || !errors.Is(err, backends.ErrUnavailable) || !strings.HasPrefix(err.Error(), "environment: keys.signing: ") {
		t.Errorf("KMS down: %v", err)
	}
}

// keygen creates the key and its alias, and never re-points an alias or creates a key it
// would not name, on each emulator.
func TestGenerate(t *testing.T) {
	eachEmulator(t, func(t *testing.T, e testenv.KMSEmulator) {
		ctx := ctxT(t)
		cfg := writeConfig(t, t.TempDir(), nil, "alias/new-key", e.Endpoint())
		pub, err := backends.Generate(ctx, cfg.Keys[0])
		if err != nil {
			t.Fatal(err)
		}
		if got := e.PublicKey(t, "alias/new-key"); !pub.(*ecdsa.PublicKey).Equal(got) {
			t.Fatal("Generate returned another key than the alias names")
		}
		// The new key is what Open wants.
		k, err := backends.Open(ctx, cfg.Keys[0], backends.Options{})
		if err != nil {
			t.Fatal(err)
		}
		k.Close()

		before := countKeys(t, e)
		_, err = backends.Generate(ctx, cfg.Keys[0])
		if err == nil || !strings.Contains(err.Error(), "alias/new-key exists already") || !strings.Contains(err.Error(), "never re-points") {
			t.Errorf("second keygen: %v", err)
		}
		if countKeys(t, e) != before {
			t.Error("the refused keygen created a key anyway")
		}
		if got := e.PublicKey(t, "alias/new-key"); !pub.(*ecdsa.PublicKey).Equal(got) {
			t.Error("the alias was re-pointed")
		}

		// An id or ARN cannot be created, only named: keygen wants an alias.
		byARN := writeConfig(t, t.TempDir(), nil, "arn:aws:kms:eu-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", e.Endpoint())
		_, err = backends.Generate(ctx, byARN.Keys[0])
		var ce *conf.Error
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "is not an alias") {
			t.Errorf("keygen by ARN: %v", err)
		}
		if countKeys(t, e) != before {
			t.Error("the refused keygen created a key anyway")
		}
	})
}

// countKeys is the number of keys in e that are not pending deletion.
func countKeys(t *testing.T, e testenv.KMSEmulator) int {
	t.Helper()
	ctx := ctxT(t)
	out, err := e.Client().ListKeys(ctx, &kms.ListKeysInput{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, k := range out.Keys {
		if keyState(t, e, *k.KeyId) != types.KeyStatePendingDeletion {
			n++
		}
	}
	return n
}

func keyState(t *testing.T, e testenv.KMSEmulator, keyID string) types.KeyState {
	t.Helper()
	d, err := e.Client().DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: &keyID})
	if err != nil {
		t.Fatal(err)
	}
	return d.KeyMetadata.KeyState
}

// A keygen whose later step fails undoes what it created: the alias deleted, the key
// scheduled for deletion (KMS's shortest wait, 7 days); when that fails too, the error
// names what is left and how to remove it. The emulators fail no step on demand, so the
// fault proxy answers for them; what is undone is undone in the emulator, each of them.
func TestGenerateUndoes(t *testing.T) {
	denied := testenv.KMSFault{Status: 400, Code: "AccessDeniedException", Msg: "not authorized to perform this", Times: -1}
	eachEmulator(t, func(t *testing.T, e testenv.KMSEmulator) {
		proxy := testenv.NewKMSProxy(t, e.Endpoint())
		gen := func(alias string, faults map[string]testenv.KMSFault) error {
			t.Helper()
			proxy.Reset()
			for op, f := range faults {
				proxy.Inject(op, f)
			}
			cfg := writeConfig(t, t.TempDir(), nil, alias, proxy.URL)
			_, err := backends.Generate(ctxT(t), cfg.Keys[0])
			t.Log(err)
			return err
		}
		aliases := func() []string {
			out, err := e.Client().ListAliases(ctxT(t), &kms.ListAliasesInput{})
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, a := range out.Aliases {
				if a.TargetKeyId != nil && !strings.HasPrefix(*a.AliasName, "alias/aws/") { // moto's AWS-managed aliases
					names = append(names, *a.AliasName)
				}
			}
			return names
		}

		err := gen("alias/no-name", map[string]testenv.KMSFault{"CreateAlias": denied})
		wantUndone(t, err, "CreateAlias: AccessDeniedException", "keygen scheduled the key it created")
		err = gen("alias/no-public-key", map[string]testenv.KMSFault{"GetPublicKey": denied})
		wantUndone(t, err, "GetPublicKey: AccessDeniedException", "keygen deleted the alias it created and scheduled its key")
		if n := countKeys(t, e); n != 0 {
			t.Errorf("%d keys left that are not pending deletion", n)
		}
		if a := aliases(); len(a) != 0 {
			t.Errorf("aliases left: %v", a)
		}

		// Nothing can be undone: the error names the key and the alias, and the commands.
		err = gen("alias/left", map[string]testenv.KMSFault{"GetPublicKey": denied, "DeleteAlias": denied, "ScheduleKeyDeletion": denied})
		if err == nil || !strings.Contains(err.Error(), "could not undo what it created, and left behind the alias alias/left (aws kms delete-alias --alias-name alias/left") ||
			!strings.Contains(err.Error(), "and the key arn:aws:kms:eu-west-2:111122223333:key/") || !strings.Contains(err.Error(), "aws kms schedule-key-deletion --key-id arn:aws:kms:") {
			t.Errorf("keygen that could not undo: %v", err)
		}
		if a := aliases(); len(a) != 1 || a[0] != "alias/left" {
			t.Errorf("aliases: %v, want alias/left, as the error says", a)
		}
	})
}

func wantUndone(t *testing.T, err error, want ...string) {
	t.Helper()
	var ce *conf.Error
	if !errors.As(err, &ce) {
		t.Errorf("want a config error (exit status 2), got %T %v", err, err)
		return
	}
	for _, w := range append(want, "for deletion in 7 days") {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}
