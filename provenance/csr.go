package provenance

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
)

// CSRRequest describes a certificate signing request to make with a key.
type CSRRequest struct {
	// Subject is a distinguished name, in openssl's form "/C=GB/O=Org/CN=name" or as
	// RFC 4514 "CN=name,O=Org,C=GB". Attributes keep the order given.
	Subject string
	URIs    []string // subject alternative names
	DNS     []string
	// From, when set, is an existing CSR (PEM or DER) whose subject and extensions the new
	// one takes, as the original service's sign-with-kms.py did: the key and the signature
	// are replaced. Subject, URIs and DNS must then be empty.
	From []byte
}

// CSRError is a CSRRequest that cannot be made into a CSR: the request's fault (HTTP 400).
type CSRError struct{ Msg string }

func (e *CSRError) Error() string { return e.Msg }

func invalidCSR(format string, args ...any) error {
	return &CSRError{fmt.Sprintf(format, args...)}
}

// CreateCSR makes a PKCS#10 request for signer's public key, signed by signer with
// randomness from random, and returns it as PEM.
func CreateCSR(random io.Reader, signer crypto.Signer, req CSRRequest) ([]byte, error) {
	tmpl := &x509.CertificateRequest{SignatureAlgorithm: x509.ECDSAWithSHA256}
	if req.From != nil {
		if req.Subject != "" || len(req.URIs) > 0 || len(req.DNS) > 0 {
			return nil, invalidCSR("a CSR taken from another one gets its subject and names from it; do not give a subject, URIs or DNS names as well")
		}
		from, err := parseCSR(req.From)
		if err != nil {
			return nil, invalidCSR("%v", err)
		}
		// Only RawSubject and ExtraExtensions: the parsed DNSNames/URIs would make
		// x509 write a second subjectAltName beside the one in Extensions, and
		// Extensions itself is ignored by CreateCertificateRequest.
		tmpl.RawSubject = from.RawSubject
		tmpl.ExtraExtensions = append([]pkix.Extension(nil), from.Extensions...)
	} else {
		if req.Subject == "" {
			return nil, invalidCSR("subject: required, e.g. /C=GB/O=Example Ltd/CN=https://directory.example/a/123")
		}
		raw, err := ParseDN(req.Subject)
		if err != nil {
			return nil, invalidCSR("subject: %v", err)
		}
		tmpl.RawSubject = raw
		for _, u := range req.URIs {
			parsed, err := url.Parse(u)
			if err != nil || parsed.Scheme == "" {
				return nil, invalidCSR("uri %q: not an absolute URI", u)
			}
			tmpl.URIs = append(tmpl.URIs, parsed)
		}
		for _, d := range req.DNS {
			if d == "" || strings.ContainsAny(d, " /") {
				return nil, invalidCSR("dns %q: not a DNS name", d)
			}
			tmpl.DNSNames = append(tmpl.DNSNames, d)
		}
	}
	der, err := x509.CreateCertificateRequest(random, tmpl, signer)
	if err != nil {
		return nil, fmt.Errorf("signing the CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

func parseCSR(data []byte) (*x509.CertificateRequest, error) {
	der := data
	if b, _ := pem.Decode(data); b != nil {
		if b.Type != "CERTIFICATE REQUEST" && b.Type != "NEW CERTIFICATE REQUEST" {
			return nil, fmt.Errorf("the CSR to take the subject from is a %q, not a CERTIFICATE REQUEST", b.Type)
		}
		der = b.Bytes
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("the CSR to take the subject from does not parse: %w", err)
	}
	return csr, nil
}

// dnAttributes are the attribute types a subject may name, by their short names.
var dnAttributes = map[string]asn1.ObjectIdentifier{
	"C":            {2, 5, 4, 6},
	"ST":           {2, 5, 4, 8},
	"L":            {2, 5, 4, 7},
	"O":            {2, 5, 4, 10},
	"OU":           {2, 5, 4, 11},
	"CN":           {2, 5, 4, 3},
	"SERIALNUMBER": {2, 5, 4, 5},
	"STREET":       {2, 5, 4, 9},
	"POSTALCODE":   {2, 5, 4, 17},
	"DC":           {0, 9, 2342, 19200300, 100, 1, 25},
	"UID":          {0, 9, 2342, 19200300, 100, 1, 1},
	"EMAILADDRESS": {1, 2, 840, 113549, 1, 9, 1},
}

// ParseDN parses a distinguished name in openssl's "/C=GB/O=Org/CN=x" form or as
// RFC 4514 "CN=x,O=Org,C=GB" (which lists the most specific attribute first) and returns
// it DER-encoded, attributes in the order of the name as written by openssl. A backslash
// escapes the separator. In the slash form a "/" starts a new attribute only when a known
// TYPE= follows it, so that the URLs IB1 puts in a member's CN need no escaping:
// "/O=Org/CN=https://member.example/a/1" is two attributes.
func ParseDN(s string) ([]byte, error) {
	var parts []string
	slash := strings.HasPrefix(s, "/")
	if slash {
		parts = splitSlashDN(s[1:])
	} else {
		parts = splitEscaped(s, ',')
		// RFC 4514 writes the last RDN first.
		for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
			parts[i], parts[j] = parts[j], parts[i]
		}
	}
	var rdns pkix.RDNSequence
	for _, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		typ, val, ok := strings.Cut(p, "=")
		if !ok {
			return nil, fmt.Errorf("%q is not TYPE=value", p)
		}
		oid, known := dnAttributes[strings.ToUpper(strings.TrimSpace(typ))]
		if !known {
			return nil, fmt.Errorf("unknown attribute type %q; known: C, ST, L, O, OU, CN, serialNumber, street, postalCode, DC, UID, emailAddress", typ)
		}
		if val == "" {
			return nil, fmt.Errorf("%s has an empty value", typ)
		}
		if strings.ToUpper(strings.TrimSpace(typ)) == "C" && len(val) != 2 {
			return nil, fmt.Errorf("C=%s: a country is a two-letter code such as GB", val)
		}
		rdns = append(rdns, pkix.RelativeDistinguishedNameSET{{Type: oid, Value: val}})
	}
	if len(rdns) == 0 {
		return nil, errors.New("empty distinguished name")
	}
	return asn1.Marshal(rdns)
}

func splitSlashDN(s string) []string {
	return splitDN(s, func(i int) bool { return s[i] == '/' && startsAttribute(s[i+1:]) })
}

func startsAttribute(s string) bool {
	typ, _, ok := strings.Cut(s, "=")
	if !ok {
		return false
	}
	_, known := dnAttributes[strings.ToUpper(typ)]
	return known
}

func splitEscaped(s string, sep byte) []string {
	return splitDN(s, func(i int) bool { return s[i] == sep })
}

// splitDN splits s where at(i) says a new attribute starts; a backslash escapes the next
// character.
func splitDN(s string, at func(i int) bool) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case at(i):
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(s[i])
		}
	}
	return append(parts, cur.String())
}
