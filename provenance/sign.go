package provenance

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strings"
	"sync"
	"time"
)

// ContextSigner is implemented by signing keys that need the caller's context (HSM and KMS
// keys: cancellation, deadlines, tracing). Sign uses it instead of crypto.Signer.Sign when
// the key has it. Like crypto.Signer, it returns an ASN.1 DER ECDSA signature.
type ContextSigner interface {
	SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error)
}

// NewStep returns a step of the given type with further members in order. The writer adds
// "id" (and "timestamp" unless given) when the step is added to a Builder.
func NewStep(typ string, members ...Member) *Object {
	return NewObject(append([]Member{{"type", typ}}, members...)...)
}

// ParseStep parses a step given as JSON object text (for example from an HTTP request),
// keeping member order and exact numbers (see ParseJSON; default Limits).
func ParseStep(data []byte) (*Object, error) {
	v, err := ParseJSON(data, DefaultLimits())
	if err != nil {
		return nil, fmt.Errorf("provenance: step: %w", err)
	}
	o, ok := v.(*Object)
	if !ok {
		return nil, errors.New("provenance: step is not a JSON object")
	}
	return o, nil
}

// Builder assembles a new record: received records (verified when received), then new
// steps, then one signature. Step ids are allocated as steps are added, so that later steps
// can refer to earlier ones. A Builder is not safe for concurrent use and signs once.
type Builder struct {
	framework string
	now       time.Time
	rand      io.Reader
	limits    Limits // what a verifier of the record will accept; zero: DefaultLimits
	received  []*Record
	origins   []string // of the received records, depth first
	steps     []string // encoded new steps
	signed    bool
	nowText   string // now as step timestamps and the signing time write it; see timestamp
}

// timestamp is the Builder's time as FormatTimestamp writes it, formatted once.
func (b *Builder) timestamp() string {
	if b.nowText == "" {
		b.nowText = FormatTimestamp(b.now)
	}
	return b.nowText
}

// ErrBeyondLimits is wrapped by the error of a record that a Builder will not sign:
// a Verifier with the Builder's Limits would refuse it.
var ErrBeyondLimits = errors.New("beyond the limits of a verifier")

// WithLimits makes b refuse to sign a record that a Verifier with limits l would refuse
// (by default, one with DefaultLimits): nesting, steps, certificates and size. It returns b.
func (b *Builder) WithLimits(l Limits) *Builder {
	b.limits = l.withDefaults()
	return b
}

func (b *Builder) lim() Limits {
	if b.limits.MaxDepth == 0 {
		return DefaultLimits()
	}
	return b.limits
}

// NewBuilder starts a record under the trust framework URL framework. now is the time
// written as the timestamp of steps that have none and as the signing time; rand is the
// source of step ids (crypto/rand.Reader if nil).
func NewBuilder(framework string, now time.Time, rand io.Reader) *Builder {
	return &Builder{framework: framework, now: now, rand: rand}
}

// Receive verifies a received record with v under the Builder's trust framework and, if it
// verifies, includes it whole in the new record (received records come first, in the order
// received, so Receive must be called before AddStep). It returns the record's decoded
// steps, for example to Find the step to refer to.
func (b *Builder) Receive(v *Verifier, rec *Record) ([]*Object, error) {
	if b.signed {
		return nil, errors.New("provenance: record already signed")
	}
	if v == nil {
		return nil, errors.New("provenance: a Verifier is needed to receive a record")
	}
	if len(b.steps) > 0 {
		return nil, errors.New("provenance: received records must be added before new steps")
	}
	decoded, err := v.VerifyWithFramework(rec, b.framework)
	if err != nil {
		return nil, err
	}
	for _, s := range decoded {
		if t, _ := s.GetString("type"); t == "origin" {
			id, _ := s.GetString("id")
			b.origins = append(b.origins, id)
		}
	}
	b.received = append(b.received, rec)
	return decoded, nil
}

