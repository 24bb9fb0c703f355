package provenance

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"
)

// Verifier verifies records against a set of root CAs and an expected trust framework.
// It is safe for concurrent use. It keeps two bounded caches, so that repeated
// certificates and chains cost a map lookup: parsed certificates by PEM text, and verified
// certificate paths (keyed by the SHA-256 of the signing certificate and of each listed
// issuer, in order) with the time window over which that path is valid. Only certificates
// and paths found valid are cached, so failing records cannot push them out. The ECDSA
// signature over each container's data is always checked; only certificate work is cached.
type Verifier struct {
	roots     []*certInfo
	framework string
	limits    Limits
	certs     *boundedCache[string, *certInfo]
	chains    *boundedCache[string, *chainResult]
	scratch   sync.Pool // of *scratch
}

// chainResult is a certificate path found valid: it stays valid for any signing time in
// [notBefore, notAfter], since everything else it depends on is independent of time.
type chainResult struct {
	notBefore, notAfter time.Time
	key                 *ecdsa.PublicKey
	signer              *signerInfo
}

// Option configures a Verifier.
type Option func(*Verifier)

// WithLimits sets the limits applied to records (ParseRecord through VerifyJSON, and step
// decoding). Zero fields keep their defaults.
func WithLimits(l Limits) Option {
	return func(v *Verifier) { v.limits = l.withDefaults() }
}

// WithCacheSizes sets the maximum number of parsed certificates and of verified paths kept
// (defaults 1024 each; 0 disables a cache).
func WithCacheSizes(certificates, paths int) Option {
	return func(v *Verifier) {
		v.certs = newBoundedCache[string, *certInfo](certificates)
		v.chains = newBoundedCache[string, *chainResult](paths)
	}
}

// NewVerifier returns a Verifier trusting roots (root CA certificates; the path of every
// signing certificate must end at one of them) for records of the trust framework URL
// framework.
func NewVerifier(roots []*x509.Certificate, framework string, opts ...Option) (*Verifier, error) {
	if len(roots) == 0 {
		return nil, errors.New("provenance: no root CA certificate given")
	}
	if framework == "" {
		return nil, errors.New("provenance: no trust framework URL given")
	}
	v := &Verifier{
		framework: framework,
		limits:    DefaultLimits(),
		certs:     newBoundedCache[string, *certInfo](1024),
		chains:    newBoundedCache[string, *chainResult](1024),
	}
	for _, r := range roots {
		if r == nil {
			return nil, errors.New("provenance: nil root CA certificate")
		}
		v.roots = append(v.roots, newCertInfo(r))
	}
	for _, o := range opts {
		o(v)
	}
	return v, nil
}

// Framework returns the trust framework URL that Verify expects.
func (v *Verifier) Framework() string { return v.framework }

// Limits returns the limits the Verifier applies.
func (v *Verifier) Limits() Limits { return v.limits }

// ParseRecord parses an encoded record with the Verifier's limits.
func (v *Verifier) ParseRecord(data []byte) (*Record, error) {
	return ParseRecord(data, v.limits)
}

// VerifyJSON parses and verifies an encoded record. It returns the record and its decoded
// steps (see Verify).
func (v *Verifier) VerifyJSON(data []byte) (*Record, []*Object, error) {
	sc := v.getScratch()
	defer v.putScratch(sc)
	rec, err := parseRecordWith(&sc.parser, data, v.limits)
	if err != nil {
		return nil, nil, err
	}
	steps, err := v.verify(sc, rec, v.framework)
	if err != nil {
		return nil, nil, err
	}
	return rec, steps, nil
}

// scratch is the reusable working memory of one verification: the JSON parser (its decoder
// and stack) and the buffer for the data for signing.
type scratch struct {
	parser jsonParser
	buf    []byte
}

func (v *Verifier) getScratch() *scratch {
	if sc, ok := v.scratch.Get().(*scratch); ok {
		return sc
	}
	return &scratch{}
}

