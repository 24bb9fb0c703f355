package provenance

import (
	"fmt"
)

// The checks that reject a record. Their names are those of the shared test vectors'
// manifest, so that a failure can be matched against the expected one.
const (
	// CheckTrustFramework: ib1:provenance is missing or not the expected trust framework URL.
	CheckTrustFramework = "trust-framework"
	// CheckContainerVersion: a signature block's version is not the number 0.
	CheckContainerVersion = "container-version"
	// CheckSerialFormat: a signature block's serial is not a string holding the canonical
	// decimal form of a non-negative integer of at most MaxSerialDigits digits.
	CheckSerialFormat = "serial-format"
	// CheckCertificateLookup: a serial (of a signer or of an issuer in its path) has no
	// usable certificates entry, or the entry holds a certificate with another serial.
	CheckCertificateLookup = "certificate-lookup"
	// CheckCertificatePath: no path from the signing certificate through its listed issuers
	// to a root CA, valid at the signing time and meeting the certificate profile.
	CheckCertificatePath = "certificate-path"
	// CheckSignature: the ECDSA signature does not verify over the data for signing.
	CheckSignature = "signature"
	// CheckSigningTime: the signing timestamp is not YYYY-MM-DDTHH:MM:SSZ.
	CheckSigningTime = "signing-time"
	// CheckStepDecoding: a signed step is not padded base64url of a JSON object with a type.
	CheckStepDecoding = "step-decoding"
	// CheckContainerShape: the record, a container or a signature block has a member of the
	// wrong kind or count, or the record exceeds the Limits.
	CheckContainerShape = "container-shape"
	// CheckOrigins: origins is not exactly the ids of the origin steps, in record order.
	CheckOrigins = "origins"
)

// VerifyError is the error returned for a record that is malformed or does not verify.
// Check is one of the Check* constants; Error() starts with it.
type VerifyError struct {
	Check string // the failed check, e.g. CheckSignature
	Where string // where in the record, e.g. `steps[0][3]`, or "" for the whole record
	Msg   string // what is wrong
	Err   error  // the underlying error, if any
}

func (e *VerifyError) Error() string {
	s := e.Check + ": "
	if e.Where != "" {
		s += e.Where + ": "
	}
	s += e.Msg
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the underlying error.
func (e *VerifyError) Unwrap() error { return e.Err }

func verr(check, where string, err error, format string, args ...any) *VerifyError {
	return &VerifyError{Check: check, Where: where, Msg: fmt.Sprintf(format, args...), Err: err}
}

// Limits bound the work and memory spent on a record, so that a hostile record is refused
// rather than processed at any cost. A zero field means its default (DefaultLimits).
type Limits struct {
	MaxRecordBytes  int // size of the encoded record (default 16 MiB)
	MaxDepth        int // nesting of containers, and of JSON values inside a step (default 32)
	MaxSteps        int // steps in the whole record, nested ones included (default 10 000)
	MaxStringBytes  int // any one JSON string or number, encoded step strings included (default 1 MiB)
	MaxCertificates int // entries in the certificates map (default 64)
	MaxPathLength   int // issuer serials listed after a signing certificate (default 8)
}

// MaxSerialDigits bounds the length of a serial number's decimal text. RFC 5280 limits
// serials to 20 octets (49 digits); 64 leaves room and stops absurd numbers.
const MaxSerialDigits = 64

// DefaultLimits returns the limits used when a Limits field is zero.
func DefaultLimits() Limits {
	return Limits{
		MaxRecordBytes:  16 << 20,
		MaxDepth:        32,
		MaxSteps:        10000,
		MaxStringBytes:  1 << 20,
		MaxCertificates: 64,
		MaxPathLength:   8,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxRecordBytes <= 0 {
		l.MaxRecordBytes = d.MaxRecordBytes
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = d.MaxDepth
	}
	if l.MaxSteps <= 0 {
		l.MaxSteps = d.MaxSteps
	}
	if l.MaxStringBytes <= 0 {
		l.MaxStringBytes = d.MaxStringBytes
	}
	if l.MaxCertificates <= 0 {
		l.MaxCertificates = d.MaxCertificates
	}
	if l.MaxPathLength <= 0 {
		l.MaxPathLength = d.MaxPathLength
	}
	return l
}
