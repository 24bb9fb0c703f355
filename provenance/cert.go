package provenance

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"reflect"
	"time"
	"unicode/utf8"
)

// Object identifiers of the IB1 member certificate's own extensions.
var (
	// OIDRoles holds the member's roles in the scheme, a SEQUENCE OF UTF8String.
	OIDRoles = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62329, 1, 1}
	// OIDMember holds the member's URL in the Directory, a UTF8String.
	OIDMember = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62329, 1, 3}
)

// Object identifiers of the standard extensions the IB1 profile looks at.
var (
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidNameConstraints  = asn1.ObjectIdentifier{2, 5, 29, 30}
	oidAuthorityKeyID   = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidExtKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 37}
)

// certInfo is a parsed certificate with what verification needs from it, computed once.
type certInfo struct {
	cert   *x509.Certificate
	serial string   // decimal serial number
	hash   [32]byte // SHA-256 of the DER
}

func newCertInfo(c *x509.Certificate) *certInfo {
	return &certInfo{cert: c, serial: c.SerialNumber.String(), hash: sha256.Sum256(c.Raw)}
}

// parseCertificatePEM parses a PEM text that must hold exactly one CERTIFICATE block and
// nothing else but whitespace.
func parseCertificatePEM(text string) (*x509.Certificate, error) {
	data := []byte(text)
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	if block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("PEM block is %q, not CERTIFICATE", block.Type)
	}
	if len(block.Headers) != 0 {
		return nil, errors.New("PEM block has headers")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("data after the certificate")
	}
	if start := bytes.Index(data, []byte("-----BEGIN")); len(bytes.TrimSpace(data[:start])) != 0 {
		return nil, errors.New("data before the certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

// signerInfo describes a signer as the decoded form shows it.
type signerInfo struct {
	member, name, application string
	roles                     []string
}

func (s *signerInfo) object() *Object {
	roles := make([]any, len(s.roles))
	for i, r := range s.roles {
		roles[i] = r
	}
	return NewObject(
		Member{"member", s.member},
		Member{"name", s.name},
		Member{"application", s.application},
		Member{"roles", roles},
	)
}

func findExtension(c *x509.Certificate, oid asn1.ObjectIdentifier) (pkix.Extension, bool) {
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return e, true
		}
	}
	return pkix.Extension{}, false
}

// SignerInfo is how decoded records name a signer, taken from its signing certificate.
type SignerInfo struct {
	Member      string   // the IB1 member extension, 1.3.6.1.4.1.62329.1.3
	Name        string   // the subject's first O
	Application string   // the one URI subjectAltName
	Roles       []string // the IB1 roles extension, 1.3.6.1.4.1.62329.1.1
}

// DescribeSigner checks that c meets the IB1 member certificate profile that verifiers
// demand of a signing certificate (not a CA, an authority key identifier, one URI SAN,
// clientAuth if it has an extended key usage, the member and roles extensions, a
// subject O, a P-256 key) and returns the signer it names.
func DescribeSigner(c *x509.Certificate) (SignerInfo, error) {
	info, err := leafSignerInfo(c)
	if err != nil {
		return SignerInfo{}, err
	}
	return SignerInfo{Member: info.member, Name: info.name, Application: info.application, Roles: info.roles}, nil
}

// leafSignerInfo checks the IB1 member certificate profile of a signing certificate and
// extracts the signer description.
func leafSignerInfo(c *x509.Certificate) (*signerInfo, error) {
	if err := checkLeaf(c); err != nil {
		return nil, err
	}
	return signerOf(c)
}

