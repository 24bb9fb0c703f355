package provenance_test

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/provenance"
)

func TestCheckCertificates(t *testing.T) {
	now := time.Now()
	pki, err := devsetup.NewPKI(now)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := devsetup.NewPKI(now) // another PKI: same names, other keys
	key, _ := devsetup.NewKey()
	issue := func(p *devsetup.PKI, pub any, mutate func(*devsetup.Member)) *x509.Certificate {
		m := devsetup.DevMember(now)
		if mutate != nil {
			mutate(&m)
		}
		c, err := p.Issue(pub, m)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	leaf := issue(pki, &key.PublicKey, nil)
	anotherKey, _ := devsetup.NewKey()
	expired := issue(pki, &key.PublicKey, func(m *devsetup.Member) { m.NotBefore, m.NotAfter = now.Add(-48*time.Hour), now.Add(-24*time.Hour) })

	// A certificate without the IB1 extensions, signed by the same intermediate.
	plainTmpl := &x509.Certificate{SerialNumber: big.NewInt(77), Subject: pkix.Name{Organization: []string{"Plain"}, CommonName: "plain"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	plainDER, err := x509.CreateCertificate(rand.Reader, plainTmpl, pki.Issuer.Cert, &key.PublicKey, pki.Issuer.Key)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := x509.ParseCertificate(plainDER)

	roots := []*x509.Certificate{pki.Root.Cert}
	r, err := provenance.CheckBundle([]*x509.Certificate{leaf, pki.Issuer.Cert}, roots, key.Public(), "this key", now)
	if err != nil {
		t.Fatalf("a good bundle fails: %v", err)
	}
	if r.Signer.Member != devsetup.DevMember(now).Member || r.Signer.Roles[0] != devsetup.DevRole || r.Serial != leaf.SerialNumber.String() || r.DaysLeft(now) < 700 {
		t.Errorf("report = %+v", r)
	}
	for _, tc := range []struct {
		name  string
		chain []*x509.Certificate
		roots []*x509.Certificate
		want  string
	}{
		{"wrong order", []*x509.Certificate{pki.Issuer.Cert, leaf}, roots, "wrong order"},
		{"only CAs", []*x509.Certificate{pki.Issuer.Cert}, roots, "only CA certificates"},
		{"missing intermediate", []*x509.Certificate{leaf}, roots, "append the intermediate"},
		{"another root", []*x509.Certificate{leaf, pki.Issuer.Cert}, []*x509.Certificate{other.Root.Cert}, "another key"},
		{"expired", []*x509.Certificate{expired, pki.Issuer.Cert}, roots, "expired at"},
		{"another key's certificate", []*x509.Certificate{issue(pki, &anotherKey.PublicKey, nil), pki.Issuer.Cert}, roots, "not for this key"},
		{"no IB1 extensions", []*x509.Certificate{plain, pki.Issuer.Cert}, roots, "not an IB1 member signing certificate"},
		{"empty", nil, roots, "no certificates"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := provenance.CheckBundle(tc.chain, tc.roots, key.Public(), "this key", now)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}
