package backends

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ib1/provenanced/provenance"
)

// CertReport describes a key's certificate after CheckCertificates found it good.
type CertReport struct {
	Subject   string
	Serial    string // decimal
	Issuer    string
	NotBefore time.Time
	NotAfter  time.Time
	Signer    provenance.SignerInfo // member, name (O), application (URI SAN), roles
	Chain     []string              // subjects from the leaf up to the root
}

// DaysLeft is the number of whole days until the certificate expires (negative after).
func (r *CertReport) DaysLeft(now time.Time) int {
	return int(r.NotAfter.Sub(now).Hours() / 24)
}

// bundleOrder checks that a bundle starts with the member's certificate, and says how to
// fix one that does not: the most common mistake after a key that does not match.
func bundleOrder(chain []*x509.Certificate) error {
	if !chain[0].IsCA {
		return nil
	}
	for i, c := range chain[1:] {
		if !c.IsCA {
			return fmt.Errorf("the bundle is in the wrong order: it starts with the CA certificate %q, and the member's certificate (%q) is number %d; put the member's certificate first, then the intermediates (cat member.pem intermediate.pem > bundle.pem)",
				chain[0].Subject.String(), c.Subject.String(), i+2)
		}
	}
	return fmt.Errorf("the bundle holds only CA certificates (first: %q); the member's certificate is missing: put it first, then the intermediates", chain[0].Subject.String())
}

// CheckCertificates checks a key's bundle as the trust framework will: its first
// certificate is the member's, for the key's public key; it chains through the bundle's
// intermediates to one of roots at the time at; and it has the IB1 member certificate
// profile (member and roles extensions, one URI SAN). Every error says what to fix.
func CheckCertificates(k *Key, chain []*x509.Certificate, roots []*x509.Certificate, at time.Time) (*CertReport, error) {
	if len(chain) == 0 {
		return nil, errors.New("no certificates: configure the key's certificates (its bundle)")
	}
	if err := bundleOrder(chain); err != nil {
		return nil, err
	}
	leaf := chain[0]
	if !k.pub.Equal(leaf.PublicKey) {
		return nil, fmt.Errorf("the certificate (subject %q, serial %s) is not for this key (%s): its public key differs; every signature would fail verification. Install the certificate issued for this key",
			leaf.Subject.String(), leaf.SerialNumber, k.Location())
	}
	if len(roots) > 0 {
		if err := verifyChain(chain, roots, at); err != nil {
			return nil, err
		}
	}
	signer, err := provenance.DescribeSigner(leaf)
	if err != nil {
		return nil, fmt.Errorf("the certificate is not an IB1 member signing certificate: %v", err)
	}
	r := &CertReport{
		Subject:   leaf.Subject.String(),
		Serial:    leaf.SerialNumber.String(),
		Issuer:    leaf.Issuer.String(),
		NotBefore: leaf.NotBefore,
		NotAfter:  leaf.NotAfter,
		Signer:    signer,
	}
	for _, c := range chain {
		r.Chain = append(r.Chain, c.Subject.String())
	}
	return r, nil
}

// verifyChain verifies the bundle to roots at the time at and explains a failure.
func verifyChain(chain, roots []*x509.Certificate, at time.Time) error {
	rootPool, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: rootPool, Intermediates: inter, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err == nil {
		return nil
	}
	var inv x509.CertificateInvalidError
	if errors.As(err, &inv) && inv.Reason == x509.Expired {
		for _, c := range chain {
			if at.After(c.NotAfter) {
				return fmt.Errorf("the certificate %q expired at %s; renew it", c.Subject.String(), c.NotAfter.UTC().Format(time.RFC3339))
			}
			if at.Before(c.NotBefore) {
				return fmt.Errorf("the certificate %q is not valid before %s", c.Subject.String(), c.NotBefore.UTC().Format(time.RFC3339))
			}
		}
		return fmt.Errorf("a certificate of the chain is not valid at %s: %v", at.UTC().Format(time.RFC3339), err)
	}
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		// Walk up the bundle as far as it goes, to say which link is missing.
		top := chain[0]
		for {
			next := issuerIn(top, chain)
			if next == nil || next == top {
				break
			}
			top = next
		}
		if issuerIn(top, roots) == nil {
			for _, r := range roots {
				if bytes.Equal(top.RawIssuer, r.RawSubject) {
					return fmt.Errorf("the chain does not reach the root CA: %q is issued by a CA with the root's name %q but another key; the bundle belongs to another PKI", top.Subject.String(), r.Subject.String())
				}
			}
			if top == chain[0] || !top.IsCA {
				return fmt.Errorf("the chain is incomplete: the bundle has no certificate for the member certificate's issuer %q and it is not the root CA; append the intermediate to the bundle", top.Issuer.String())
			}
			return fmt.Errorf("the chain does not reach the root CA (%s): the bundle's top certificate %q is issued by %q; is the bundle from another trust framework (sandbox or production) or the intermediate missing?",
				rootNames(roots), top.Subject.String(), top.Issuer.String())
		}
	}
	return fmt.Errorf("the chain does not verify to the root CA (%s): %v", rootNames(roots), err)
}

// issuerIn returns the certificate among cands that issued c (by name and signature).
func issuerIn(c *x509.Certificate, cands []*x509.Certificate) *x509.Certificate {
	for _, p := range cands {
		if bytes.Equal(c.RawIssuer, p.RawSubject) && c.CheckSignatureFrom(p) == nil {
			return p
		}
	}
	return nil
}

func rootNames(roots []*x509.Certificate) string {
	var names []string
	for _, r := range roots {
		names = append(names, fmt.Sprintf("%q", r.Subject.String()))
	}
	return strings.Join(names, ", ")
}