func (v *Verifier) putScratch(sc *scratch) {
	// Keep no reference to the record, and no memory that a large record made grow.
	sc.parser.release()
	if cap(sc.buf) > 1<<20 {
		sc.buf = nil
	}
	v.scratch.Put(sc)
}

// Verify verifies a record under the Verifier's trust framework and returns its decoded
// steps, depth first in container order. Each step is the signed JSON object (member order
// and number text kept) with a "_signature" member appended:
//
//	{"signed": {"member", "name", "application", "roles"}, "includedBy": [signers, outermost first]}
//
// An error is a *VerifyError naming the failed check.
func (v *Verifier) Verify(rec *Record) ([]*Object, error) {
	return v.VerifyWithFramework(rec, v.framework)
}

// VerifyWithFramework is Verify with another expected trust framework URL (for a service
// that, like the reference's decode endpoint, takes it from the record). The caches are
// shared: certificate paths do not depend on the framework.
func (v *Verifier) VerifyWithFramework(rec *Record, framework string) ([]*Object, error) {
	sc := v.getScratch()
	defer v.putScratch(sc)
	return v.verify(sc, rec, framework)
}

func (v *Verifier) verify(sc *scratch, rec *Record, framework string) ([]*Object, error) {
	if rec == nil || rec.Steps == nil {
		return nil, verr(CheckContainerShape, "", nil, "record has no steps")
	}
	if rec.Framework != framework {
		return nil, verr(CheckTrustFramework, "", nil, "trust framework %q is not the expected %q", rec.Framework, framework)
	}
	// A Record may have been built in Go rather than parsed; bound it the same way, which
	// also stops a container that (through pointers) contains itself.
	var steps, containers int
	if err := v.checkTree(rec.Steps, 1, &steps, &containers, nil); err != nil {
		return nil, err
	}
	if need := dataSize(rec.Steps) + len(framework); cap(sc.buf) < need {
		sc.buf = make([]byte, 0, need)
	}
	st := &verifyState{
		rec:       rec,
		framework: framework,
		steps:     make([]*Object, 0, steps),
		sc:        sc,
	}
	err := v.container(st, rec.Steps, nil, nil)
	if err != nil {
		return nil, err
	}
	if len(st.origins) != len(rec.Origins) {
		return nil, verr(CheckOrigins, "", nil, "origins lists %d ids but the record has %d origin steps", len(rec.Origins), len(st.origins))
	}
	for i := range st.origins {
		if st.origins[i] != rec.Origins[i] {
			return nil, verr(CheckOrigins, "", nil, "origins[%d] is %q but origin step %d has id %q", i, rec.Origins[i], i, st.origins[i])
		}
	}
	return st.steps, nil
}

func (v *Verifier) checkTree(c *Container, depth int, steps, containers *int, path []int) error {
	if c == nil {
		return verr(CheckContainerShape, "", nil, "nil container")
	}
	// Every version is checked before any signature, so that a nested container's version
	// is reported as such rather than as the enclosing signature failing over it.
	if err := checkVersion(c.Version); err != nil {
		err.Where = stepPath(append(path[:len(path):len(path)], len(c.Elements)))
		return err
	}
	if depth > v.limits.MaxDepth {
		return verr(CheckContainerShape, "", nil, "containers nested deeper than %d", v.limits.MaxDepth)
	}
	*containers++
	if *containers > v.limits.MaxSteps {
		return verr(CheckContainerShape, "", nil, "record has more than %d containers", v.limits.MaxSteps)
	}
	if len(c.Elements) == 0 {
		return verr(CheckContainerShape, "", nil, "container has no steps or containers")
	}
	for i, e := range c.Elements {
		if e.Container != nil {
			if e.Step != "" {
				return verr(CheckContainerShape, "", nil, "element is both a step and a container")
			}
			if err := v.checkTree(e.Container, depth+1, steps, containers, append(path[:len(path):len(path)], i)); err != nil {
				return err
			}
			continue
		}
		*steps++
		if *steps > v.limits.MaxSteps {
			return verr(CheckContainerShape, "", nil, "record has more than %d steps", v.limits.MaxSteps)
		}
	}
	return nil
}

