package provenance

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A throwaway PKI, to check the certificate profile one property at a time, each against
// this package and against ib1check.py.

func newTestKey(t testing.TB, curve elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func issue(t testing.TB, tmpl, parent *x509.Certificate, parentKey crypto.Signer, pub crypto.PublicKey) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var (
	pkiFrom = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	pkiTo   = time.Date(2049, 12, 31, 23, 59, 59, 0, time.UTC)
)

func caTemplate(serial int64, cn string, pathLen int) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{Organization: []string{"Test PKI"}, CommonName: cn},
		NotBefore:             pkiFrom,
		NotAfter:              pkiTo,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            pathLen,
		MaxPathLenZero:        pathLen == 0,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
}

func utf8DER(t testing.TB, s string) []byte {
	b, err := asn1.MarshalWithParams(s, "utf8")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rolesDER(t testing.TB, roles ...string) []byte {
	var content []byte
	for _, r := range roles {
		content = append(content, utf8DER(t, r)...)
	}
	b, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: content})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func leafTemplate(t testing.TB, serial int64) *x509.Certificate {
	app, _ := url.Parse("https://member.example.org/a/1")
	return &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{Organization: []string{"Test Member Ltd"}, CommonName: app.String()},
		NotBefore:    time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(2045, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		URIs:         []*url.URL{app},
		ExtraExtensions: []pkix.Extension{
			{Id: OIDRoles, Value: rolesDER(t, "https://registry.example.org/role/a", "https://registry.example.org/role/b")},
			{Id: OIDMember, Value: utf8DER(t, "https://member.example.org/m/1")},
		},
	}
}

type testPKI struct {
	root, issuer       *x509.Certificate
	rootKey, issuerKey *ecdsa.PrivateKey
}

func newTestPKI(t testing.TB) *testPKI {
	p := &testPKI{rootKey: newTestKey(t, elliptic.P256()), issuerKey: newTestKey(t, elliptic.P256())}
	rt := caTemplate(1, "Test Root", -1)
	p.root = issue(t, rt, rt, p.rootKey, p.rootKey.Public())
	p.issuer = issue(t, caTemplate(2, "Test Issuer", 0), p.root, p.rootKey, p.issuerKey.Public())
	return p
}

func without(exts []pkix.Extension, oid asn1.ObjectIdentifier) []pkix.Extension {
	var out []pkix.Extension
	for _, e := range exts {
		if !e.Id.Equal(oid) {
			out = append(out, e)
		}
	}
	return out
}

