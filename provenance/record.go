package provenance

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Record is an encoded provenance record, parsed but not verified: the steps stay in their
// signed, encoded form and received containers stay nested exactly as they were signed.
type Record struct {
	Framework    string             // "ib1:provenance": the trust framework URL
	Origins      []string           // ids of the origin steps, depth first
	Steps        *Container         // the outermost container
	Certificates []CertificateEntry // the "certificates" map, in its order (may be empty)
}

// Container is one signed container: the elements one signer signed, and its signature
// block [Version, Serial, Timestamp, Signature].
type Container struct {
	Elements  []Element
	Version   json.Number // the container format version; only "0" verifies
	Serial    string      // decimal serial of the signing certificate
	Timestamp string      // signing time, YYYY-MM-DDTHH:MM:SSZ
	Signature string      // base64url (padded) DER ECDSA signature
}

// Element is an element of a container: either an encoded step (a base64url string) or a
// nested container included whole from a received record. Exactly one is set.
type Element struct {
	Step      string
	Container *Container
}

// CertificateEntry is one member of a record's certificates map. For a signing certificate
// Values is [leaf PEM, issuer serial, ...]; for an issuer it is [issuer PEM].
type CertificateEntry struct {
	Serial string
	Values []string
}

// Certificate returns the certificates entry for serial.
func (r *Record) Certificate(serial string) ([]string, bool) {
	for i := range r.Certificates {
		if r.Certificates[i].Serial == serial {
			return r.Certificates[i].Values, true
		}
	}
	return nil, false
}

// ParseRecord parses an encoded record. It checks the shape of the record (types, counts,
// the Limits) but no signature, certificate or step content: use a Verifier for that.
// Errors are *VerifyError naming the failed check.
func ParseRecord(data []byte, lim Limits) (*Record, error) {
	return parseRecordWith(&jsonParser{}, data, lim.withDefaults())
}

// parseRecordWith parses with p, a parser that may be reused (lim has its defaults).
func parseRecordWith(p *jsonParser, data []byte, lim Limits) (*Record, error) {
	if len(data) > lim.MaxRecordBytes {
		return nil, verr(CheckContainerShape, "", nil, "record is %d bytes, more than the limit of %d", len(data), lim.MaxRecordBytes)
	}
	// The JSON depth allowed is that of MaxDepth nested containers, plus the record object and
	// the innermost signature block.
	p.reset(data, lim.MaxDepth+2, lim.MaxStringBytes)
	v, err := p.parseAll()
	if err != nil {
		var dup *duplicateKeyError
		if errors.As(err, &dup) && dup.depth == 2 && dup.topKey == "certificates" {
			// A serial filed twice would leave readers to disagree on which certificate it names.
			return nil, verr(CheckCertificateLookup, "certificates", nil, "serial %q appears twice", truncate(dup.key))
		}
		return nil, verr(CheckContainerShape, "", err, "record is not acceptable JSON")
	}
	return recordFromValue(v, lim)
}

func recordFromValue(v any, lim Limits) (*Record, error) {
	top, ok := v.(*Object)
	if !ok {
		return nil, verr(CheckContainerShape, "", nil, "record is not a JSON object")
	}
	var tf, steps, origins, certs any
	var haveTF, haveSteps, haveOrigins, haveCerts bool
	for _, m := range top.Members {
		switch m.Key {
		case "ib1:provenance":
			tf, haveTF = m.Value, true
		case "steps":
			steps, haveSteps = m.Value, true
		case "origins":
			origins, haveOrigins = m.Value, true
		case "certificates":
			certs, haveCerts = m.Value, true
		default:
			// Members outside the signed steps would travel unverified; refuse them.
			return nil, verr(CheckContainerShape, "", nil, "record has an unknown member %q", m.Key)
		}
	}
	rec := &Record{}
	if !haveTF {
		return nil, verr(CheckTrustFramework, "", nil, "record has no ib1:provenance member")
	}
	if rec.Framework, ok = tf.(string); !ok {
		return nil, verr(CheckTrustFramework, "", nil, "ib1:provenance is not a string")
	}
	if !haveSteps {
		return nil, verr(CheckContainerShape, "", nil, "record has no steps member")
	}
	stepCount := 0
	c, err := containerFromValue(steps, lim, 1, &stepCount, "steps")
	if err != nil {
		return nil, err
	}
	rec.Steps = c
	if haveCerts {
		if rec.Certificates, err = certificatesFromValue(certs, lim); err != nil {
			return nil, err
		}
	}
	if !haveOrigins {
		return nil, verr(CheckOrigins, "", nil, "record has no origins member")
	}
	list, ok := origins.([]any)
	if !ok {
		return nil, verr(CheckOrigins, "", nil, "origins is not a list")
	}
	rec.Origins = make([]string, len(list))
	for i, o := range list {
		if rec.Origins[i], ok = o.(string); !ok {
			return nil, verr(CheckOrigins, "", nil, "origins[%d] is not a string", i)
		}
	}
	return rec, nil
}