type verifyState struct {
	rec       *Record
	framework string
	steps     []*Object
	origins   []string
	sc        *scratch
}

// container verifies a container's signature and then its elements: steps are decoded
// into st, nested containers verified in turn, depth first. stack is the signers of the
// containers that include this one, outermost first; path is where it is in the record.
func (v *Verifier) container(st *verifyState, c *Container, stack []*signerInfo, path []int) error {
	if err := checkVersion(c.Version); err != nil {
		err.Where = blockPath(path, c)
		return err
	}
	if !canonicalSerial(c.Serial) {
		return verr(CheckSerialFormat, blockPath(path, c), nil, "serial %q is not the canonical decimal form of a non-negative integer of at most %d digits", truncate(c.Serial), MaxSerialDigits)
	}
	chain, err := v.containerSigner(st, c, path)
	if err != nil {
		return err
	}
	// One "_signature" value serves every step of the container: decoded steps are to be
	// treated as read-only (they are new on every Verify, but share this member).
	var signature *Object
	for i, e := range c.Elements {
		if e.Container != nil {
			inner := append(stack[:len(stack):len(stack)], chain.signer)
			if err := v.container(st, e.Container, inner, append(path[:len(path):len(path)], i)); err != nil {
				return err
			}
			continue
		}
		step, err := v.decodeStepWith(&st.sc.parser, e.Step)
		if err != nil {
			err.Where = stepPath(append(path[:len(path):len(path)], i))
			return err
		}
		if typ, _ := step.Get("type"); typ == "origin" {
			id, _ := step.GetString("id")
			st.origins = append(st.origins, id)
		}
		if signature == nil {
			signature = signatureMember(chain.signer, stack)
		}
		step.Members = append(step.Members, Member{"_signature", signature})
		st.steps = append(st.steps, step)
	}
	return nil
}

// blockPath is where the signature block of c, at path, is in the record. It is formatted
// only when there is an error to report.
func blockPath(path []int, c *Container) string {
	return stepPath(append(path[:len(path):len(path)], len(c.Elements)))
}

// containerSigner finds the signing certificate of c and a valid path from it to a root,
// and checks the signature over c's data. Certificates parsed on the way are cached only
// once the path is found valid.
func (v *Verifier) containerSigner(st *verifyState, c *Container, path []int) (*chainResult, error) {
	leaf, issuers, parsed, err := v.lookupChain(st.rec, c.Serial)
	if err != nil {
		err.Where = blockPath(path, c)
		return nil, err
	}
	when, ok := parseSigningTime(c.Timestamp)
	if !ok {
		return nil, verr(CheckSigningTime, blockPath(path, c), nil, "signing timestamp %q is not YYYY-MM-DDTHH:MM:SSZ", truncate(c.Timestamp))
	}
	chain, err := v.chain(leaf, issuers, when)
	if err != nil {
		err.Where = blockPath(path, c)
		return nil, err
	}
	for pemText, ci := range parsed {
		v.certs.put(pemText, ci)
	}
	sig, err2 := decodeBase64URL(c.Signature)
	if err2 != nil {
		return nil, verr(CheckSignature, blockPath(path, c), err2, "signature is not padded base64url")
	}
	st.sc.buf = appendDataForSigning(st.sc.buf[:0], st.framework, c)
	digest := sha256.Sum256(st.sc.buf)
	if !ecdsa.VerifyASN1(chain.key, digest[:], sig) {
		if _, err := parseDERSignature(sig); err != nil {
			return nil, verr(CheckSignature, blockPath(path, c), err, "signature by %s is not a DER ECDSA signature", c.Serial)
		}
		return nil, verr(CheckSignature, blockPath(path, c), nil, "signature by %s does not verify", c.Serial)
	}
	return chain, nil
}