func TestCertificateProfile(t *testing.T) {
	m := loadManifest(t)
	p := newTestPKI(t)
	type built struct {
		roots []*x509.Certificate
		chain []*x509.Certificate // signing certificate, then the issuers as listed
		key   crypto.Signer
	}
	// leaf issues a signing certificate from tmpl under p.issuer (or a given parent).
	leaf := func(tmpl *x509.Certificate) built {
		k := newTestKey(t, elliptic.P256())
		return built{[]*x509.Certificate{p.root}, []*x509.Certificate{issue(t, tmpl, p.issuer, p.issuerKey, k.Public()), p.issuer}, k}
	}
	ekuExt := func(critical bool, oids ...asn1.ObjectIdentifier) pkix.Extension {
		v, err := asn1.Marshal(oids)
		if err != nil {
			t.Fatal(err)
		}
		return pkix.Extension{Id: oidExtKeyUsage, Critical: critical, Value: v}
	}
	clientAuth := asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}
	twoIssuers := func(firstPathLen int) built {
		k1, k2 := newTestKey(t, elliptic.P256()), newTestKey(t, elliptic.P256())
		i1 := issue(t, caTemplate(20, "Issuer One", firstPathLen), p.root, p.rootKey, k1.Public())
		i2 := issue(t, caTemplate(21, "Issuer Two", 0), i1, k1, k2.Public())
		lk := newTestKey(t, elliptic.P256())
		l := issue(t, leafTemplate(t, 100), i2, k2, lk.Public())
		// Listed in the reverse of path order: readers must find the order themselves.
		return built{[]*x509.Certificate{p.root}, []*x509.Certificate{l, i1, i2}, lk}
	}
	tests := []struct {
		name   string
		build  func() built
		valid  bool
		python bool // whether ib1check.py reaches the same verdict (false where this package is stricter)
	}{
		{"good", func() built { return leaf(leafTemplate(t, 100)) }, true, true},
		{"EKU clientAuth", func() built {
			l := leafTemplate(t, 100)
			l.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
			return leaf(l)
		}, true, true},
		{"EKU clientAuth and serverAuth", func() built {
			l := leafTemplate(t, 100)
			l.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
			return leaf(l)
		}, true, true},
		{"EKU serverAuth only", func() built {
			l := leafTemplate(t, 100)
			l.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			return leaf(l)
		}, false, true},
		{"EKU anyExtendedKeyUsage", func() built {
			l := leafTemplate(t, 100)
			l.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageAny}
			return leaf(l)
		}, false, true},
		{"EKU critical", func() built {
			l := leafTemplate(t, 100)
			l.ExtraExtensions = append(l.ExtraExtensions, ekuExt(true, clientAuth))
			return leaf(l)
		}, false, true},
		{"no authority key identifier", func() built {
			k := newTestKey(t, elliptic.P256())
			parent := *p.issuer
			parent.SubjectKeyId = nil // CreateCertificate copies the parent's SKI into the AKI
			c := issue(t, leafTemplate(t, 100), &parent, p.issuerKey, k.Public())
			if len(c.AuthorityKeyId) != 0 {
				t.Fatal("AKI still present")
			}
			return built{[]*x509.Certificate{p.root}, []*x509.Certificate{c, p.issuer}, k}
		}, false, true},
		{"two URIs", func() built {
			l := leafTemplate(t, 100)
			u, _ := url.Parse("https://other.example.org/")
			l.URIs = append(l.URIs, u)
			return leaf(l)
		}, false, true},
		{"no URI", func() built {
			l := leafTemplate(t, 100)
			l.URIs = nil
			l.DNSNames = []string{"member.example.org"}
			return leaf(l)
		}, false, true},
		{"signing certificate is a CA", func() built {
			l := leafTemplate(t, 100)
			l.IsCA, l.BasicConstraintsValid = true, true
			l.KeyUsage |= x509.KeyUsageCertSign
			return leaf(l)
		}, false, true},
		{"signing certificate has keyCertSign", func() built {
			l := leafTemplate(t, 100)
			l.KeyUsage |= x509.KeyUsageCertSign
			return leaf(l)
		}, false, true},
		{"no member extension", func() built {
			l := leafTemplate(t, 100)
			l.ExtraExtensions = without(l.ExtraExtensions, OIDMember)
			return leaf(l)
		}, false, true},
		{"no roles extension", func() built {
			l := leafTemplate(t, 100)
			l.ExtraExtensions = without(l.ExtraExtensions, OIDRoles)
			return leaf(l)
		}, false, true},
		{"member not a UTF8String", func() built {
			l := leafTemplate(t, 100)
			v, _ := asn1.MarshalWithParams("https://member.example.org/m/1", "ia5")
			l.ExtraExtensions = append(without(l.ExtraExtensions, OIDMember), pkix.Extension{Id: OIDMember, Value: v})
			return leaf(l)
		}, false, true},
		{"no organisation", func() built {
			l := leafTemplate(t, 100)
			l.Subject.Organization = nil
			return leaf(l)
		}, false, true},
		{"P-384 key", func() built {
			k := newTestKey(t, elliptic.P384())
			return built{[]*x509.Certificate{p.root}, []*x509.Certificate{issue(t, leafTemplate(t, 100), p.issuer, p.issuerKey, k.Public()), p.issuer}, k}
		}, false, false},
		{"unknown critical extension", func() built {
			l := leafTemplate(t, 100)
			l.ExtraExtensions = append(l.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Critical: true, Value: []byte{5, 0}})
			return leaf(l)
		}, false, false},
		{"issuer basicConstraints not critical", func() built {
			k := newTestKey(t, elliptic.P256())
			tmpl := caTemplate(3, "Soft Issuer", -1)
			bc, _ := asn1.Marshal(struct {
				IsCA bool `asn1:"optional"`
			}{true})
			tmpl.ExtraExtensions = []pkix.Extension{{Id: oidBasicConstraints, Critical: false, Value: bc}}
			is := issue(t, tmpl, p.root, p.rootKey, k.Public())
			lk := newTestKey(t, elliptic.P256())
			return built{[]*x509.Certificate{p.root}, []*x509.Certificate{issue(t, leafTemplate(t, 100), is, k, lk.Public()), is}, lk}
		}, false, true},
		{"issuer without keyCertSign", func() built {
			k := newTestKey(t, elliptic.P256())
			tmpl := caTemplate(3, "Signing Issuer", -1)
			tmpl.KeyUsage = x509.KeyUsageDigitalSignature
			is := issue(t, tmpl, p.root, p.rootKey, k.Public())
			lk := newTestKey(t, elliptic.P256())
			return built{[]*x509.Certificate{p.root}, []*x509.Certificate{issue(t, leafTemplate(t, 100), is, k, lk.Public()), is}, lk}
		}, false, true},
		{"two issuers in any order", func() built { return twoIssuers(1) }, true, true},
		{"two issuers, path length exceeded", func() built { return twoIssuers(0) }, false, true},
		{"root path length exceeded", func() built {
			rk := newTestKey(t, elliptic.P256())
			rt := caTemplate(5, "Strict Root", 0)
			root := issue(t, rt, rt, rk, rk.Public())
			ik := newTestKey(t, elliptic.P256())
			is := issue(t, caTemplate(6, "Issuer", -1), root, rk, ik.Public())
			lk := newTestKey(t, elliptic.P256())
			return built{[]*x509.Certificate{root}, []*x509.Certificate{issue(t, leafTemplate(t, 100), is, ik, lk.Public()), is}, lk}
		}, false, true},
		{"root expired at the signing time", func() built {
			rk := newTestKey(t, elliptic.P256())
			rt := caTemplate(5, "Old Root", -1)
			rt.NotAfter = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			root := issue(t, rt, rt, rk, rk.Public())
			ik := newTestKey(t, elliptic.P256())
			is := issue(t, caTemplate(6, "Issuer", 0), root, rk, ik.Public())
			lk := newTestKey(t, elliptic.P256())
			return built{[]*x509.Certificate{root}, []*x509.Certificate{issue(t, leafTemplate(t, 100), is, ik, lk.Public()), is}, lk}
		}, false, true},
		{"issuer not yet valid at the signing time", func() built {
			ik := newTestKey(t, elliptic.P256())
			it := caTemplate(6, "Future Issuer", 0)
			it.NotBefore = time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
			is := issue(t, it, p.root, p.rootKey, ik.Public())
			lk := newTestKey(t, elliptic.P256())
			return built{[]*x509.Certificate{p.root}, []*x509.Certificate{issue(t, leafTemplate(t, 100), is, ik, lk.Public()), is}, lk}
		}, false, true},
		{"issuer name differs", func() built {
			k := newTestKey(t, elliptic.P256())
			parent := *p.issuer
			parent.Subject = pkix.Name{CommonName: "Someone Else"}
			parent.RawSubject = nil
			c := issue(t, leafTemplate(t, 100), &parent, p.issuerKey, k.Public())
			return built{[]*x509.Certificate{p.root}, []*x509.Certificate{c, p.issuer}, k}
		}, false, true},
		{"issuer not listed", func() built {
			b := leaf(leafTemplate(t, 100))
			b.chain = b.chain[:1]
			return b
		}, false, true},
		{"signed directly by the root", func() built {
			k := newTestKey(t, elliptic.P256())
			return built{[]*x509.Certificate{p.root}, []*x509.Certificate{issue(t, leafTemplate(t, 100), p.root, p.rootKey, k.Public())}, k}
		}, true, true},
	}
	step := base64.URLEncoding.EncodeToString([]byte(`{"id":"a","type":"t"}`))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.build()
			data := signRaw(t, m.Framework, b.key, b.chain, nil, step)
			v, err := NewVerifier(b.roots, m.Framework)
			if err != nil {
				t.Fatal(err)
			}
			_, steps, err := v.VerifyJSON(data)
			if tc.valid {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				want := mustParseJSON(t, []byte(`{"member":"https://member.example.org/m/1","name":"Test Member Ltd",`+
					`"application":"https://member.example.org/a/1","roles":["https://registry.example.org/role/a","https://registry.example.org/role/b"]}`))
				sig, _ := steps[0].Get("_signature")
				signed, _ := sig.(*Object).Get("signed")
				if d := sameOrdered(signed, want, "signed"); d != "" {
					t.Fatal(d)
				}
			} else {
				expectCheck(t, err, CheckCertificatePath)
			}
			var rootPEM []byte
			for _, r := range b.roots {
				rootPEM = append(rootPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})...)
			}
			rootFile := filepath.Join(t.TempDir(), "root.pem")
			if err := os.WriteFile(rootFile, rootPEM, 0o600); err != nil {
				t.Fatal(err)
			}
			_, perr := ib1check(t, data, rootFile, m.Framework)
			if pyValid := perr == nil; (pyValid == tc.valid) != tc.python {
				t.Fatalf("ib1check.py valid=%v, this package valid=%v, expected agreement=%v", pyValid, tc.valid, tc.python)
			}
		})
	}
}