// AddStep adds a new step and returns its id. The step must have a string "type", must not
// have an "id" or any key beginning with "_"; a "timestamp", if given, must be a non-empty
// string and is kept, otherwise the Builder's time is written. The step is encoded at once
// (id, timestamp, type, then the other members in order; ASCII-only JSON as the reference
// writes it), so later changes to step have no effect.
func (b *Builder) AddStep(step *Object) (string, error) {
	if b.signed {
		return "", errors.New("provenance: record already signed")
	}
	if step == nil {
		return "", errors.New("provenance: nil step")
	}
	if b.now.IsZero() {
		return "", errors.New("provenance: the Builder has no time")
	}
	lim := b.lim()
	if len(b.steps) >= lim.MaxSteps {
		return "", fmt.Errorf("provenance: more than %d steps: %w", lim.MaxSteps, ErrBeyondLimits)
	}
	var typ, timestamp any
	var haveType, haveTimestamp bool
	// The members as encoded: id, timestamp and type (filled in below), then the rest.
	full := make([]Member, 3, len(step.Members)+3)
	for _, m := range step.Members {
		switch {
		case m.Key == "id":
			return "", errors.New("provenance: a step may not contain an id; ids are allocated by the writer")
		case strings.HasPrefix(m.Key, "_"):
			return "", fmt.Errorf("provenance: step key %q begins with an underscore (reserved for the decoded form)", m.Key)
		case m.Key == "type":
			typ, haveType = m.Value, true
		case m.Key == "timestamp":
			timestamp, haveTimestamp = m.Value, true
		default:
			full = append(full, m)
		}
	}
	if !haveType {
		return "", errors.New("provenance: a step needs a type")
	}
	if s, ok := typ.(string); !ok || s == "" {
		return "", errors.New("provenance: step type must be a non-empty string")
	}
	if haveTimestamp {
		if s, ok := timestamp.(string); !ok || s == "" {
			return "", errors.New("provenance: step timestamp must be a non-empty string when given")
		}
	} else {
		timestamp = b.timestamp()
	}
	id, err := newStepID(b.rand)
	if err != nil {
		return "", err
	}
	full[0], full[1], full[2] = Member{"id", id}, Member{"timestamp", timestamp}, Member{"type", typ}
	encoded, err := encodeStep(&Object{Members: full}, lim)
	if err != nil {
		return "", err
	}
	b.steps = append(b.steps, encoded)
	if typ == "origin" {
		b.origins = append(b.origins, id)
	}
	return id, nil
}

// encodeStep writes a step as the record carries it (id, timestamp, type, then the rest):
// its JSON text, in base64url. It refuses now what a verifier with limits lim would refuse
// later.
func encodeStep(full *Object, lim Limits) (string, error) {
	// The JSON text is only the input of the base64: it and the encoding are written in
	// a pooled buffer, and the encoded step is allocated once, as its string.
	buf := getBuffer()
	defer putBuffer(buf)
	text, err := AppendJSON((*buf)[:0], full)
	*buf = text
	if err != nil {
		return "", err
	}
	if err := withinLimits(full, 1, lim); err != nil {
		return "", fmt.Errorf("provenance: step: %w (%w)", err, ErrBeyondLimits)
	}
	n := base64.URLEncoding.EncodedLen(len(text))
	if n > lim.MaxStringBytes {
		return "", fmt.Errorf("provenance: encoded step is %d bytes, more than %d: %w", n, lim.MaxStringBytes, ErrBeyondLimits)
	}
	if cap(text) < len(text)+n {
		*buf = append(text, make([]byte, n)...)
		text = (*buf)[:len(text)]
	}
	encoded := text[len(text) : len(text)+n]
	base64.URLEncoding.Encode(encoded, text)
	return string(encoded), nil
}

// buffers are the signing side's buffers whose contents are done with before the function
// that took one returns (a step's JSON text before its base64, the data a record's
// signature covers before its hash), so that one buffer serves record after record.
var buffers = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func getBuffer() *[]byte { return buffers.Get().(*[]byte) }

// putBuffer returns a buffer to the pool; one that a huge step made grow is left to the
// garbage collector instead.
func putBuffer(b *[]byte) {
	if cap(*b) > 64<<10 {
		return
	}
	*b = (*b)[:0]
	buffers.Put(b)
}

// newStepID returns 15 random bytes as unpadded base64url (20 characters), like the
// reference's secrets.token_urlsafe(15).
func newStepID(r io.Reader) (string, error) {
	if r == nil {
		r = rand.Reader
	}
	var b [15]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("provenance: reading random bytes for a step id: %w", err)
	}
	var id [20]byte
	base64.RawURLEncoding.Encode(id[:], b[:])
	return string(id[:]), nil
}