func containerFromValue(v any, lim Limits, depth int, stepCount *int, where string) (*Container, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, verr(CheckContainerShape, where, nil, "container is not a list")
	}
	if depth > lim.MaxDepth {
		return nil, verr(CheckContainerShape, where, nil, "containers nested deeper than %d", lim.MaxDepth)
	}
	if len(list) < 2 {
		// The reference accepts a container holding only its signature block; a signature
		// over nothing records nothing, so it is refused here.
		return nil, verr(CheckContainerShape, where, nil, "container has %d elements; it needs at least one step or container and a signature block", len(list))
	}
	blockWhere := where + "[" + strconv.Itoa(len(list)-1) + "]"
	block, ok := list[len(list)-1].([]any)
	if !ok || len(block) != 4 {
		return nil, verr(CheckContainerShape, blockWhere, nil, "signature block is not a list of 4 elements")
	}
	c := &Container{}
	if c.Version, ok = block[0].(json.Number); !ok {
		return nil, verr(CheckContainerVersion, blockWhere, nil, "container format version is not a number")
	}
	if c.Serial, ok = block[1].(string); !ok {
		return nil, verr(CheckSerialFormat, blockWhere, nil, "serial is not a string")
	}
	if c.Timestamp, ok = block[2].(string); !ok {
		return nil, verr(CheckSigningTime, blockWhere, nil, "signing timestamp is not a string")
	}
	if c.Signature, ok = block[3].(string); !ok {
		return nil, verr(CheckSignature, blockWhere, nil, "signature is not a string")
	}
	c.Elements = make([]Element, len(list)-1)
	for i, e := range list[:len(list)-1] {
		switch x := e.(type) {
		case string:
			*stepCount++
			if *stepCount > lim.MaxSteps {
				return nil, verr(CheckContainerShape, where, nil, "record has more than %d steps", lim.MaxSteps)
			}
			c.Elements[i].Step = x
		case []any:
			n, err := containerFromValue(x, lim, depth+1, stepCount, where+"["+strconv.Itoa(i)+"]")
			if err != nil {
				return nil, err
			}
			c.Elements[i].Container = n
		default:
			return nil, verr(CheckContainerShape, where+"["+strconv.Itoa(i)+"]", nil, "container element is neither a step string nor a container")
		}
	}
	return c, nil
}

func certificatesFromValue(v any, lim Limits) ([]CertificateEntry, error) {
	obj, ok := v.(*Object)
	if !ok {
		return nil, verr(CheckCertificateLookup, "certificates", nil, "certificates is not an object")
	}
	if len(obj.Members) > lim.MaxCertificates {
		return nil, verr(CheckCertificateLookup, "certificates", nil, "more than %d certificates entries", lim.MaxCertificates)
	}
	// Duplicate serials were already refused by the JSON parser (duplicate keys).
	out := make([]CertificateEntry, len(obj.Members))
	for i, m := range obj.Members {
		where := func() string { return "certificates[" + strconv.Quote(truncate(m.Key)) + "]" }
		list, ok := m.Value.([]any)
		if !ok || len(list) == 0 {
			return nil, verr(CheckCertificateLookup, where(), nil, "entry is not a non-empty list")
		}
		if len(list)-1 > lim.MaxPathLength {
			return nil, verr(CheckCertificatePath, where(), nil, "entry lists %d issuers, more than the limit of %d", len(list)-1, lim.MaxPathLength)
		}
		values := make([]string, len(list))
		for j, e := range list {
			if values[j], ok = e.(string); !ok {
				return nil, verr(CheckCertificateLookup, where(), nil, "entry element %d is not a string", j)
			}
		}
		out[i] = CertificateEntry{Serial: m.Key, Values: values}
	}
	return out, nil
}

