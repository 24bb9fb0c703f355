package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// maxSourceBytes bounds a certificate source read from S3. A bundle is a few KB; a
// larger object is the wrong object.
const maxSourceBytes = 1 << 20

// readS3 reads s3://bucket/key with the AWS SDK's standard chain for credentials and
// region (AWS_REGION or AWS_DEFAULT_REGION, the profile, ...), as the original service
// did. AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL) points it at an S3-compatible server or
// a VPC endpoint instead of AWS's; buckets are then addressed by path
// (http://host/bucket/key), which such servers serve and AWS's endpoints accept.
//
// Like a file's, its errors do not repeat ref (the caller names it), and never contain
// a credential.
func readS3(ctx context.Context, ref string) ([]byte, error) {
	bucket, key, err := parseS3(ref)
	if err != nil {
		return nil, err
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot load the AWS configuration (environment, shared config and profile): %v", err)
	}
	if cfg.Region == "" {
		return nil, errors.New("no AWS region is configured: set AWS_REGION (or AWS_DEFAULT_REGION) to the bucket's region")
	}
	// Asked first, so that a missing credential is reported as such: the SDK's error
	// for it, met inside GetObject, often holds the instance metadata service's
	// network error and would read as S3 being unreachable. (The cache keeps them for
	// the call.)
	if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
		return nil, fmt.Errorf("no AWS credentials: the SDK's chain (environment, shared config and profile, web identity, container or instance role) gave none: %v", err)
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if o.BaseEndpoint != nil {
			o.UsePathStyle = true
		}
		// Objects uploaded without a checksum (most certificate bundles) would otherwise
		// print an SDK debug line on the daemon's stderr at every start.
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		return nil, s3Error(bucket, key, err)
	}
	defer out.Body.Close()
	data, err := io.ReadAll(io.LimitReader(out.Body, maxSourceBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading the object: %v", err)
	}
	if len(data) > maxSourceBytes {
		return nil, fmt.Errorf("the object is larger than %d bytes; a certificate bundle is a few KB", maxSourceBytes)
	}
	return data, nil
}

// parseS3 splits s3://bucket/key. The key is taken as it is, as the AWS CLI takes it:
// no URL decoding.
func parseS3(ref string) (bucket, key string, err error) {
	rest, ok := strings.CutPrefix(ref, "s3://")
	if !ok {
		return "", "", fmt.Errorf("%q is not an s3://bucket/key URL", ref)
	}
	bucket, key, _ = strings.Cut(rest, "/")
	if bucket == "" || key == "" {
		return "", "", fmt.Errorf("%q is not an s3://bucket/key URL: it needs both a bucket and an object key", ref)
	}
	return bucket, key, nil
}

// s3Error says why GetObject failed in S3's words (its error code and message).
func s3Error(bucket, key string, err error) error {
	var (
		noKey *types.NoSuchKey
		ae    smithy.APIError
		re    *smithyhttp.ResponseError
		oe    *net.OpError
	)
	code, msg := "", ""
	if errors.As(err, &ae) {
		code, msg = ae.ErrorCode(), ae.ErrorMessage()
	}
	status := 0
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	detail := code
	if msg != "" {
		detail += ": " + msg
	}
	switch {
	case errors.As(err, &noKey) || code == "NoSuchKey":
		return fmt.Errorf("not found: bucket %q has no object %q", bucket, key)
	case code == "NoSuchBucket":
		return fmt.Errorf("not found: there is no bucket %q", bucket)
	case code == "AccessDenied" || status == 403:
		if detail == "" {
			detail = "HTTP 403"
		}
		return fmt.Errorf("access denied (%s): the daemon's identity needs s3:GetObject on arn:aws:s3:::%s/%s", detail, bucket, key)
	case status == 404:
		return fmt.Errorf("not found (HTTP 404 for bucket %q, object %q)", bucket, key)
	case detail != "":
		return fmt.Errorf("S3 refused: %s", detail)
	case errors.As(err, &oe):
		return fmt.Errorf("cannot reach S3: %v", oe)
	}
	return err
}