// signatureMember is the "_signature" of the steps that signer signed in a container
// included by stack's signers.
func signatureMember(signer *signerInfo, stack []*signerInfo) *Object {
	includedBy := make([]any, len(stack))
	for j, s := range stack {
		includedBy[j] = s.object()
	}
	return NewObject(
		Member{"signed", signer.object()},
		Member{"includedBy", includedBy},
	)
}

// decodeStep decodes one signed step string.
func (v *Verifier) decodeStep(s string) (*Object, *VerifyError) {
	return v.decodeStepWith(&jsonParser{}, s)
}

func (v *Verifier) decodeStepWith(p *jsonParser, s string) (*Object, *VerifyError) {
	raw, err := decodeBase64URL(s)
	if err != nil {
		return nil, verr(CheckStepDecoding, "", err, "step is not padded base64url")
	}
	p.reset(raw, v.limits.MaxDepth, v.limits.MaxStringBytes)
	val, err := p.parseAll()
	if err != nil {
		return nil, verr(CheckStepDecoding, "", err, "step is not acceptable JSON")
	}
	step, ok := val.(*Object)
	if !ok {
		return nil, verr(CheckStepDecoding, "", nil, "step is not a JSON object")
	}
	if typ, ok := step.Get("type"); !ok {
		return nil, verr(CheckStepDecoding, "", nil, "step has no type")
	} else if _, ok := typ.(string); !ok {
		return nil, verr(CheckStepDecoding, "", nil, "step type is not a string")
	}
	if id, ok := step.Get("id"); !ok {
		return nil, verr(CheckStepDecoding, "", nil, "step has no id")
	} else if _, ok := id.(string); !ok {
		return nil, verr(CheckStepDecoding, "", nil, "step id is not a string")
	}
	for _, m := range step.Members {
		if strings.HasPrefix(m.Key, "_") {
			// Keys beginning with "_" are reserved for the decoded form; a signed "_signature"
			// could otherwise pose as signer information.
			return nil, verr(CheckStepDecoding, "", nil, "step has a reserved key %q", truncate(m.Key))
		}
	}
	return step, nil
}

// lookupChain finds the signing certificate of serial and its listed issuers.
// It also returns the certificates it had to parse, keyed by PEM text, for the caller to
// cache once they are found on a valid path: certificates of records that fail do not
// push others out of the cache.
func (v *Verifier) lookupChain(rec *Record, serial string) (*certInfo, []*certInfo, map[string]*certInfo, *VerifyError) {
	entry, ok := rec.Certificate(serial)
	if !ok {
		return nil, nil, nil, verr(CheckCertificateLookup, "", nil, "certificate serial %s is not present in the record", serial)
	}
	if len(entry) == 0 {
		return nil, nil, nil, verr(CheckCertificateLookup, "", nil, "certificates entry %s is empty", serial)
	}
	if len(entry)-1 > v.limits.MaxPathLength {
		return nil, nil, nil, verr(CheckCertificatePath, "", nil, "certificates entry %s lists %d issuers, more than the limit of %d", serial, len(entry)-1, v.limits.MaxPathLength)
	}
	var parsed map[string]*certInfo
	leaf, err := v.certificate(serial, entry[0], &parsed)
	if err != nil {
		return nil, nil, nil, err
	}
	issuers := make([]*certInfo, 0, len(entry)-1)
	for i, is := range entry[1:] {
		if is == serial {
			return nil, nil, nil, verr(CheckCertificatePath, "", nil, "certificate %s lists itself as its issuer", serial)
		}
		for _, prev := range entry[1 : 1+i] {
			if prev == is {
				return nil, nil, nil, verr(CheckCertificatePath, "", nil, "certificate %s lists issuer %s twice", serial, truncate(is))
			}
		}
		ie, ok := rec.Certificate(is)
		if !ok || len(ie) == 0 {
			return nil, nil, nil, verr(CheckCertificateLookup, "", nil, "issuer certificate %s named by %s is not present in the record", truncate(is), serial)
		}
		c, err := v.certificate(is, ie[0], &parsed)
		if err != nil {
			return nil, nil, nil, err
		}
		issuers = append(issuers, c)
	}
	return leaf, issuers, parsed, nil
}

