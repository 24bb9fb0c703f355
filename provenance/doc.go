// Package provenance reads, verifies and writes IB1 Trust Framework provenance records, in
// the self-contained wire format of the reference Python library ib1-provenance 0.5.3, byte
// for byte where the format says so. The reference vectors in testdata/vectors (their
// MANIFEST.md) are the executable description of that format; the README's "Provenance
// records" section lists where this package is stricter than the reference.
//
// A record carries a container of signed steps. Each member that handles the data verifies
// the record it received, includes its container whole, appends its own steps and signs the
// new container with its signing key, whose certificate chain (up to, not including, the
// trust framework's root CA) travels in the record. The package does no I/O and keeps no
// global state: time, randomness, keys and root CAs are passed in.
//
// # Reading
//
//	roots, _ := provenance.ParseRootsPEM(rootPEM)
//	v, _ := provenance.NewVerifier(roots, "https://registry.core.trust.ib1.org/trust-framework")
//	rec, steps, err := v.VerifyJSON(body) // err is a *VerifyError naming the failed check
//	transfer, err := provenance.Find(steps, required)
//	graph := provenance.DOT(steps)
//
// A Verifier is safe for concurrent use and should be long-lived: it caches parsed
// certificates and verified certificate paths (bounded; see NewVerifier). It never caches
// the ECDSA signature over a container's data, which is checked every time.
//
// # Writing
//
//	b := provenance.NewBuilder(framework, time.Now(), rand.Reader)
//	decoded, err := b.Receive(v, received)  // verified, then included first
//	id, err := b.AddStep(provenance.NewStep("receipt", provenance.Member{Key: "transfer", Value: tid}))
//	rec, err := b.Sign(ctx, key, chain)     // key: crypto.Signer (ContextSigner preferred)
//	out, err := rec.Marshal()
//
// Sign (with a SignInput) does the same in one call when no step refers to another new step.
//
// # JSON values
//
// Steps are JSON objects whose member order and number text must survive, which
// map[string]any and float64 do not guarantee. Values here are nil, bool, string,
// json.Number, []any and *Object (an ordered list of members). ParseJSON, ParseStep and
// Object.UnmarshalJSON read JSON text into them; AppendJSON writes them exactly as Python's
// json.dumps(separators=(",", ":"), ensure_ascii=True) does, which is how steps are
// encoded. Decoded steps returned by Verify are new on every call, but the "_signature"
// value is shared by the steps of one container: treat decoded steps as read-only.
//
// # Checks
//
// Verification fails with a *VerifyError whose Check is one of the Check* constants (the
// names of the shared test vectors' manifest) and whose Error() starts with it. Per
// container, outermost first and then depth first, the checks run in this order: version
// (container-version), serial (serial-format), certificates entries (certificate-lookup),
// signing time (signing-time), certificate path at the signing time (certificate-path),
// ECDSA signature (signature), then each element: a nested container recursively, or a
// step (step-decoding). The trust framework is checked first and origins last. Record
// shape problems (JSON syntax, types, Limits) are found by ParseRecord, with the check of
// the member concerned (container-shape for the record and its containers).
//
// The certificate path is built only from the issuers that the signing certificate's
// certificates entry lists (in any order, each at most once; the search is bounded), and
// must end at one of the Verifier's roots. Every certificate on it, the root included, must
// be valid at the container's own signing time (both bounds inclusive); issuers must have a
// critical basicConstraints CA:TRUE, keyUsage keyCertSign and respect path length
// constraints; the signing certificate must not be a CA, must have an authority key
// identifier, a subjectAltName with exactly one URI, clientAuth in its extendedKeyUsage if
// it has one, the IB1 member and roles extensions and a subject O, and an ECDSA P-256 key.
//
// # Stricter than the reference
//
// The reference library is lenient in places where leniency lets two readers see different
// things in the same signed bytes, or lets a record that cannot be verified be written.
// This package refuses:
//
//   - Encoded steps and signatures that are not strict padded base64url. The reference
//     decodes with Python's urlsafe_b64decode, which also takes the standard alphabet
//     ("+", "/") and skips characters outside the alphabet; this package refuses those,
//     missing padding, line breaks and non-zero padding bits.
//   - Step JSON that is not a UTF-8 JSON object (no byte order mark, no UTF-16/32, no NaN or
//     Infinity, no raw control characters, no unpaired UTF-16 surrogate escapes, no data
//     after the object), or that repeats a key at any depth: Python keeps the last of two
//     equal keys, other parsers the first, so {"to":"A","to":"B"} could name two recipients.
//   - A step whose "type" or "id" is missing or not a string (the reference only needs a
//     type, and an id for origin steps), or that has a key beginning with "_": the
//     reference overwrites a signed "_signature" with the real signer and keeps other "_"
//     keys, which are reserved for the decoded form.
//   - A container with no steps or nested containers (only a signature block).
//   - A certificates entry filed under a serial other than its certificate's own serial
//     (for the signer and for each issuer), the same serial twice in certificates, a path
//     that lists the signing certificate itself or an issuer twice, more than 8 listed
//     issuers or 64 entries, a PEM entry that is not exactly one CERTIFICATE block, and
//     unknown critical extensions on the path.
//   - A serial that is negative or longer than 64 digits (RFC 5280 serials are positive and
//     at most 20 octets; crypto/x509 refuses negative ones).
//   - A signing timestamp not exactly YYYY-MM-DDTHH:MM:SSZ (the reference parses it with
//     Python's datetime.fromisoformat, which takes many forms and treats a time without an
//     offset as UTC), and a container version written other than as the JSON number 0
//     (such as 0.0 or -0).
//   - Members of the record other than ib1:provenance, origins, steps and certificates
//     (they would travel unsigned), and a certificates member that is not an object.
//   - Records beyond the Limits (depth 32, 10 000 steps, 1 MiB strings, 16 MiB records by
//     default).
//
// When writing, this package also refuses what the reference would write silently: a step
// with an empty or non-string type or a non-string or empty timestamp (the reference
// replaces any false-like timestamp with the current time), floating point numbers given as
// float64 (their text is ambiguous: use json.Number), duplicate keys, received records
// that do not verify, two different certificates under one serial among the received
// records (the reference keeps the last, making the other signature unverifiable), a key
// that does not match the signing certificate, a signing certificate not valid at the
// signing time or not meeting the profile above, and a signature that is not DER or does
// not verify (a PKCS#11 token's raw r||s must be converted to DER by the key's Signer).
package provenance
