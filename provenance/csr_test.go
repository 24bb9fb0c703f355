package provenance_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/provenance"
)

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := devsetup.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// opensslVerifyCSR runs openssl req -verify and returns the CSR's text.
func opensslVerifyCSR(t *testing.T, csrPEM []byte) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "req.csr")
	os.WriteFile(f, csrPEM, 0o644)
	out, err := exec.Command("openssl", "req", "-in", f, "-noout", "-verify", "-text").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("verify OK")) && !bytes.Contains(out, []byte("Certificate request self-signature verify OK")) {
		t.Fatalf("openssl req -verify: %v\n%s", err, out)
	}
	return string(out)
}

func parse(t *testing.T, csrPEM []byte) *x509.CertificateRequest {
	t.Helper()
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		t.Fatalf("not a PEM CSR: %s", csrPEM)
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatal(err)
	}
	return csr
}

var oidSAN = asn1.ObjectIdentifier{2, 5, 29, 17}

func countSAN(exts []pkix.Extension) int {
	n := 0
	for _, e := range exts {
		if e.Id.Equal(oidSAN) {
			n++
		}
	}
	return n
}

func TestCSRFromSubject(t *testing.T) {
	k := newKey(t)
	csrPEM, err := provenance.CreateCSR(rand.Reader, k, provenance.CSRRequest{
		Subject: "/C=GB/ST=London/O=Smart Meter Reading Co/CN=https://member.core.sandbox.trust.ib1.org/a/38936455",
		URIs:    []string{"https://member.core.sandbox.trust.ib1.org/a/38936455"},
	})
	if err != nil {
		t.Fatal(err)
	}
	text := opensslVerifyCSR(t, csrPEM)
	if !strings.Contains(text, "C=GB, ST=London, O=Smart Meter Reading Co, CN=https://member.core.sandbox.trust.ib1.org/a/38936455") &&
		!strings.Contains(text, "C = GB, ST = London, O = Smart Meter Reading Co, CN = https://member.core.sandbox.trust.ib1.org/a/38936455") {
		t.Errorf("subject not as given, in order:\n%s", text)
	}
	csr := parse(t, csrPEM)
	if !k.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(csr.PublicKey) {
		t.Error("the CSR's public key is not the key's")
	}
	if len(csr.URIs) != 1 || csr.URIs[0].String() != "https://member.core.sandbox.trust.ib1.org/a/38936455" || countSAN(csr.Extensions) != 1 {
		t.Errorf("SAN: %v, %d extensions", csr.URIs, countSAN(csr.Extensions))
	}
}

// TestCSRFromAnotherCSR re-signs a CSR made by openssl with another key, as the original's
// sign-with-kms.py did: subject and every extension kept, criticality included, and one SAN.
func TestCSRFromAnotherCSR(t *testing.T) {
	dir := t.TempDir()
	cnf := filepath.Join(dir, "req.cnf")
	os.WriteFile(cnf, []byte(`[req]
distinguished_name = dn
prompt = no
req_extensions = ext
[dn]
C = GB
O = Carbon Accounting Provider
CN = https://member.core.sandbox.trust.ib1.org/a/26241
[ext]
subjectAltName = URI:https://member.core.sandbox.trust.ib1.org/a/26241
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
`), 0o644)
	tmp := filepath.Join(dir, "temp.csr")
	out, err := exec.Command("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", filepath.Join(dir, "throwaway.pem"), "-config", cnf, "-out", tmp).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl req -new: %v\n%s", err, out)
	}
	orig, _ := os.ReadFile(tmp)
	from := parse(t, orig)

	k := newKey(t)
	csrPEM, err := provenance.CreateCSR(rand.Reader, k, provenance.CSRRequest{From: orig})
	if err != nil {
		t.Fatal(err)
	}
	opensslVerifyCSR(t, csrPEM)
	csr := parse(t, csrPEM)
	if !bytes.Equal(csr.RawSubject, from.RawSubject) {
		t.Error("subject changed")
	}
	if !k.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(csr.PublicKey) || from.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(csr.PublicKey) {
		t.Error("the CSR's public key is not the backend key's")
	}
	if countSAN(csr.Extensions) != 1 {
		t.Errorf("%d subjectAltName extensions, want 1", countSAN(csr.Extensions))
	}
	if len(csr.Extensions) != len(from.Extensions) {
		t.Fatalf("%d extensions, want %d", len(csr.Extensions), len(from.Extensions))
	}
	for i, e := range from.Extensions {
		g := csr.Extensions[i]
		if !g.Id.Equal(e.Id) || g.Critical != e.Critical || !bytes.Equal(g.Value, e.Value) {
			t.Errorf("extension %v: got critical=%v, want critical=%v (or a different value)", e.Id, g.Critical, e.Critical)
		}
	}
	if _, err := provenance.CreateCSR(rand.Reader, k, provenance.CSRRequest{From: orig, Subject: "/CN=x"}); err == nil {
		t.Error("a subject was accepted beside -from")
	}
}

func TestParseDN(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "/C=GB/O=Org/CN=x", want: "CN=x,O=Org,C=GB"},
		{in: "CN=x,O=Org,C=GB", want: "CN=x,O=Org,C=GB"},
		{in: `/O=A\/B/CN=y`, want: "CN=y,O=A/B"},
		{in: "/O=Org/CN=https://member.example/a/1", want: "CN=https://member.example/a/1,O=Org"},
		{in: "/C=GBR/CN=x", err: "two-letter"},
		{in: "/XX=1", err: "unknown attribute"},
		{in: "/CN", err: "TYPE=value"},
		{in: "", err: "empty"},
	} {
		der, err := provenance.ParseDN(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		var rdns pkix.RDNSequence
		asn1.Unmarshal(der, &rdns)
		var name pkix.Name
		name.FillFromRDNSequence(&rdns)
		if name.String() != tc.want {
			t.Errorf("%q: %s, want %s", tc.in, name.String(), tc.want)
		}
	}
}
