package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ib1/provenanced/internal/devsetup"
)

// issueCmd writes DIR/root-ca.pem and DIR/signing-bundle.pem: a new test PKI's root and a
// member certificate for the CSR's key, followed by the intermediate that issued it. The
// member's application is the CSR's URI SAN and its organisation the CSR's O, as the
// Directory would take them; its role is the sandbox's energy data provider.
func issueCmd(args []string) error {
	fs := flag.NewFlagSet("issue", flag.ContinueOnError)
	csrPath := fs.String("csr", "", "the PEM `CSR` to issue a certificate for")
	dir := fs.String("dir", ".", "the `folder` to write root-ca.pem and signing-bundle.pem to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *csrPath == "" {
		return errors.New("-csr FILE is required")
	}
	data, err := os.ReadFile(*csrPath)
	if err != nil {
		return err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return fmt.Errorf("%s: not a PEM CERTIFICATE REQUEST", *csrPath)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return fmt.Errorf("%s: %w", *csrPath, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return fmt.Errorf("%s: the CSR's signature does not verify with its key: %w", *csrPath, err)
	}
	now := time.Now()
	m := devsetup.DevMember(now)
	if len(csr.URIs) > 0 {
		m.Application = csr.URIs[0].String()
	}
	if len(csr.Subject.Organization) > 0 {
		m.Organization = csr.Subject.Organization[0]
	}
	pki, err := devsetup.NewPKI(now)
	if err != nil {
		return err
	}
	leaf, err := pki.Issue(csr.PublicKey, m)
	if err != nil {
		return err
	}
	root := filepath.Join(*dir, "root-ca.pem")
	bundle := filepath.Join(*dir, "signing-bundle.pem")
	if err := os.WriteFile(root, devsetup.CertPEM(pki.Root.Cert), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(bundle, pki.Bundle(leaf), 0o644); err != nil {
		return err
	}
	fmt.Printf("Issued a test certificate for %s (serial %s, valid until %s):\n  %s (root CA)\n  %s (certificate, then intermediate)\n",
		m.Application, leaf.SerialNumber, leaf.NotAfter.Format(time.DateOnly), root, bundle)
	return nil
}