// checkLeaf checks what the profile demands of a signing certificate beyond the signer it
// names: an end entity, whose key and extensions a verifier understands.
func checkLeaf(c *x509.Certificate) error {
	if c.Version != 3 {
		return errors.New("signing certificate is not an X.509 v3 certificate")
	}
	if c.BasicConstraintsValid && c.IsCA {
		return errors.New("signing certificate asserts CA:TRUE")
	}
	if c.KeyUsage&x509.KeyUsageCertSign != 0 {
		return errors.New("signing certificate asserts keyCertSign")
	}
	if e, ok := findExtension(c, oidAuthorityKeyID); !ok || e.Critical {
		return errors.New("signing certificate needs a non-critical authorityKeyIdentifier")
	}
	if e, ok := findExtension(c, oidExtKeyUsage); ok {
		client := false
		for _, u := range c.ExtKeyUsage {
			if u == x509.ExtKeyUsageClientAuth {
				client = true
			}
		}
		if e.Critical || !client {
			return errors.New("signing certificate has an extendedKeyUsage without clientAuth (or a critical one)")
		}
	}
	if _, ok := findExtension(c, oidNameConstraints); ok {
		return errors.New("signing certificate has nameConstraints")
	}
	if len(c.UnhandledCriticalExtensions) > 0 {
		return fmt.Errorf("signing certificate has an unsupported critical extension %v", c.UnhandledCriticalExtensions[0])
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return errors.New("signing certificate key is not an ECDSA P-256 key")
	}
	return nil
}

// signerOf reads the signer a signing certificate names: its one URI subjectAltName, its
// subject's first O and the IB1 member and roles extensions, each of which it must have.
func signerOf(c *x509.Certificate) (*signerInfo, error) {
	info := &signerInfo{}
	san, ok := findExtension(c, oidSubjectAltName)
	if !ok {
		return nil, errors.New("signing certificate has no subjectAltName")
	}
	uris, err := sanURIs(san.Value)
	if err != nil {
		return nil, fmt.Errorf("signing certificate subjectAltName: %w", err)
	}
	if len(uris) != 1 {
		return nil, fmt.Errorf("signing certificate subjectAltName holds %d URIs, not exactly one", len(uris))
	}
	info.application = uris[0]
	if len(c.Subject.Organization) == 0 {
		return nil, errors.New("signing certificate subject has no O attribute")
	}
	info.name = c.Subject.Organization[0]
	me, ok := findExtension(c, OIDMember)
	if !ok {
		return nil, errors.New("signing certificate has no IB1 member extension (1.3.6.1.4.1.62329.1.3)")
	}
	if info.member, err = derUTF8String(me.Value); err != nil {
		return nil, fmt.Errorf("IB1 member extension: %w", err)
	}
	re, ok := findExtension(c, OIDRoles)
	if !ok {
		return nil, errors.New("signing certificate has no IB1 roles extension (1.3.6.1.4.1.62329.1.1)")
	}
	if info.roles, err = derSequenceOfUTF8String(re.Value); err != nil {
		return nil, fmt.Errorf("IB1 roles extension: %w", err)
	}
	return info, nil
}

func derUTF8String(der []byte) (string, error) {
	var raw asn1.RawValue
	rest, err := asn1.Unmarshal(der, &raw)
	if err != nil {
		return "", err
	}
	if len(rest) != 0 || raw.Class != asn1.ClassUniversal || raw.Tag != asn1.TagUTF8String || raw.IsCompound {
		return "", errors.New("not a single DER UTF8String")
	}
	if !utf8.Valid(raw.Bytes) {
		return "", errors.New("UTF8String is not valid UTF-8")
	}
	return string(raw.Bytes), nil
}

func derSequenceOfUTF8String(der []byte) ([]string, error) {
	var seq asn1.RawValue
	rest, err := asn1.Unmarshal(der, &seq)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 || seq.Class != asn1.ClassUniversal || seq.Tag != asn1.TagSequence || !seq.IsCompound {
		return nil, errors.New("not a single DER SEQUENCE")
	}
	out := []string{}
	content := seq.Bytes
	for len(content) > 0 {
		var raw asn1.RawValue
		if content, err = asn1.Unmarshal(content, &raw); err != nil {
			return nil, err
		}
		if raw.Class != asn1.ClassUniversal || raw.Tag != asn1.TagUTF8String || raw.IsCompound {
			return nil, errors.New("SEQUENCE member is not a UTF8String")
		}
		if !utf8.Valid(raw.Bytes) {
			return nil, errors.New("UTF8String is not valid UTF-8")
		}
		out = append(out, string(raw.Bytes))
	}
	return out, nil
}

