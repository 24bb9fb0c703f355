package awskms

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/ib1/provenanced/conf"
)

// MaxAttempts is how many times one KMS call is tried (the first attempt and two
// retries), unless AWS_MAX_ATTEMPTS or the profile's max_attempts says otherwise. The
// request's own deadline (server.sign_timeout) bounds the whole, backoff included.
const MaxAttempts = 3

// maxIdleConns is the connections kept open to KMS. The SDK keeps 10 per host, so a
// daemon signing for more than 10 callers at once would close and reopen connections
// (a TLS handshake each) all the time.
const maxIdleConns = 256

// api is what the signer asks of KMS; *kms.Client implements it. Nothing else is called
// on the sign path.
type api interface {
	Sign(ctx context.Context, in *kms.SignInput, opts ...func(*kms.Options)) (*kms.SignOutput, error)
	GetPublicKey(ctx context.Context, in *kms.GetPublicKeyInput, opts ...func(*kms.Options)) (*kms.GetPublicKeyOutput, error)
}

// target says which key in which KMS: what every message names.
type target struct {
	keyID    string // as configured: id, ARN or alias/NAME
	region   string
	endpoint string // "" for AWS's own endpoint (or AWS_ENDPOINT_URL_KMS)
	creds    *markCredentials
}

func (t target) String() string { return "AWS KMS key " + t.keyID + " in " + t.where() }

// service names the KMS without the key: "AWS KMS in eu-west-2".
func (t target) service() string { return "AWS KMS in " + t.where() }

func (t target) where() string {
	if t.endpoint != "" {
		return t.region + " at " + t.endpoint
	}
	return t.region
}

// settings are the key's durations, parsed.
type settings struct {
	every     time.Duration // ready_check_interval
	downAfter time.Duration // down_after
}

// checkOptions validates what can be checked without asking AWS.
func checkOptions(spec *conf.Key, o *Options) (settings, error) {
	set := settings{every: DefaultReadyCheckInterval, downAfter: DefaultDownAfter}
	if o.KeyID == "" {
		return set, spec.Errorf("key_id", "missing: the KMS key's id, ARN or alias (\"alias/provenance-signing-key\")")
	}
	if strings.TrimSpace(o.KeyID) != o.KeyID || strings.ContainsAny(o.KeyID, " \t\r\n") {
		return set, spec.Errorf("key_id", "%q contains white space; give the key's id, ARN or alias/NAME", o.KeyID)
	}
	if o.Endpoint != "" {
		u, err := url.Parse(o.Endpoint)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return set, spec.Errorf("endpoint", "%q is not an http:// or https:// URL (for example \"https://vpce-0123-abcd.kms.eu-west-2.vpce.amazonaws.com\" or an emulator's \"http://127.0.0.1:4599\")", o.Endpoint)
		}
	}
	if o.ReadyCheckInterval != "" {
		d, err := time.ParseDuration(o.ReadyCheckInterval)
		if err != nil || d < 100*time.Millisecond || d > time.Hour {
			return set, spec.Errorf("ready_check_interval", "must be a duration from 100ms to 1h, such as \"5s\"; got %q", o.ReadyCheckInterval)
		}
		set.every = d
	}
	if o.DownAfter != "" {
		d, err := time.ParseDuration(o.DownAfter)
		if err != nil || d < 0 || d > time.Hour {
			return set, spec.Errorf("down_after", "must be a duration from 0s (at once) to 1h, such as \"1m\"; got %q", o.DownAfter)
		}
		set.downAfter = d
	}
	return set, nil
}

