// Package awskms is the backend for keys held in AWS KMS: the key never leaves KMS, and
// every signature is one KMS Sign call.
//
//	[keys.signing]
//	backend = "awskms"
//	key_id = "alias/provenance-signing-key"   # key id, key ARN or alias/NAME
//	region = "eu-west-2"                      # optional: else AWS_REGION, AWS_DEFAULT_REGION, the profile
//	endpoint = "https://vpce-0abc-123.kms.eu-west-2.vpce.amazonaws.com"  # optional
//	certificates = "s3://my-bucket/signing-bundle.pem"                   # or a path
//	ready_check_interval = "5s"   # optional: a test signature when the key has not signed for this long
//	down_after = "1m"             # optional: how long KMS may answer nothing before the key is down
//
// # The key
//
// The key must be an ECC_NIST_P256 key for SIGN_VERIFY. At start the backend calls
// GetPublicKey once, checks the key's spec and usage (KeySpec, or CustomerMasterKeySpec
// from a KMS that sends only the field AWS deprecated in 2021, as moto does), and the
// daemon checks that the certificate is for that public key; then it makes a test
// signature, since GetPublicKey proves neither that the identity may sign nor that the
// key is enabled. Any difference is a startup error that names the key and what KMS
// reported; a refusal (the key disabled, pending deletion or missing, the identity
// without kms:Sign or kms:GetPublicKey, credentials AWS does not accept) is a
// configuration error, exit status 2, which says what to change. The alias is resolved
// to the key's ARN then, and the daemon signs with that ARN until it stops: re-pointing
// an alias takes effect at the next start, where the new key is checked against the
// certificate.
//
// `provenanced keygen` creates such a key (CreateKey ECC_NIST_P256 / SIGN_VERIFY) and
// gives it the alias key_id names; key_id must be an alias, and one that exists already
// is an error, never re-pointed. Should a step after CreateKey fail, keygen deletes the
// alias it made and schedules the key for deletion (7 days, KMS's shortest wait), or
// names what it could not remove and how.
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
// kms:CreateAlias and kms:DescribeKey, and kms:DeleteAlias and kms:ScheduleKeyDeletion to
// undo a keygen that failed half way). Credentials that AWS refuses are named by the link
// of the chain that gave them (EnvConfigCredentials, a shared file, web identity, ...).
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
// KMS's refusals are read in every form they come in: KMS's JSON, and AWS's query XML
// (<ErrorResponse>) or a JSON {"Error": {...}}, which IAM's checks in front of a service,
// some front ends and proxies, and moto answer with. The SDK's own deserializer reads only
// the first, and reduces the others to "HTTP status 403" (see readErrorBodies).
//
// Every failed Sign is HTTP 503 with KMS's reason (its error code and message, and what
// would mend a refusal). Whether the key is down (not ready, provenanced_backend_up 0) is
// Ready's call, from what the key's signatures have shown (state):
//
//   - A refusal (access denied, credentials refused, the key disabled, pending deletion or
//     missing) takes it down at once: no wait changes it.
//   - A test signature that does not verify takes it down until one does.
//   - Calls that go unanswered (KMS unreachable, 5xx, no answer before the deadline) take
//     it down once KMS has answered nothing for down_after (a minute by default; "0s": at
//     once); until then each failed signature is marked backends.ErrTransient, and the
//     daemon leaves readiness and backend_up alone. A minute is twelve background checks,
//     past the retries of several signatures and the blips that a kept-alive connection
//     or a KMS front end has; yet short beside ProvenancedBackendDown's two minutes, so an
//     outage is alerted within three.
//   - Throttling is an answer, not a failure: it never takes the key down, and it ends a
//     run of unanswered calls. A KMS quota is shared by every replica in the account and
//     region; were throttling to turn readiness off, a busy minute would take every
//     replica (and, with the sidecar's readinessProbe, every application pod) out of
//     service at once. provenanced_kms_throttled_total shows it instead.
//
// The daemon's health check calls Ready every 5 s (/readyz answers from what it found,
// never calling KMS itself). Ready makes a test signature, one attempt, verified with the
// key's public key, when the key has not signed for ready_check_interval (5 s by default),
// or has failed since: so a key that clients keep busy costs no extra call, an idle one
// one Sign every interval, and a key that is down is tried every 5 s. Readiness thus
// proves kms:Sign, which the GetPublicKey it used to make did not: an identity without it
// was ready, and backend_up went back to 1 at every check. Signing needs no restart to
// resume: the next request simply reaches KMS.
//
// The SDK client keeps up to 256 idle connections, so that many concurrent signers do
// not open a new TLS connection per signature (the SDK's default keeps 10).
package awskms
