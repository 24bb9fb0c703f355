package testenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/ib1/provenanced/internal/devsetup"
)

// KMSEmulator is a KMS implementation the KMS tests run against: local-kms or moto. Tests
// of what the KMS API does run on each (KMSEmulators); where one cannot do what a test
// needs, its Quirks say so and the test says which case runs where.
type KMSEmulator interface {
	// Name names the emulator in subtest names: "local-kms", "moto".
	Name() string
	// Endpoint is its URL on the loopback interface.
	Endpoint() string
	// Client is an SDK client of it with credentials that it accepts (an administrator's,
	// for one that checks them), independent of the process environment.
	Client() *kms.Client
	// CreateKey creates a key of spec and usage (usage "" for KMS's default), named alias
	// unless alias is "", and returns its ARN.
	CreateKey(t TB, spec types.KeySpec, usage types.KeyUsageType, alias string) string
	// PublicKey returns a key's public key.
	PublicKey(t TB, keyID string) any
	// NewSigningKey creates an ECC_NIST_P256 SIGN_VERIFY key (named alias, if not empty)
	// and issues its member certificate from pki.
	NewSigningKey(t TB, pki *devsetup.PKI, alias string) KMSKey
	// Stop kills the emulator.
	Stop()
	// Quirks are where it differs from AWS KMS in what the tests need.
	Quirks() KMSQuirks
}

// KMSQuirks are an emulator's departures from AWS KMS that decide what a test can ask of it.
type KMSQuirks struct {
	// DigestHashedAgain: Sign with MessageType DIGEST hashes the digest again before
	// signing (moto 5.2.1), so none of its signatures of a digest verify.
	DigestHashedAgain bool
	// IgnoresKeyState: Sign and GetPublicKey answer for a disabled key or one pending
	// deletion as for an enabled one (moto 5.2.1): no refusal to see.
	IgnoresKeyState bool
	// NoRestart: its keys live in its memory, so a stopped emulator cannot come back with
	// them (moto); local-kms keeps them in a folder and has Restart.
	NoRestart bool
	// ChecksIdentities: it can check each request's credentials and what the identity's
	// IAM policy allows (moto's IAM, after EnforceIAM); otherwise only the fault proxy
	// can answer a refusal.
	ChecksIdentities bool
}

// KMSEmulators are the emulators the KMS tests run against, by name, each started afresh
// for the test that asks.
var KMSEmulators = []struct {
	Name  string
	Start func(TB) KMSEmulator
}{
	{"local-kms", func(t TB) KMSEmulator { return StartLocalKMS(t) }},
	{"moto", func(t TB) KMSEmulator { return StartMoto(t) }},
}

// kmsAdmin is what both emulators do through the SDK with a client of their own.
type kmsAdmin struct{ client func() *kms.Client }

// staticClient is an SDK client of endpoint in LocalKMSRegion with fixed credentials.
func staticClient(endpoint, keyID, secret string) *kms.Client {
	return kms.New(kms.Options{
		Region:       LocalKMSRegion,
		BaseEndpoint: aws.String(endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider(keyID, secret, ""),
	})
}

func (a kmsAdmin) CreateKey(t TB, spec types.KeySpec, usage types.KeyUsageType, alias string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := a.client()
	in := &kms.CreateKeyInput{KeySpec: spec, Description: aws.String("provenanced test key")}
	if usage != "" {
		in.KeyUsage = usage
	}
	out, err := c.CreateKey(ctx, in)
	if err != nil {
		t.Fatalf("testenv: CreateKey %s %s: %v", spec, usage, err)
	}
	arn := *out.KeyMetadata.Arn
	if alias != "" {
		if _, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: &alias, TargetKeyId: &arn}); err != nil {
			t.Fatalf("testenv: CreateAlias %s: %v", alias, err)
		}
	}
	return arn
}

func (a kmsAdmin) PublicKey(t TB, keyID string) any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := a.client().GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: &keyID})
	if err != nil {
		t.Fatalf("testenv: GetPublicKey %s: %v", keyID, err)
	}
	pub, err := x509.ParsePKIXPublicKey(out.PublicKey)
	if err != nil {
		t.Fatalf("testenv: GetPublicKey %s: %v", keyID, err)
	}
	return pub
}

func (a kmsAdmin) NewSigningKey(t TB, pki *devsetup.PKI, alias string) KMSKey {
	t.Helper()
	arn := a.CreateKey(t, types.KeySpecEccNistP256, types.KeyUsageTypeSignVerify, alias)
	pub, ok := a.PublicKey(t, arn).(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("testenv: %s has no EC public key", arn)
	}
	cert, err := pki.Issue(pub, devsetup.DevMember(time.Now()))
	if err != nil {
		t.Fatalf("%v", err)
	}
	return KMSKey{ARN: arn, Alias: alias, Public: pub, Cert: cert, Bundle: pki.Bundle(cert)}
}

// KMSKey is a signing key created in an emulator, with its member certificate.
type KMSKey struct {
	ARN    string
	Alias  string // "" when the key has none
	Public *ecdsa.PublicKey
	Cert   *x509.Certificate
	Bundle []byte // the certificate, then the intermediate, as PEM
}
