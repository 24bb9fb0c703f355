// Package devsetup builds what `provenanced serve -dev` sets up: a test PKI in the IB1
// Trust Framework's shape, which the tests use too, a config that serves its key, and for
// `-dev -hsm` a SoftHSM token holding the key (softhsm.go; the tests' SoftHSM and TPM
// fixtures are testenv's own).
//
// It is apart from testenv so that the daemon binary links this and nothing of the test
// environment (emulators, fault proxies, their dummy credentials): a test in
// cmd/provenanced checks that `go list -deps` of the binary holds no testenv.
package devsetup

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/ib1/provenanced/provenance"
)

// Default values of a development member, in the sandbox's shape.
const (
	SandboxTrustFramework = "https://registry.core.sandbox.trust.ib1.org/trust-framework"
	SandboxScheme         = "https://registry.core.sandbox.trust.ib1.org/scheme/perseus"
	DevRole               = SandboxScheme + "/role/energy-data-provider"
)

// CA is a certificate authority of the test PKI.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// PKI is a root CA and the intermediate ("issuer") that signs member certificates, as the
// trust framework's Directory has them.
type PKI struct {
	Root   CA
	Issuer CA
}

// Member describes a member signing certificate to issue.
type Member struct {
	Serial       *big.Int // nil: a random 63-bit serial
	Organization string   // subject O, the signer's "name" in decoded records
	Application  string   // the one URI SAN (and the CN), the signer's "application"
	Member       string   // extension 1.3.6.1.4.1.62329.1.3
	Roles        []string // extension 1.3.6.1.4.1.62329.1.1
	NotBefore    time.Time
	NotAfter     time.Time
}

// DevMember is the member that `serve -dev` and most tests sign as.
func DevMember(now time.Time) Member {
	return Member{
		Organization: "Development Member",
		Application:  "https://member.core.sandbox.trust.ib1.org/a/dev",
		Member:       "https://member.core.sandbox.trust.ib1.org/m/dev",
		Roles:        []string{DevRole},
		NotBefore:    now.Add(-time.Hour).UTC().Truncate(time.Second),
		NotAfter:     now.AddDate(2, 0, 0).UTC().Truncate(time.Second),
	}
}

// NewPKI creates a root CA and an intermediate with pathlen 0, both EC P-256, valid from
// an hour before now for ten years.
func NewPKI(now time.Time) (*PKI, error) {
	notBefore := now.Add(-time.Hour).UTC().Truncate(time.Second)
	notAfter := now.AddDate(10, 0, 0).UTC().Truncate(time.Second)
	rootKey, err := NewKey()
	if err != nil {
		return nil, err
	}
	rootTmpl := &x509.Certificate{
		Subject:               pkix.Name{Country: []string{"GB"}, Organization: []string{"Test Trust Framework"}, CommonName: "Test Trust Framework Signing CA"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          keyID(&rootKey.PublicKey),
	}
	root, err := issue(rootTmpl, nil, &rootKey.PublicKey, rootKey)
	if err != nil {
		return nil, fmt.Errorf("devsetup: root CA: %w", err)
	}
	issuerKey, err := NewKey()
	if err != nil {
		return nil, err
	}
	issuerTmpl := &x509.Certificate{
		Subject:               pkix.Name{Country: []string{"GB"}, Organization: []string{"Test Trust Framework"}, CommonName: "Test Trust Framework Signing Issuer"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          keyID(&issuerKey.PublicKey),
	}
	issuer, err := issue(issuerTmpl, root, &issuerKey.PublicKey, rootKey)
	if err != nil {
		return nil, fmt.Errorf("devsetup: intermediate CA: %w", err)
	}
	return &PKI{Root: CA{root, rootKey}, Issuer: CA{issuer, issuerKey}}, nil
}

// NewKey returns a new EC P-256 private key.
func NewKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// Issue signs a member certificate for pub with the intermediate: a URI SAN, an
// authority key identifier and the IB1 roles and member extensions. pub may be any
// P-256 public key, so keys that live in an HSM or KMS get certificates too.
func (p *PKI) Issue(pub crypto.PublicKey, m Member) (*x509.Certificate, error) {
	app, err := url.Parse(m.Application)
	if err != nil || app.Scheme == "" {
		return nil, fmt.Errorf("devsetup: member application %q is not a URL", m.Application)
	}
	roles, err := utf8Sequence(m.Roles)
	if err != nil {
		return nil, err
	}
	member, err := asn1.MarshalWithParams(m.Member, "utf8")
	if err != nil {
		return nil, err
	}
	serial := m.Serial
	if serial == nil {
		if serial, err = randomSerial(); err != nil {
			return nil, err
		}
	}
	ecPub, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("devsetup: member key is %T, not an EC public key", pub)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Country: []string{"GB"}, Organization: []string{m.Organization}, CommonName: m.Application},
		NotBefore:    m.NotBefore,
		NotAfter:     m.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{app},
		SubjectKeyId: keyID(ecPub),
		ExtraExtensions: []pkix.Extension{
			{Id: provenance.OIDRoles, Value: roles},
			{Id: provenance.OIDMember, Value: member},
		},
	}
	cert, err := issue(tmpl, p.Issuer.Cert, pub, p.Issuer.Key)
	if err != nil {
		return nil, fmt.Errorf("devsetup: member certificate: %w", err)
	}
	return cert, nil
}

