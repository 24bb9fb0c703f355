package testenv

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// CheckCSR has openssl verify a PEM CSR's self-signature (openssl req -verify) and
// checks that its public key is pub: the proof that a backend signed it with its key.
func CheckCSR(csrPEM []byte, pub crypto.PublicKey) error {
	dir, err := os.MkdirTemp("", "csr-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	f := filepath.Join(dir, "req.csr")
	if err := os.WriteFile(f, csrPEM, 0o644); err != nil {
		return err
	}
	out, err := exec.Command("openssl", "req", "-in", f, "-noout", "-verify").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("verify OK")) {
		return fmt.Errorf("openssl req -verify: %v: %s", err, out)
	}
	b, _ := pem.Decode(csrPEM)
	if b == nil {
		return fmt.Errorf("not a PEM CSR")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return err
	}
	if k, ok := pub.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(csr.PublicKey) {
		return fmt.Errorf("the CSR's public key is not the backend key's")
	}
	return nil
}