// SigningKey is a signing key with its certificate chain, checked once: the signing
// certificate meets the IB1 member profile and is the key's, and the certificates entries
// that travel in each record are encoded once. A program that signs many records with one
// key prepares it with NewSigningKey and signs with Builder.SignWith.
type SigningKey struct {
	key     crypto.Signer
	leaf    *x509.Certificate
	leafKey *ecdsa.PublicKey
	serial  string
	entries []CertificateEntry // the signer's entry, then its issuers'
	// CheckSignatures verifies each signature the key makes before the record leaves
	// SignWith (on by default). A caller whose key is known to sign correctly — kept in
	// memory, or re-checked whenever its backend reconnects — may turn it off: it costs
	// an ECDSA verification per record, as much as the signature itself.
	CheckSignatures bool
}

// NewSigningKey checks key against chain (the signing certificate first, then its
// intermediates; not the root) and prepares them for signing.
func NewSigningKey(key crypto.Signer, chain []*x509.Certificate) (*SigningKey, error) {
	if key == nil || len(chain) == 0 || chain[0] == nil {
		return nil, errors.New("provenance: a signing key and its certificate chain are needed")
	}
	leaf := chain[0]
	if _, err := leafSignerInfo(leaf); err != nil {
		return nil, fmt.Errorf("provenance: signing certificate does not meet the IB1 member certificate profile: %w", err)
	}
	leafKey := leaf.PublicKey.(*ecdsa.PublicKey) // checked by leafSignerInfo
	if pub, ok := key.Public().(*ecdsa.PublicKey); !ok || !pub.Equal(leafKey) {
		return nil, errors.New("provenance: the signing key does not match the signing certificate's public key")
	}
	for _, c := range chain {
		if c == nil || !canonicalSerial(c.SerialNumber.String()) {
			return nil, errors.New("provenance: a certificate of the chain has a negative or overlong serial number")
		}
	}
	return &SigningKey{key: key, leaf: leaf, leafKey: leafKey, serial: leaf.SerialNumber.String(), entries: chainEntries(chain), CheckSignatures: true}, nil
}

// chainEntries are the certificates entries of a signer: its certificate and the serials
// of its issuers, then each issuer's certificate.
func chainEntries(chain []*x509.Certificate) []CertificateEntry {
	leafEntry := CertificateEntry{Serial: chain[0].SerialNumber.String(), Values: []string{encodePEM(chain[0])}}
	for _, c := range chain[1:] {
		leafEntry.Values = append(leafEntry.Values, c.SerialNumber.String())
	}
	entries := []CertificateEntry{leafEntry}
	for _, c := range chain[1:] {
		entries = append(entries, CertificateEntry{Serial: c.SerialNumber.String(), Values: []string{encodePEM(c)}})
	}
	return entries
}

// Sign signs the new container with key, whose certificate chain is chain (the signing
// certificate first, then its intermediates; not the root), and returns the self-contained
// record. If key implements ContextSigner, its SignContext is called with ctx. The key must
// match the signing certificate and return a DER signature that verifies; otherwise Sign
// fails rather than produce a record nobody can verify.
func (b *Builder) Sign(ctx context.Context, key crypto.Signer, chain []*x509.Certificate) (*Record, error) {
	sk, err := NewSigningKey(key, chain)
	if err != nil {
		return nil, err
	}
	return b.SignWith(ctx, sk)
}

// SignWith is Sign with a key prepared by NewSigningKey.
func (b *Builder) SignWith(ctx context.Context, sk *SigningKey) (*Record, error) {
	if err := b.readyToSign(sk); err != nil {
		return nil, err
	}
	c := &Container{Version: "0", Serial: sk.serial, Timestamp: b.timestamp()}
	c.Elements = make([]Element, 0, len(b.received)+len(b.steps))
	for _, r := range b.received {
		c.Elements = append(c.Elements, Element{Container: r.Steps})
	}
	for _, s := range b.steps {
		c.Elements = append(c.Elements, Element{Step: s})
	}
	certs, err := b.certificates(sk)
	if err != nil {
		return nil, err
	}
	if err := b.checkLimits(c, certs); err != nil {
		return nil, err
	}

	buf := getBuffer()
	data := appendDataForSigning((*buf)[:0], b.framework, c)
	digest := sha256.Sum256(data)
	*buf = data
	putBuffer(buf)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sig, err := b.signDigest(ctx, sk, digest[:])
	if err != nil {
		return nil, err
	}
	c.Signature = base64.URLEncoding.EncodeToString(sig)
	b.signed = true

	origins := make([]string, 0, len(b.origins))
	origins = append(origins, b.origins...)
	return &Record{Framework: b.framework, Origins: origins, Steps: c, Certificates: certs}, nil
}