// Marshal encodes the record as compact JSON with members in the reference's order:
// ib1:provenance, origins, steps, certificates (omitted when empty).
func (r *Record) Marshal() ([]byte, error) {
	if r == nil || r.Steps == nil {
		return nil, errors.New("provenance: record has no steps")
	}
	return r.AppendMarshal(make([]byte, 0, r.marshalSize()))
}

// AppendMarshal appends the record as Marshal encodes it to dst, so that a caller that
// writes records one after another can reuse one buffer. On an error it returns nil.
func (r *Record) AppendMarshal(dst []byte) ([]byte, error) {
	if r == nil || r.Steps == nil {
		return nil, errors.New("provenance: record has no steps")
	}
	var err error
	dst = append(dst, `{"ib1:provenance":`...)
	if dst, err = appendString(dst, r.Framework); err != nil {
		return nil, err
	}
	dst = append(dst, `,"origins":`...)
	if dst, err = appendStrings(dst, r.Origins); err != nil {
		return nil, err
	}
	dst = append(dst, `,"steps":`...)
	if dst, err = appendContainer(dst, r.Steps); err != nil {
		return nil, err
	}
	if len(r.Certificates) > 0 {
		dst = append(dst, `,"certificates":{`...)
		for i, e := range r.Certificates {
			if i > 0 {
				dst = append(dst, ',')
			}
			if dst, err = appendString(dst, e.Serial); err != nil {
				return nil, err
			}
			dst = append(dst, ':')
			if dst, err = appendStrings(dst, e.Values); err != nil {
				return nil, err
			}
		}
		dst = append(dst, '}')
	}
	dst = append(dst, '}')
	return dst, nil
}

// marshalSize is a little more than the length of the record's JSON text, so that Marshal
// allocates once and a caller can still append a line break: the length of its strings,
// quotes and separators, and a margin for escapes (PEM certificates have a line break, two
// characters escaped, every 65).
func (r *Record) marshalSize() int {
	n := 64 + len(r.Framework)
	for _, o := range r.Origins {
		n += len(o) + 3
	}
	n += containerJSONSize(r.Steps)
	for _, e := range r.Certificates {
		n += len(e.Serial) + 6
		for _, v := range e.Values {
			n += len(v) + len(v)/32 + 3
		}
	}
	return n
}

func containerJSONSize(c *Container) int {
	n := 16 + len(c.Version) + len(c.Serial) + len(c.Timestamp) + len(c.Signature)
	for _, e := range c.Elements {
		if e.Container != nil {
			n += containerJSONSize(e.Container) + 1
		} else {
			n += len(e.Step) + 3
		}
	}
	return n
}

// MarshalJSON lets a Record be embedded in structures encoded with encoding/json.
func (r *Record) MarshalJSON() ([]byte, error) { return r.Marshal() }

// UnmarshalJSON parses a record with the default Limits (see ParseRecord).
func (r *Record) UnmarshalJSON(data []byte) error {
	rec, err := ParseRecord(data, Limits{})
	if err != nil {
		return err
	}
	*r = *rec
	return nil
}

// encodedSize is the length of r.Marshal(), counted without encoding, with the outermost
// container's signature (not made yet) counted as sigLen characters.
func encodedSize(r *Record, sigLen int) int {
	n := len(`{"ib1:provenance":,"origins":,"steps":}`) + stringSize(r.Framework) + stringsSize(r.Origins)
	n += containerSize(r.Steps) - stringSize(r.Steps.Signature) + sigLen + 2
	if len(r.Certificates) > 0 {
		n += len(`,"certificates":{}`) + len(r.Certificates) - 1
		for _, e := range r.Certificates {
			n += stringSize(e.Serial) + 1 + stringsSize(e.Values)
		}
	}
	return n
}

func containerSize(c *Container) int {
	n := len(`[[,,,]]`) + len(versionText(c.Version)) + stringSize(c.Serial) + stringSize(c.Timestamp) + stringSize(c.Signature)
	for _, e := range c.Elements {
		if e.Container != nil {
			n += containerSize(e.Container) + 1
		} else {
			n += stringSize(e.Step) + 1
		}
	}
	return n
}