// certificate parses (or finds in the cache) the certificate of a certificates entry and
// checks that it is the certificate with the serial the entry is filed under.
func (v *Verifier) certificate(serial, pemText string, parsed *map[string]*certInfo) (*certInfo, *VerifyError) {
	ci, ok := v.certs.get(pemText)
	if !ok {
		ci, ok = (*parsed)[pemText]
	}
	if !ok {
		c, err := parseCertificatePEM(pemText)
		if err != nil {
			return nil, verr(CheckCertificatePath, "", err, "certificates entry %s does not hold a parseable certificate", truncate(serial))
		}
		ci = newCertInfo(c)
		if *parsed == nil {
			*parsed = map[string]*certInfo{}
		}
		(*parsed)[pemText] = ci
	}
	if ci.serial != serial {
		// The reference files certificates by whatever key it is given; a certificate filed
		// under another serial is refused, so that a serial always means one certificate.
		return nil, verr(CheckCertificateLookup, "", nil, "certificates entry %s holds the certificate with serial %s", truncate(serial), ci.serial)
	}
	return ci, nil
}

// maxPathSearch bounds the work spent looking for a path through the listed issuers
// (which may be listed in any order, and may be hostile).
const maxPathSearch = 10000

func (v *Verifier) chain(leaf *certInfo, issuers []*certInfo, when time.Time) (*chainResult, *VerifyError) {
	key := make([]byte, 0, 32*(1+len(issuers)))
	key = append(key, leaf.hash[:]...)
	for _, is := range issuers {
		key = append(key, is.hash[:]...)
	}
	if r, ok := v.chains.get(string(key)); ok && !when.Before(r.notBefore) && !when.After(r.notAfter) {
		return r, nil
	}
	r, err := v.validatePath(leaf, issuers, when)
	if err != nil {
		return nil, err
	}
	v.chains.put(string(key), r)
	return r, nil
}

// validatePath finds a path leaf -> listed issuers (any order, each at most once) -> root,
// valid at when, meeting the profile; the path search is bounded.
func (v *Verifier) validatePath(leaf *certInfo, issuers []*certInfo, when time.Time) (*chainResult, *VerifyError) {
	if err := validAt(leaf.cert, when); err != nil {
		return nil, pathError("signing certificate %s %v", leaf.serial, err)
	}
	info, err := leafSignerInfo(leaf.cert)
	if err != nil {
		return nil, pathError("%v", err)
	}
	n := len(issuers)
	var why pathFailure
	s := pathSearch{
		roots: v.roots, leaf: leaf.cert, issuers: issuers, when: when,
		byIssuer: make([][]tri, n+1), byRoot: make([][]tri, n+1), used: make([]bool, n),
		budget: maxPathSearch, why: &why,
	}
	for i := range s.byIssuer {
		s.byIssuer[i] = make([]tri, n)
		s.byRoot[i] = make([]tri, len(v.roots))
	}
	why.deadEnd = leaf.serial
	window, found := s.from(0, 0, leaf.cert.NotBefore, leaf.cert.NotAfter)
	if !found {
		return nil, s.failure()
	}
	return &chainResult{
		notBefore: window[0],
		notAfter:  window[1],
		key:       leaf.cert.PublicKey.(*ecdsa.PublicKey), // checked by leafSignerInfo
		signer:    info,
	}, nil
}

// pathError is a failed certificate path.
func pathError(format string, args ...any) *VerifyError {
	return verr(CheckCertificatePath, "", nil, "no valid certificate path to the root at the signing time: "+format, args...)
}

