package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/testenv"
)

// From nothing to signing with the PEM backend, as the README tells it: keygen, csr,
// (the Directory issues the certificate: here the test PKI), cert check, serve.
func TestKeygenCSRCertCheck(t *testing.T) {
	dir := t.TempDir()
	pki, files, err := devsetup.NewDevFiles(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cfg := testenv.NewConfig().Table("provenance", "root_ca", "root-ca.pem").PEMKey("member", "member-key.pem", "").
		WriteFile(t, filepath.Join(dir, "new.toml"))
	out, code := runSplit(t, "keygen", "-config", cfg, "-key", "member")
	if code != 0 || !strings.HasPrefix(out, "-----BEGIN PUBLIC KEY-----") {
		t.Fatalf("keygen: %d %s", code, out)
	}
	if st, err := os.Stat(filepath.Join(dir, "member-key.pem")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	if again, code := runSplit(t, "keygen", "-config", cfg, "-key", "member"); code == 0 || !strings.Contains(again, "exists already") {
		t.Errorf("second keygen: %d %s", code, again)
	}
	csr := filepath.Join(dir, "member.csr")
	if msg, code := runSplit(t, "csr", "-config", cfg, "-key", "member", "-subject", "/C=GB/O=New Member Ltd/CN=https://member.example/a/9", "-uri", "https://member.example/a/9", "-out", csr); code != 0 {
		t.Fatalf("csr: %d %s", code, msg)
	}
	verify, err := exec.Command("openssl", "req", "-in", csr, "-noout", "-verify", "-pubkey").CombinedOutput()
	if err != nil || !strings.Contains(string(verify), "verify OK") || !strings.Contains(string(verify), strings.TrimSpace(out)) {
		t.Fatalf("openssl req -verify: %v %s\nwant public key %s", err, verify, out)
	}

	// The dev setup's own key passes cert check and reports the member.
	devCfg := testenv.NewConfig().Table("provenance", "root_ca", "root-ca.pem").DevKey().WriteFile(t, filepath.Join(dir, "dev.toml"))
	report, code := runSplit(t, "cert", "check", "-config", devCfg)
	if code != 0 || !strings.Contains(report, devsetup.DevMember(time.Now()).Member) || !strings.Contains(report, "days left") || !strings.Contains(report, "OK:") {
		t.Fatalf("cert check: %d %s", code, report)
	}

	// A bundle in the wrong order: cert check says so (1) and serve refuses to start (2).
	leafAndIssuer, _ := os.ReadFile(files.Bundle)
	issuerPEM := devsetup.CertPEM(pki.Issuer.Cert)
	leafPEM := strings.Replace(string(leafAndIssuer), string(issuerPEM), "", 1)
	os.WriteFile(files.Bundle, append(issuerPEM, leafPEM...), 0o644)
	if msg, code := testenv.Run(daemonBin, nil, "cert", "check", "-config", devCfg); code != 1 || !strings.Contains(msg, "wrong order") {
		t.Errorf("cert check of a reversed bundle: %d %s", code, msg)
	}
	msg, code := testenv.Run(daemonBin, []string{"PROVENANCED_HTTP=127.0.0.1:0"}, "serve", "-config", devCfg)
	if code != 2 || !strings.Contains(msg, "wrong order") || !strings.Contains(msg, "keys.signing.certificates") {
		t.Errorf("serve with a reversed bundle: %d %s", code, msg)
	}
}
