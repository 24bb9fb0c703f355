package provenance

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ParseRootsPEM parses the root CA certificates of PEM text, for NewVerifier. Other PEM
// blocks are skipped.
func ParseRootsPEM(data []byte) ([]*x509.Certificate, error) {
	roots, err := parseCertificatesPEM(data, false)
	switch {
	case errors.Is(err, errNoCertificate):
		return nil, errors.New("provenance: no certificate in the root PEM data")
	case err != nil:
		return nil, fmt.Errorf("provenance: root certificate: %w", err)
	}
	return roots, nil
}

// ParseChainPEM parses a signing bundle: the member's certificate followed by its issuers
// (intermediates; the root may be left out), in that order. Anything in it that is not a
// certificate is an error, so that a private key pasted into a bundle by mistake is
// noticed rather than ignored.
func ParseChainPEM(data []byte) ([]*x509.Certificate, error) {
	return parseCertificatesPEM(data, true)
}

// parseCertificatesPEM parses the CERTIFICATE blocks of data; strict refuses any other
// block.
func parseCertificatesPEM(data []byte, strict bool) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for n := 1; ; n++ {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			if strict {
				return nil, fmt.Errorf("block %d is a %q, not a CERTIFICATE; a bundle holds certificates only", n, b.Type)
			}
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errNoCertificate
	}
	return certs, nil
}

var errNoCertificate = errors.New("no PEM certificate found")

// BundleReport describes a key's certificate after CheckBundle found it good.
type BundleReport struct {
	Subject   string
	Serial    string // decimal
	Issuer    string
	NotBefore time.Time
	NotAfter  time.Time
	Signer    SignerInfo // member, name (O), application (URI SAN), roles
	Chain     []string   // subjects from the leaf up to the root
}

// DaysLeft is the number of whole days until the certificate expires (negative after).
func (r *BundleReport) DaysLeft(now time.Time) int {
	return int(r.NotAfter.Sub(now).Hours() / 24)
}

// MatchBundle checks that a bundle starts with the member's certificate and that the
// certificate is for pub, the key (which key names, for the messages) that will sign
// under it: the two most common mistakes with a bundle, each with how to fix it.
func MatchBundle(chain []*x509.Certificate, pub crypto.PublicKey, key string) error {
	if len(chain) == 0 {
		return errors.New("no certificates: configure the key's certificates (its bundle)")
	}
	if err := bundleOrder(chain); err != nil {
		return err
	}
	leaf := chain[0]
	if eq, ok := pub.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(leaf.PublicKey) {
		return fmt.Errorf("the certificate (subject %q, serial %s) is not for %s: its public key differs, so every signature would fail verification. Install the certificate issued for this key, or point the key at the one the certificate was issued for",
			leaf.Subject.String(), leaf.SerialNumber, key)
	}
	return nil
}

// bundleOrder checks that a bundle starts with the member's certificate, and says how to
// fix one that does not.
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

// CheckBundle checks a key's bundle as the trust framework will: MatchBundle; the chain
// through the bundle's intermediates to one of roots at the time at (when roots are
// given); and the IB1 member certificate profile (member and roles extensions, one URI
// SAN). Every error says what to fix.
func CheckBundle(chain, roots []*x509.Certificate, pub crypto.PublicKey, key string, at time.Time) (*BundleReport, error) {
	if err := MatchBundle(chain, pub, key); err != nil {
		return nil, err
	}
	if len(roots) > 0 {
		if err := verifyBundle(chain, roots, at); err != nil {
			return nil, err
		}
	}
	leaf := chain[0]
	signer, err := DescribeSigner(leaf)
	if err != nil {
		return nil, fmt.Errorf("the certificate is not an IB1 member signing certificate: %v", err)
	}
	r := &BundleReport{
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

// verifyBundle verifies the bundle to roots at the time at and explains a failure.
func verifyBundle(chain, roots []*x509.Certificate, at time.Time) error {
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