func stringsSize(ss []string) int {
	n := 2 + max(len(ss)-1, 0)
	for _, s := range ss {
		n += stringSize(s)
	}
	return n
}

// stringSize is the length of s as appendString writes it, quotes included (invalid
// UTF-8, which it refuses, counted as its bytes).
func stringSize(s string) int {
	n := 2
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c >= 0x20 && c < 0x7F && c != '"' && c != '\\':
			n++
		case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f':
			n += 2
		case c < utf8.RuneSelf:
			n += 6
		default:
			r, size := utf8.DecodeRuneInString(s[i:])
			switch {
			case r == utf8.RuneError && size == 1:
				n++
			case r >= 0x10000:
				n += 12
			default:
				n += 6
			}
			i += size
			continue
		}
		i++
	}
	return n
}

func appendContainer(dst []byte, c *Container) ([]byte, error) {
	if c == nil {
		return dst, errors.New("provenance: nil container")
	}
	var err error
	dst = append(dst, '[')
	for _, e := range c.Elements {
		if e.Container != nil {
			if dst, err = appendContainer(dst, e.Container); err != nil {
				return dst, err
			}
		} else if dst, err = appendString(dst, e.Step); err != nil {
			return dst, err
		}
		dst = append(dst, ',')
	}
	version := c.Version
	if version == "" {
		version = "0"
	}
	if !validNumber(string(version)) {
		return dst, errors.New("provenance: container version is not a number")
	}
	dst = append(dst, '[')
	dst = append(dst, version...)
	dst = append(dst, ',')
	for i, s := range []string{c.Serial, c.Timestamp, c.Signature} {
		if i > 0 {
			dst = append(dst, ',')
		}
		if dst, err = appendString(dst, s); err != nil {
			return dst, err
		}
	}
	return append(dst, "]]"...), nil
}

// DataForSigning returns the exact text that the signature of container c covers when it is
// signed (or verified) under the trust framework URL framework:
//
//	framework . elements... . version . serial . timestamp
//
// where a nested container is written "%" . its elements and signature block (itself
// "%" . version . serial . timestamp . signature . "&") . "&", all joined with ".".
func DataForSigning(framework string, c *Container) string {
	return string(appendDataForSigning(nil, framework, c))
}

func appendDataForSigning(dst []byte, framework string, c *Container) []byte {
	dst = append(dst, framework...)
	dst = append(dst, '.')
	for _, e := range c.Elements {
		dst = appendElementData(dst, e)
		dst = append(dst, '.')
	}
	dst = append(dst, versionText(c.Version)...)
	dst = append(dst, '.')
	dst = append(dst, c.Serial...)
	dst = append(dst, '.')
	return append(dst, c.Timestamp...)
}

func appendElementData(dst []byte, e Element) []byte {
	if e.Container == nil {
		return append(dst, e.Step...)
	}
	n := e.Container
	dst = append(dst, "%."...)
	for _, x := range n.Elements {
		dst = appendElementData(dst, x)
		dst = append(dst, '.')
	}
	dst = append(dst, "%."...)
	dst = append(dst, versionText(n.Version)...)
	dst = append(dst, '.')
	dst = append(dst, n.Serial...)
	dst = append(dst, '.')
	dst = append(dst, n.Timestamp...)
	dst = append(dst, '.')
	dst = append(dst, n.Signature...)
	return append(dst, ".&.&"...)
}

func versionText(v json.Number) string {
	if v == "" {
		return "0"
	}
	return string(v)
}

// dataSize estimates the length of the data for signing, to size the buffer once.
func dataSize(c *Container) int {
	n := 64 + len(c.Serial) + len(c.Timestamp) + len(c.Signature)
	for _, e := range c.Elements {
		if e.Container != nil {
			n += 8 + dataSize(e.Container)
		} else {
			n += len(e.Step) + 1
		}
	}
	return n
}

// stepPath formats a position for error messages.
func stepPath(parts []int) string {
	var b strings.Builder
	b.WriteString("steps")
	for _, p := range parts {
		b.WriteByte('[')
		b.WriteString(strconv.Itoa(p))
		b.WriteByte(']')
	}
	return b.String()
}