// sanURIs returns the uniformResourceIdentifier names of a subjectAltName extension as
// written (crypto/x509 turns them into *url.URL, whose String() need not give them back).
func sanURIs(der []byte) ([]string, error) {
	var seq asn1.RawValue
	rest, err := asn1.Unmarshal(der, &seq)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 || seq.Tag != asn1.TagSequence || !seq.IsCompound {
		return nil, errors.New("not a SEQUENCE of GeneralName")
	}
	var uris []string
	content := seq.Bytes
	for len(content) > 0 {
		var name asn1.RawValue
		if content, err = asn1.Unmarshal(content, &name); err != nil {
			return nil, err
		}
		if name.Class == asn1.ClassContextSpecific && name.Tag == 6 && !name.IsCompound {
			for _, b := range name.Bytes {
				if b >= utf8.RuneSelf {
					return nil, errors.New("URI is not an IA5String")
				}
			}
			uris = append(uris, string(name.Bytes))
		}
	}
	return uris, nil
}

// checkCA checks the profile of an issuing certificate (intermediate or root): critical
// basicConstraints CA:TRUE, keyUsage keyCertSign, and a path length constraint that allows
// `below` intermediates under it.
func checkCA(c *x509.Certificate, below int) error {
	if c.Version != 3 {
		return errors.New("not an X.509 v3 certificate")
	}
	bc, ok := findExtension(c, oidBasicConstraints)
	if !ok || !bc.Critical || !c.BasicConstraintsValid || !c.IsCA {
		return errors.New("not a CA (critical basicConstraints CA:TRUE required)")
	}
	if c.MaxPathLen >= 0 && below > c.MaxPathLen {
		return errors.New("path length constraint exceeded")
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return errors.New("keyUsage lacks keyCertSign")
	}
	if e, ok := findExtension(c, oidAuthorityKeyID); ok && e.Critical {
		return errors.New("critical authorityKeyIdentifier")
	}
	if e, ok := findExtension(c, oidExtKeyUsage); ok && e.Critical {
		return errors.New("critical extendedKeyUsage")
	}
	if len(c.UnhandledCriticalExtensions) > 0 {
		return fmt.Errorf("unsupported critical extension %v", c.UnhandledCriticalExtensions[0])
	}
	return nil
}

func validAt(c *x509.Certificate, t time.Time) error {
	// Both bounds are inclusive (RFC 5280 4.1.2.5).
	if t.Before(c.NotBefore) || t.After(c.NotAfter) {
		return fmt.Errorf("not valid at the signing time %s (valid %s .. %s)",
			t.UTC().Format(time.RFC3339), c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// issuedBy reports whether child names parent as its issuer and carries parent's signature.
func issuedBy(child, parent *x509.Certificate) bool {
	if !sameName(child.RawIssuer, parent.RawSubject) {
		return false
	}
	// Not CheckSignatureFrom: it also applies CA constraints, which checkCA reports better.
	return parent.CheckSignature(child.SignatureAlgorithm, child.RawTBSCertificate, child.Signature) == nil
}

// sameName compares two DER Names: byte equality, or else attribute by attribute, ignoring
// the ASN.1 string type (PrintableString and UTF8String of the same text are the same name).
func sameName(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var na, nb pkix.RDNSequence
	if rest, err := asn1.Unmarshal(a, &na); err != nil || len(rest) != 0 {
		return false
	}
	if rest, err := asn1.Unmarshal(b, &nb); err != nil || len(rest) != 0 {
		return false
	}
	if len(na) != len(nb) {
		return false
	}
	for i := range na {
		if len(na[i]) != len(nb[i]) {
			return false
		}
		for j := range na[i] {
			x, y := na[i][j], nb[i][j]
			if !x.Type.Equal(y.Type) || !reflect.DeepEqual(x.Value, y.Value) {
				return false
			}
		}
	}
	return true
}