// connect builds the KMS client: credentials and, when region is empty, the region from
// the SDK's standard chain; retries tuned for many goroutines sharing the client.
func connect(ctx context.Context, spec *conf.Key, o *Options) (*kms.Client, target, error) {
	t := target{keyID: o.KeyID, region: o.Region, endpoint: o.Endpoint}
	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(newRetryer),
		config.WithHTTPClient(awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
			tr.MaxIdleConns = maxIdleConns
			tr.MaxIdleConnsPerHost = maxIdleConns
		})),
	}
	if o.Region != "" {
		opts = append(opts, config.WithRegion(o.Region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		// A named profile that does not exist, a malformed shared config file. The
		// SDK's message names the profile or file, never a secret.
		return nil, t, spec.Errorf("", "cannot load the AWS configuration (environment, shared config and profile): %v", err)
	}
	if cfg.Region == "" {
		return nil, t, spec.Errorf("region", "missing, and the AWS configuration has none either: set region = \"eu-west-2\" (or AWS_REGION / AWS_DEFAULT_REGION, or region in the AWS profile)")
	}
	t.region = cfg.Region
	if cfg.Credentials != nil {
		mc := &markCredentials{CredentialsProvider: cfg.Credentials}
		cfg.Credentials, t.creds = mc, mc
	}
	// Wrapped only now: loading the configuration adds AWS_CA_BUNDLE's roots to the
	// SDK's own client type, and would refuse another.
	cfg.HTTPClient = resendReadOnly{cfg.HTTPClient}
	client := kms.NewFromConfig(cfg, func(ko *kms.Options) {
		ko.APIOptions = append(ko.APIOptions, countAttempts(spec.Name), addReadErrorBodies)
		if o.Endpoint != "" {
			ko.BaseEndpoint = aws.String(o.Endpoint)
		}
	})
	if e := client.Options().BaseEndpoint; e != nil {
		// Set by AWS_ENDPOINT_URL_KMS or AWS_ENDPOINT_URL when not by the config:
		// messages should say where the daemon actually goes.
		t.endpoint = *e
	}
	return client, t, nil
}

// resendReadOnly lets net/http send KMS's read-only calls again, at once and on a fresh
// connection, when the kept-alive connection it picked turns out to be closed (KMS or a
// load balancer let it go as the request went out). Without it such a call fails with
// EOF: a Sign then waits for the retryer's backoff, and a readiness check, which has one
// attempt, reports KMS down when it is not. net/http resends only a request that it can
// rewind (GetBody) and that is marked idempotent; the SDK's requests are neither, so
// their small JSON body is kept in memory, and the mark is an empty Idempotency-Key,
// which is never sent (and is set after SigV4 has signed the headers).
type resendReadOnly struct{ aws.HTTPClient }

func (c resendReadOnly) Do(req *http.Request) (*http.Response, error) {
	switch req.Header.Get("X-Amz-Target") {
	case "TrentService.Sign", "TrentService.GetPublicKey", "TrentService.DescribeKey":
		if req.GetBody == nil && req.Body != nil && req.Body != http.NoBody {
			body, err := io.ReadAll(req.Body)
			req.Body.Close()
			if err != nil {
				return nil, err
			}
			req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
			req.Body, _ = req.GetBody()
		}
		req.Header["Idempotency-Key"] = nil
	}
	return c.HTTPClient.Do(req)
}

// newRetryer is the SDK's standard retryer (exponential backoff with jitter; throttling,
// 5xx and connection errors retried; MaxAttempts tries) with two changes:
//
//   - No retry quota. The SDK shares one token bucket of 500 among every call of a
//     client and makes each retry pay 5 to 14 tokens; with hundreds of goroutines
//     signing through one client, a burst of throttling empties it within a second and
//     every later call then fails at once with "retry quota exceeded" instead of
//     backing off (aws/aws-sdk-go-v2#1665, #3413). Each call here is bounded already by
//     MaxAttempts and by its request's deadline, so the quota only turns a short KMS
//     hiccup into a burst of 503s.
//   - Errors that cannot succeed on a retry are never retried, whatever the SDK's
//     defaults become: access denied, a disabled, missing or wrong key.
func newRetryer() aws.Retryer {
	return retry.NewStandard(func(so *retry.StandardOptions) {
		so.MaxAttempts = MaxAttempts
		so.RateLimiter = ratelimit.None
		so.Retryables = append([]retry.IsErrorRetryable{retry.IsErrorRetryableFunc(func(err error) aws.Ternary {
			if permanent(err) {
				return aws.FalseTernary
			}
			return aws.UnknownTernary
		})}, so.Retryables...)
	})
}

// permanent reports whether KMS refused in a way that no retry can change: the key is
// missing, disabled or unfit, or the caller may not use it.
func permanent(err error) bool {
	var (
		notFound    *types.NotFoundException
		disabled    *types.DisabledException
		state       *types.KMSInvalidStateException
		usage       *types.InvalidKeyUsageException
		unsupported *types.UnsupportedOperationException
		arn         *types.InvalidArnException
	)
	if errors.As(err, &notFound) || errors.As(err, &disabled) || errors.As(err, &state) ||
		errors.As(err, &usage) || errors.As(err, &unsupported) || errors.As(err, &arn) {
		return true
	}
	var ae smithy.APIError
	return denied(err) || credentialsRefused(err) || errors.As(err, &ae) && ae.ErrorCode() == "ValidationException"
}

// denied reports whether the identity may not do what was asked: KMS's
// AccessDeniedException, or AccessDenied from IAM's check in front of it (AWS query XML).
func denied(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && (ae.ErrorCode() == "AccessDeniedException" || ae.ErrorCode() == "AccessDenied")
}

// credentialsRefused reports whether AWS refused the credentials themselves: an unknown
// access key, a wrong secret, an expired session. KMS's JSON has the first codes, AWS's
// query XML the others.
func credentialsRefused(err error) bool {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.ErrorCode() {
	case "UnrecognizedClientException", "InvalidSignatureException", "IncompleteSignature",
		"MissingAuthenticationToken", "ExpiredTokenException",
		"InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "AuthFailure":
		return true
	}
	return false
}

// markCredentials marks the chain's failures, so that a call that failed for want of
// credentials says so rather than blame KMS (the SDK's error for it has no type of its
// own, and may well hold a network error from the instance metadata service). It keeps
// which link of the chain gave the credentials, so that a refusal of them can say where
// to look.
type markCredentials struct {
	aws.CredentialsProvider
	source atomic.Value // string: the last credentials' Source
}

func (m *markCredentials) Retrieve(ctx context.Context) (aws.Credentials, error) {
	c, err := m.CredentialsProvider.Retrieve(ctx)
	if err != nil {
		return c, &credentialsError{err}
	}
	m.source.Store(c.Source)
	return c, nil
}

// Source names the provider of the credentials last used ("EnvConfigCredentials",
// "SharedConfigCredentials: /root/.aws/credentials", "WebIdentityCredentials", ...), or "".
func (m *markCredentials) Source() string {
	if m == nil {
		return ""
	}
	s, _ := m.source.Load().(string)
	return s
}

type credentialsError struct{ err error }

func (e *credentialsError) Error() string { return e.err.Error() }
func (e *credentialsError) Unwrap() error { return e.err }

// reason says why a KMS call failed, in KMS's words: its error code and message, which
// name keys and identities but never a credential. Transport failures say what could not
// be reached; the SDK's long "operation error KMS: Sign, https response error ..."
// wrapping is left out.
func reason(err error) string {
	attempts := ""
	var me *retry.MaxAttemptsError
	if errors.As(err, &me) && me.Attempt > 1 {
		attempts = fmt.Sprintf(" (after %d attempts)", me.Attempt)
	}
	var ce *credentialsError
	if errors.As(err, &ce) {
		return "no AWS credentials: the SDK's chain (environment, shared config and profile, web identity, container or instance role) gave none: " + ce.err.Error() + attempts
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		msg := ae.ErrorMessage()
		if msg == "" {
			return ae.ErrorCode() + attempts
		}
		return ae.ErrorCode() + ": " + msg + attempts
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "no answer before the deadline" + attempts
	case errors.Is(err, context.Canceled):
		return "cancelled" + attempts
	}
	var se *smithyhttp.RequestSendError
	if errors.As(err, &se) {
		inner := se.Err
		var ue *url.Error
		if errors.As(inner, &ue) {
			inner = ue.Err // without "Post URL": the endpoint is named already
		}
		if errors.Is(inner, io.EOF) || errors.Is(inner, io.ErrUnexpectedEOF) {
			return "cannot reach AWS KMS: it closed the connection without answering" + attempts
		}
		return "cannot reach AWS KMS: " + inner.Error() + attempts
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return "cannot reach AWS KMS: " + oe.Error() + attempts
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		// An answer that is neither KMS's JSON nor AWS's XML: a proxy's or load
		// balancer's page. Its type says whose it may be; its text is not repeated, since
		// nothing bounds what it echoes.
		if ct := re.Response.Header.Get("Content-Type"); ct != "" {
			return fmt.Sprintf("HTTP status %d from AWS KMS, with a %s answer that is not KMS's%s", re.HTTPStatusCode(), ct, attempts)
		}
		return fmt.Sprintf("HTTP status %d from AWS KMS%s", re.HTTPStatusCode(), attempts)
	}
	return err.Error()
}

// publicKey checks what GetPublicKey returned: an ECC_NIST_P256 key for SIGN_VERIFY, the
// only kind provenanced signs with.
func publicKey(t target, out *kms.GetPublicKeyOutput) (*ecdsa.PublicKey, error) {
	if keySpec(out) != types.KeySpecEccNistP256 || out.KeyUsage != types.KeyUsageTypeSignVerify {
		spec, usage := string(keySpec(out)), string(out.KeyUsage)
		if spec == "" {
			spec = "(no key spec)"
		}
		if usage == "" {
			usage = "(no key usage)"
		}
		return nil, fmt.Errorf("%s has key spec %s and key usage %s; provenanced needs key spec ECC_NIST_P256 and key usage SIGN_VERIFY (provenanced keygen creates such a key)", t, spec, usage)
	}
	pub, err := x509.ParsePKIXPublicKey(out.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("%s: KMS returned a public key that does not parse: %v", t, err)
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%s: KMS says ECC_NIST_P256 but returned a %T public key", t, pub)
	}
	return ec, nil
}

// keySpec is the key's spec as GetPublicKey gives it: KeySpec, or, from a KMS that has
// only the field KeySpec replaced (AWS deprecated CustomerMasterKeySpec in 2021, and
// moto still sends it alone), CustomerMasterKeySpec, which has the same values.
func keySpec(out *kms.GetPublicKeyOutput) types.KeySpec {
	if out.KeySpec == "" {
		return types.KeySpec(out.CustomerMasterKeySpec)
	}
	return out.KeySpec
}

// startError turns a failed call at start into an error that names the key: a config
// error (exit status 2: systemd's RestartPreventExitStatus keeps it from a restart loop)
// when the key, the credentials or the identity's rights must change, a plain one
// wrapping ErrUnavailable when KMS could not be reached and a later start may succeed.
func startError(spec *conf.Key, t target, op string, err error, unavailable error) error {
	var notFound *types.NotFoundException
	switch {
	case errors.As(err, &notFound):
		return spec.Errorf("key_id", "%s has no key %s: %s", t.service(), t.keyID, reason(err))
	case permanent(err):
		return spec.Errorf("key_id", "%s cannot be used: %s: %s%s", t, op, reason(err), hint(err, op, t))
	}
	return fmt.Errorf("%s: keys.%s: %w: %s: %s: %s", spec.File, spec.Name, unavailable, t, op, reason(err))
}

// hint says what would mend a refusal: which right the identity lacks, where the refused
// credentials came from, how to bring a disabled or doomed key back.
func hint(err error, op string, t target) string {
	var (
		disabled    *types.DisabledException
		unsupported *types.UnsupportedOperationException
		state       *types.KMSInvalidStateException
	)
	switch {
	case errors.As(err, &unsupported):
		return " (a symmetric or HMAC key has no public key; provenanced needs key spec ECC_NIST_P256 and key usage SIGN_VERIFY)"
	case errors.As(err, &disabled):
		return " (the key is disabled: enable it with aws kms enable-key --key-id KEY, or point key_id at the key that replaced it)"
	case errors.As(err, &state) && strings.Contains(state.ErrorMessage(), "pending deletion"):
		return " (the key is scheduled for deletion: aws kms cancel-key-deletion --key-id KEY, then aws kms enable-key --key-id KEY, brings it back; or point key_id at the key that replaced it)"
	case denied(err) && (op == "Sign" || op == "GetPublicKey"):
		return " (the daemon's identity needs kms:" + op + " on this key: docs/aws-kms.md has the IAM policy, kms:Sign and kms:GetPublicKey on the key's ARN)"
	case denied(err):
		return " (keygen's identity needs kms:" + op + ": docs/aws-kms.md lists what keygen needs)"
	case credentialsRefused(err):
		from := ""
		if src := t.creds.Source(); src != "" {
			from = ", which came from " + src
		}
		return " (AWS refused the credentials the SDK's chain found" + from + ": check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE and its files, or the role the pod or instance runs as; a session token may have expired)"
	}
	return ""
}