// Bundle is the member's certificate followed by the intermediate, as PEM: the
// "signing bundle" a member installs.
func (p *PKI) Bundle(leaf *x509.Certificate) []byte {
	return append(CertPEM(leaf), CertPEM(p.Issuer.Cert)...)
}

// CertPEM encodes a certificate as PEM.
func CertPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// KeyPEM encodes a private key as PKCS#8 PEM.
func KeyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// Files names what WriteFiles writes, as absolute paths.
type Files struct {
	Dir        string
	RootCA     string // root-ca.pem
	RootCAKey  string // ca/root-ca-key.pem
	Issuer     string // ca/issuer-ca.pem
	IssuerKey  string // ca/issuer-ca-key.pem
	Bundle     string // signing-bundle.pem: the member certificate, then the intermediate
	PrivateKey string // signing-key.pem, mode 0600
}

// DevFiles are the names WriteFiles uses in dir.
func DevFiles(dir string) Files {
	return Files{
		Dir:        dir,
		RootCA:     filepath.Join(dir, "root-ca.pem"),
		RootCAKey:  filepath.Join(dir, "ca", "root-ca-key.pem"),
		Issuer:     filepath.Join(dir, "ca", "issuer-ca.pem"),
		IssuerKey:  filepath.Join(dir, "ca", "issuer-ca-key.pem"),
		Bundle:     filepath.Join(dir, "signing-bundle.pem"),
		PrivateKey: filepath.Join(dir, "signing-key.pem"),
	}
}

// WriteFiles writes the PKI, a member key and its bundle into dir (see DevFiles). Private
// keys get mode 0600 and the CA keys a 0700 folder of their own. When key is nil, no
// member key or bundle is written (the caller's key lives elsewhere).
func (p *PKI) WriteFiles(dir string, key *ecdsa.PrivateKey, leaf *x509.Certificate) (Files, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return Files{}, err
	}
	f := DevFiles(dir)
	if err := os.MkdirAll(filepath.Join(dir, "ca"), 0o700); err != nil {
		return Files{}, err
	}
	rootKey, err := KeyPEM(p.Root.Key)
	if err != nil {
		return Files{}, err
	}
	issuerKey, err := KeyPEM(p.Issuer.Key)
	if err != nil {
		return Files{}, err
	}
	type write struct {
		path string
		data []byte
		mode os.FileMode
	}
	writes := []write{
		{f.RootCA, CertPEM(p.Root.Cert), 0o644},
		{f.RootCAKey, rootKey, 0o600},
		{f.Issuer, CertPEM(p.Issuer.Cert), 0o644},
		{f.IssuerKey, issuerKey, 0o600},
	}
	if leaf != nil {
		writes = append(writes, write{f.Bundle, p.Bundle(leaf), 0o644})
	}
	if key != nil {
		kp, err := KeyPEM(key)
		if err != nil {
			return Files{}, err
		}
		writes = append(writes, write{f.PrivateKey, kp, 0o600})
	}
	for _, w := range writes {
		if err := WriteFileAtomic(w.path, w.data, w.mode); err != nil {
			return Files{}, err
		}
	}
	return f, nil
}

// ConfigHead is the [server] and [provenance] sections of the configs that `serve -dev`
// and the test fixtures write: the socket beside the config, TCP on httpAddr, the sandbox
// trust framework, rootCA (relative to the config) and the key "signing". comment opens
// the file; the caller appends the [keys.signing] table.
func ConfigHead(comment, httpAddr, rootCA string) string {
	return fmt.Sprintf(`%s

[server]
socket = "provenanced.sock"
socket_mode = "0600"
http = %q

[provenance]
trust_framework = %q
scheme = %q
root_ca = %q
key = "signing"

[keys.signing]
`, comment, httpAddr, SandboxTrustFramework, SandboxScheme, rootCA)
}

// WriteFileAtomic writes data to a temporary file beside path with the final mode from
// the start, then renames it into place: a reader never sees half a key, and a key is
// never, even briefly, more readable than mode.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func issue(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	if tmpl.SerialNumber == nil {
		s, err := randomSerial()
		if err != nil {
			return nil, err
		}
		tmpl.SerialNumber = s
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func randomSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
}

// keyID is the RFC 5280 method 1 key identifier; x509.CreateCertificate copies the
// issuer's into the authority key identifier, which the IB1 verifier requires.
func keyID(pub *ecdsa.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err) // a P-256 key always marshals
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		panic(err)
	}
	sum := sha1.Sum(spki.PublicKey.Bytes)
	return sum[:]
}

// utf8Sequence encodes a SEQUENCE OF UTF8String; encoding/asn1 would pick
// PrintableString for the elements.
func utf8Sequence(items []string) ([]byte, error) {
	var body []byte
	for _, s := range items {
		b, err := asn1.MarshalWithParams(s, "utf8")
		if err != nil {
			return nil, err
		}
		body = append(body, b...)
	}
	return asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: body})
}

// NewDevFiles writes a new PKI, a member key and its bundle into dir (see DevFiles): the
// setup of `serve -dev` and of most tests.
func NewDevFiles(dir string, now time.Time) (*PKI, Files, error) {
	pki, err := NewPKI(now)
	if err != nil {
		return nil, Files{}, err
	}
	key, err := NewKey()
	if err != nil {
		return nil, Files{}, err
	}
	leaf, err := pki.Issue(&key.PublicKey, DevMember(now))
	if err != nil {
		return nil, Files{}, err
	}
	files, err := pki.WriteFiles(dir, key, leaf)
	return pki, files, err
}