// pathSearch is a depth-first search for a path from a signing certificate through listed
// issuers to a root. The issuers may be hostile, listed to make the search long: it gives up
// after maxPathSearch steps, and checks each issuer's signature on a certificate at most
// once however often the search comes back to the pair.
//
// What a failed search reports is kept apart, behind why: the compiler follows a struct's
// pointers as one, so strings kept in the search's own fields, once put into the error,
// would take its tables to the heap with them.
type pathSearch struct {
	roots   []*certInfo
	leaf    *x509.Certificate
	issuers []*certInfo
	when    time.Time
	// byIssuer[i][j]: whether issuer j issued certificate i (0 = leaf, k = issuers[k-1]);
	// byRoot[i][r]: whether root r did. Filled as the search asks.
	byIssuer, byRoot [][]tri
	used             []bool // the issuers on the path being tried
	budget           int
	why              *pathFailure
}

// pathFailure is what a search that finds no path has to say.
type pathFailure struct {
	reasons []string // why an issuer or root was refused: the first few, enough to tell
	deadEnd string   // the last certificate for which no issuer was found
}

// tri is a memoised answer.
type tri int8

const (
	triUnknown tri = iota
	triYes
	triNo
)

// from extends the path at certificate i, which has below intermediates under it (not
// counting self-issued ones), while every certificate so far is valid from nb to na. It
// returns when every certificate of the path it finds is valid.
func (s *pathSearch) from(i, below int, nb, na time.Time) ([2]time.Time, bool) {
	s.budget--
	if s.budget < 0 {
		return [2]time.Time{}, false
	}
	if i > 0 {
		s.why.deadEnd = s.issuers[i-1].serial
	}
	if window, ok := s.toRoot(i, below, nb, na); ok {
		return window, true
	}
	return s.throughIssuer(i, below, nb, na)
}

// toRoot ends the path at a root that issued certificate i, if one may.
func (s *pathSearch) toRoot(i, below int, nb, na time.Time) ([2]time.Time, bool) {
	for r, root := range s.roots {
		if !s.isIssuer(&s.byRoot[i][r], i, root.cert) {
			continue
		}
		if err := validAt(root.cert, s.when); err != nil {
			s.note("root certificate " + err.Error())
			continue
		}
		if err := checkCA(root.cert, below); err != nil {
			s.note("root certificate: " + err.Error())
			continue
		}
		return [2]time.Time{later(nb, root.cert.NotBefore), earlier(na, root.cert.NotAfter)}, true
	}
	return [2]time.Time{}, false
}

// throughIssuer tries each listed issuer of certificate i not yet on the path as the next
// step, and the rest of the path from there.
func (s *pathSearch) throughIssuer(i, below int, nb, na time.Time) ([2]time.Time, bool) {
	for j, is := range s.issuers {
		if s.used[j] || !s.isIssuer(&s.byIssuer[i][j], i, is.cert) {
			continue
		}
		cand := is.cert
		if err := validAt(cand, s.when); err != nil {
			s.note(fmt.Sprintf("issuer certificate %s %v", is.serial, err))
			continue
		}
		if err := checkCA(cand, below); err != nil {
			s.note(fmt.Sprintf("issuer certificate %s: %v", is.serial, err))
			continue
		}
		nextBelow := below + 1
		if sameName(cand.RawSubject, cand.RawIssuer) {
			nextBelow = below // self-issued certificates do not count (RFC 5280 4.2.1.9)
		}
		s.used[j] = true
		window, ok := s.from(j+1, nextBelow, later(nb, cand.NotBefore), earlier(na, cand.NotAfter))
		s.used[j] = false
		if ok {
			return window, true
		}
	}
	return [2]time.Time{}, false
}

