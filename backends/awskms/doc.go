// Package awskms is the backend for keys held in AWS KMS: the key never leaves KMS, and
// every signature is one KMS Sign call.
//
//	[keys.signing]
//	backend = "awskms"
//	key_id = "alias/provenance-signing-key"   # key id, key ARN or alias/NAME
//	region = "eu-west-2"                      # optional: else AWS_REGION, AWS_DEFAULT_REGION, the profile
//	endpoint = "https://vpce-0abc-123.kms.eu-west-2.vpce.amazonaws.com"  # optional
//	certificates = "s3://my-bucket/signing-bundle.pem"                   # or a path
//
// # The key
//
// The key must be an ECC_NIST_P256 key for SIGN_VERIFY. At start the backend calls
// GetPublicKey once, checks the key's spec and usage, and the daemon checks that the
// certificate is for that public key; any difference is a startup error that names the
// key and what KMS reported. The alias is resolved to the key's ARN then, and the daemon
// signs with that ARN until it stops: re-pointing an alias takes effect at the next
// start, where the new key is checked against the certificate.
//
// `provenanced keygen` creates such a key (CreateKey ECC_NIST_P256 / SIGN_VERIFY) and
// gives it the alias key_id names; key_id must be an alias, and one that exists already
// is an error, never re-pointed.
//
// # Signing
//
// The sign path is one call: Sign with MessageType DIGEST and ECDSA_SHA_256 on the
// 32-byte SHA-256 digest the daemon computed. KMS signs the digest as it is (no second
// hash, no 4 KB message limit) and returns the DER signature the daemon returns. Nothing
// else is asked on the sign path; the public key is the one fetched at start.
//
// # Credentials
//
// The AWS SDK for Go v2's standard chain, in its order: the environment
// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), the shared config and
// credentials files and AWS_PROFILE (including SSO and assume-role profiles), web
// identity (AWS_ROLE_ARN with AWS_WEB_IDENTITY_TOKEN_FILE: IRSA in EKS, which sets both
// in the pod), the ECS container role, and the EC2 instance role. The config holds no
// credential, and no message or error of this backend contains one. The identity needs
// kms:Sign and kms:GetPublicKey on the key (keygen also needs kms:CreateKey,
// kms:CreateAlias and kms:DescribeKey).
//
// The endpoint may also come from AWS_ENDPOINT_URL_KMS or AWS_ENDPOINT_URL, as for any
// SDK client; the endpoint field wins over both.
//
// # Failures, retries and timeouts
//
// Each Sign runs under its request's context: server.sign_timeout bounds it, backoff
// included, and a caller that goes away cancels it. Within that, the SDK's standard
// retryer retries throttling (ThrottlingException, with a 1 s base backoff), 5xx answers
// and lost connections, with exponential backoff and jitter, up to MaxAttempts attempts
// (AWS_MAX_ATTEMPTS overrides it). The SDK's client-side retry quota is turned off: it
// is one token bucket shared by every goroutine using the client, which a burst of
// throttling empties in a moment under many concurrent signers, after which calls fail
// without any backoff at all (aws/aws-sdk-go-v2 issues 1665 and 3413); the per-call
// bounds are enough. Refusals that no retry can change (AccessDeniedException, a
// disabled, missing or pending-deletion key, a key of the wrong kind, bad credentials)
// are not retried.
//
// Every failed Sign is HTTP 503 with KMS's reason (its error code and message) and takes
// provenanced_backend_up to 0. The daemon's health check calls Ready every few seconds
// (/readyz answers from what it found, never calling KMS itself): one GetPublicKey
// attempt on the key's ARN (the IAM policy allows nothing else), which brings backend_up
// back to 1 once KMS answers again.
// Signing needs no restart to resume: the next request simply reaches KMS.
//
// The SDK client keeps up to 256 idle connections, so that many concurrent signers do
// not open a new TLS connection per signature (the SDK's default keeps 10).
package awskms
