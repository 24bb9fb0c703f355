package awskms

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"io"

	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/conf"
)

// Name is the backend's name in the config.
const Name = "awskms"

func init() { backends.Register(Name, backends.Backend{Open: Open, Generate: Generate}) }

// Options are the backend's fields of a [keys.NAME] table. Code that builds a key
// without a TOML file (the original service's environment) passes one to conf.NewKey.
type Options struct {
	// KeyID is the key's id, ARN or alias ("alias/provenance-signing-key").
	KeyID string `toml:"key_id"`
	// Region is the key's region; "" takes the SDK's (AWS_REGION, AWS_DEFAULT_REGION,
	// the profile's region).
	Region string `toml:"region"`
	// Endpoint replaces AWS's endpoint: a VPC endpoint or an emulator.
	Endpoint string `toml:"endpoint"`
}

// Open asks KMS for the key's public key, once, and checks that it is an ECC_NIST_P256
// key for SIGN_VERIFY. The certificate is compared with it by the caller.
func Open(ctx context.Context, spec *conf.Key) (backends.Signer, error) {
	var o Options
	if err := spec.Decode(&o); err != nil {
		return nil, err
	}
	if err := checkOptions(spec, &o); err != nil {
		return nil, err
	}
	client, t, err := connect(ctx, spec, &o)
	if err != nil {
		return nil, err
	}
	return open(ctx, spec, client, t)
}

func open(ctx context.Context, spec *conf.Key, client api, t target) (*Signer, error) {
	out, err := client.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: &t.keyID})
	if err != nil {
		return nil, startError(spec, t, "GetPublicKey", err, backends.ErrUnavailable)
	}
	pub, err := publicKey(t, out)
	if err != nil {
		return nil, spec.Errorf("key_id", "%v", err)
	}
	if out.KeyId == nil || *out.KeyId == "" {
		return nil, fmt.Errorf("%s: keys.%s: %s: GetPublicKey returned no key ARN", spec.File, spec.Name, t)
	}
	return &Signer{api: client, target: t, arn: *out.KeyId, pub: pub, pubDER: out.PublicKey}, nil
}

// Signer signs with a KMS key. It is safe for concurrent use: the SDK client is.
type Signer struct {
	api    api
	target target
	// arn is the key's ARN as GetPublicKey resolved key_id at start. Signing by ARN
	// rather than by alias means that an alias re-pointed later cannot swap the key
	// under the certificate: the daemon keeps signing with the key it checked, and a
	// restart picks up the new one (and checks it against the certificate).
	arn    string
	pub    *ecdsa.PublicKey
	pubDER []byte
}

// Public returns the key's public half, as KMS gave it at start.
func (s *Signer) Public() crypto.PublicKey { return s.pub }

// Sign is SignContext without a deadline; the SDK's retries still bound it.
func (s *Signer) Sign(_ io.Reader, digest []byte, _ crypto.SignerOpts) ([]byte, error) {
	return s.SignContext(context.Background(), digest)
}

// SignContext has KMS sign the SHA-256 digest (MessageType DIGEST, ECDSA_SHA_256: the
// digest is signed as it is, not hashed again) and returns KMS's DER signature. It is
// one Sign call, retried by the SDK on throttling, 5xx and lost connections within ctx's
// deadline. Every failure from KMS wraps backends.ErrUnavailable (HTTP 503) with KMS's
// reason, except a cancelled ctx, which says only that.
func (s *Signer) SignContext(ctx context.Context, digest []byte) ([]byte, error) {
	out, err := s.api.Sign(ctx, &kms.SignInput{
		KeyId:            &s.arn,
		Message:          digest,
		MessageType:      types.MessageTypeDigest,
		SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256,
	})
	if err != nil {
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			// The caller went away: KMS is not at fault, and backend_up must not drop.
			return nil, fmt.Errorf("%s: Sign: %w", s.target, ctx.Err())
		}
		return nil, &kmsError{msg: s.target.String() + ": Sign: " + reason(err), err: err}
	}
	if len(out.Signature) == 0 {
		return nil, fmt.Errorf("%s: Sign returned no signature", s.target)
	}
	return out.Signature, nil
}

// Ready asks KMS for the key's public key, the one call besides Sign that the daemon's
// IAM policy allows: it fails when KMS cannot be reached, the key is disabled, deleted
// or no longer ours to use. One attempt, no retries: the health check asks again soon.
func (s *Signer) Ready(ctx context.Context) error {
	out, err := s.api.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: &s.arn}, func(o *kms.Options) { o.RetryMaxAttempts = 1 })
	if err != nil {
		return &kmsError{msg: s.target.String() + ": GetPublicKey: " + reason(err), err: err}
	}
	if out.KeyUsage != types.KeyUsageTypeSignVerify || !bytes.Equal(out.PublicKey, s.pubDER) {
		return fmt.Errorf("%w: %s: KMS now returns a different key (%s for %s) from the one checked at start; restart the daemon to check it against the certificate", backends.ErrUnavailable, s.target, out.KeySpec, out.KeyUsage)
	}
	return nil
}

// Concurrency is how many Sign calls a batch keeps in flight: KMS answers each in
// milliseconds, mostly waiting on the network, so many at once cost little here. (KMS's
// own request quota is what bounds a burst; throttled calls are retried.)
func (s *Signer) Concurrency() int { return 32 }

// Location names the key and its region (and endpoint, when not AWS's own).
func (s *Signer) Location() string { return s.target.String() }

// Close does nothing: the SDK client holds only idle HTTP connections, which it closes
// after 90 s or the process at exit.
func (s *Signer) Close() error { return nil }

// kmsError is a failed KMS call as clients and logs see it: KMS's reason in one line
// (the SDK's own text repeats the operation and request details), while errors.Is still
// finds backends.ErrUnavailable and the SDK error's causes, such as a deadline.
type kmsError struct {
	msg string
	err error
}

func (e *kmsError) Error() string   { return e.msg }
func (e *kmsError) Unwrap() []error { return []error{backends.ErrUnavailable, e.err} }