// readyToSign checks that the Builder has something to sign, under a framework, at a time
// when the signing certificate is valid.
func (b *Builder) readyToSign(sk *SigningKey) error {
	if b.signed {
		return errors.New("provenance: record already signed")
	}
	if len(b.received) == 0 && len(b.steps) == 0 {
		return errors.New("provenance: nothing to sign: no received record and no step")
	}
	if b.framework == "" {
		return errors.New("provenance: no trust framework URL")
	}
	if b.now.IsZero() {
		return errors.New("provenance: the Builder has no time")
	}
	if err := validAt(sk.leaf, b.now.UTC().Truncate(time.Second)); err != nil {
		return fmt.Errorf("provenance: signing certificate %w", err)
	}
	return nil
}

// signDigest has sk sign digest and checks what it returns, so that a key that signs
// wrongly fails here rather than in every verifier of the record.
func (b *Builder) signDigest(ctx context.Context, sk *SigningKey, digest []byte) ([]byte, error) {
	var sig []byte
	var err error
	if cs, ok := sk.key.(ContextSigner); ok {
		sig, err = cs.SignContext(ctx, digest, crypto.SHA256)
	} else {
		r := b.rand
		if r == nil {
			r = rand.Reader
		}
		sig, err = sk.key.Sign(r, digest, crypto.SHA256)
	}
	if err != nil {
		return nil, fmt.Errorf("provenance: signing: %w", err)
	}
	if _, err := parseDERSignature(sig); err != nil {
		hint := ""
		if len(sig) == 64 {
			hint = " (64 bytes: probably raw r||s, which must be converted to DER)"
		}
		return nil, fmt.Errorf("provenance: the signer returned a signature that is not ASN.1 DER%s: %w", hint, err)
	}
	if sk.CheckSignatures && !ecdsa.VerifyASN1(sk.leafKey, digest, sig) {
		return nil, errors.New("provenance: the signature does not verify with the signing certificate's public key")
	}
	return sig, nil
}

// checkLimits refuses, before anything is signed, a record (c with certs, not signed
// yet) that a verifier with b's limits would refuse: its own checks, run by the signer.
// Each received record was within them alone; together, and one container deeper, they
// may not be.
func (b *Builder) checkLimits(c *Container, certs []CertificateEntry) error {
	lim := b.lim()
	var steps, containers int
	depth := treeSize(c, 1, &steps, &containers)
	beyond := func(format string, args ...any) error {
		return fmt.Errorf("provenance: the record would have %s, and verifiers refuse it: %w", fmt.Sprintf(format, args...), ErrBeyondLimits)
	}
	switch {
	case depth > lim.MaxDepth:
		return beyond("containers nested %d deep, more than %d", depth, lim.MaxDepth)
	case steps > lim.MaxSteps:
		return beyond("%d steps, more than %d", steps, lim.MaxSteps)
	case containers > lim.MaxSteps:
		return beyond("%d containers, more than %d", containers, lim.MaxSteps)
	case len(certs) > lim.MaxCertificates:
		return beyond("%d certificates, more than %d", len(certs), lim.MaxCertificates)
	}
	// The size, with the longest signature a P-256 key makes (72 bytes of DER).
	rec := &Record{Framework: b.framework, Origins: b.origins, Steps: c, Certificates: certs}
	if n := encodedSize(rec, base64.URLEncoding.EncodedLen(72)); n > lim.MaxRecordBytes {
		return beyond("%d bytes or so, more than %d", n, lim.MaxRecordBytes)
	}
	return nil
}

// treeSize counts the steps and containers under c (at depth) and returns the depth of
// its deepest container.
func treeSize(c *Container, depth int, steps, containers *int) int {
	*containers++
	deepest := depth
	for _, e := range c.Elements {
		if e.Container != nil {
			deepest = max(deepest, treeSize(e.Container, depth+1, steps, containers))
			continue
		}
		*steps++
	}
	return deepest
}