// isIssuer reports whether parent issued certificate i, memo holding the answer once known.
func (s *pathSearch) isIssuer(memo *tri, i int, parent *x509.Certificate) bool {
	if *memo == triUnknown {
		*memo = triNo
		if issuedBy(s.cert(i), parent) {
			*memo = triYes
		}
	}
	return *memo == triYes
}

func (s *pathSearch) cert(i int) *x509.Certificate {
	if i == 0 {
		return s.leaf
	}
	return s.issuers[i-1].cert
}

func (s *pathSearch) note(reason string) {
	if len(s.why.reasons) < 4 {
		s.why.reasons = append(s.why.reasons, reason)
	}
}

// failure says why the search found no path.
func (s *pathSearch) failure() *VerifyError {
	if s.budget < 0 {
		return pathError("path search gave up after %d steps", maxPathSearch)
	}
	if len(s.why.reasons) == 0 {
		return pathError("certificate %s was not issued by a trusted root CA or by another listed issuer", s.why.deadEnd)
	}
	return pathError("%s", strings.Join(s.why.reasons, "; "))
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// checkVersion accepts the container format version 0, written "0".
func checkVersion(v json.Number) *VerifyError {
	switch v {
	case "0":
		return nil
	case "-0":
		// The reference reads -0 as the integer 0 and signs str(0) = "0", so the spelling is
		// not covered by the signature: accepting it would let anyone rewrite a signed record
		// into a byte-different one that still verifies.
		return verr(CheckContainerVersion, "", nil, "container format version written as -0: only 0 is accepted (the signature does not cover the sign of a zero)")
	}
	return verr(CheckContainerVersion, "", nil, "unsupported container format version %s: only 0 is accepted", truncate(string(v)))
}

// canonicalSerial: "0" or a decimal without leading zeros, at most MaxSerialDigits digits.
// The reference also accepts a negative serial ("-5"); RFC 5280 serials are positive and
// crypto/x509 refuses negative ones, so they are refused here too.
func canonicalSerial(s string) bool {
	if len(s) == 0 || len(s) > MaxSerialDigits {
		return false
	}
	if s[0] == '0' {
		return len(s) == 1
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

const timestampLayout = "2006-01-02T15:04:05Z"

// parseSigningTime accepts exactly YYYY-MM-DDTHH:MM:SSZ (the reference's Python
// fromisoformat would take more forms; the reference writer only ever produces this one).
func parseSigningTime(s string) (time.Time, bool) {
	if len(s) != len(timestampLayout) {
		return time.Time{}, false
	}
	t, err := time.Parse(timestampLayout, s)
	if err != nil || t.Format(timestampLayout) != s {
		return time.Time{}, false
	}
	return t, true
}

// FormatTimestamp formats t the way records write times: UTC, whole seconds,
// YYYY-MM-DDTHH:MM:SSZ.
func FormatTimestamp(t time.Time) string {
	return t.UTC().Format(timestampLayout)
}

// decodeBase64URL decodes padded base64url strictly: no other alphabet, no line breaks
// (which encoding/base64 would otherwise skip), zero padding bits.
func decodeBase64URL(s string) ([]byte, error) {
	if strings.IndexByte(s, '\n') >= 0 || strings.IndexByte(s, '\r') >= 0 { // faster than ContainsAny
		return nil, errors.New("line break in base64")
	}
	return base64.URLEncoding.Strict().DecodeString(s)
}

// parseDERSignature parses an ASN.1 DER ECDSA-Sig-Value.
func parseDERSignature(sig []byte) (*struct{ R, S *big.Int }, error) {
	var v struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(sig, &v)
	if err != nil {
		return nil, errors.New("not an ASN.1 DER SEQUENCE of two INTEGERs")
	}
	if len(rest) != 0 {
		return nil, errors.New("trailing data after the DER signature")
	}
	if v.R.Sign() <= 0 || v.S.Sign() <= 0 {
		return nil, errors.New("signature values are not positive")
	}
	return &v, nil
}

// truncate shortens hostile text quoted in error messages.
func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
