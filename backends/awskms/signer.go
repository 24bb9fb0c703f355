package awskms

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"time"

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
	// ReadyCheckInterval is how long the key may go without a signature before the
	// readiness check makes a test signature ("5s" when empty).
	ReadyCheckInterval string `toml:"ready_check_interval"`
	// DownAfter is how long KMS may leave every call unanswered (no answer, 5xx, no
	// connection) before the key counts as down ("1m" when empty; "0s": at once).
	DownAfter string `toml:"down_after"`
}

// The defaults of ready_check_interval and down_after.
const (
	DefaultReadyCheckInterval = 5 * time.Second
	DefaultDownAfter          = time.Minute
)

// Open asks KMS for the key's public key and checks that it is an ECC_NIST_P256 key for
// SIGN_VERIFY, then makes a test signature: GetPublicKey proves neither that the
// identity may sign nor that the key is enabled. The certificate is compared with the
// public key by the caller.
func Open(ctx context.Context, spec *conf.Key) (backends.Signer, error) {
	var o Options
	if err := spec.Decode(&o); err != nil {
		return nil, err
	}
	set, err := checkOptions(spec, &o)
	if err != nil {
		return nil, err
	}
	client, t, err := connect(ctx, spec, &o)
	if err != nil {
		return nil, err
	}
	return open(ctx, spec, client, t, set)
}

func open(ctx context.Context, spec *conf.Key, client api, t target, set settings) (*Signer, error) {
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
	s := &Signer{api: client, target: t, arn: *out.KeyId, pub: pub, settings: set}
	// Only a refusal stops the start (exit status 2: the identity's rights, the key's
	// state or the credentials must change). A signature that does not verify, or a KMS
	// that is busy or gone again already, leaves a daemon that starts not ready, or
	// ready until down_after, as it would be had this happened a moment later.
	if err := s.probe(ctx); err != nil && permanent(err) {
		return nil, startError(spec, t, "Sign", err, backends.ErrUnavailable)
	}
	return s, nil
}

// Signer signs with a KMS key. It is safe for concurrent use: the SDK client is.
type Signer struct {
	api    api
	target target
	// arn is the key's ARN as GetPublicKey resolved key_id at start. Signing by ARN
	// rather than by alias means that an alias re-pointed later cannot swap the key
	// under the certificate: the daemon keeps signing with the key it checked, and a
	// restart picks up the new one (and checks it against the certificate).
	arn string
	pub *ecdsa.PublicKey
	settings
	state state
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
// reason, except a cancelled ctx, which says only that; a throttled call, or one KMS
// left unanswered for less than down_after, wraps backends.ErrTransient too.
func (s *Signer) SignContext(ctx context.Context, digest []byte) ([]byte, error) {
	return s.sign(ctx, digest)
}

// sign is one Sign call (opts change the SDK's options for it), its outcome recorded.
func (s *Signer) sign(ctx context.Context, digest []byte, opts ...func(*kms.Options)) ([]byte, error) {
	out, err := s.api.Sign(ctx, &kms.SignInput{
		KeyId:            &s.arn,
		Message:          digest,
		MessageType:      types.MessageTypeDigest,
		SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256,
	}, opts...)
	if err != nil && errors.Is(err, context.Canceled) && ctx.Err() != nil {
		// The caller went away: KMS is not at fault, and backend_up must not drop.
		return nil, fmt.Errorf("%s: Sign: %w", s.target, ctx.Err())
	}
	if err == nil && len(out.Signature) == 0 {
		err = errors.New("KMS returned no signature")
	}
	o := classify(err)
	if err == nil {
		s.state.record(o, nil, time.Now())
		return out.Signature, nil
	}
	e := &kmsError{msg: s.target.String() + ": Sign: " + reason(err) + hint(err, "Sign", s.target), err: err}
	now := time.Now()
	s.state.record(o, &kmsError{msg: e.msg, err: err}, now) // a copy: e changes below
	since, down := s.state.sustained(now, s.downAfter)
	switch {
	case o == throttled || o == unanswered && !down:
		e.passing = true
	case o == unanswered:
		e.msg += "; " + silence(since, s.downAfter)
	}
	return nil, e
}

// probeDigest is what test signatures sign: a digest no record or client sends on purpose.
var probeDigest = sha256.Sum256([]byte("provenanced: can this KMS key sign?"))

// probe makes a test signature and verifies it with the key's public key: a signature
// that KMS made and that verifies is the one proof that the key signs, correctly, for
// this identity. opts change the SDK's options for the call.
func (s *Signer) probe(ctx context.Context, opts ...func(*kms.Options)) error {
	sig, err := s.sign(ctx, probeDigest[:], opts...)
	if err == nil && !ecdsa.VerifyASN1(s.pub, probeDigest[:], sig) {
		err = &kmsError{err: backends.ErrBadSignature, msg: s.target.String() + ": a test signature that KMS made does not verify with the key's public key (GetPublicKey's): KMS signs wrongly, or with another key than the one it names"}
	}
	s.state.probed(err)
	return err
}

// Ready reports whether the key can sign, from what its signatures have shown: a test
// signature (one attempt) when the key has not signed for ready_check_interval, or has
// failed since; else nothing is asked of KMS. It is not ready when KMS refused the key
// or the identity (at once: no wait changes that), when its last test signature did not
// verify, or when KMS has answered no call for down_after. Throttling is an answer: a
// KMS quota that every replica shares must not take every replica out of service at once.
func (s *Signer) Ready(ctx context.Context) error {
	if s.state.needsProbe(time.Now(), s.every) {
		s.probe(ctx, func(o *kms.Options) { o.RetryMaxAttempts = 1 })
	}
	return s.state.verdict(time.Now(), s.downAfter)
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
// finds backends.ErrUnavailable (and ErrTransient for a passing failure) and the SDK
// error's causes, such as a deadline.
type kmsError struct {
	msg     string
	err     error
	passing bool
}

func (e *kmsError) Error() string { return e.msg }
func (e *kmsError) Unwrap() []error {
	if e.passing {
		return []error{backends.ErrUnavailable, backends.ErrTransient, e.err}
	}
	return []error{backends.ErrUnavailable, e.err}
}
