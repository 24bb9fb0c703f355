package awskms

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// signClient makes KMS's Sign call, and only that, without the SDK's per-call machinery:
// the JSON request is written directly, signed with the SDK's own SigV4 signer and
// credentials, and sent with the SDK's HTTP client; retries follow the same standard
// retryer as every other call (newRetryer), and failures come back as the SDK's error
// types, so the rest of the backend cannot tell the difference.
//
// Why: the SDK spends on each call, in a stack of a few dozen middlewares, about as much
// CPU as the daemon's whole HTTP request costs (measured on a 2-core machine: some
// 70 µs per Sign). Every signature goes through here; nothing else does.
type signClient struct {
	url     string // the KMS endpoint, resolved once
	region  string
	creds   aws.CredentialsProvider
	http    aws.HTTPClient
	signer  *v4.Signer
	retryer aws.Retryer
	now     func() time.Time
}

// newSignClient takes the endpoint, credentials, HTTP client and retryer of an SDK
// client.
func newSignClient(ctx context.Context, c *kms.Client) (*signClient, error) {
	o := c.Options()
	params := kms.EndpointParameters{
		Region:       aws.String(o.Region),
		Endpoint:     o.BaseEndpoint,
		UseFIPS:      aws.Bool(o.EndpointOptions.UseFIPSEndpoint == aws.FIPSEndpointStateEnabled),
		UseDualStack: aws.Bool(o.EndpointOptions.UseDualStackEndpoint == aws.DualStackEndpointStateEnabled),
	}
	ep, err := o.EndpointResolverV2.ResolveEndpoint(ctx, params)
	if err != nil {
		return nil, fmt.Errorf("resolving the KMS endpoint: %w", err)
	}
	u := ep.URI
	if u.Path == "" {
		u.Path = "/"
	}
	return &signClient{url: u.String(), region: o.Region, creds: o.Credentials, http: o.HTTPClient, signer: v4.NewSigner(), retryer: o.Retryer, now: time.Now}, nil
}

// The headers of every Sign request, shared rather than allocated each time.
var (
	signTarget = []string{"TrentService.Sign"}
	jsonType   = []string{"application/x-amz-json-1.1"}
)

// Sign has KMS sign a SHA-256 digest with the key (MessageType DIGEST, ECDSA_SHA_256),
// retrying as the SDK would, within ctx.
func (c *signClient) Sign(ctx context.Context, keyID string, digest []byte) ([]byte, error) {
	body := make([]byte, 0, 160+len(keyID))
	body = append(body, `{"KeyId":`...)
	body, _ = appendJSON(body, keyID)
	body = append(body, `,"Message":"`...)
	body = base64.StdEncoding.AppendEncode(body, digest)
	body = append(body, `","MessageType":"DIGEST","SigningAlgorithm":"ECDSA_SHA_256"}`...)
	sum := sha256.Sum256(body)
	hash := hex.EncodeToString(sum[:])
	for attempt := 1; ; attempt++ {
		sig, err := c.attempt(ctx, body, hash)
		if err == nil {
			return sig, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		if attempt >= c.retryer.MaxAttempts() || !c.retryer.IsErrorRetryable(err) {
			if attempt > 1 {
				err = &retry.MaxAttemptsError{Attempt: attempt, Err: err}
			}
			return nil, err
		}
		delay, derr := c.retryer.RetryDelay(attempt, err)
		if derr != nil {
			return nil, err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w (while waiting to retry after: %w)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

func (c *signClient) attempt(ctx context.Context, body []byte, hash string) ([]byte, error) {
	creds, err := c.creds.Retrieve(ctx)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header["X-Amz-Target"] = signTarget
	req.Header["Content-Type"] = jsonType
	if err := c.signer.SignHTTP(ctx, creds, req, hash, "kms", c.region, c.now()); err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// As the SDK's own calls do: any failure to send is a connection error, which
		// the standard retryer retries.
		return nil, &smithyhttp.RequestSendError{Err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusOK {
		var out struct {
			Signature []byte
		}
		if err := json.Unmarshal(data, &out); err != nil || len(out.Signature) == 0 {
			return nil, fmt.Errorf("KMS answered Sign without a signature (%d bytes)", len(data))
		}
		return out.Signature, nil
	}
	return nil, &awshttp.ResponseError{
		ResponseError: &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: resp}, Err: apiError(resp, data)},
		RequestID:     resp.Header.Get("X-Amzn-Requestid"),
	}
}

// apiError reads KMS's JSON error ({"__type": "...#ThrottlingException", "message":
// "..."}) into the SDK's type for that error, so that errors.As finds the same types as
// for the SDK's own calls.
func apiError(resp *http.Response, data []byte) error {
	var e struct {
		Type     string `json:"__type"`
		Message  string `json:"message"`
		MessageC string `json:"Message"`
	}
	json.Unmarshal(data, &e)
	code := e.Type
	if i := strings.LastIndexByte(code, '#'); i >= 0 {
		code = code[i+1:]
	}
	if i := strings.IndexByte(code, ':'); i >= 0 {
		code = code[:i]
	}
	if code == "" {
		code = resp.Header.Get("X-Amzn-Errortype")
		if i := strings.IndexByte(code, ':'); i >= 0 {
			code = code[:i]
		}
	}
	if code == "" {
		code = fmt.Sprintf("HTTP%d", resp.StatusCode)
	}
	msg := e.Message
	if msg == "" {
		msg = e.MessageC
	}
	m := aws.String(msg)
	switch code {
	case "NotFoundException":
		return &types.NotFoundException{Message: m}
	case "DisabledException":
		return &types.DisabledException{Message: m}
	case "KMSInvalidStateException":
		return &types.KMSInvalidStateException{Message: m}
	case "InvalidKeyUsageException":
		return &types.InvalidKeyUsageException{Message: m}
	case "UnsupportedOperationException":
		return &types.UnsupportedOperationException{Message: m}
	case "InvalidArnException":
		return &types.InvalidArnException{Message: m}
	case "KeyUnavailableException":
		return &types.KeyUnavailableException{Message: m}
	case "DependencyTimeoutException":
		return &types.DependencyTimeoutException{Message: m}
	case "KMSInternalException":
		return &types.KMSInternalException{Message: m}
	}
	fault := smithy.FaultClient
	if resp.StatusCode >= 500 {
		fault = smithy.FaultServer
	}
	return &smithy.GenericAPIError{Code: code, Message: msg, Fault: fault}
}

// appendJSON appends s as a JSON string.
func appendJSON(b []byte, s string) ([]byte, error) {
	q, err := json.Marshal(s)
	return append(b, q...), err
}