// certificates is the union of the received records' certificates and the signer's chain.
// Two different certificates under one serial are an error: the record could not verify.
func (b *Builder) certificates(sk *SigningKey) ([]CertificateEntry, error) {
	var out []CertificateEntry
	index := map[string]int{}
	add := func(e CertificateEntry, fromChain bool) error {
		i, exists := index[e.Serial]
		if !exists {
			index[e.Serial] = len(out)
			out = append(out, CertificateEntry{Serial: e.Serial, Values: append([]string(nil), e.Values...)})
			return nil
		}
		have := out[i]
		if !samePEM(have.Values[0], e.Values[0]) {
			return fmt.Errorf("provenance: two different certificates under serial %s", e.Serial)
		}
		if !fromChain && !equalStrings(have.Values[1:], e.Values[1:]) {
			return fmt.Errorf("provenance: two different issuer paths for certificate %s", e.Serial)
		}
		return nil // like the reference, an entry already present is kept
	}
	for _, r := range b.received {
		for _, e := range r.Certificates {
			if len(e.Values) == 0 {
				return nil, fmt.Errorf("provenance: empty certificates entry %s", e.Serial)
			}
			if err := add(e, false); err != nil {
				return nil, err
			}
		}
	}
	for _, e := range sk.entries {
		if err := add(e, true); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func encodePEM(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

func samePEM(a, b string) bool {
	if a == b {
		return true
	}
	ca, err1 := parseCertificatePEM(a)
	cb, err2 := parseCertificatePEM(b)
	return err1 == nil && err2 == nil && bytes.Equal(ca.Raw, cb.Raw)
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// SignInput is everything Sign needs to make a record in one call.
type SignInput struct {
	Framework string              // trust framework URL
	Verifier  *Verifier           // verifies Received (required when Received is not empty)
	Received  []*Record           // records to include, verified first
	Steps     []*Object           // new steps, in order
	Key       crypto.Signer       // the signing key (a ContextSigner is used with ctx)
	Chain     []*x509.Certificate // signing certificate, then intermediates (no root)
	Now       time.Time           // step timestamps (when not given) and signing time
	Rand      io.Reader           // step ids; crypto/rand.Reader if nil
}

// Sign verifies the received records, appends the steps and signs: the new container is
// [received[0].steps, received[1].steps, ..., step1, step2, ..., signature block]. Use a
// Builder instead when a step must refer to the id of another new step.
func Sign(ctx context.Context, in SignInput) (*Record, error) {
	b := NewBuilder(in.Framework, in.Now, in.Rand)
	for _, r := range in.Received {
		if _, err := b.Receive(in.Verifier, r); err != nil {
			return nil, err
		}
	}
	for _, s := range in.Steps {
		if _, err := b.AddStep(s); err != nil {
			return nil, err
		}
	}
	return b.Sign(ctx, in.Key, in.Chain)
}

// withinLimits checks the nesting depth and string sizes of a value that AppendJSON has
// encoded, as ParseJSON would check its text, without parsing it again.
func withinLimits(v any, depth int, lim Limits) error {
	switch v.(type) {
	case *Object, map[string]any, []any, []string:
		if depth > lim.MaxDepth {
			return fmt.Errorf("nested deeper than %d", lim.MaxDepth)
		}
	}
	switch v := v.(type) {
	case string:
		if len(v) > lim.MaxStringBytes {
			return fmt.Errorf("a string of %d bytes, more than %d", len(v), lim.MaxStringBytes)
		}
	case json.Number:
		if len(v) > lim.MaxStringBytes {
			return fmt.Errorf("a number of %d characters, more than %d", len(v), lim.MaxStringBytes)
		}
		if err := checkPythonNumber(string(v)); err != nil {
			return err
		}
	case *big.Int:
		if v != nil {
			if err := checkPythonNumber(v.String()); err != nil {
				return err
			}
		}
	case *Object:
		for _, m := range v.Members {
			if len(m.Key) > lim.MaxStringBytes {
				return fmt.Errorf("a key of %d bytes, more than %d", len(m.Key), lim.MaxStringBytes)
			}
			if err := withinLimits(m.Value, depth+1, lim); err != nil {
				return err
			}
		}
	case map[string]any:
		for k, e := range v {
			if len(k) > lim.MaxStringBytes {
				return fmt.Errorf("a key of %d bytes, more than %d", len(k), lim.MaxStringBytes)
			}
			if err := withinLimits(e, depth+1, lim); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range v {
			if err := withinLimits(e, depth+1, lim); err != nil {
				return err
			}
		}
	case []string:
		for _, e := range v {
			if err := withinLimits(e, depth+1, lim); err != nil {
				return err
			}
		}
	}
	return nil
}
